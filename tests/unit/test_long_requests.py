"""Long requests across a Gunicorn reload, without a host: the health gate tells old workers that
only finish their requests (draining) from old workers that still serve (stale), the hooks every
gunicorn.conf.py carries name the release a worker's code was imported from, and the plan never
HUPs a master that preloads the app.

The e2e module tests/e2e/test_long_requests.py shows the same on a real host.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from signalcraft_deploy.core.render import render_gunicorn_conf
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import health
from signalcraft_deploy.remote import probe

R0, R1 = "20250301T000000Z-0000000aaaaa", "20250304T050607Z-fffffff9e8d7"
MASTER, NEW_WORKER, OLD_WORKER = 4100, 4101, 4090


class Host:
    """What the probe reads of the host, second by second: which worker runs which release, which
    connections each holds, and when the old worker exits. Its clock is faked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, s: Settings, spec: dict[str, Any]) -> None:
        self.now = 0.0
        self.exits_at = 1e9  # the old worker's exit
        self.holds: list[tuple[float, set[str]]] = [(0.0, {"101"})]  # (from, connections)
        self.answers = R1  # the release Gunicorn's answers name
        releases = spec["release_dir"].rsplit("/", 1)[0]
        clock = SimpleNamespace(monotonic=lambda: self.now, sleep=self.sleep)
        monkeypatch.setattr(probe, "time", clock)
        monkeypatch.setattr(
            probe, "fetch", lambda url, host=None, timeout=3.0: (200, [self.answers], "")
        )
        monkeypatch.setattr(
            probe,
            "cwd_of",
            lambda pid: os.path.realpath(f"{releases}/{R0 if pid == OLD_WORKER else R1}"),
        )
        monkeypatch.setattr(probe, "children", lambda pid: self.workers())
        monkeypatch.setattr(probe, "established", lambda port: {"101", "102", "103"})
        monkeypatch.setattr(
            probe, "socket_inodes", lambda pid: self.held() if pid == OLD_WORKER else set()
        )

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def workers(self) -> list[int]:
        return [NEW_WORKER] + ([OLD_WORKER] if self.now < self.exits_at else [])

    def held(self) -> set[str]:
        return [conns for since, conns in self.holds if since <= self.now][-1]

    def gate(self, spec: dict[str, Any]) -> dict[str, Any]:
        class Watch:
            def ask(self) -> None:
                pass

            def state(self) -> dict[str, Any]:
                return {
                    spec["apps"][0]["name"]: [
                        {"pid": MASTER, "status": "online", "restarts": 0, "mode": "fork"}
                    ]
                }

        return probe.gate_with(spec, Watch())


@pytest.fixture
def s(load: Any) -> Settings:
    return load({"GUNICORN_GRACEFUL_TIMEOUT": "60", "HEALTH_TIMEOUT": "30"})


def python_spec(s: Settings) -> dict[str, Any]:
    return health.gate_spec(s, R1, f"{s.releases_dir}/{R1}", {"python": True})


def test_an_old_worker_finishing_a_request_begun_before_the_reload_passes_and_is_waited_for(
    s, monkeypatch
):
    """A 45 s request: the old worker holds its one connection until it exits at 41.2 s, past
    HEALTH_TIMEOUT (30 s), within GUNICORN_GRACEFUL_TIMEOUT (60 s)."""
    spec = python_spec(s)
    host = Host(monkeypatch, s, spec)
    host.exits_at = 41.2

    verdict = host.gate(spec)

    assert verdict["ok"], verdict
    drain = verdict["drain"][s.python_app]
    assert drain["requests"] == 1 and drain["left"] == 0
    assert 41.2 <= drain["seconds"] <= 41.6
    assert health.drain_text(drain).startswith("old Gunicorn workers drained in 41.")
    assert health.drain_text(drain).endswith("s (1 request)")


def test_the_gate_never_waits_past_the_graceful_timeout_and_says_what_gunicorn_does_then(
    s, monkeypatch
):
    spec = python_spec(s)
    host = Host(monkeypatch, s, spec)  # the old worker never exits

    verdict = host.gate(spec)

    assert verdict["ok"], verdict
    drain = verdict["drain"][s.python_app]
    assert drain["left"] == 1 and 60 <= drain["seconds"] <= 60.5
    text = health.drain_text(drain)
    assert "after Gunicorn's graceful_timeout (60 s), not waited for" in text
    assert "GUNICORN_TIMEOUT" in text


def test_an_old_worker_that_takes_a_new_request_after_the_reload_fails_the_gate(s, monkeypatch):
    spec = python_spec(s)
    host = Host(monkeypatch, s, spec)
    host.holds.append((2.0, {"101", "102"}))  # a connection it accepted after the gate saw it

    verdict = host.gate(spec)

    assert not verdict["ok"]
    assert (
        f"PM2 app {s.python_app}: 1 process(es) still run from another release"
        in (verdict["problems"])
    )


def test_an_idle_old_worker_is_stale_not_draining(s, monkeypatch):
    """An old worker exits at once when it holds nothing: one that stays (a HUP that did not take)
    fails the gate at HEALTH_TIMEOUT, as before."""
    spec = python_spec(s)
    host = Host(monkeypatch, s, spec)
    host.holds = [(0.0, set())]

    verdict = host.gate(spec)

    assert not verdict["ok"]
    assert 30 <= host.now < 31


def test_answers_from_code_imported_from_the_old_release_fail_the_gate(s, monkeypatch):
    """A preloaded master's new workers run from the new release but answer with the old code."""
    spec = python_spec(s)
    host = Host(monkeypatch, s, spec)
    host.holds, host.exits_at, host.answers = [(0.0, set())], 0.0, R0

    verdict = host.gate(spec)

    assert not verdict["ok"]
    assert any(f"answered by release {R0}, not {R1}" in p for p in verdict["problems"])


def test_the_drain_lasts_gunicorns_own_graceful_timeout_when_it_was_read(s):
    """A template may set graceful_timeout itself: the gate waits what Gunicorn will."""
    spec = health.gate_spec(s, R1, f"{s.releases_dir}/{R1}", {"python": True}, graceful=90)
    assert spec["apps"][0]["drain"] == 90
    assert python_spec(s)["apps"][0]["drain"] == 60  # not read: GUNICORN_GRACEFUL_TIMEOUT


def test_a_drain_with_no_request_held_reports_nothing(s, monkeypatch):
    spec = python_spec(s)
    host = Host(monkeypatch, s, spec)
    host.exits_at = 0.0

    verdict = host.gate(spec)

    assert verdict["ok"] and "drain" not in verdict
    assert health.drain_text({}) == ""


# ---------------------------------------------------------------- the hooks in gunicorn.conf.py


class Worker(SimpleNamespace):
    """A sync worker, as the hooks see it (they wrap the apps of Gunicorn's WSGI worker classes)."""


Worker.__module__ = "gunicorn.workers.sync"


class AsgiWorker(SimpleNamespace):
    pass


AsgiWorker.__module__ = "gunicorn.workers.gasgi"


def load_conf(s: Settings, monkeypatch: pytest.MonkeyPatch, folder: Path) -> dict[str, Any]:
    """The rendered gunicorn.conf.py executed as Gunicorn does (a namespace of its own)."""
    monkeypatch.setenv("SIGNALCRAFT_CHDIR", str(folder))
    monkeypatch.setenv("SIGNALCRAFT_ENV_KEYS", "[]")  # the file sets it: put back after the test
    namespace: dict[str, Any] = {"__file__": "gunicorn.conf.py"}
    exec(compile(render_gunicorn_conf(s), "gunicorn.conf.py", "exec"), namespace)
    return namespace


def app_module(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> None:
    module = types.ModuleType(name)
    module.__file__ = str(path)
    monkeypatch.setitem(sys.modules, name, module)


def answer_of(worker: Worker) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    worker.wsgi({}, lambda status, headers, exc_info=None: seen.extend(headers))
    return seen


@pytest.fixture
def releases(tmp_path: Path, load: Any) -> tuple[Settings, Path]:
    s = load({"DEPLOY_ROOT": str(tmp_path), "WSGI_APP": "shopapp:create_app()"})
    for name in (R0, R1):
        (tmp_path / "releases" / name).mkdir(parents=True)
    (tmp_path / "current").symlink_to(f"releases/{R0}")
    return s, tmp_path


def new_worker() -> Worker:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Signalcraft-Release", "x")])
        return [b"ok"]

    return Worker(wsgi=app)


def test_a_worker_that_imports_the_app_names_the_release_its_module_file_is_in(
    releases, monkeypatch
):
    s, root = releases
    monkeypatch.delitem(sys.modules, "shopapp", raising=False)
    conf = load_conf(s, monkeypatch, root / "current")
    monkeypatch.delitem(sys.modules, "_signalcraft_seen", raising=False)
    worker = new_worker()
    conf["post_fork"](None, worker)  # not preloaded: the master never imported it
    app_module(monkeypatch, "shopapp", root / "current" / "shopapp.py")  # the worker imports it
    conf["post_worker_init"](worker)
    (root / "current").unlink()
    (root / "current").symlink_to(f"releases/{R1}")  # the switch, later

    assert [h for h in answer_of(worker) if h[0] == "X-Signalcraft-Release"] == [
        ("X-Signalcraft-Release", R0)
    ]


def test_the_workers_of_a_preloaded_master_name_the_release_it_imported_the_app_from(
    releases, monkeypatch
):
    """preload_app: the master imported the app from R0; after the switch and a HUP its new workers
    run from R1 but still answer with R0's code, and say so."""
    s, root = releases
    monkeypatch.delitem(sys.modules, "_signalcraft_seen", raising=False)
    app_module(monkeypatch, "shopapp", root / "current" / "shopapp.py")
    load_conf(s, monkeypatch, root / "current")["when_ready"](None)  # the master, at its start
    (root / "current").unlink()
    (root / "current").symlink_to(f"releases/{R1}")
    conf = load_conf(s, monkeypatch, root / "current")  # the HUP: the file is read again
    conf["on_reload"](types.SimpleNamespace(WORKERS={}))
    worker = new_worker()
    conf["post_fork"](None, worker)
    conf["post_worker_init"](worker)

    assert ("X-Signalcraft-Release", R0) in answer_of(worker)


def test_a_template_hook_still_runs_before_the_tools_own(releases, monkeypatch, tmp_path):
    s, root = releases
    folder = tmp_path / "templates"
    folder.mkdir()
    bundled = Path(__file__).parents[2] / "templates" / "gunicorn.conf.py.j2"
    (folder / "gunicorn.conf.py.j2").write_text(
        bundled.read_text() + "\ncalls = []\ndef post_worker_init(worker):\n    calls.append(1)\n"
    )
    from dataclasses import replace

    monkeypatch.delitem(sys.modules, "_signalcraft_seen", raising=False)
    conf = load_conf(replace(s, templates_dir=str(folder)), monkeypatch, root / "current")
    worker = new_worker()
    conf["post_fork"](None, worker)  # not preloaded: the worker imports the app itself
    app_module(monkeypatch, "shopapp", root / "current" / "shopapp.py")
    conf["post_worker_init"](worker)

    assert conf["calls"] == [1]
    assert ("X-Signalcraft-Release", R0) in answer_of(worker)


# ---------------------------------------------------------------- the plan: HUP or a new master

NO_PRELOAD = {"preload_app": False, "bind": ["127.0.0.1:8001"], "reuse_port": False}


def python_plan(
    tmp_path: Path, read: dict[str, Any] | None, checked: bool = True
) -> tuple[str, str, bool]:
    """How a change to app.py reloads Gunicorn, given Gunicorn's own reading of the live and the new
    gunicorn.conf.py (`read`; None: not read) and whether the live release's manifest records a
    master this version checked: (how, why, the new manifest's record)."""
    from signalcraft_deploy.core.plan import make_plan
    from tests.unit.test_plan import LATER, LIVE, files, live_host, manifest_for

    facts = live_host(tmp_path, LIVE)
    assert facts.manifest is not None
    facts.manifest["gunicorn_checked"] = checked
    facts.gunicorn = read
    s, m, configs = manifest_for(tmp_path, files(app_py="a2"), now=LATER)
    plan = make_plan(s, m, configs, facts, ["app.py"])
    action = plan.action("python")
    return str(action.how), action.why, plan.manifest.gunicorn_checked


def test_a_code_change_hups_a_master_whose_configuration_preloads_nothing(tmp_path):
    assert python_plan(tmp_path, {"live": NO_PRELOAD, "new": NO_PRELOAD}) == (
        "hup",
        "files it reads changed: app.py",
        True,
    )


@pytest.mark.parametrize(
    ("read", "checked", "why"),
    [
        (
            {"live": NO_PRELOAD, "new": {**NO_PRELOAD, "preload_app": True}},
            True,
            "the new gunicorn.conf.py preloads the app (preload_app)",
        ),
        (
            {"live": {**NO_PRELOAD, "preload_app": True}, "new": NO_PRELOAD},
            True,
            "the running Gunicorn master preloads the app (preload_app): a HUP keeps its code",
        ),
        (
            {"live": NO_PRELOAD, "new": NO_PRELOAD},
            False,
            "no record of how the running Gunicorn master was started",
        ),
        (
            {"error": "Gunicorn refused its configuration (exit status 1)"},
            True,
            "could not be read (Gunicorn refused its configuration (exit status 1))",
        ),
        (
            {"live": NO_PRELOAD, "new": {**NO_PRELOAD, "reuse_port": True}},
            True,
            "Gunicorn's reuse_port changes",
        ),
        (
            {"live": NO_PRELOAD, "new": {**NO_PRELOAD, "bind": ["127.0.0.1:9001"]}},
            True,
            "Gunicorn's bind changes",
        ),
    ],
    ids=["new preloads", "live preloads", "older master", "unreadable", "reuse_port", "bind"],
)
def test_a_master_a_hup_cannot_reload_gets_a_new_master_which_is_recorded(
    tmp_path, read, checked, why
):
    how, said, recorded = python_plan(tmp_path, read, checked)

    assert (how, recorded) == ("new-master", True)
    assert why in said


def test_without_gunicorns_reading_the_plan_keeps_its_hup_and_the_record_as_it_was(tmp_path):
    """Rollbacks and pm2-reload do not read it; the record is carried, never made up."""
    assert python_plan(tmp_path, None, checked=False) == (
        "hup",
        "files it reads changed: app.py",
        False,
    )


def test_an_asgi_workers_app_is_left_as_it_is(releases, monkeypatch):
    """Its app is not a WSGI app: no header (the gate then goes by the workers' directory)."""
    s, root = releases
    conf = load_conf(s, monkeypatch, root / "current")
    app_module(monkeypatch, "shopapp", root / "current" / "shopapp.py")

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        pass

    worker = AsgiWorker(wsgi=asgi_app)
    conf["post_fork"](None, worker)
    conf["post_worker_init"](worker)

    assert worker.wsgi is asgi_app


def test_the_probe_of_gunicorns_configuration_never_shows_an_app_value(load, tmp_path) -> None:
    """The probe executes gunicorn.conf.py (a TEMPLATES_DIR one may compute from the app's values):
    its error, printed in the plan as the reason for a new master, is masked like all the tool
    prints."""
    import json as _json
    import re as _re

    from invoke import Result

    from signalcraft_deploy.core.facts import HostFacts, Pm2Process
    from signalcraft_deploy.host.gunicorn import effective_config
    from tests.unit.conftest import mock_host

    secret = "s3cr3t-Pa55word-value"
    (tmp_path / "app.env").write_text(f"DATABASE_PASSWORD={secret}\n")
    s = load({"APP_ENV_FILE": str(tmp_path / "app.env")})
    said = {"error": f"ValueError: invalid literal for int() with base 10: '{secret}'"}
    c = mock_host(run={_re.compile(r"(?s).*"): Result(stdout=_json.dumps(said) + "\n")})
    venv = f"{s.deploy_root}/venvs/abc"
    master = Pm2Process(
        s.python_app, 0, 4100, "online", 0, 0, "fork", f"{venv}/bin/gunicorn", "", "", (), 0
    )
    found = effective_config(c, s, HostFacts(pm2=[master]), "workers = 2\n")
    assert "error" in found and secret not in found["error"], found


def test_the_gate_s_drain_is_bounded_whatever_gunicorn_s_reading_says() -> None:
    """Gunicorn's reading runs as the apps' account, with the running master's GUNICORN_CMD_ARGS
    (which that account sets through its own PM2): a graceful_timeout of a billion seconds must not
    make the health gate, which holds the deploy lock, wait past GUNICORN_GRACEFUL_TIMEOUT's own
    bound (3600 s)."""
    from signalcraft_deploy.core.facts import HostFacts
    from signalcraft_deploy.steps.deploy import DeployRun

    run = SimpleNamespace(facts=HostFacts(gunicorn={"new": {"graceful_timeout": 10**9}}))
    assert DeployRun.graceful.fget(run) == 3600  # type: ignore[attr-defined]
    run = SimpleNamespace(facts=HostFacts(gunicorn={"new": {"graceful_timeout": 90}}))
    assert DeployRun.graceful.fget(run) == 90  # type: ignore[attr-defined]
