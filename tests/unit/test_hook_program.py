"""The hook program (remote/hook.py) run as the host runs it, and the hooks' settings and dry-run
lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from signalcraft_deploy import remote
from signalcraft_deploy.core.settings import SettingsError, load_settings
from signalcraft_deploy.host.hooks import Hook
from signalcraft_deploy.steps.plan_report import hook_lines
from tests.unit.conftest import hook_program


def run_hook(
    tmp_path: Path, command: str, timeout: int = 30, env_text: str = ""
) -> tuple[list[str], dict]:
    release = tmp_path / "release"
    release.mkdir(exist_ok=True)
    (release / ".env").write_text(env_text)
    (tmp_path / "venv/bin").mkdir(parents=True, exist_ok=True)
    spec = {
        "name": "before-switch",
        "command": command,
        "cwd": str(release),
        "fallback_cwd": str(tmp_path),
        "path_first": str(tmp_path / "venv/bin"),
        "env_file": str(release / ".env"),
        "env": {"DEPLOY_RELEASE": "r2", "DEPLOY_PREVIOUS": "r1", "DEPLOY_SHA": "abc"},
        "timeout": timeout,
    }
    return hook_program(spec, tmp_path)


def test_the_hook_runs_in_the_release_with_its_env_and_the_venv_first_and_masks_the_secrets(
    tmp_path,
):
    out, verdict = run_hook(
        tmp_path,
        'echo "$PWD $DEPLOY_RELEASE $DEPLOY_PREVIOUS $DEPLOY_SHA"; echo "db=$DB_URL"; '
        'echo "${PATH%%:*}"; echo err >&2; exit 4',
        env_text='export DB_URL="postgres://u:pw-9876@db/app"\n# a comment\nSHORT=ab\n',
    )
    assert out == [f"{tmp_path}/release r2 r1 abc", "db=***", str(tmp_path / "venv/bin"), "err"]
    assert verdict["exit"] == 4 and verdict["timed_out"] is False and verdict["tail"] == out


def test_a_hook_past_its_time_limit_is_stopped_with_its_children(tmp_path):
    started = time.monotonic()
    out, verdict = run_hook(
        tmp_path, "echo begin; (sleep 47.5; echo late) & sleep 47.5; echo end", timeout=1
    )
    assert time.monotonic() - started < 15
    assert out == ["begin"] and verdict["timed_out"] is True and verdict["exit"] != 0
    assert subprocess.run(["pgrep", "-f", "sleep 47.5"], capture_output=True).returncode == 1


def test_a_hook_runs_in_the_deploy_root_when_the_release_is_not_there(tmp_path):
    spec_dir = tmp_path / "root"
    spec_dir.mkdir()
    spec = {
        "name": "on-failure",
        "command": "pwd",
        "cwd": str(tmp_path / "missing"),
        "fallback_cwd": str(spec_dir),
        "env": {},
        "timeout": 5,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-", json.dumps(spec)],
        input=remote.program("hook"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.splitlines()[0] == str(spec_dir)


def test_hook_settings_and_the_dry_run_lines():
    s = load_settings(
        environ={},
        overrides={
            "BEFORE_SWITCH": "flask --app app:create_app db upgrade",
            "AFTER_SWITCH_FAILURE": "rollback",
            "AFTER_SWITCH": "curl -fsS localhost/warm",
            "HOOK_TIMEOUT": "90",
        },
    )
    assert (
        Hook.BEFORE_SWITCH.command(s) == "flask --app app:create_app db upgrade"
        and Hook.ON_FAILURE.command(s) is None
    )
    lines = hook_lines(s)
    assert (
        len(lines) == 2
        and "BEFORE_SWITCH `flask --app app:create_app db upgrade`: once" in lines[0]
    )
    assert "on failure: rollback" in lines[1] and "(time limit 90 s)" in lines[1]
    assert hook_lines(load_settings(environ={})) == []


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("AFTER_SWITCH_FAILURE", "ignore", "'warn' or 'rollback'"),
        ("HOOK_TIMEOUT", "0", "a whole number from 1 to 86400"),
        (
            "BEFORE_SWITCH",
            "flask db upgrade\nrm -rf /",
            "without surrounding spaces or line breaks",
        ),
    ],
)
def test_bad_hook_settings_name_the_key(key, value, expected):
    with pytest.raises(SettingsError) as err:
        load_settings(environ={}, overrides={key: value})
    assert str(err.value).startswith(f"{key} (flag --set)") and expected in str(err.value)


def test_the_env_file_is_read_in_order_and_an_unreadable_one_is_empty(tmp_path):
    from signalcraft_deploy.remote.hook import read_env_file

    (tmp_path / ".env").write_text("export A='1 2'\n# B=no\nC=3 # note\n")
    assert read_env_file(str(tmp_path / ".env")) == [("A", "1 2"), ("C", "3")]
    assert read_env_file("/nonexistent/.env") == []
