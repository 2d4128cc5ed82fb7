"""Deploys under load drop nothing, broken commits roll back, `rollback` works, one deploy at a
time.

Fast versions of bench/downtime.py: a bounded loopback load through Nginx on a Python route and
on `/` while the deploy runs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import LIVE, REPO, e2e_load, fab, get, pm2_apps, pm2_jlist

ZD = LIVE


@pytest.fixture(scope="module")
def live(live_app):
    """The worker's live app, running this module's repository (not measured)."""
    return live_app


def current() -> str:
    return Path(ZD.root, "current").resolve().name


def deploy_under_load(sandbox, repo, *args):
    with e2e_load(
        [ZD.url("/api/ai/load"), ZD.url("/")], threads=3, max_requests=20_000, max_seconds=120
    ) as load:
        time.sleep(0.5)
        result = fab(sandbox, ZD, repo, *args)
        time.sleep(0.5)
    return result, load.result()


def test_code_change_under_load_drops_nothing(sandbox, live):
    sha = live.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    live.edit("server.js", 'const VERSION = "1";', 'const VERSION = "2";', "node v2")
    result, load = deploy_under_load(sandbox, live)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load.total > 100
    assert load.failed == 0, load.samples
    assert current().endswith(live.git("rev-parse", "HEAD").strip()[:12])
    assert sha
    assert get(ZD.url("/api/ai/x"))[2]["version"] == "2"
    assert get(ZD.url("/"))[2]["version"] == "2"


@pytest.mark.parametrize(
    "name,old,new,expect",
    [
        (
            "app.py",
            'VERSION = "2"',
            'VERSION = "2"\nimport does_not_exist_xyz',
            "does_not_exist_xyz",
        ),
        (
            "server.js",
            'const VERSION = "2";',
            'const VERSION = "2";\nthrow new Error("boom on start");',
            "boom on start",
        ),
    ],
)
def test_broken_commit_is_refused_and_nothing_is_dropped(sandbox, live, name, old, new, expect):
    before, base = current(), live.git("rev-parse", "HEAD").strip()
    live.edit(name, old, new, f"broken {name}")
    result, load = deploy_under_load(sandbox, live)
    assert result.returncode != 0
    assert expect in result.stdout + result.stderr  # the app's own error output is in the message
    assert load.failed == 0, load.samples
    assert current() == before
    assert get(ZD.url("/api/ai/x"))[1]["X-Release"] == before
    live.git("reset", "-q", "--hard", base)


def test_health_route_500_is_refused_before_the_switch(sandbox, live):
    """A commit that imports and starts fine but whose health route fails is refused; the live
    release serves on."""
    before, base = current(), live.git("rev-parse", "HEAD").strip()
    text = (live.path / "app.py").read_text()
    # Make every .../health path answer 500: wrap the app so that the trial run sees it too.
    (live.path / "app.py").write_text(
        text
        + """

_real_create_app = create_app


def create_app():  # noqa: F811
    app = _real_create_app()

    @app.before_request
    def _broken_health():
        from flask import request
        if request.path.endswith("/health"):
            return "broken", 500
    return app
"""
    )
    live.git("commit", "-qam", "health answers 500")
    result, load = deploy_under_load(sandbox, live)
    assert result.returncode != 0
    assert "500" in result.stdout + result.stderr
    assert load.failed == 0, load.samples
    assert current() == before
    live.git("reset", "-q", "--hard", base)


def python_exec_path() -> str:
    return next(
        item["pm2_env"]["pm_exec_path"]
        for item in pm2_jlist()
        if item["name"] == f"{ZD.app}-python"
    )


def test_requirements_change_hands_over_to_a_new_master_and_drops_nothing(sandbox, live):
    """A new requirements set needs a new Gunicorn master (a HUP keeps the old venv): it is started
    on the handover address, Nginx moves to it and back, and the new venv is what serves."""
    old_gunicorn = python_exec_path()
    live.edit("requirements.txt", "Flask==", "six==1.16.0\nFlask==", "needs six")
    live.edit("app.py", 'VERSION = "2"', 'VERSION = "2"\nimport six  # noqa: F401', "imports six")
    result, load = deploy_under_load(sandbox, live)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{ZD.app}-python: new-master" in result.stdout
    assert load.total > 100 and load.failed == 0, load.samples
    assert python_exec_path() != old_gunicorn  # another venv's gunicorn
    assert get(ZD.url("/api/ai/x"))[1]["X-Release"] == current()
    assert sorted(pm2_apps(ZD.app)) == [
        f"{ZD.app}-nodejs",
        f"{ZD.app}-python",
    ]  # the temporary master is gone


def test_requirements_change_whose_app_fails_to_import_is_refused_and_nothing_is_dropped(
    sandbox, live
):
    before, base = current(), live.git("rev-parse", "HEAD").strip()
    live.edit("requirements.txt", "six==1.16.0", "six==1.16.0\nidna==3.10", "needs idna")
    live.edit(
        "app.py",
        "import six  # noqa: F401",
        "import six  # noqa: F401\nimport does_not_exist_xyz",
        "broken import",
    )
    result, load = deploy_under_load(sandbox, live)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert (
        "handover address" in out and "does_not_exist_xyz" in out
    )  # the cause, from the new master's own output
    assert load.failed == 0, load.samples
    assert current() == before
    assert get(ZD.url("/api/ai/x"))[1]["X-Release"] == before
    assert sorted(pm2_apps(ZD.app)) == [f"{ZD.app}-nodejs", f"{ZD.app}-python"]
    live.git("reset", "-q", "--hard", base)


def test_rollback_serves_the_previous_release(sandbox, live):
    live.edit("app.py", 'VERSION = "2"', 'VERSION = "4"', "v4")
    assert fab(sandbox, ZD, live).returncode == 0
    newest = current()
    assert get(ZD.url("/api/ai/x"))[2]["version"] == "4"
    with e2e_load(
        [ZD.url("/api/ai/load"), ZD.url("/")], threads=3, max_requests=20_000, max_seconds=120
    ) as load:
        result = fab(sandbox, ZD, None, task="rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    assert load.result().failed == 0, load.result().samples
    assert current() != newest
    status, headers, body = get(ZD.url("/api/ai/x"))
    assert body["version"] == "2" and headers["X-Release"] == current()
    releases = fab(sandbox, ZD, None, task="releases")
    assert f"* {current()}" in releases.stdout


def test_one_deploy_at_a_time(sandbox, live):
    live.edit(
        "requirements.txt", "Flask==", "six==1.16.0\nFlask==", "a requirement more: a longer deploy"
    )
    cmd_env = {"KNOWN_HOSTS": sandbox.known_hosts}
    first = subprocess.Popen(
        [
            "fab",
            "-H",
            sandbox.target,
            "-i",
            sandbox.key,
            "deploy",
            "--source-dir",
            str(live.path),
            *sum((["--set", f"{k}={v}"] for k, v in ZD.settings().items()), []),
        ],
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**__import__("os").environ, **cmd_env},
    )
    lock = Path(ZD.root, ".deploy/lock.json")
    deadline = time.monotonic() + 30
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the first deploy never took the lock"
    second = fab(sandbox, ZD, live)
    assert second.returncode == 75, second.stdout + second.stderr
    assert "Another deploy is running" in second.stderr and "deploying" in second.stderr
    third = fab(sandbox, ZD, live, "--lock-wait", "120")
    first_out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, first_out
    assert third.returncode == 0, third.stdout + third.stderr
    assert "waiting" in third.stdout
    assert sorted(pm2_apps(ZD.app)) == [f"{ZD.app}-nodejs", f"{ZD.app}-python"]
