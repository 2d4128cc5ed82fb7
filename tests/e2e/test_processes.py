"""The app's Procfile processes: a real RQ worker on a real Redis, and a one-per-second scheduler.

The app is the example app with tests/e2e/apps/workers laid over it (queue_app.py: a route that
queues jobs; an RQ worker `python worker.py` whose jobs record which code ran them; a singleton
`clock: python clock.py` appending one line a second to data/ticks.log, in SHARED_PATHS). Redis is
Debian's `redis-server`, started by this module as
root in the test host's own network namespace (the pytest worker runs there), bound to 127.0.0.1
port 6390, `--daemonize yes`, its folder a temporary one of its own, saving nothing; the module
stops it at its end.

One app, its deploys shared in order by the tests (each starts from what the one before left):
a first deploy; a code change deployed while a 20 s job runs, under a bounded loopback load; a
release whose worker crashes at start (the trial catches it, nothing switches); a rollback. The
ticks are checked across all of them at the end. Cost: about 75 s on an idle machine (the job
test's ~20 s is the job's own length).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, AppRepo, Profile, e2e_load, fab, get, pm2_jlist, sh

APPS = REPO / "tests" / "e2e" / "apps" / "workers"
PR = Profile(
    "procs",
    "/home/ubuntu/procs",
    7601,
    7611,
    7621,
    extra={
        "SHARED_PATHS": "data/",
        "PY_ROUTES": "api/flask",
        "WSGI_APP": "queue_app:create_app()",
        "PROCESS_STOP_TIMEOUT": "worker=40,clock=5",
        "PROCESS_INSTANCES": "worker=2",
    },
)
REDIS_PORT = 6390
JOB_MARK = "mark-4f1c9e27b3"  # APP_ENV_FILE's value the worker's jobs must see
SHARED = Path(PR.root, "shared", "data")


@pytest.fixture(scope="module")
def redis():
    """A Redis of the module's own on the host's loopback."""
    if not shutil.which("redis-server"):
        pytest.fail(
            "redis-server is missing on this machine: apt install redis-server (.ci/run does)"
        )
    folder = tempfile.mkdtemp(prefix="procs-redis-", dir="/var/tmp")
    sh(
        f"redis-server --bind 127.0.0.1 --port {REDIS_PORT} --daemonize yes --dir {folder}"
        f" --pidfile {folder}/redis.pid --save '' --appendonly no --logfile {folder}/redis.log"
    )
    for _ in range(50):
        if sh(f"redis-cli -p {REDIS_PORT} ping", check=False).stdout.strip() == "PONG":
            break
        time.sleep(0.1)
    yield
    sh(f"redis-cli -p {REDIS_PORT} shutdown nosave", check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def app(sandbox, redis, tmp_path_factory):
    """The workers app, deployed once (its first deploy starts its worker and clock)."""
    base = tmp_path_factory.mktemp("procs")
    (base / "app.env").write_text(f"JOB_MARK={JOB_MARK}\n")
    PR.extra["APP_ENV_FILE"] = str(base / "app.env")
    repo = AppRepo(base / "app", overlay=APPS)
    result = fab(sandbox, PR, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker: start" in result.stdout and "clock: start" in result.stdout, result.stdout
    return repo


def current() -> str:
    return Path(PR.root, "current").resolve().name


def records() -> dict[str, dict]:
    path = SHARED / "jobs.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["tag"]: r for r in map(json.loads, lines)}


def wait_record(tag: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if tag in records():
            return records()[tag]
        time.sleep(0.2)
    raise AssertionError(f"no record of job {tag} after {seconds}s: {records()}")


def enqueue(seconds: float, tag: str) -> None:
    status, _, body = get(PR.url(f"/api/flask/enqueue?seconds={seconds}&tag={tag}"))
    assert status == 200, body


def running(name: str) -> list[dict]:
    """PM2's processes of a Procfile process, under either of its names."""
    names = (f"{PR.app}-{name}", f"{PR.app}-{name}-b")
    return [p for p in pm2_jlist() if p["name"] in names]


def test_first_deploy_runs_the_worker_and_the_clock(sandbox, app):
    for name, count in (("worker", 2), ("clock", 1)):
        procs = running(name)
        assert [p["pm2_env"]["status"] for p in procs] == ["online"] * count, name
        assert all(p["pm2_env"]["pm_cwd"].rstrip("/").endswith(current()) for p in procs)
    enqueue(0, "first")
    first = wait_record("first", 15)
    assert first["version"] == "1"
    assert first["mark"] == JOB_MARK  # APP_ENV_FILE reached the worker's environment...
    assert JOB_MARK not in json.dumps(running("worker"))  # ...and not through PM2's
    eco = Path(PR.root, "current", "ecosystem.config.js").read_text()
    assert f'"name": "{PR.app}-worker"' in eco and f'"name": "{PR.app}-clock"' in eco
    assert f"{PR.app}-web" not in eco  # the Procfile's web: line is served by the tool itself


def test_a_running_job_finishes_on_the_old_code_and_the_next_runs_the_new(sandbox, app):
    app.edit("jobs.py", 'VERSION = "1"', 'VERSION = "2"', "jobs v2")
    plan = fab(sandbox, PR, app, "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "worker    overlap:" in plan.stdout and "clock     stop-first:" in plan.stdout
    enqueue(20, "long")
    time.sleep(2)  # the worker has taken it
    with e2e_load(
        [PR.url("/api/flask/x"), PR.url("/")], threads=2, max_requests=20_000, max_seconds=120
    ) as load:
        result = fab(sandbox, PR, app)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job cut short" not in result.stdout, result.stdout
    summary = result.stdout.split("Deployed ", 1)[1]  # the last lines: PM2's view of each app
    assert f"{PR.app}-worker-b " in summary and f"{PR.app}-clock " in summary, summary
    assert load.result().failed == 0, load.result().samples
    print(f"\n[processes] the deploy while a 20 s job ran:\n{result.stdout}")
    print(f"[processes] load meanwhile: {load.result().total} requests, 0 failed")
    long = wait_record("long", 5)  # the deploy waited for it: it is recorded already
    assert long["version"] == "1" and long["finished"] - long["started"] >= 19.5
    enqueue(0, "next")
    assert wait_record("next", 15)["version"] == "2"
    assert [p["pm2_env"]["status"] for p in running("worker")] == ["online"] * 2


def test_a_worker_that_crashes_at_start_is_caught_by_the_trial(sandbox, app):
    before, base = current(), app.git("rev-parse", "HEAD").strip()
    app.edit(
        "worker.py",
        "import jobs  # noqa: F401  (the job code, imported at start)",
        'import jobs  # noqa: F401\n\nraise RuntimeError("worker broken on purpose")',
        "broken worker",
    )
    result = fab(sandbox, PR, app)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "failed its trial run" in out and "worker broken on purpose" in out, out
    assert current() == before
    assert [p["pm2_env"]["status"] for p in running("worker")] == ["online"] * 2
    app.git("reset", "-q", "--hard", base)


def test_rollback_brings_every_process_back(sandbox, app):
    before = current()
    result = fab(sandbox, PR, None, task="rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    assert current() != before
    for name, count in (("worker", 2), ("clock", 1)):
        procs = running(name)
        assert [p["pm2_env"]["status"] for p in procs] == ["online"] * count, name
        assert all(p["pm2_env"]["pm_cwd"].rstrip("/").endswith(current()) for p in procs), name
    enqueue(0, "after-rollback")
    assert wait_record("after-rollback", 15)["version"] == "1"


def test_the_clock_ticked_once_a_second_throughout(sandbox, app):
    time.sleep(2)
    ticks = [line.split() for line in (SHARED / "ticks.log").read_text().splitlines()]
    seconds = [int(t[0]) for t in ticks]
    assert len(seconds) == len(set(seconds)), "a second ticked twice"
    gaps = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
    assert max(gaps) <= 5 + 2, gaps  # PROCESS_STOP_TIMEOUT clock=5, plus 2 s
    assert {t[2] for t in ticks} == {"1"}  # clock.py never changed
    assert len({t[1] for t in ticks}) >= 3  # restarted at the deploy and at the rollback
    print(
        f"\n[processes] {len(seconds)} ticks over {seconds[-1] - seconds[0] + 1}s,"
        f" longest gap {max(gaps)}s; jobs: {json.dumps(records())}"
    )


def test_status_lists_the_processes(sandbox, app):
    result = fab(sandbox, PR, None, task="status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{PR.app}-clock" in result.stdout and "worker" in result.stdout, result.stdout
