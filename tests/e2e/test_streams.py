"""Long requests, streams and WebSockets through Nginx (issue 28's Nginx part).

One app, the example with tests/e2e/apps/live laid over it (a slow Flask route, Flask server-sent
events with or without `X-Accel-Buffering: no`, the Node.js WebSocket endpoint /live/ws), deployed
once; the tests share it in order, each starting from what the one before left:

- from the first deploy on, a 90 s Flask request and two event streams in flight;
- two deploys that change only the site (so each is an Nginx reload and nothing else): the first
  with no WebSocket open, the second with 5. The reload with the clients takes no longer than the
  one without (both times printed); the clients stay open; a new client reaches the new
  configuration; `status` shows the old workers still draining;
- nginx-check refuses a kept location that gives up on Gunicorn sooner than GUNICORN_TIMEOUT;
- setup's bound on old workers (NGINX_DRAIN_SECONDS, set to 3 s here and back to the default
  after): after a reload, no old worker started under it remains beyond it, and its WebSocket
  clients see the connection end without a close frame (Nginx cannot send one);
- the 90 s request answers 200 (Nginx's 60 s default answered 504); the stream marked by the app,
  and the unmarked one on a STREAM_ROUTES prefix, arrive with their events spaced as sent (an
  unmarked one elsewhere arrives all at its end: the baseline).

Cost: about 130 s on an idle machine (besides the session's setup): the first deploy, then the 90 s
request, which the rest runs beside.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest

from bench.wsclient import WebSocketClient
from tests.e2e.conftest import REPO, AppRepo, Profile, fab, get, sh
from tests.e2e.hosts import on_this_machine

APPS = REPO / "tests" / "e2e" / "apps" / "live"
ST = Profile(
    "streams",
    "/home/ubuntu/streams",
    8751,
    8761,
    8771,
    extra={
        "WSGI_APP": "live_app:create_app()",
        "NODE_SCRIPT": "live_server.js",
        # the 90 s request and two streams each hold a sync worker; the gate and the rest need one
        "GUNICORN_WORKERS": "5",
    },
)
WS_URL = f"ws://127.0.0.1:{ST.listen}/live/ws"
DRAIN = 3  # the bound set for the last test
_pool = ThreadPoolExecutor(max_workers=6)
_held: dict[str, Any] = {}  # what a test leaves for a later one: futures, clients


@pytest.fixture(scope="module")
def live(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("streams") / "app", overlay=APPS)
    result = fab(sandbox, ST, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    # the long calls, in flight through every reload below, checked at the end
    _held["slow"] = _pool.submit(slow_request, 90)
    _held["marked"] = _pool.submit(sse, "/api/flask/stream?events=31&interval=1")
    _held["unmarked"] = _pool.submit(sse, "/api/flask/stream?events=6&interval=1&mark=0")
    time.sleep(1)
    yield repo
    for client in _held.get("clients", []):
        client.close()


def deploy_site_change(sandbox, repo: AppRepo, **settings: str) -> tuple[float, float, str]:
    """A deploy whose only change is the site: the `reload nginx` step's time, the verified reload's
    own (on the host, without SSH), and the output."""
    profile = replace(ST, extra={**ST.extra, **settings})
    result = fab(sandbox, profile, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    took = re.search(r"reload nginx\s+([0-9.]+)s\s+Nginx serves .*?, ([0-9.]+)s\)", result.stdout)
    assert took, result.stdout
    return float(took.group(1)), float(took.group(2)), result.stdout


def sse(path: str) -> dict[str, Any]:
    """GET `path` through Nginx and read its events as they arrive: status, and each event's
    arrival and send times."""
    conn = http.client.HTTPConnection("127.0.0.1", ST.listen, timeout=150)
    conn.request("GET", path)
    resp = conn.getresponse()
    events, buffer = [], b""
    while chunk := resp.read1(65536):
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            events.append((time.time(), json.loads(event.removeprefix(b"data: "))["sent"]))
    conn.close()
    return {"status": resp.status, "events": events}


def spacing(stream: dict[str, Any]) -> tuple[float, float]:
    """(the largest difference between an arrival gap and its send gap, the largest lag)."""
    events = stream["events"]
    gaps = [abs((b[0] - a[0]) - (b[1] - a[1])) for a, b in pairwise(events)]
    return max(gaps), max(arrived - sent for arrived, sent in events)


def slow_request(seconds: int) -> tuple[int, float]:
    started = time.monotonic()
    status, _, _ = get(f"http://127.0.0.1:{ST.listen}/api/flask/slow?seconds={seconds}", 150)
    return status, time.monotonic() - started


def current_workers() -> set[str]:
    ps = sh("ps -C nginx -o pid=,args=", check=False).stdout
    return {
        line.split()[0]
        for line in ps.splitlines()
        if "worker process" in line and "shutting down" not in line
    }


def running(pids: set[str]) -> set[str]:
    return set(sh(f"ps -o pid= -p {','.join(pids)}", check=False).stdout.split())


def test_a_reload_with_open_websockets_takes_no_longer_and_keeps_them(sandbox, live) -> None:
    step_without, without, _ = deploy_site_change(sandbox, live, NODE_TIMEOUT="121")
    clients = [WebSocketClient(WS_URL) for _ in range(5)]
    _held["clients"] = clients
    for client in clients:
        assert client.wait_for(lambda m: m["type"] == "tick", 5), client.ending
    step_with, with_clients, out = deploy_site_change(
        sandbox, live, NODE_TIMEOUT="121", STREAM_ROUTES="/api/flask/stream"
    )
    print(
        f"Nginx reload: {without:.2f}s on the host ({step_without:.2f}s step) without WebSockets,"
        f" {with_clients:.2f}s ({step_with:.2f}s step) with 5 open"
    )
    assert with_clients <= without + 1.0, out  # it waited 10 s for the old workers before
    held = re.search(r"old worker\(s\) still hold ([0-9]+) connection", out)
    assert held and int(held.group(1)) >= 5, out  # the clients, and the long calls
    # the clients stay open on the old workers, and still get their ticks
    for client in clients:
        seen = len(client.messages)
        assert client.wait_for(lambda m: m["type"] == "tick", 3, after=seen), client.ending
    # a new client reaches the new configuration (the site id the deploy proved), and its app
    with WebSocketClient(WS_URL) as fresh:
        assert fresh.wait_for(lambda m: m["type"] == "hello", 5)
    _held["stream_route"] = _pool.submit(sse, "/api/flask/stream?events=31&interval=1&mark=0")
    status = fab(sandbox, ST, None, task="status")
    assert re.search(
        r"draining\s+[1-9][0-9]* old Nginx worker\(s\) still draining", status.stdout
    ), status.stdout


def test_nginx_check_refuses_a_kept_location_shorter_than_gunicorns_timeout(sandbox, live) -> None:
    extras = f"/etc/nginx/sites-available/{ST.app}.locations"
    sh(
        f"printf '%s\\n' 'location = /api/flask/report {{' '    proxy_pass"
        f" http://127.0.0.1:{ST.bind};' '    proxy_read_timeout 30s;' '}}' > {extras}"
    )
    try:
        result = fab(sandbox, ST, None, task="nginx-check")
    finally:
        sh(f"rm -f {extras}")
    assert result.returncode != 0
    assert (
        f"{extras}:3: location = /api/flask/report sets proxy_read_timeout 30s, shorter than"
        " GUNICORN_TIMEOUT=120s" in result.stderr
    ), result.stdout + result.stderr
    assert "set `proxy_read_timeout 125s;` in that location" in result.stderr


def setup_drain(sandbox, seconds: int) -> str:
    admin = sandbox.as_user("admin")
    with on_this_machine():
        result = subprocess.run(
            ["fab", "-H", admin.target, "-i", admin.key, "setup", "--user", "ubuntu"]
            + ["--known-hosts", admin.known_hosts, "--set", f"NGINX_DRAIN_SECONDS={seconds}"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_no_old_worker_outlives_the_bound(sandbox, live) -> None:
    out = setup_drain(sandbox, DRAIN)
    try:
        assert f"worker_shutdown_timeout {DRAIN}s" in out, out
        clients = [WebSocketClient(WS_URL) for _ in range(2)]
        for client in clients:
            assert client.wait_for(lambda m: m["type"] == "tick", 5)
        bounded = current_workers()  # started under the 3 s bound; the long calls are on older ones
        _, _, deployed = deploy_site_change(
            sandbox, live, NODE_TIMEOUT="122", STREAM_ROUTES="/api/flask/stream"
        )
        assert re.search(r"old worker\(s\) still hold [0-9]+ connection", deployed), deployed
        reloaded = time.monotonic()
        while running(bounded) and time.monotonic() - reloaded < DRAIN + 5:
            time.sleep(0.2)
        gone = time.monotonic() - reloaded
        endings = [client.ending for client in clients]
        print(f"old workers gone {gone:.1f}s after the reload; clients: {endings}")
        assert not running(bounded) and gone < DRAIN + 3
        # Nginx closes the TCP connection: no WebSocket close frame (it does not speak WebSocket)
        assert all(e.startswith("cut") for e in endings), endings
    finally:
        assert "worker_shutdown_timeout 300s" in setup_drain(sandbox, 300)


def test_a_90s_python_request_through_nginx_answers_200(live) -> None:
    status, took = _held["slow"].result(timeout=150)
    print(f"90 s request: {status} after {took:.1f}s")
    assert status == 200 and took >= 90


def test_streams_arrive_as_sent_when_marked_or_on_a_stream_route(live) -> None:
    marked, routed = _held["marked"].result(150), _held["stream_route"].result(150)
    unmarked = _held["unmarked"].result(150)
    for name, stream in (("X-Accel-Buffering: no", marked), ("STREAM_ROUTES", routed)):
        worst_gap, worst_lag = spacing(stream)
        print(
            f"{name}: {len(stream['events'])} events, gap error {worst_gap:.3f}s, lag {worst_lag:.3f}s"
        )
        assert stream["status"] == 200 and len(stream["events"]) == 31
        assert worst_gap < 0.5 and worst_lag < 1.0
    # the baseline: unmarked, on no stream route, Nginx buffers it whole
    assert unmarked["status"] == 200 and len(unmarked["events"]) == 6
    assert unmarked["events"][0][0] - unmarked["events"][0][1] > 4
    # the WebSocket clients stayed open through the reload and the whole 90 s
    clients = _held.pop("clients")
    assert [client.ending for client in clients] == ["open"] * 5
    for client in clients:
        client.close()
