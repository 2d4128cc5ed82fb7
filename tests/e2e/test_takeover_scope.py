"""A takeover touches only the deploy user's own server or the apps' own account's, and its record
is root's.

On GUNICORN_BIND's port (7831; own names, deploy root and ports 7831-7851 on the shared sandbox
host):
- another user's process (`nobody`, a password in its environment, run from /tmp) is refused by user
  and pid, survives, and its password is nowhere in the output or the deploy root;
- the deploy user's own `python3 -m http.server` from a folder that is not the app's is refused and
  survives;
- the deploy user's server run from the app's folder is taken over: the record is root's (folder
  0711, files 0600), and `rollback --to before-takeover` starts it again (its log root's, 0600);
- the apps' own account's server is read, stopped and started again as that account (through the app
  helper).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_HOME,
    APP_USER,
    EXAMPLE,
    ROOT_STATE,
    AppRepo,
    Profile,
    clean_host,
    fab,
    get,
    pm2_apps,
    sh,
)

TS = Profile("scope", "/home/ubuntu/scope", 7831, 7841, 7851)
PASSWORD = f"other-team-{secrets.token_hex(10)}"
RECORD = Path(TS.root, ".deploy/takeover")
HOME = Path(
    "/home/ubuntu/scope-servers"
)  # where the deploy user's own servers run from (the deploy user can read it)


def listeners(port: int) -> list[int]:
    out = sh(f"ss -ltnpH 'sport = :{port}'", check=False).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def start_server(argv: list[str], cwd: str, port: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server on `port`; wait until it listens; return it and the pid that holds the
    port."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not listeners(port):
        time.sleep(0.1)
    held = listeners(port)
    assert held, f"{argv} did not listen on {port}"
    return proc, held[0]


def stop(proc: subprocess.Popen[bytes], *pids: int) -> None:
    for pid in pids:
        sh(f"kill {pid}", check=False)
    proc.kill()
    proc.wait(10)


def roll_back_before_takeover(sandbox) -> int:
    """`rollback --to before-takeover`, then the pid of the unmanaged server listening on its port
    again."""
    back = fab(sandbox, TS, None, "--to", "before-takeover", task="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "the unmanaged server runs again" in back.stdout, back.stdout
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not listeners(TS.bind):
        time.sleep(0.1)
    [again] = listeners(TS.bind)
    return again


def nothing_of_the_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text
    found = sh(f"grep -rl {PASSWORD} {TS.root} 2>/dev/null", check=False).stdout
    assert found == "", found


@pytest.fixture
def host(sandbox) -> Iterator[None]:
    clean_host(TS)
    sh(f"rm -rf {HOME} && mkdir -p {HOME} && chown ubuntu: {HOME}")
    yield
    for pid in listeners(TS.bind):  # only what a test here left on its own port
        sh(f"kill {pid}", check=False)
    clean_host(TS)
    sh(f"rm -rf {HOME}", check=False)


def test_another_users_process_on_the_port_is_refused_and_survives(sandbox, host, tmp_path):
    argv = [
        "runuser",
        "-u",
        "nobody",
        "--",
        "env",
        f"OTHER_TEAM_DB_PASSWORD={PASSWORD}",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        str(TS.bind),
    ]
    proc, pid = start_server(argv, "/tmp", TS.bind)
    try:
        result = fab(sandbox, TS, AppRepo(tmp_path / "app"))
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        assert f"pid {pid} of user nobody, not of the deploy user ubuntu" in out, out
        assert (
            "Stop it (as nobody or root), or restart it as signalcraft and deploy again" in out
        ), out
        assert "Traceback" not in out
        assert listeners(TS.bind) == [pid] and Path(f"/proc/{pid}").exists()
        assert get(f"http://127.0.0.1:{TS.bind}/")[0] == 200
        assert not RECORD.exists()
        nothing_of_the_password(out)
    finally:
        stop(proc, pid)


def test_the_deploy_users_server_outside_the_app_folder_is_refused_and_survives(
    sandbox, host, tmp_path
):
    elsewhere = HOME / "elsewhere"
    elsewhere.mkdir()
    shutil.chown(elsewhere, "ubuntu")
    argv = [
        "sudo",
        "-u",
        "ubuntu",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        str(TS.bind),
    ]
    proc, pid = start_server(argv, str(elsewhere), TS.bind)
    try:
        result = fab(sandbox, TS, AppRepo(tmp_path / "app"))
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        assert (
            f"pid {pid} (python3 -m http.server" in out
            and f"runs from {elsewhere}, not from the app's folder" in out
        ), out
        assert listeners(TS.bind) == [pid] and not RECORD.exists()
    finally:
        stop(proc, pid)


def mode_and_owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return stat.S_IMODE(info.st_mode), info.st_uid


def test_the_takeover_record_is_the_deploy_users_and_the_site_copy_roots_and_rollback_starts_the_server_again(
    sandbox, host, tmp_path
):
    old = HOME / "old-app"  # the app's folder: it holds app.py (WSGI_APP's module)
    old.mkdir()
    (old / "app.py").write_text("# the old app\n")
    shutil.copy(
        EXAMPLE / "server.js", old / "server.js"
    )  # and its Node.js app under PM2, as the plan had it
    sh(
        f"chown -R ubuntu: {old} && cd {old} && sudo -u ubuntu -H env PORT={TS.node} pm2 start"
        f" server.js --name {TS.app}-nodejs"
    )
    argv = [
        "sudo",
        "-u",
        "ubuntu",
        "env",
        "PORT_NOTE=old",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        str(TS.bind),
    ]
    proc, pid = start_server(argv, str(old), TS.bind)
    try:
        result = fab(sandbox, TS, AppRepo(tmp_path / "app"))
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "record takeover" in out and f"pid {pid}" in out
        assert not Path(f"/proc/{pid}").exists() or pid not in listeners(TS.bind)
        ubuntu = pwd.getpwnam("ubuntu").pw_uid
        assert mode_and_owner(RECORD) == (
            0o700,
            ubuntu,
        )  # its own process, its own record: root reads none of it
        assert sorted(os.listdir(RECORD)) == ["legacy.json"]
        assert mode_and_owner(RECORD / "legacy.json") == (0o600, ubuntu)
        copy = (
            ROOT_STATE
            / "takeover"
            / hashlib.sha256(f"{ubuntu}\0{TS.root}/.deploy".encode()).hexdigest()[:24]
        )
        assert mode_and_owner(copy) == (0o700, 0) and sorted(os.listdir(copy)) == [
            "meta.json"
        ]  # no site existed
        assert (
            sh(f"sudo -u ubuntu ls {copy}", check=False).returncode != 0
        )  # root's copy: not the deploy user's to read
        assert "PORT_NOTE" not in out

        again = roll_back_before_takeover(sandbox)
        assert (
            os.readlink(f"/proc/{again}/cwd") == str(old)
            and Path(f"/proc/{again}").stat().st_uid == pwd.getpwnam("ubuntu").pw_uid
        )
        assert b"PORT_NOTE=old" in Path(f"/proc/{again}/environ").read_bytes().split(b"\0")
        assert get(f"http://127.0.0.1:{TS.bind}/app.py")[0] == 200
        assert list(pm2_apps(TS.app, user="ubuntu")) == [
            f"{TS.app}-nodejs"
        ]  # back where it ran, not the apps' account's
        assert list(pm2_apps(TS.app)) == []
        assert mode_and_owner(RECORD / "legacy.log") == (0o600, ubuntu)
        assert not copy.exists()  # the site put back, root's copy dropped
    finally:
        stop(proc, *listeners(TS.bind))


def test_a_server_of_the_apps_own_account_is_taken_over_as_it_and_a_rollback_starts_it_as_it_again(
    sandbox, host, tmp_path
):
    """The bare server may already run as the apps' account (an admin started it so): it is read,
    stopped and started again as that account, through the app helper; its record is still the
    deploy user's, marked with whose it is.
    """
    old = Path(APP_HOME) / "old-app"
    sh(
        f"rm -rf {old} && mkdir -p {old} && echo '# the old app' > {old}/app.py && chown -R"
        f" {APP_USER}: {old}"
    )
    argv = [
        "sudo",
        "-u",
        APP_USER,
        "env",
        "PORT_NOTE=old",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        str(TS.bind),
    ]
    proc, pid = start_server(argv, str(old), TS.bind)
    try:
        result = fab(sandbox, TS, AppRepo(tmp_path / "app"))
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "record takeover" in out and f"pid {pid}" in out and "PORT_NOTE" not in out
        assert pid not in listeners(TS.bind)
        record = json.loads(sh(f"cat {RECORD}/legacy.json").stdout)
        assert record["ran_as"] == APP_USER and mode_and_owner(RECORD / "legacy.json") == (
            0o600,
            pwd.getpwnam("ubuntu").pw_uid,
        )
        gunicorn = listeners(TS.bind)  # its master and workers
        assert set(sh(f"ps -o user= -p {','.join(map(str, gunicorn))}").stdout.split()) == {
            APP_USER
        }

        again = roll_back_before_takeover(sandbox)
        assert Path(f"/proc/{again}").stat().st_uid == pwd.getpwnam(APP_USER).pw_uid
        assert os.readlink(f"/proc/{again}/cwd") == str(old)
        assert b"PORT_NOTE=old" in Path(f"/proc/{again}/environ").read_bytes().split(b"\0")
        assert get(f"http://127.0.0.1:{TS.bind}/app.py")[0] == 200
        assert list(pm2_apps(TS.app)) == []
    finally:
        stop(proc, *listeners(TS.bind))
        sh(f"rm -rf {old}", check=False)
