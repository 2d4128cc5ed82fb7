"""The front doors: `fab` and `invoke` list the same tasks with summaries, every flag has help,
and a bad value stops before any connection is tried."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

TASKS = ["deploy", "freeze", "init", "install", "logs", "nginx-check", "pm2-reload", "releases", "remove",
         "render-configs", "rollback", "settings", "setup", "status", "unlock"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, env=env)


def listed(output: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^  (\S+)\s+(\S.*)$", output, re.M)}


def test_fab_and_invoke_list_the_same_tasks_with_summaries():
    fab = listed(run("fabric", "--list").stdout)
    inv = listed(run("invoke", "--list").stdout)
    assert sorted(fab) == sorted(inv) == TASKS
    assert all(summary.strip() for summary in fab.values())


@pytest.mark.parametrize("name", TASKS)
def test_every_flag_has_help(name):
    out = run("invoke", "--help", name).stdout
    assert out.startswith(f"Usage: inv[oke] [--core-opts] {name}")
    options = out.split("Options:", 1)[1]
    flags = re.findall(r"^\s+(-\w, )?--[\w-]+(=\w+)?\s*(.*)$", options, re.M)
    assert flags and all(text.strip() for _, _, text in flags), out


@pytest.mark.parametrize("setting,message", [
    ("NODE_PORT=abc", "NODE_PORT (flag --set): found 'abc'; expected a whole number from 1 to 65535."),
    ("GUNICORN_BIND=0.0.0.0:8001", "GUNICORN_BIND (flag --set): found '0.0.0.0:8001'; expected a loopback address"),
    ("PY_ROUTES=api/ai;rm -rf /", "PY_ROUTES (flag --set): found route 'api/ai;rm -rf /'"),
    ("GUNICORN_BIN=127.0.0.1:9", "GUNICORN_BIN (flag --set): unknown setting. Did you mean GUNICORN_BIND?"),
])
def test_a_bad_value_stops_before_connecting(setting, message):
    # Validation fails before any connection; the target is a closed loopback port all the same.
    result = run("fabric", "-H", "ubuntu@127.0.0.1:1", "deploy", "--set", setting)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
