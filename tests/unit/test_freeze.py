"""Tests for tasks/freeze.py: the pure pinning, the pip calls (mocked) and the task end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Context, MockContext, Result
from invoke.exceptions import Exit

from signalcraft_deploy.core.local_files import write_atomically
from signalcraft_deploy.core.settings import KEY_NAMES
from signalcraft_deploy.tasks import freeze as freeze_module
from signalcraft_deploy.tasks.freeze import (
    FreezeError,
    canonical_name,
    freeze,
    full_freeze_listing,
    leading_comment_block,
    not_installed,
    pin_requirements,
    plan_pins,
    read_installed,
    unified_diff,
)
from tests.unit.conftest import mock_host

INSTALLED = {
    "flask": "3.0.3",
    "requests": "2.32.3",
    "name-with-dots": "1.2.0",
    "gunicorn": "23.0.0",
    "numpy": "2.1.0",
}

# (id, file text, expected text): every case also gains gunicorn unless the file names it.
PIN_CASES = [
    ("bare name", "flask\n", "flask==3.0.3\ngunicorn==23.0.0\n"),
    ("exact pin updated", "flask==2.0.1\n", "flask==3.0.3\ngunicorn==23.0.0\n"),
    ("range becomes pin", "flask>=2,<4\n", "flask==3.0.3\ngunicorn==23.0.0\n"),
    ("old-style parenthesised", "flask (>=2)\n", "flask==3.0.3\ngunicorn==23.0.0\n"),
    (
        "comments and order kept",
        "# web\nrequests\n\n# more\nflask\n",
        "# web\nrequests==2.32.3\n\n# more\nflask==3.0.3\ngunicorn==23.0.0\n",
    ),
    (
        "extras kept",
        "requests[socks,security]>=2\n",
        "requests[socks,security]==2.32.3\ngunicorn==23.0.0\n",
    ),
    (
        "marker kept with its spacing",
        'requests[socks]>=2 ; python_version<"3.12"\n',
        'requests[socks]==2.32.3 ; python_version<"3.12"\ngunicorn==23.0.0\n',
    ),
    (
        "marker without specifier",
        'flask; sys_platform=="linux"\n',
        'flask==3.0.3; sys_platform=="linux"\ngunicorn==23.0.0\n',
    ),
    (
        "trailing comment kept",
        "flask>=2  # the web app\n",
        "flask==3.0.3  # the web app\ngunicorn==23.0.0\n",
    ),
    ("indented line", "  flask\n", "  flask==3.0.3\ngunicorn==23.0.0\n"),
    (
        "original spelling kept (dots, underscores, case)",
        "Name_With.Dots\n",
        "Name_With.Dots==1.2.0\ngunicorn==23.0.0\n",
    ),
    ("case-insensitive match", "FLASK\n", "FLASK==3.0.3\ngunicorn==23.0.0\n"),
    (
        "options untouched",
        (
            "-r base.txt\n-c constraints.txt\n--index-url"
            " https://pypi.org/simple\n--extra-index-url https://x/simple\nflask\n"
        ),
        (
            "-r base.txt\n-c constraints.txt\n--index-url"
            " https://pypi.org/simple\n--extra-index-url"
            " https://x/simple\nflask==3.0.3\ngunicorn==23.0.0\n"
        ),
    ),
    (
        "-e, VCS, URL and path lines untouched",
        (
            "-e ./lib\n-e"
            " git+https://example.com/flask.git#egg=flask\ngit+https://example.com/x.git\n"
            "requests @"
            " https://example.com/requests-2.0.tar.gz\n./pkgs/numpy\nhttps://example.com/a.zip\n"
            "flask-1.0-py3-none-any.whl\n"
        ),
        (
            "-e ./lib\n-e"
            " git+https://example.com/flask.git#egg=flask\ngit+https://example.com/x.git\n"
            "requests @"
            " https://example.com/requests-2.0.tar.gz\n./pkgs/numpy\nhttps://example.com/a.zip\n"
            "flask-1.0-py3-none-any.whl\n"
            "gunicorn==23.0.0\n"
        ),
    ),
    (
        "line continuation untouched",
        "numpy==1.0 \\\n    --hash=sha256:abc\n",
        "numpy==1.0 \\\n    --hash=sha256:abc\ngunicorn==23.0.0\n",
    ),
    (
        "hash option untouched",
        "numpy==1.0 --hash=sha256:abc\n",
        "numpy==1.0 --hash=sha256:abc\ngunicorn==23.0.0\n",
    ),
    (
        "not installed left as is",
        "flask\nleftpad>=1\n",
        "flask==3.0.3\nleftpad>=1\ngunicorn==23.0.0\n",
    ),
    (
        "existing gunicorn pin updated in place",
        "gunicorn==20.1.0\nflask\n",
        "gunicorn==23.0.0\nflask==3.0.3\n",
    ),
    (
        "existing gunicorn, other spelling",
        "Gunicorn>=21  # server\n",
        "Gunicorn==23.0.0  # server\n",
    ),
    (
        "gunicorn named by URL is not added twice",
        "gunicorn @ https://example.com/g.whl\n",
        "gunicorn @ https://example.com/g.whl\n",
    ),
    (
        "gunicorn on a continued line is not added twice",
        "gunicorn==22.0.0 \\\n    --hash=sha256:abc\n",
        "gunicorn==22.0.0 \\\n    --hash=sha256:abc\n",
    ),
    (
        "already pinned: unchanged",
        "flask==3.0.3\ngunicorn==23.0.0\n",
        "flask==3.0.3\ngunicorn==23.0.0\n",
    ),
    ("no trailing newline kept", "flask", "flask==3.0.3\ngunicorn==23.0.0"),
    (
        "CRLF kept",
        "flask\r\nrequests\r\n",
        "flask==3.0.3\r\nrequests==2.32.3\r\ngunicorn==23.0.0\r\n",
    ),
    ("empty file", "", "gunicorn==23.0.0\n"),
    (
        "dangling continuation at end is closed",
        "numpy==1.0 \\\n",
        "numpy==1.0 \\\n\ngunicorn==23.0.0\n",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in PIN_CASES], ids=[c[0] for c in PIN_CASES]
)
def test_pin_requirements(text: str, expected: str) -> None:
    assert pin_requirements(text, INSTALLED) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flask\nleftpad>=1\nLeft_Pad2\n", ["leftpad", "Left_Pad2"]),
        ("flask\n-e ./nothere\nhttps://example.com/a.zip\n", []),
        ("# leftpad\n", []),
    ],
)
def test_not_installed_reports_named_packages_missing_from_the_venv(
    text: str, expected: list[str]
) -> None:
    assert not_installed(text, INSTALLED) == expected


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        (
            {"flask": "3.0.3"},
            (
                "gunicorn is not installed in /app/.venv: run /app/.venv/bin/pip install"
                " 'gunicorn>=20.1'"
            ),
        ),
        ({"gunicorn": "20.0.4"}, "gunicorn 20.0.4 in /app/.venv is too old"),
        ({"gunicorn": "19.9"}, "needs gunicorn>=20.1"),
        ({"gunicorn": "weird"}, "is too old"),
    ],
)
def test_pin_requirements_rejects_missing_or_old_gunicorn(
    installed: dict[str, str], message: str
) -> None:
    with pytest.raises(FreezeError, match=re.escape(message)):
        pin_requirements("flask\n", installed, venv="/app/.venv")


@pytest.mark.parametrize("version", ["20.1.0", "20.1", "21.2.0", "23.0.0", "100.0"])
def test_supported_gunicorn_versions_pass(version: str) -> None:
    assert pin_requirements("", {"gunicorn": version}) == f"gunicorn=={version}\n"


def test_ensure_can_be_empty_or_other_names() -> None:
    assert pin_requirements("flask\n", {"flask": "3.0.3"}, ensure=()) == "flask==3.0.3\n"
    assert pin_requirements("", {"Flask": "3.0.3"}, ensure=("flask",)) == "flask==3.0.3\n"
    with pytest.raises(FreezeError, match="flask is not installed"):
        pin_requirements("", {}, ensure=("flask",))


def test_plan_counts_what_it_did() -> None:
    plan = plan_pins("flask\nrequests==2.32.3\nleftpad\nnumpy==1 --hash=sha256:x\n", INSTALLED)
    assert plan.pinned == ["flask"]
    assert plan.added == ["gunicorn==23.0.0"]
    assert plan.checked == 3  # flask, requests, gunicorn
    assert plan.not_installed == ["leftpad"]
    assert plan.left_as_is == ["numpy"]


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Flask", "flask"),
        ("Name_With.Dots", "name-with-dots"),
        ("a__b--c..d", "a-b-c-d"),
        ("zope.interface", "zope-interface"),
    ],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_leading_comment_block() -> None:
    assert leading_comment_block("# top\n\n# more\nflask\n# later\n") == "# top\n\n# more\n"
    assert leading_comment_block("flask\n") == ""
    assert leading_comment_block("# only") == "# only\n"


def test_unified_diff_labels_and_missing_newline() -> None:
    diff = unified_diff("flask\n", "flask==3.0.3\ngunicorn==23.0.0", "requirements.txt")
    assert diff.startswith("--- a/requirements.txt\n+++ b/requirements.txt\n")
    assert "-flask\n+flask==3.0.3\n+gunicorn==23.0.0\n\\ No newline at end of file\n" in diff
    assert unified_diff("same\n", "same\n") == ""


# --- pip calls, mocked -------------------------------------------------------------------------


def _fake_venv(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    return root


PIP_LIST = json.dumps(
    [
        {"name": "Flask", "version": "3.0.3"},
        {"name": "Name_With.Dots", "version": "1.2.0"},
        {"name": "gunicorn", "version": "23.0.0"},
    ]
)


def test_read_installed_canonicalises_names(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path / "my venv")
    c = mock_host(run={re.compile(r".*pip list"): Result(stdout=PIP_LIST)})
    assert read_installed(c, str(venv)) == {
        "flask": "3.0.3",
        "name-with-dots": "1.2.0",
        "gunicorn": "23.0.0",
    }


def test_read_installed_quotes_the_path_and_hides_output(tmp_path: Path, mocker) -> None:
    venv = _fake_venv(tmp_path / "my venv")
    c = mock_host(run={re.compile(r".*pip list"): Result(stdout="[]")})
    spy = mocker.spy(c, "run")
    assert read_installed(c, str(venv)) == {}
    command = spy.call_args.args[0]
    assert command == f"'{venv}/bin/python' -m pip list --format=json --disable-pip-version-check"
    assert spy.call_args.kwargs == {"hide": True, "warn": True, "in_stream": False}


def test_read_installed_without_venv_names_cause_and_fix(tmp_path: Path) -> None:
    venv = str(tmp_path / "nope")
    with pytest.raises(Exit) as info:
        read_installed(mock_host(), venv)
    assert info.value.code == 1
    assert f"no virtual environment at {venv}" in str(info.value.message)
    assert f"python3 -m venv {venv} && {venv}/bin/pip install -r requirements.txt gunicorn" in str(
        info.value.message
    )
    assert "LOCAL_VENV" in str(info.value.message)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (
            Result(stdout="", stderr="/v/bin/python: No module named pip\n", exited=1),
            "pip is not installed in",
        ),
        (
            Result(stdout="", stderr="ERROR: boom\n", exited=2),
            "`pip list --format=json` failed: ERROR: boom",
        ),
        (Result(stdout="not json"), "could not read `pip list` output"),
    ],
)
def test_read_installed_failures_are_clear(tmp_path: Path, result: Result, message: str) -> None:
    venv = _fake_venv(tmp_path / "v")
    c = mock_host(run={re.compile(r".*pip list"): result})
    with pytest.raises(Exit, match=re.escape(message)):
        read_installed(c, str(venv))


def test_full_freeze_listing(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path / "v")
    c = mock_host(
        run={
            re.compile(r".*pip freeze --disable-pip-version-check$"): Result(stdout="a==1\nb==2\n")
        }
    )
    assert full_freeze_listing(c, str(venv)) == "a==1\nb==2\n"


# --- write_atomically --------------------------------------------------------------------------


def test_write_atomically_keeps_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("old\n")
    path.chmod(0o640)
    write_atomically(path, "new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["requirements.txt"]


def test_write_atomically_failure_keeps_the_original(tmp_path: Path, mocker) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("old\n")
    mocker.patch.object(freeze_module.os, "fsync", side_effect=OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["requirements.txt"]


def test_write_atomically_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    link = tmp_path / "requirements.txt"
    link.symlink_to(real)
    write_atomically(link, "new\n")
    assert link.is_symlink()
    assert real.read_text() == "new\n"


# --- the task ----------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app dir with a fake .venv; settings come from defaults only (no .env, no environment)."""
    for key in (*KEY_NAMES, "ENV_FILE", "VIRTUAL_ENV"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    _fake_venv(app_dir / ".venv")
    return app_dir


def _ctx(pip_list: str = PIP_LIST, pip_freeze: str = "") -> MockContext:
    return mock_host(
        run={
            re.compile(r".*pip list"): Result(stdout=pip_list),
            re.compile(r".*pip freeze"): Result(stdout=pip_freeze),
        }
    )


def test_task_up_to_date_exits_0_and_leaves_the_file(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req = app / "requirements.txt"
    req.write_text("# app\nFlask==3.0.3\ngunicorn==23.0.0\n")
    before = req.stat().st_mtime_ns
    freeze(_ctx(), source_dir=str(app), check=True)
    freeze(_ctx(), source_dir=str(app))
    out = capsys.readouterr().out
    assert "requirements.txt is up to date (2 pins checked)" in out
    assert req.read_text() == "# app\nFlask==3.0.3\ngunicorn==23.0.0\n"
    assert req.stat().st_mtime_ns == before


def test_task_check_out_of_date_exits_1_with_the_diff(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req = app / "requirements.txt"
    req.write_text("# app\nflask>=2\n")
    with pytest.raises(Exit) as info:
        freeze(_ctx(), source_dir=str(app), check=True)
    assert info.value.code == 1
    assert info.value.message == "requirements.txt is out of date: run `invoke freeze`"
    out = capsys.readouterr().out
    assert "--- a/requirements.txt\n+++ b/requirements.txt\n" in out
    assert "-flask>=2\n+flask==3.0.3\n+gunicorn==23.0.0\n" in out
    assert req.read_text() == "# app\nflask>=2\n"


def test_task_writes_atomically_and_summarises(
    app: Path, capsys: pytest.CaptureFixture[str], mocker
) -> None:
    req = app / "requirements.txt"
    req.write_text("# app\nflask>=2\nName_With.Dots\nleftpad\n")
    req.chmod(0o640)
    replace = mocker.spy(freeze_module.os, "replace")
    freeze(_ctx(), source_dir=str(app))
    assert (
        req.read_text() == "# app\nflask==3.0.3\nName_With.Dots==1.2.0\nleftpad\ngunicorn==23.0.0\n"
    )
    assert stat.S_IMODE(req.stat().st_mode) == 0o640
    replace.assert_called_once()
    assert replace.call_args.args[1] == str(req)
    assert sorted(os.listdir(app)) == [".venv", "requirements.txt"]
    captured = capsys.readouterr()
    assert "+flask==3.0.3" in captured.out
    assert captured.out.rstrip().endswith("pinned 2 packages, added gunicorn==23.0.0")
    assert "leftpad" in captured.err and "not installed" in captured.err


def test_task_missing_requirements_names_the_path(app: Path) -> None:
    with pytest.raises(Exit) as info:
        freeze(_ctx(), source_dir=str(app))
    assert info.value.code == 1
    assert str(app / "requirements.txt") in str(info.value.message)


def test_task_missing_gunicorn_exits_1(app: Path) -> None:
    (app / "requirements.txt").write_text("flask\n")
    with pytest.raises(Exit, match=re.escape("gunicorn is not installed in")) as info:
        freeze(_ctx(pip_list='[{"name": "flask", "version": "3.0.3"}]'), source_dir=str(app))
    assert info.value.code == 1


def test_task_bad_setting_exits_2(app: Path) -> None:
    (app / "requirements.txt").write_text("flask\n")
    with pytest.raises(Exit) as info:
        freeze(_ctx(), source_dir=str(app), set_=["NOPE=1"])
    assert info.value.code == 2


@pytest.mark.parametrize("where", ["flag", "set", "virtual_env"])
def test_task_venv_choice(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mocker, where: str
) -> None:
    (app / "requirements.txt").write_text("flask==3.0.3\ngunicorn==23.0.0\n")
    other = _fake_venv(tmp_path / "other")
    c = _ctx()
    spy = mocker.spy(c, "run")
    if where == "flag":
        freeze(c, source_dir=str(app), venv=str(other))
    elif where == "set":
        freeze(c, source_dir=str(app), set_=[f"LOCAL_VENV={other}"])
    else:
        monkeypatch.setenv("VIRTUAL_ENV", str(other))
        freeze(c, source_dir=str(app))
    assert spy.call_args.args[0].startswith(f"{other}/bin/python ")


def test_task_with_the_tool_s_own_venv_activated_pins_from_the_app_s_venv(
    app: Path, monkeypatch: pytest.MonkeyPatch, mocker, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tool installed in a venv of its own and activated to run `invoke`: that venv has fabric,
    # not the app.
    (app / "requirements.txt").write_text("flask==3.0.3\ngunicorn==23.0.0\n")
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    c = _ctx()
    spy = mocker.spy(c, "run")
    freeze(c, source_dir=str(app))
    assert spy.call_args.args[0].startswith(f"{app / '.venv'}/bin/python ")
    assert f"versions from {app / '.venv'} (SOURCE_DIR/.venv)" in capsys.readouterr().out


def test_task_with_one_venv_for_tool_and_app_reads_it(
    app: Path, monkeypatch: pytest.MonkeyPatch, mocker
) -> None:
    (app / "requirements.txt").write_text("flask==3.0.3\ngunicorn==23.0.0\n")
    shutil.rmtree(app / ".venv")
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    c = _ctx()
    spy = mocker.spy(c, "run")
    freeze(c, source_dir=str(app))
    assert spy.call_args.args[0].startswith(f"{sys.prefix}/bin/python ")


def test_task_all_refuses_a_venv_holding_the_tool(app: Path) -> None:
    req = app / "requirements.txt"
    req.write_text("flask\n")
    listed = json.dumps([*json.loads(PIP_LIST), {"name": "signalcraft-deploy", "version": "0.4.0"}])
    with pytest.raises(Exit) as info:
        freeze(_ctx(pip_list=listed, pip_freeze="fabric==3.2.3\n"), source_dir=str(app), all_=True)
    assert info.value.code == 1 and "holds signalcraft-deploy itself" in str(info.value.message)
    assert req.read_text() == "flask\n"


def test_task_all_writes_full_listing_keeping_leading_comments(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req = app / "requirements.txt"
    req.write_text("# Generated for the app.\n# Keep this header.\n\nflask\n# later comment\n")
    freeze(
        _ctx(pip_freeze="Flask==3.0.3\ngunicorn==23.0.0\nitsdangerous==2.2.0\n"),
        source_dir=str(app),
        all_=True,
    )
    assert (
        req.read_text() == "# Generated for the app.\n# Keep this"
        " header.\n\nFlask==3.0.3\ngunicorn==23.0.0\nitsdangerous==2.2.0\n"
    )
    assert "wrote the full pip freeze listing (3 packages)" in capsys.readouterr().out


def test_task_flags() -> None:
    names = {arg.names[0]: arg for arg in freeze.get_arguments()}
    assert set(names) == {
        "source-dir",
        "venv",
        "check",
        "all",
        "env-file",
        "set",
        "environment",
    }
    assert all(arg.help for arg in names.values())
    assert names["set"].kind is list
    assert (
        freeze.__doc__.splitlines()[0]
        == "Pin requirements.txt to the versions in the app's local virtual environment (adds"
        " gunicorn)."
    )
    assert freeze_module.ns.task_names == {"freeze": []}


# --- one real run: a real venv, real pip, no mocks ---------------------------------------------


def test_real_venv_without_gunicorn_fails_check_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh venv has pip but no Gunicorn: `freeze --check` must say so and how to fix it."""
    for key in (*KEY_NAMES, "ENV_FILE", "VIRTUAL_ENV"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    venv = tmp_path / "v"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-200:]}")
    (tmp_path / "requirements.txt").write_text("# tools\npip\n")
    installed = read_installed(Context(), str(venv))
    assert "pip" in installed
    with pytest.raises(Exit) as info:
        freeze(Context(), source_dir=str(tmp_path), venv=str(venv), check=True)
    assert info.value.code == 1
    assert (
        info.value.message
        == f"gunicorn is not installed in {venv}: run {venv}/bin/pip install 'gunicorn>=20.1'"
    )
    assert (tmp_path / "requirements.txt").read_text() == "# tools\npip\n"
