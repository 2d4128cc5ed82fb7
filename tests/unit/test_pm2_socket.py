"""remote/pm2_ask.py (and pm2_socket.py, which it inlines) against a real PM2 daemon of this machine
and a socket answering garbage. Not with the unit tests that measure time (tests/run's TIMED): each
real daemon start takes a second or more of CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signalcraft_deploy import remote

NODE = shutil.which("node")


def ask_socket(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """pm2_ask.py as the host runs it (`python3 -I -S -c`), asking the PM2 of `home`."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", remote.program("pm2_ask"), *args],
        capture_output=True,
        text=True,
        env={"PM2_HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


@pytest.fixture
def real_pm2(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    """This machine's PM2 with a daemon of its own (PM2_HOME in tmp_path), killed after."""
    found = shutil.which("pm2")
    if found is None or NODE is None:
        pytest.skip("PM2 is not installed")
    home = tmp_path / "pm2-home"
    env = {**os.environ, "PM2_HOME": str(home)}
    cli = [found]

    def pm2(*args: str) -> str:
        done = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    pm2("start", "/bin/sleep", "--name", "sleeper", "--", "300")
    pm2("start", "/bin/sleep", "--name", "other", "--", "300")
    try:
        yield [found, "--no-color"], home
    finally:
        subprocess.run([found, "kill"], capture_output=True, env=env, timeout=60)


def jlist(real_pm2: tuple[list[str], Path]) -> list[dict[str, Any]]:
    cli, home = real_pm2
    env = {**os.environ, "PM2_HOME": str(home)}
    out = subprocess.run([*cli, "jlist"], capture_output=True, text=True, env=env, timeout=60)
    return json.loads(out.stdout)


def steady(listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A process list without what changes between two askings (CPU, memory, uptime...)."""
    changing = {"axm_monitor", "pm_uptime", "unstable_restarts"}
    return [
        {k: v for k, v in p.items() if k != "monit"}
        | {"pm2_env": {k: v for k, v in p["pm2_env"].items() if k not in changing}}
        for p in listed
    ]


def test_pm2_socket_lists_what_pm2_jlist_lists_and_deletes_as_pm2_delete(
    real_pm2: tuple[list[str], Path],
) -> None:
    """Against a real PM2 daemon: its own protocol, not a fake's."""
    _, home = real_pm2
    listed = ask_socket("list", home=home)
    assert listed.returncode == 0, listed.stderr
    assert steady(json.loads(listed.stdout)) == steady(jlist(real_pm2))
    deleted = ask_socket("delete", "sleeper", home=home)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted sleeper\n")
    assert [p["name"] for p in jlist(real_pm2)] == ["other"]
    missing = ask_socket("delete", "sleeper", home=home)
    assert (missing.returncode, missing.stdout) == (4, "no app named sleeper\n")


def test_pm2_ask_save_writes_the_text_pm2_save_writes(real_pm2: tuple[list[str], Path]) -> None:
    """The dump a `pm2 save --force` writes, line for line (but for the live metrics' values, which
    change between two readings), the previous dump kept as .bak."""
    cli, home = real_pm2
    env = {**os.environ, "PM2_HOME": str(home)}
    subprocess.run([*cli, "save", "--force"], capture_output=True, env=env, timeout=60, check=True)
    by_cli = (home / "dump.pm2").read_text()
    saved = ask_socket("save", home=home)
    assert saved.returncode == 0, saved.stderr
    ours = (home / "dump.pm2").read_text()
    assert (home / "dump.pm2.bak").read_text() == by_cli
    pairs = list(zip(by_cli.splitlines(), ours.splitlines(), strict=True))
    assert [a for a, b in pairs if a != b and '"value":' not in a] == []


def test_pm2_socket_cannot_ask_without_a_daemon_or_an_answer_it_can_read(tmp_path: Path) -> None:
    assert ask_socket("list", home=tmp_path / "no-daemon").returncode == 3
    (tmp_path / "home").mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "home" / "rpc.sock"))
    server.listen(1)

    def answer_garbage() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    done = ask_socket("list", home=tmp_path / "home")
    server.close()
    assert (done.returncode, done.stdout) == (3, "")
