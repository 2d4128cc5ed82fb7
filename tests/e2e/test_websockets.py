"""WebSockets and socket.io across Node.js deploys (issue 28).

Two apps, each with one module-scoped sequence of deploys that the tests share in order:
- the example app with tests/e2e/apps/live laid over it (NODE_SCRIPT=live_server.js: /live/ws sends
  a hello, a tick a second, and a close frame 1001 when its process shuts down): a Node.js code
  change carried by a handover (NODE_RELOAD's default), then one by PM2's rolling reload
  (NODE_RELOAD=reload), each with 5 WebSocket clients connected through Nginx, a 20 s event
  stream begun before it (it ends whole: the app's shutdown time and NODE_KILL_TIMEOUT allow it)
  and a bounded loopback load;
- the example app with tests/e2e/apps/sockio laid over it: the real socket.io (and socket.io's own
  client, run with node from the release's node_modules, built on the host from the npm cache this
  machine ships), deployed with the default NODE_INSTANCES: polling and WebSocket clients connect,
  a broadcast reaches each of them, before and after a Node.js code change under load; NODE_INSTANCES=2
  is refused with the fix.
Cost: about 110 s on an idle machine (four deploys of the live app's size, two first deploys).
"""

from __future__ import annotations

import http.client
import json
import re
import select
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench.wsclient import WebSocketClient
from tests.e2e.conftest import REPO, AppRepo, Profile, e2e_load, fab, get, pm2_apps, pm2_jlist

APPS = REPO / "tests" / "e2e" / "apps"
WS = Profile(
    "wsock", "/home/ubuntu/wsock", 7731, 7741, 7751, extra={"NODE_SCRIPT": "live_server.js"}
)
SIO = Profile("sockio", "/home/ubuntu/sockio", 7733, 7743, 7753)
CLIENTS = 5
# NODE_WS_DRAIN_SECONDS (5) + NODE_KILL_TIMEOUT (30, set below): the longest an old process may
# hold a connection after the switch.
BOUND = 35
# A request of STREAM_SECONDS begun before each deploy fits in the app's shutdown time
# (SHUTDOWN_TIMEOUT_MS, the example's own, raised here) and PM2's kill_timeout.
STREAM_SECONDS = 20


@pytest.fixture(scope="module")
def live(sandbox, tmp_path_factory):
    base = tmp_path_factory.mktemp("wsock")
    (base / "app.env").write_text("SHUTDOWN_TIMEOUT_MS=25000\n")
    WS.extra.update({"APP_ENV_FILE": str(base / "app.env"), "NODE_KILL_TIMEOUT": "30"})
    repo = AppRepo(base / "app", overlay=APPS / "live")
    result = fab(sandbox, WS, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return repo


def ws_clients() -> list[WebSocketClient]:
    clients = [WebSocketClient(f"ws://127.0.0.1:{WS.listen}/live/ws") for _ in range(CLIENTS)]
    for ws in clients:
        assert ws.wait_for(lambda m: m["type"] == "hello"), ws.ending
    return clients


def node_pids(p: Profile) -> dict[int, str]:
    """pid -> release directory of each Node.js process PM2 runs for the profile's app (its
    temporary handover app too)."""
    return {
        proc["pid"]: proc["pm2_env"]["pm_cwd"].rstrip("/")
        for proc in pm2_jlist()
        if proc["name"].startswith(f"{p.app}-nodejs")
    }


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


class Stream(threading.Thread):
    """GET /live/events through Nginx: one event a second for STREAM_SECONDS, read to its end."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.status, self.events, self.error = 0, [], ""
        self.start()
        time.sleep(1)  # a process has taken it

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", WS.listen, timeout=STREAM_SECONDS + 30)
        try:
            conn.request("GET", f"/live/events?events={STREAM_SECONDS + 1}&interval=1")
            response = conn.getresponse()
            self.status = response.status
            text = response.read().decode()  # IncompleteRead if the stream is cut
            self.events = [
                json.loads(line[6:]) for line in text.splitlines() if line[:6] == "data: "
            ]
        except (OSError, http.client.HTTPException) as exc:
            self.error = repr(exc)
        finally:
            conn.close()

    def check(self, version: int) -> None:
        """Every event arrived, from the old code: the request outlived the deploy."""
        self.join(STREAM_SECONDS + 40)
        assert self.status == 200 and not self.error, (self.status, self.error)
        assert len(self.events) == STREAM_SECONDS + 1, self.events
        assert {e["version"] for e in self.events} == {str(version - 1)}, self.events


def node_change_with_clients(sandbox, repo: AppRepo, version: int, *args: str) -> str:
    """Commit Node.js VERSION `version`, check the plan counts the open WebSockets, deploy it under
    load with 5 clients connected; every client ends cleanly and reaches the new code again, no
    old process remains. Returns the deploy's output."""
    repo.edit(
        "server.js",
        f'const VERSION = "{version - 1}";',
        f'const VERSION = "{version}";',
        f"node v{version}",
    )
    old = node_pids(WS)
    clients = ws_clients()
    plan = fab(sandbox, WS, repo, "--dry-run", *args)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"closes {CLIENTS} open connection(s)" in plan.stdout, plan.stdout
    stream = Stream()
    with e2e_load(
        [WS.url("/"), WS.url("/api/flask/health")], threads=2, max_requests=20_000
    ) as load:
        result = fab(sandbox, WS, repo, *args)
        time.sleep(0.5)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert load.result().failed == 0, load.result().samples
    stream.check(version)
    # the plan step and the summary (the load's requests in flight may count too)
    counted = [int(n) for n in re.findall(r"closes (\d+) open connection\(s\)", out)]
    assert counted and all(n >= CLIENTS for n in counted), out
    assert re.search(r"closed \d+ open connection\(s\) of the old processes", out), out
    for ws in clients:
        assert ws.wait_closed(BOUND), "an old process still holds a WebSocket after the bound"
        assert ws.ending == "closed 1001 going away", ws.ending  # a close frame, never cut
        assert not any(
            m.body["type"] == "tick" and m.body["version"] == str(version) for m in ws.messages
        )
    deadline = time.monotonic() + BOUND
    while any(alive(pid) for pid in old) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in old), "an old Node.js process outlived the bound"
    now = node_pids(WS)
    assert now and set(now.values()) == {f"{WS.root}/current"}, now  # the app's own, no other
    with WebSocketClient(f"ws://127.0.0.1:{WS.listen}/live/ws") as again:
        hello = again.wait_for(lambda m: m["type"] == "hello")
        assert hello and hello.body["version"] == str(version)
    return out


def test_a_node_handover_closes_websockets_cleanly_and_they_reconnect_to_the_new_code(
    sandbox, live
):
    out = node_change_with_clients(sandbox, live, 2)
    assert "nodejs: handover" in out, out
    assert "open connection(s) left after" in out, out  # how many the old processes held


def test_a_rolling_reload_closes_websockets_cleanly_and_they_reconnect_to_the_new_code(
    sandbox, live
):
    out = node_change_with_clients(sandbox, live, 3, "--set", "NODE_RELOAD=reload")
    assert "nodejs: reload" in out, out


# ----------------------------------------------------------------------------- socket.io


@pytest.fixture(scope="module")
def sockio(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("sockio") / "app", overlay=APPS / "sockio")
    result = fab(sandbox, SIO, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return repo


class SocketIoClients:
    """sio_client.js from the live release (its node_modules hold socket.io-client), run here."""

    def __init__(self, polling: int, websocket: int):
        release = Path(SIO.root, "current").resolve()
        self.proc = subprocess.Popen(
            [
                "node",
                "sio_client.js",
                f"http://127.0.0.1:{SIO.listen}",
                str(polling),
                str(websocket),
            ],
            cwd=release,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self, timeout: float = 15) -> dict:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                return json.loads(self.proc.stdout.readline())
        raise AssertionError("sio_client.js said nothing in time")

    def shout(self, token: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"shout {token}\n")
        self.proc.stdin.flush()
        return self.line()

    def end(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        result = self.line()
        self.proc.wait(5)
        return result


def test_a_socket_io_app_runs_one_process_and_every_client_gets_every_broadcast_across_a_reload(
    sandbox, sockio
):
    procs = pm2_apps(SIO.app)[f"{SIO.app}-nodejs"]
    assert len(procs) == 1  # NODE_INSTANCES' default for a socket.io app
    clients = SocketIoClients(polling=3, websocket=3)
    try:
        ready = clients.line()
        assert ready == {"event": "ready", "versions": ["1"] * 6}, ready
        assert clients.shout("before")["received"] == 6
        sockio.edit("server.js", 'const VERSION = "1";', 'const VERSION = "2";', "node v2")
        with e2e_load(
            [SIO.url("/"), SIO.url("/api/flask/health")], threads=2, max_requests=20_000
        ) as load:
            result = fab(sandbox, SIO, sockio)
            time.sleep(0.5)
        assert result.returncode == 0, result.stdout + result.stderr
        assert load.result().failed == 0, load.result().samples
        deadline = time.monotonic() + 15
        after = clients.shout("after")
        while after["versions"] != ["2"] * 6 and time.monotonic() < deadline:
            time.sleep(0.5)
            after = clients.shout("after")
        assert after["versions"] == ["2"] * 6, after  # every client reconnected, to the new code
        assert after["received"] == 6, after  # and the broadcast reached each of them
    finally:
        end = clients.end()
    assert not [e for e in end["errors"] if "Session ID unknown" in e], end
    assert get(SIO.url("/"))[2]["version"] == "2"


def test_more_than_one_process_for_a_socket_io_app_is_refused_with_the_fix(sandbox, sockio):
    before = Path(SIO.root, "current").resolve()
    result = fab(sandbox, SIO, sockio, "--set", "NODE_INSTANCES=2")
    out = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in out, out
    assert "NODE_INSTANCES=2" in out and "package.json depends on socket.io" in out, out
    assert "Set NODE_INSTANCES=1" in out and "NODE_SESSION_BOUND=no" in out, out
    assert Path(SIO.root, "current").resolve() == before
    assert len(pm2_apps(SIO.app)[f"{SIO.app}-nodejs"]) == 1
