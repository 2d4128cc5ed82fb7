"""Long HTTP requests across every kind of Python deploy, and a preloaded app that gets its code.

One app (the example with tests/e2e/apps/live laid over it: /api/flask/slow?seconds=N answers after
N seconds), its deploys shared in order by the tests, each starting from what the one before left:
1. a code change (a Gunicorn HUP) with a 45 s and a 20 s request in flight through Nginx, under a
   bounded loopback load: the deploy passes its health gate (HEALTH_TIMEOUT 20 s) while the old
   workers finish, says how long they took, and both requests answer 200 from the old code;
2. a TEMPLATES_DIR override adding `preload_app = True`, with a code change and a 20 s request in
   flight: a new master (never a HUP), the new code answers;
3. a code change with the override still there: a new master again, the new code answers (a HUP
   would have served the old code forever); a rollback: a new master, the code before answers;
4. the override removed, with a code change and a 20 s request in flight: a new master (the running
   one preloads), the new code answers;
5. a code change: a HUP again, and it reaches the app.
GUNICORN_GRACEFUL_TIMEOUT is 60 s (the 45 s request fits), three workers (two hold the long
requests, one serves the load), each replaced after 40 requests: during a drain every new worker
recycles, and is replaced while the old ones finish (else the load finds none). Cost: about 150 s
on an idle machine, most of it the 45 s request and the 20 s ones, overlapped with their deploys
(measured: 184 s with the first deploy's 30 s).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, AppRepo, Profile, e2e_load, fab, get

APPS = REPO / "tests" / "e2e" / "apps" / "live"
LR = Profile(
    "longreq",
    "/home/ubuntu/longreq",
    7331,
    7341,
    7351,
    extra={
        "WSGI_APP": "live_app:create_app()",
        "PY_ROUTES": "api/flask",
        "GUNICORN_GRACEFUL_TIMEOUT": "60",
        "GUNICORN_WORKERS": "3",
        # Workers recycle every 40 requests: during a drain, under the load, every new worker
        # does, and each must be replaced while the old ones finish (gunicorn_hooks.py).
        "GUNICORN_MAX_REQUESTS": "40",
        "GUNICORN_MAX_REQUESTS_JITTER": "0",
    },
)
GUNICORN = f"http://127.0.0.1:{LR.bind}"


class Slow(threading.Thread):
    """A GET of /api/flask/slow?seconds=N through Nginx, in the background; `answer` once done."""

    def __init__(self, seconds: float) -> None:
        super().__init__(daemon=True)
        self.seconds = seconds
        self.answer: tuple[int, dict, dict] = (0, {}, {})
        self.started = time.monotonic()
        self.took = 0.0
        self.start()
        time.sleep(1)  # a worker has taken it

    def run(self) -> None:
        self.answer = get(LR.url(f"/api/flask/slow?seconds={self.seconds}"), self.seconds + 60)
        self.took = time.monotonic() - self.started

    def result(self) -> tuple[int, dict]:
        self.join(self.seconds + 70)
        return self.answer[0], self.answer[2]


@pytest.fixture(scope="module")
def app(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("longreq") / "app", overlay=APPS)
    result = fab(sandbox, LR, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return repo


@pytest.fixture(scope="module")
def preloading(tmp_path_factory) -> Path:
    """A TEMPLATES_DIR whose gunicorn.conf.py.j2 is the bundled one plus `preload_app = True`."""
    folder = tmp_path_factory.mktemp("preload-templates")
    shutil.copy(REPO / "templates" / "gunicorn.conf.py.j2", folder)
    with (folder / "gunicorn.conf.py.j2").open("a") as fh:
        fh.write("\n# This app's own choice: import it once in the master.\npreload_app = True\n")
    return folder


def version(app: AppRepo, number: int) -> None:
    old = re.search(r'^VERSION = "(\d+)"', (app.path / "app.py").read_text(), re.M)
    assert old is not None
    app.edit("app.py", old.group(0), f'VERSION = "{number}"', f"v{number}")


def current() -> str:
    return Path(LR.root, "current").resolve().name


def serves(number: int) -> None:
    """The new code answers, directly and through Nginx, and Gunicorn's workers say it was imported
    from the live release."""
    for url in (f"{GUNICORN}/api/flask/x", LR.url("/api/flask/x")):
        status, headers, body = get(url)
        assert status == 200 and body.get("version") == str(number), (url, body)
        assert headers.get("X-Signalcraft-Release") == current(), (url, headers)


def planned(sandbox, app: AppRepo) -> str:
    """The Python line of `deploy --dry-run`'s plan: how and why."""
    plan = fab(sandbox, LR, app, "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    return next(line for line in plan.stdout.splitlines() if line.strip().startswith("python "))


def deploy_under_load(sandbox, app: AppRepo, *requests: Slow) -> str:
    with e2e_load(
        [LR.url("/api/flask/x"), LR.url("/")], threads=2, max_requests=20_000, max_seconds=150
    ) as load:
        result = fab(sandbox, LR, app)
    assert result.returncode == 0, result.stdout + result.stderr
    for request in requests:
        status, body = request.result()
        assert status == 200, (request.seconds, body)
    assert load.result().failed == 0, load.result().samples
    print(f"[long requests] load meanwhile: {load.result().summary()}")
    return result.stdout


def test_requests_in_flight_through_a_hup_finish_and_the_gate_waits_for_them(sandbox, app):
    version(app, 2)
    long, short = Slow(45), Slow(20)
    out = deploy_under_load(sandbox, app, long, short)

    assert f"{LR.app}-python: hup" in out, out
    drained = re.search(r"old Gunicorn workers drained in ([\d.]+) s \((\d+) requests?\)", out)
    # The 45 s request at least (the 20 s one may end before the gate's first look, on a slow host).
    assert drained and int(drained.group(2)) >= 1, out
    assert drained.group(0) in out.split("\nDeployed ", 1)[1], out  # in the summary too
    # The gate waited past HEALTH_TIMEOUT (20 s) for the 45 s request, begun before the deploy.
    assert 20 < float(drained.group(1)) <= 60, out
    assert long.took >= 45, long.took
    assert long.answer[2]["version"] == short.answer[2]["version"] == "1"  # begun on the old code
    serves(2)
    print(
        f"\n[long requests] HUP: {drained.group(0)}; 45 s: {long.took:.1f} s, 20 s: {short.took:.1f} s"
    )


def test_a_preloaded_app_gets_a_new_master_and_its_code(sandbox, app, preloading):
    LR.extra["TEMPLATES_DIR"] = str(preloading)
    version(app, 3)
    assert "the new gunicorn.conf.py preloads the app (preload_app)" in planned(sandbox, app)
    short = Slow(20)
    out = deploy_under_load(sandbox, app, short)

    assert f"{LR.app}-python: new-master" in out, out
    serves(3)
    print(f"\n[long requests] new master (preload on): 20 s request {short.took:.1f} s")

    version(app, 4)  # the case: a code change with the override in place
    result = fab(sandbox, LR, app)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{LR.app}-python: new-master" in result.stdout, result.stdout
    serves(4)

    # A rollback is a reload too: the preloaded master is replaced, never HUPed into old code.
    back = fab(sandbox, LR, None, task="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"{LR.app}-python: new-master" in back.stdout, back.stdout
    serves(3)


def test_removing_the_override_reloads_by_a_new_master_then_by_hups(sandbox, app):
    LR.extra.pop("TEMPLATES_DIR")
    version(app, 5)  # the running master preloads: a new master again (tests/unit says why)
    short = Slow(20)
    out = deploy_under_load(sandbox, app, short)

    assert f"{LR.app}-python: new-master" in out, out
    serves(5)
    print(f"\n[long requests] new master (preload off): 20 s request {short.took:.1f} s")

    version(app, 6)
    result = fab(sandbox, LR, app)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{LR.app}-python: hup" in result.stdout, result.stdout
    serves(6)
