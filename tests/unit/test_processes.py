"""The app's Procfile processes: parsing, settings, rendering, planning, the commands a move sends,
and the launcher (run for real, in a folder laid out as a release)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from invoke.exceptions import Exit

from signalcraft_deploy.core.facts import HostFacts, Pm2Process
from signalcraft_deploy.core.plan import How, Manifest, process_actions
from signalcraft_deploy.core.procfile import Process, ProcfileError, parse_procfile, processes
from signalcraft_deploy.core.render import render_ecosystem
from signalcraft_deploy.core.settings import Settings, SettingsError, load_settings
from signalcraft_deploy.remote import launch
from signalcraft_deploy.steps import processes as moves

PROCFILE = """# the app's processes
web: gunicorn 'app:create_app()'
worker: celery -A app.celery worker --loglevel info
clock: python clock.py
consumer: node consumer.js
"""


def settings(**overrides: str) -> Settings:
    return load_settings(overrides=overrides, environ={})


def declared(text: str = PROCFILE, **overrides: str) -> tuple[Process, ...]:
    return processes(text, settings(**overrides).process_lists())[0]


# ----------------------------------------------------------------------------- the Procfile


def test_a_procfile_is_read_with_its_defaults_and_its_web_line_left_out() -> None:
    found, notes = processes(PROCFILE, settings().process_lists())
    assert [(p.name, p.app, p.instances, p.singleton) for p in found] == [
        ("worker", "python", 1, False),
        ("clock", "python", 1, True),  # a conventional scheduler name
        ("consumer", "nodejs", 1, False),  # a .js script
    ]
    assert found[0].stop_signal == "SIGTERM" and found[0].stop_timeout == 30
    assert notes == [
        "Procfile line 2 (web:) is not run: the tool serves the web apps itself (WSGI_APP,"
        " NODE_SCRIPT)"
    ]


@pytest.mark.parametrize(
    "text,expect",
    [
        ("worker: rq worker\nrelease: flask db upgrade\n", "line 2: `release:`"),
        ("worker: rq worker\nrelease: flask db upgrade\n", "Set BEFORE_SWITCH"),
        ("worker rq worker\n", "line 1: 'worker rq worker' is not `name: command`"),
        ("\n\nwork er: x\n", "line 3"),
        ("worker.2: x\n", "process name 'worker.2' may hold only letters"),
        ("worker: a\nworker: b\n", "line 2: process 'worker' is declared again (first on line 1)"),
        ("python: x\n", "clashes with the names the tool gives"),
        ("worker-trial: x\n", "clashes with the names the tool gives"),
        ("worker:\n", "line 1"),
        ("worker: a\nworker-b: b\n", "'worker' and 'worker-b' clash"),
        ("worker: python it's.py\n", "line 1: the command of 'worker' cannot be split"),
    ],
)
def test_a_bad_procfile_is_refused_naming_its_line(text: str, expect: str) -> None:
    with pytest.raises(ProcfileError, match=None) as err:
        parse_procfile(text)
    assert expect in str(err.value)


def test_a_procfile_saved_with_a_byte_order_mark_reads_as_without() -> None:
    assert [p.name for p in declared("\ufeffworker: rq worker\r\nclock: python c.py\r\n")] == [
        "worker",
        "clock",
    ]


def test_the_runtime_follows_the_command_unless_process_app_says() -> None:
    text = "a: node x.js\nb: npm run jobs\nc: ./bin/run.mjs\nd: celery worker\ne: python -m x\n"
    assert [p.app for p in declared(text)] == ["nodejs", "nodejs", "nodejs", "python", "python"]
    assert declared(text, PROCESS_APP="d=nodejs")[3].app == "nodejs"


def test_a_command_runs_without_a_shell_unless_it_needs_one() -> None:
    plain = Process("w", "celery -A 'my app' worker", "python")
    assert plain.argv == ["celery", "-A", "my app", "worker"]
    for line in ("rq worker $QUEUES", "a && b", "x > log", "X=$Y python x.py"):
        assert Process("w", line, "python").argv == ["/bin/sh", "-c", line]


def test_a_line_a_shell_would_read_differently_runs_as_the_shell_would() -> None:
    """dash does not exec a `sh -c` line's command: the stop signal would kill the shell only and
    leave its worker running outside PM2. The shapes a shell is not needed for run without one."""
    cases = {
        "rq worker high default  # two queues": ["rq", "worker", "high", "default"],
        "celery worker --url=h#frag": ["celery", "worker", "--url=h#frag"],
        "exec celery -A app worker": ["celery", "-A", "app", "worker"],
        "FOO=1 celery -A app.celery worker --loglevel=INFO": [
            "/usr/bin/env", "FOO=1", "celery", "-A", "app.celery", "worker", "--loglevel=INFO"
        ],
        "A='x y' exec node w.js": ["/usr/bin/env", "A=x y", "node", "w.js"],
    }  # fmt: skip
    for line, argv in cases.items():
        assert Process("w", line, "python").argv == argv
    for line in ('echo "a # b" # c', "FOO=1", "exec -a name w"):
        assert Process("w", line, "python").argv == ["/bin/sh", "-c", line]
    assert [p.app for p in declared("a: FOO=1 node w.js\nb: exec npm run w\n")] == ["nodejs"] * 2


# ----------------------------------------------------------------------------- settings


def test_the_process_settings_apply_by_name() -> None:
    found = declared(
        PROCESS_INSTANCES="worker=3",
        PROCESS_STOP_TIMEOUT="worker=120,clock=5",
        PROCESS_STOP_SIGNAL="consumer=SIGINT",
        SINGLETONS="consumer",
    )
    by = {p.name: p for p in found}
    assert by["worker"].instances == 3 and by["worker"].stop_timeout == 120
    assert by["clock"].stop_timeout == 5 and not by["clock"].singleton  # SINGLETONS replaces
    assert by["consumer"].stop_signal == "SIGINT" and by["consumer"].singleton
    assert not any(p.singleton for p in declared(SINGLETONS="none"))


@pytest.mark.parametrize(
    "key,value,expect",
    [
        ("PROCESS_INSTANCES", "worker=0", "a whole number from 1 to 64"),
        ("PROCESS_INSTANCES", "worker", "name=value pairs"),
        ("PROCESS_STOP_SIGNAL", "worker=SIGKILL", "SIGTERM, SIGINT, SIGQUIT"),
        ("PROCESS_APP", "worker=ruby", "python, nodejs"),
        ("SINGLETONS", "a b", "process names separated by commas"),
    ],
)
def test_a_bad_process_setting_is_refused_naming_its_key(key: str, value: str, expect: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings(**{key: value})
    assert str(err.value).startswith(key) and expect in str(err.value)


@pytest.mark.parametrize(
    "key,value",
    [
        ("PROCESS_INSTANCES", "wroker=2"),
        ("PROCESS_STOP_TIMEOUT", "beat=10"),
        ("SINGLETONS", "cron"),
        ("PROCESS_APP", "web=python"),
    ],
)
def test_a_process_the_procfile_does_not_declare_is_refused_naming_the_key(
    key: str, value: str
) -> None:
    with pytest.raises(ProcfileError) as err:
        declared(**{key: value})
    assert str(err.value).startswith(f"{key} names ") and f"Fix {key}" in str(err.value)


def test_a_singleton_with_more_than_one_instance_is_refused() -> None:
    with pytest.raises(ProcfileError, match="PROCESS_INSTANCES gives clock 2 instances"):
        declared(PROCESS_INSTANCES="clock=2")


# ----------------------------------------------------------------------------- rendering


def test_each_process_is_a_pm2_app_of_the_ecosystem_file_after_the_web_apps(tmp_path: Path) -> None:
    s = replace(settings(), processes=declared())
    text = render_ecosystem(s, "/srv/venvs/abc")
    apps = ecosystem_apps(text, tmp_path)
    assert [a["name"] for a in apps] == [
        "signalcraft-python",
        "signalcraft-nodejs",
        "signalcraft-worker",
        "signalcraft-clock",
        "signalcraft-consumer",
    ]
    worker, consumer = apps[2], apps[4]
    assert worker["script"] == f"{s.current_dir}/.signalcraft/launch.py"
    assert worker["args"] == [
        "/srv/venvs/abc/bin",
        "--",
        *["celery", "-A", "app.celery", "worker", "--loglevel", "info"],
    ]
    assert consumer["args"][0] == f"{s.current_dir}/node_modules/.bin"
    assert worker["exec_mode"] == "fork" and worker["stop_exit_codes"] == [0]
    assert worker["kill_timeout"] > 30_000  # above its PROCESS_STOP_TIMEOUT
    assert set(worker["env"]) == {"PYTHONUNBUFFERED"}  # no value of the app's .env


def ecosystem_apps(text: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The apps of a rendered ecosystem file, as Node.js reads them."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    (tmp_path / "ecosystem.config.js").write_text(text)
    out = subprocess.run(
        ["node", "-e", "console.log(JSON.stringify(require(process.argv[1]).apps))", "--"]
        + [str(tmp_path / "ecosystem.config.js")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return list(json.loads(out))


# ----------------------------------------------------------------------------- planning


def proc(name: str, release: str, status: str = "online", pid: int = 500) -> Pm2Process:
    return Pm2Process(
        name=name,
        pm_id=pid,
        pid=pid if status == "online" else 0,
        status=status,
        restarts=0,
        started_ms=1,
        exec_mode="fork",
        exec_path="",
        cwd=f"/home/ubuntu/signalcraft/releases/{release}",
        interpreter="python3",
        args=(),
        memory=1,
    )


def manifest(release: str, venv: str = "/v/1", python_code: str = "py-1", **kw: Any) -> Manifest:
    fields = {f: "" for f in Manifest.__dataclass_fields__ if f != "processes"}
    return replace(
        Manifest(**{**fields, "processes": []}),  # type: ignore[arg-type]
        release=release,
        venv=venv,
        python_code=python_code,
        node_code="node-1",
        **kw,
    )


def live(s: Settings, running: list[Pm2Process]) -> tuple[dict[str, Any], HostFacts]:
    """What the host has: release r1 with the Procfile's processes, and these PM2 processes."""
    old = manifest("r1")
    records = [{**p.record(), "release": "r1", "venv": "/v/1"} for p in s.processes]
    old_dict = {**old.__dict__, "processes": records}
    return old_dict, HostFacts(manifest=old_dict, current_release="r1", pm2=running)


def plan_of(s: Settings, new: Manifest, running: list[Pm2Process], changed: Any = None) -> dict:
    old, facts = live(s, running)
    actions, records = process_actions(s, new, facts, old, changed, same_release=False)
    return {a.name: (a.how, a.why) for a in actions} | {"_records": records}


def both_running() -> list[Pm2Process]:
    return [proc("signalcraft-worker", "r1"), proc("signalcraft-clock-b", "r1", pid=501)]


PF = "worker: python worker.py\nclock: python clock.py\n"


def test_a_code_change_moves_workers_with_overlap_and_singletons_stop_first() -> None:
    s = replace(settings(), processes=declared(PF))
    plan = plan_of(s, manifest("r2", python_code="py-2"), both_running())
    assert plan["worker"][0] is How.OVERLAP and plan["clock"][0] is How.STOP_FIRST
    assert {r["release"] for r in plan["_records"]} == {"r2"}


def test_an_unchanged_process_keeps_its_release_and_a_stopped_one_starts() -> None:
    s = replace(settings(), processes=declared(PF))
    running = [proc("signalcraft-worker", "r1"), proc("signalcraft-clock", "r1", "stopped")]
    plan = plan_of(s, manifest("r2"), running, changed=[])
    assert plan["worker"] == (How.NONE, "unchanged")
    assert plan["clock"][0] is How.START and "stopped" in plan["clock"][1]
    assert [r["release"] for r in plan["_records"]] == ["r1", "r2"]


def test_a_python_change_does_not_reach_a_node_process() -> None:
    s = replace(settings(), processes=declared("consumer: node consumer.js\n"))
    plan = plan_of(s, manifest("r2"), [proc("signalcraft-consumer", "r1")], changed=["jobs.py"])
    assert plan["consumer"][0] is How.NONE
    plan = plan_of(s, manifest("r2"), [proc("signalcraft-consumer", "r1")], changed=["x.js"])
    assert plan["consumer"] == (How.OVERLAP, "files it reads changed: x.js")


def test_a_new_venv_or_procfile_line_reaches_the_process() -> None:
    s = replace(settings(), processes=declared(PF))
    plan = plan_of(s, manifest("r2", venv="/v/2"), both_running(), changed=[])
    assert "Python environment changed" in plan["worker"][1]
    s2 = replace(settings(), processes=declared(PF, PROCESS_INSTANCES="worker=2"))
    old, facts = live(s, both_running())
    actions, _ = process_actions(s2, manifest("r2"), facts, old, [], same_release=False)
    assert actions[0].why == "its Procfile line or PROCESS_* settings changed"


def test_a_process_gone_from_the_procfile_stops() -> None:
    s = replace(settings(), processes=declared(PF))
    old, facts = live(s, both_running())
    gone = replace(s, processes=declared("worker: python worker.py\n"))
    actions, _ = process_actions(gone, manifest("r2"), facts, old, [], same_release=False)
    assert [(a.name, a.how) for a in actions] == [("worker", How.NONE), ("clock", How.STOP)]


def test_off_the_fleet_s_first_host_a_singleton_runs_nowhere() -> None:
    s = replace(settings(), processes=declared(PF), singleton_host=False)
    plan = plan_of(s, manifest("r2", python_code="py-2"), both_running())
    assert plan["clock"][0] is How.STOP  # found running here: stopped
    plan = plan_of(s, manifest("r2"), [proc("signalcraft-worker", "r1")], changed=[])
    assert plan["clock"][0] is How.ELSEWHERE


# ----------------------------------------------------------------------------- the commands


def test_the_stop_signal_goes_to_every_instance_at_once_then_pm2_deletes() -> None:
    s = settings()
    command = moves.stop_command(s, [([41, 42], "SIGTERM", 40), ([43], "SIGINT", 5)], ["a", "b"])
    assert "kill -TERM 41 42 2>/dev/null" in command and "kill -INT 43 2>/dev/null" in command
    assert "[ $i -lt 400 ]" in command and "[ $i -lt 50 ]" in command
    assert command.index(" wait;") < command.index("delete")
    assert command.count("( kill") == 2  # both groups wait side by side


WAIT_ONLINE, WAIT_FAILED = moves.wait_online, moves.started_failed


class FakeHost:
    """PM2 as converge sees it: a list that start and stop change, and the order of the calls."""

    def __init__(self, listed: list[Pm2Process]):
        self.listed, self.calls = list(listed), []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(moves, "pm2_processes", lambda c, s: list(self.listed))
        monkeypatch.setattr(moves, "start", self.start)
        monkeypatch.setattr(moves, "stop", self.stop)
        monkeypatch.setattr(moves, "wait_online", lambda *a, **k: {})

    def start(self, c: Any, s: Settings, entries: list[dict[str, Any]], config: str) -> None:
        for e in entries:
            self.calls.append(("start", e["name"]))
            self.listed.append(proc(e["name"], e["cwd"].rsplit("/", 1)[-1], pid=900))

    def stop(self, c: Any, s: Settings, apps: dict[str, Any]) -> list[str]:
        for name in apps:
            self.calls.append(("stop", name))
        self.listed = [p for p in self.listed if p.name not in apps]
        return []


def test_converge_overlaps_workers_and_stops_singletons_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = replace(settings(), processes=declared(PF))
    host = FakeHost(both_running())
    host.install(monkeypatch)
    records = [{**p.record(), "release": "r2", "venv": "/v/2"} for p in s.processes]
    moves.converge(None, s, moves.wanted(s, records), {"worker", "clock"})
    assert host.calls == [
        ("stop", "signalcraft-clock-b"),  # the singleton first
        ("start", "signalcraft-worker-b"),  # the worker's new instances under its other name
        ("start", "signalcraft-clock"),
        ("stop", "signalcraft-worker"),  # the old worker once the new one is online
    ]
    host.calls.clear()
    moves.converge(None, s, moves.wanted(s, records), {"worker", "clock"})
    assert host.calls == []  # everything runs as wanted: nothing moves


def test_a_worker_left_under_both_names_by_a_cut_short_move_moves_without_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = replace(settings(), processes=declared("worker: python worker.py\n"))
    host = FakeHost([proc("signalcraft-worker", "r1"), proc("signalcraft-worker-b", "r2", pid=502)])
    host.install(monkeypatch)
    records = [{**p.record(), "release": "r3", "venv": "/v/3"} for p in s.processes]
    moves.converge(None, s, moves.wanted(s, records), {"worker"})
    assert host.calls == [
        ("stop", "signalcraft-worker-b"),  # a name for the new instances: not a start of a running
        ("start", "signalcraft-worker-b"),  # name, which PM2 takes as a restart of it
        ("stop", "signalcraft-worker"),  # and one old worker runs until the new one is online
    ]


def test_a_singleton_pm2_could_not_delete_gets_no_second_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = replace(settings(), processes=declared(PF))
    host = FakeHost(both_running())
    host.install(monkeypatch)
    monkeypatch.setattr(moves, "stop", lambda c, s, apps: host.calls.append(("stop", *apps)) or [])
    records = [{**p.record(), "release": "r2", "venv": "/v/2"} for p in s.processes]
    with pytest.raises(Exit, match="PM2 still has signalcraft-clock-b"):
        moves.converge(None, s, moves.wanted(s, records), {"worker", "clock"})
    assert host.calls == [("stop", "signalcraft-clock-b")]  # nothing started


def test_a_new_singleton_that_crashes_a_moment_after_its_start_fails_the_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Singletons have no trial: the move itself must see the new one stay online. PM2 says
    `online` as soon as it spawned the process, so the first look proved nothing."""
    s = replace(settings(), processes=declared(PF))
    host = FakeHost(both_running())
    host.install(monkeypatch)
    monkeypatch.setattr(moves, "wait_online", WAIT_ONLINE)
    monkeypatch.setattr(moves, "started_failed", lambda c, s, problems: RuntimeError(problems))
    clock = [0.0]
    monkeypatch.setattr(
        moves,
        "time",
        SimpleNamespace(
            monotonic=lambda: clock[0], sleep=lambda t: clock.__setitem__(0, clock[0] + t)
        ),
    )

    def listed(c: Any, s: Settings) -> list[Pm2Process]:  # the new clock restarts after 1 s
        crashed = clock[0] > 1 and [p for p in host.listed if p.name == "signalcraft-clock"]
        return [replace(p, restarts=1) if crashed and p in crashed else p for p in host.listed]

    monkeypatch.setattr(moves, "pm2_processes", listed)
    records = [{**p.record(), "release": "r2", "venv": "/v/2"} for p in s.processes]
    with pytest.raises(RuntimeError, match="signalcraft-clock restarted 1 time"):
        moves.converge(None, s, moves.wanted(s, records), {"worker", "clock"})
    monkeypatch.setattr(moves, "app_output", lambda c, s, name: "Traceback ...")
    message = WAIT_FAILED(None, s, {"signalcraft-clock": "signalcraft-clock restarted 1 time"})
    assert "Procfile line" in str(message) and "PROCESS_APP" in str(message)
    assert ("stop", "signalcraft-worker") not in host.calls  # the old worker still runs


def test_an_undone_trial_stops_its_workers_with_their_own_signal_and_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = replace(settings(), processes=declared(PF, PROCESS_STOP_SIGNAL="worker=SIGQUIT"))
    worker = s.processes[0]
    monkeypatch.setattr(
        moves, "pm2_processes", lambda c, s: [proc("signalcraft-worker-trial", "r2", pid=77)]
    )
    stopped: dict[str, Any] = {}
    monkeypatch.setattr(moves, "stop", lambda c, s, apps: stopped.update(apps) or [])
    run = SimpleNamespace(c=None, s=s, process_trial=([worker], 0.0))
    moves.remove_process_trial(run)  # type: ignore[arg-type]
    (procs, declared_as) = stopped["signalcraft-worker-trial"]
    assert [p.pid for p in procs] == [77]
    assert moves.stop_group(procs, declared_as)[1:] == ("SIGQUIT", 30)


def test_a_process_that_exits_by_itself_is_told_where_a_one_off_command_belongs() -> None:
    listed = [proc("signalcraft-migrate-trial", "r2", "stopped")]
    problems = moves.online_problems(listed, {"signalcraft-migrate-trial": 1})
    assert "exited by itself with status 0" in problems["signalcraft-migrate-trial"]
    assert "BEFORE_SWITCH" in problems["signalcraft-migrate-trial"]
    listed = [proc("signalcraft-worker", "r2", "errored")]
    assert moves.online_problems(listed, {"signalcraft-worker": 1}) == {
        "signalcraft-worker": "signalcraft-worker is errored"
    }


# ----------------------------------------------------------------------------- the launcher


def release_with_launcher(tmp_path: Path, values: dict[str, str] | None) -> Path:
    here = tmp_path / "releases" / "r1" / ".signalcraft"
    here.mkdir(parents=True)
    shutil.copy(launch.__file__, here / "launch.py")
    if values is not None:
        (here / "env.json").write_text(json.dumps(values))
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    return here / "launch.py"


@pytest.mark.parametrize("values", [{"DATABASE_URL": "postgres://x", "HOME": "/x"}, None])
def test_the_launcher_execs_the_command_with_the_release_s_values(
    tmp_path: Path, values: dict[str, str] | None
) -> None:
    script = release_with_launcher(tmp_path, values)
    show = "import json,os; print(json.dumps([os.getpid(), dict(os.environ)]))"
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "venv" / "bin"), "--"]
        + [sys.executable, "-c", show],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": "/from/pm2"},
    )
    assert done.returncode == 0, done.stderr
    _, env = json.loads(done.stdout)
    assert env["HOME"] == "/from/pm2"  # what the process was started with wins over the file
    assert env["PATH"].startswith(f"{tmp_path / 'venv' / 'bin'}:")
    assert env["VIRTUAL_ENV"] == str(tmp_path / "venv")
    assert env["SIGNALCRAFT_RELEASE"] == "r1"
    assert env.get("DATABASE_URL") == (values or {}).get("DATABASE_URL")


def test_the_launcher_says_what_it_cannot_run(tmp_path: Path) -> None:
    script = release_with_launcher(tmp_path, None)
    done = subprocess.run(
        [sys.executable, "-I", str(script), "/nowhere", "--", "no-such-program-xyz"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 127
    assert "cannot run 'no-such-program-xyz'" in done.stderr
    assert "looked in /nowhere, then PATH" in done.stderr and "PROCESS_APP" in done.stderr
    (script.parent / "env.json").write_text('["not", "an object"]')
    done = subprocess.run(
        [sys.executable, "-I", str(script), "/nowhere", "--", "true"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "not an object of strings" in done.stderr


WORKER = (
    "import os, signal, sys, time\n"
    "def warm(*_): open(sys.argv[1], 'w').write('finished'); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, warm)\n"
    "open(sys.argv[2] + '.tmp', 'w').write(str(os.getpid())); os.rename(sys.argv[2] + '.tmp', sys.argv[2])\n"
    "time.sleep(30)\n"
)  # fmt: skip


@pytest.mark.parametrize("exec_", ["", "exec "])
def test_the_stop_signal_reaches_the_command_of_a_line_run_through_a_shell(
    tmp_path: Path, exec_: str
) -> None:
    """dash runs a `sh -c` line's command as its child and dies of SIGTERM without passing it on:
    the worker kept running outside PM2. The launcher passes it on to the command."""
    script = release_with_launcher(tmp_path, None)
    done, pid_file = tmp_path / "done", tmp_path / "pid"
    line = f"cd {tmp_path} && {exec_}{sys.executable} -c {shlex.quote(WORKER)} {done} {pid_file}"
    argv = Process("w", line, "python").argv
    assert argv[:2] == ["/bin/sh", "-c"]
    launcher = subprocess.Popen(
        [sys.executable, "-I", str(script), str(tmp_path / "venv" / "bin"), "--", *argv]
    )
    for _ in range(100):
        if pid_file.exists():
            break
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    launcher.send_signal(signal.SIGTERM)
    try:
        assert launcher.wait(timeout=10) == 0  # the worker's exit status: PM2 leaves it stopped
        assert done.read_text() == "finished"
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)  # an orphan the test made, if the launcher left one


def test_a_failed_move_brings_every_process_back_to_the_serving_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The undo of `move processes`: the live release's records again (the singleton stops before
    its old one starts, the old worker is online before the new one stops); none after a first
    deploy."""
    s = replace(settings(), processes=declared(PF))
    new = [proc("signalcraft-worker-b", "r2"), proc("signalcraft-clock", "r2", pid=501)]
    host = FakeHost(new)
    host.install(monkeypatch)
    old_records = [{**p.record(), "release": "r1", "venv": "/v/1"} for p in s.processes]
    run = SimpleNamespace(
        c=None,
        s=s,
        prev="r1",
        facts=HostFacts(manifest={"processes": old_records}),
        plan=SimpleNamespace(processes=[]),
    )
    moves.restore_processes(run)  # type: ignore[arg-type]
    assert host.calls == [
        ("stop", "signalcraft-clock"),
        ("start", "signalcraft-worker"),
        ("start", "signalcraft-clock"),
        ("stop", "signalcraft-worker-b"),
    ]
    assert {p.cwd.rsplit("/", 1)[-1] for p in host.listed} == {"r1"}
    host.calls.clear()
    run.prev = None  # a first deploy: nothing was serving
    moves.restore_processes(run)  # type: ignore[arg-type]
    assert sorted(host.calls) == [("stop", "signalcraft-clock"), ("stop", "signalcraft-worker")]


# ----------------------------------------------------------------------------- where singletons run


@pytest.mark.parametrize(
    ("run", "recorded", "here"),
    [
        ("auto", None, True),  # a host never deployed with singletons recorded runs them
        ("auto", {"singleton_host": True}, True),
        ("auto", {"singleton_host": False}, False),  # one host of a fleet deployed alone
        ("yes", {"singleton_host": False}, True),  # a fleet cut down to this host
        ("no", {"singleton_host": True}, False),
    ],
)
def test_a_task_on_one_host_runs_singletons_as_its_last_deploy_recorded_unless_told(
    run: str, recorded: dict[str, Any] | None, here: bool
) -> None:
    from signalcraft_deploy.core.plan import as_recorded_host
    from signalcraft_deploy.core.settings import load_settings

    s = load_settings(overrides={"RUN_SINGLETONS": run})
    assert as_recorded_host(s, recorded).singleton_host is here


def test_a_fleet_runs_singletons_on_its_first_host_or_none_and_refuses_yes() -> None:
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.steps.fleet import singletons_here

    group = [SimpleNamespace(label="web1"), SimpleNamespace(label="web2")]
    auto = load_settings(overrides={})
    assert [singletons_here(auto, m, group).singleton_host for m in group] == [True, False]  # type: ignore[arg-type]
    no = load_settings(overrides={"RUN_SINGLETONS": "no"})
    assert [singletons_here(no, m, group).singleton_host for m in group] == [False, False]  # type: ignore[arg-type]
    yes = load_settings(overrides={"RUN_SINGLETONS": "yes"})
    with pytest.raises(Exit) as err:
        singletons_here(yes, group[0], group)  # type: ignore[arg-type]
    assert "RUN_SINGLETONS" in str(err.value) and "every host would run" in str(err.value)
    assert singletons_here(yes, group[0], group[:1]).singleton_host  # type: ignore[arg-type]
