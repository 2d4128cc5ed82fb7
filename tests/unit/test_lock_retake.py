"""A lost connection's undo runs under the deploy lock, taken again on the new connection (issue 25,
D9).

The lock is an flock held by a command whose stdin is the SSH channel: when the host sees the
connection close, the lock is free at once, and a deploy waiting for it (--lock-wait) starts. An
undo run on the new connection without the lock would switch `current`, start PM2 apps and install
the site beside that deploy's own steps. When the host has not seen the connection close (a network
cut), the lost session still holds the lock; then the message must not say it was released.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from invoke import Context

from signalcraft_deploy.host import connect
from signalcraft_deploy.host import lock as lock_module
from signalcraft_deploy.host.lock import DeployLock


@pytest.fixture
def s(tmp_path: Path, load, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(
        "PM2_HOME", str(tmp_path / "pm2")
    )  # the lock closes the PM2 home it finds: not this machine's
    monkeypatch.setattr(lock_module, "RETAKE_WAIT", 1)
    return load({"DEPLOY_ROOT": str(tmp_path / "deploy"), "PM2": "pm2-not-installed-here"})


def lock(s: Any, since: str) -> DeployLock:
    return DeployLock(Context(), s, {"user": "me", "since": since}, 0, print, print)


def lost(held: DeployLock) -> None:
    """The host saw the connection close: the lock command ended (stdin closed), the flock is
    free."""
    held.held.release()


def free(s: Any) -> bool:
    return subprocess.run(["flock", "-n", f"{s.state_dir}/lock", "true"]).returncode == 0


def test_the_lock_is_taken_again_on_the_new_connection(s: Any) -> None:
    first = lock(s, "10:00")
    first.__enter__()
    lost(first)
    assert free(s)
    assert first.retake() is None
    try:
        assert not free(s)  # the undo runs under the lock
    finally:
        first.__exit__(None, None, None)
    assert free(s)


def test_another_deploy_that_took_the_lock_after_the_drop_is_not_undone_beside(s: Any) -> None:
    first, waiting = lock(s, "10:00"), lock(s, "10:01")
    first.__enter__()
    lost(first)
    waiting.__enter__()  # the deploy that waited with --lock-wait starts
    try:
        why = first.retake()
    finally:
        waiting.__exit__(None, None, None)
    assert why is not None and "another deploy" in why and "since 10:01" in why
    first.__exit__(None, None, None)  # nothing to release, nothing raised


def test_the_lost_session_still_holding_the_lock_is_named_not_called_released(s: Any) -> None:
    first = lock(s, "10:00")
    first.__enter__()
    stale = first.held
    try:
        first.held = type(stale)(
            first.c, "true"
        )  # our side lost the channel; the host's command still runs
        why = first.retake()
    finally:
        stale.release()
    assert why is not None and "still holds" in why and "unlock --force" in why


def test_reconnect_takes_the_held_lock_again(s: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first = lock(s, "10:00")
    first.__enter__()
    lost(first)
    monkeypatch.setattr(connect, "is_remote", lambda c: True)
    monkeypatch.setattr(connect, "_connect", lambda c: None)
    monkeypatch.setattr(Context, "close", lambda self: None, raising=False)
    try:
        assert connect.reconnect(first.c, tries=1) is None
        assert not free(s)
    finally:
        first.__exit__(None, None, None)
