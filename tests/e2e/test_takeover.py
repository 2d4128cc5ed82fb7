"""The first deploy on a host as it is today (bare `python app.py &`, Node-only PM2 file) takes over
without refusing a request, and `rollback` returns the host to exactly that state."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_HOME,
    EXAMPLE,
    AppRepo,
    Profile,
    clean_host,
    e2e_load,
    fab,
    get,
    legacy_site,
    legacy_venv,
    pm2_jlist,
    sh,
    start_legacy_host,
)

TK = Profile("tk", "/home/ubuntu/tk", 8941, 3941, 8094)
OLD = Path("/home/ubuntu/tk-old")
SITE = Path("/etc/nginx/sites-available/tk")
OLD_SITE = legacy_site(TK)


def legacy_pids() -> list[int]:
    out = sh("pgrep -u ubuntu -f 'python app.py'", check=False).stdout
    return [int(p) for p in out.split()]


def stop_everything() -> None:
    for pid in legacy_pids():
        sh(f"kill {pid}", check=False)
    clean_host(TK)
    sh(f"rm -rf {OLD}", check=False)
    sh("nginx -t && nginx -s reload", check=False)


@pytest.fixture
def before_state(sandbox):
    """The host as the plan found it: Flask by hand on the Gunicorn port, Node.js in PM2 fork mode,
    a hand-made site."""
    stop_everything()
    sh(f"cp -r {EXAMPLE} {OLD} && rm -f {OLD}/REVISION && chown -R ubuntu: {OLD}")
    legacy_venv(f"{OLD}/venv")
    start_legacy_host(TK, OLD, SITE, OLD_SITE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and get(TK.url("/api/ai/x"))[0] != 200:
        time.sleep(0.2)
    assert get(TK.url("/api/ai/x"))[2]["app"] == "flask"
    assert get(TK.url("/"))[2]["app"] == "nodejs"
    yield
    stop_everything()


def test_first_deploy_takes_over_and_rollback_restores(sandbox, before_state, tmp_path):
    repo = AppRepo(tmp_path / "app")
    [legacy] = legacy_pids()
    with e2e_load(
        [TK.url("/api/ai/load"), TK.url("/")], threads=3, max_requests=50_000, max_seconds=180
    ) as load:
        time.sleep(0.5)
        result = fab(sandbox, TK, repo)
        time.sleep(0.5)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = load.result()
    assert counts.total > 100 and counts.failed == 0, (counts.samples, result.stdout)
    assert "record takeover" in result.stdout

    # Both apps under PM2 and online, no stray Python process, each route answered by the right app.
    apps = {}
    for item in pm2_jlist():
        if item["name"].startswith("tk-"):
            apps.setdefault(item["name"], []).append(
                (item["pm2_env"]["status"], item["pm2_env"]["exec_mode"])
            )
    assert sorted(apps) == ["tk-nodejs", "tk-python"]
    assert all(status == "online" for procs in apps.values() for status, _ in procs)
    assert {mode for _, mode in apps["tk-nodejs"]} == {"cluster_mode"}
    assert legacy_pids() == [] and not Path(f"/proc/{legacy}").exists()
    release = Path(TK.root, "current").resolve().name
    for route in ("api/ai", "api/iot", "api/lightweight-analyze", "api/flask"):
        status, headers, body = get(TK.url(f"/{route}/x"))
        assert (status, body["app"], headers["X-Release"]) == (200, "flask", release)
    status, headers, body = get(TK.url("/"))
    assert (status, body["app"], headers["X-Release"]) == (200, "nodejs", release)
    dump = json.loads(Path(f"{APP_HOME}/.pm2/dump.pm2").read_text())
    assert {"tk-python", "tk-nodejs"} <= {app["name"] for app in dump}
    audit = Path(TK.root, ".deploy/audit.log").read_text()
    assert '"takeover"' in audit

    # rollback returns the host to exactly its old state, the bare process included.
    back = fab(sandbox, TK, None, task="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert SITE.read_text() == OLD_SITE
    assert len(legacy_pids()) == 1
    # The old Node.js entry is back where it ran, in the deploy user's own PM2; the apps' account's
    # holds none.
    names = {
        item["name"]: item["pm2_env"]["exec_mode"]
        for item in pm2_jlist("ubuntu")
        if item["name"].startswith("tk-")
    }
    assert names == {"tk-nodejs": "fork_mode"}
    assert not [item for item in pm2_jlist() if item["name"].startswith("tk-")]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (get(TK.url("/api/ai/x"))[0], get(TK.url("/"))[0]) != (
        200,
        200,
    ):
        time.sleep(0.2)
    status, headers, body = get(TK.url("/api/ai/x"))
    assert (status, body.get("app"), headers.get("X-Release")) == (200, "flask", "dev"), back.stdout
    status, headers, body = get(TK.url("/"))
    assert (status, body.get("app")) == (200, "nodejs"), (
        body,
        back.stdout,
        sh("sudo -u ubuntu -H pm2 ls").stdout,
    )
