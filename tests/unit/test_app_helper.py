"""The app user's door (remote/app_helper.py, /usr/local/sbin/signalcraft-app): whatever sudo passes
on, a program gets the same environment, umask and working folder; root is refused."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from signalcraft_deploy.remote import app_helper


@pytest.fixture
def as_app_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The helper run by uid 998 (home tmp_path/home), its execve caught."""
    entry = pwd.struct_passwd(
        ("shop", "x", 998, 998, "app", str(tmp_path / "home"), "/usr/sbin/nologin")
    )
    (tmp_path / "home").mkdir()
    started: dict[str, Any] = {}
    monkeypatch.setattr(app_helper.os, "getuid", lambda: 998)
    monkeypatch.setattr(app_helper.os, "geteuid", lambda: 998)
    monkeypatch.setattr(app_helper.pwd, "getpwuid", lambda uid: entry)
    monkeypatch.setattr(app_helper.os, "umask", lambda mask: started.setdefault("umask", mask))
    monkeypatch.setattr(app_helper.os, "chdir", lambda where: started.setdefault("cwd", where))
    monkeypatch.setattr(
        app_helper.os,
        "execve",
        lambda path, argv, env: started.update(path=path, argv=argv, env=env),
    )
    monkeypatch.setenv(
        "PM2_HOME", "/home/ubuntu/.pm2"
    )  # what a caller's sudo might pass on: never used
    monkeypatch.setenv("HOME", "/home/ubuntu")
    return started


def test_every_program_gets_the_app_users_own_environment_umask_and_folder(
    as_app_user: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "home" / ".pm2").mkdir(mode=0o755)  # made first by a PM2 run some other way
    app_helper.main(["env", "-0"])
    home = str(tmp_path / "home")
    assert as_app_user["env"] == {
        "HOME": home,
        "USER": "shop",
        "LOGNAME": "shop",
        "SHELL": "/usr/sbin/nologin",
        "PM2_HOME": f"{home}/.pm2",
        "PATH": app_helper.PATH,
        "LANG": "C.UTF-8",
    }
    assert as_app_user["argv"] == ["env", "-0"] and os.path.isabs(as_app_user["path"])
    assert (as_app_user["umask"], as_app_user["cwd"]) == (0o027, home)
    assert (os.stat(f"{home}/.pm2").st_mode & 0o777) == 0o700


def test_root_and_unknown_programs_are_refused(
    as_app_user: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        app_helper.main(["no-such-program-here"])
    assert (
        refused.value.code == 2
        and "is neither an absolute path nor a program on" in capsys.readouterr().err
    )
    monkeypatch.setattr(app_helper.os, "getuid", lambda: 0)
    with pytest.raises(SystemExit):
        app_helper.main(["/bin/true"])
    assert "never as root" in capsys.readouterr().err and "path" not in as_app_user
