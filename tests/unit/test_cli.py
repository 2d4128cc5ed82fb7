"""The front doors: `fab` and `invoke` list the same tasks with summaries, every flag has help,
and a bad value stops before any connection is tried."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

TASKS = [
    "console",
    "deploy",
    "exec",
    "freeze",
    "init",
    "install",
    "logs",
    "maintenance",
    "nginx-check",
    "pm2-reload",
    "releases",
    "remove",
    "render-configs",
    "rollback",
    "settings",
    "setup",
    "status",
    "unlock",
]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, env=env
    )


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


@pytest.mark.parametrize(
    "setting,message",
    [
        (
            "NODE_PORT=abc",
            "NODE_PORT (flag --set): found 'abc'; expected a whole number from 1 to 65535.",
        ),
        (
            "GUNICORN_BIND=0.0.0.0:8001",
            "GUNICORN_BIND (flag --set): found '0.0.0.0:8001'; expected a loopback address",
        ),
        ("PY_ROUTES=api/ai;rm -rf /", "PY_ROUTES (flag --set): found route 'api/ai;rm -rf /'"),
        (
            "GUNICORN_BIN=127.0.0.1:9",
            "GUNICORN_BIN (flag --set): unknown setting. Did you mean GUNICORN_BIND?",
        ),
    ],
)
def test_a_bad_value_stops_before_connecting(setting, message):
    # Validation fails before any connection; the target is a closed loopback port all the same.
    result = run("fabric", "-H", "ubuntu@127.0.0.1:1", "deploy", "--set", setting)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# ----------------------------------------------------------------------------- the same connection
# flags everywhere


def connecting_tasks() -> dict[str, object]:
    """Every task of the collection whose module opens a host (`open_host`): the ones that
    connect."""
    from signalcraft_deploy.collection import ns
    from signalcraft_deploy.host import connect

    return {
        name: t
        for name, t in ns.tasks.items()
        if getattr(sys.modules[t.body.__module__], "open_host", None) is connect.open_host
    }


def test_every_task_that_connects_takes_the_same_connection_flags():
    tasks = connecting_tasks()
    # The walk finds them (a test that found none could not fail); a new task that connects is held
    # to the same.
    assert {"deploy", "rollback", "releases", "status", "logs", "unlock", "setup"} <= set(tasks), (
        sorted(tasks)
    )
    assert not {"init", "freeze", "settings"} & set(tasks)
    lacking = {}
    for name, t in tasks.items():
        helps = {a.name: a.help for a in t.get_arguments()}
        missing = {
            f"--{flag.replace('_', '-')}" + ("" if flag in helps else " (help)")
            for flag in ("known_hosts", "accept_new_host")
            if not helps.get(flag)
        }
        if missing:
            lacking[name] = sorted(missing)
    assert not lacking, f"tasks that connect without the connection flags: {lacking}"


@pytest.mark.parametrize("name", ["status", "logs", "releases"])
def test_the_connection_flags_parse_for_tasks_that_had_none(name, tmp_path):
    # Parsed, then the connection is tried (a closed loopback port): the flags are known, the
    # failure is the port's.
    result = run(
        "fabric",
        "-H",
        "ubuntu@127.0.0.1:1",
        name,
        "--known-hosts",
        str(tmp_path / "known_hosts"),
        "--accept-new-host",
    )
    assert "No idea what" not in result.stderr, result.stderr
    assert result.returncode == 3 and "Cannot connect to ubuntu@127.0.0.1:1" in result.stderr, (
        result.stderr
    )


@pytest.mark.parametrize("fleet_task", ["releases_fleet", "status_fleet", "rollback_fleet"])
def test_a_fleet_passes_the_connection_flags_to_every_host(fleet_task, monkeypatch, load):
    from fabric import Connection
    from invoke.exceptions import Exit

    from signalcraft_deploy.steps import fleet
    from signalcraft_deploy.steps.one_host import DeployOptions

    seen = []

    def refuse(c, s, **flags):
        seen.append((c.port, flags))
        raise Exit("unreachable", code=3)

    monkeypatch.setattr(fleet, "open_host", refuse)
    hosts = [Connection("ubuntu@127.0.0.1:1"), Connection("ubuntu@127.0.0.1:2")]
    s = load()
    calls = {
        "releases_fleet": lambda: fleet.releases_fleet(hosts, s, "/k", True),
        "status_fleet": lambda: fleet.status_fleet(hosts, s, None, None, False, "/k", True),
        "rollback_fleet": lambda: fleet.rollback_fleet(
            hosts, s, None, DeployOptions(known_hosts="/k", accept_new_host=True)
        ),
    }
    with pytest.raises(Exit):
        calls[fleet_task]()
    assert sorted(seen) == [
        (1, {"known_hosts": "/k", "accept_new_host": True}),
        (2, {"known_hosts": "/k", "accept_new_host": True}),
    ]


def test_every_task_s_list_line_is_a_whole_sentence() -> None:
    """`fab --list` shows the first line of a task's docstring: a sentence cut by a line break
    there reads as a half."""
    from signalcraft_deploy import ns

    firsts = {n: (ns.tasks[n].body.__doc__ or "").lstrip().splitlines()[0] for n in ns.task_names}
    assert {n: line for n, line in firsts.items() if not line.endswith(".")} == {}
