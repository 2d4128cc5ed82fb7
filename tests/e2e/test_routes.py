"""Routing both ways, and a rollback that serves the release's own routes (issue 25: D2, D3, D6).

The tests' own first-day app (tests/e2e/apps/firstday: a module-level Flask app on `/`, a plain
Node.js index.js with a WebSocket echo) is deployed once with ROUTES=/=python,/chat=nodejs on a site
on port 8381 (not 80): Flask serves `/`, Node.js gets `/chat/...` without its prefix and with
X-Forwarded-Prefix, a WebSocket goes through `/chat/`, a redirect keeps the port. Then one deploy
moves Flask under `/app` (mounted there: url_for and redirects carry the prefix with no change to
the app), and a rollback under load serves the first release's routes and site again. A
`SCRIPT_NAME` request header (Gunicorn would take it as the mount) has no effect through Nginx in
either.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, AppRepo, Profile, clean_host, e2e_load, fab

FIRSTDAY = REPO / "tests" / "e2e" / "apps" / "firstday"
COMMON = {"WSGI_APP": "app:app"}
FLASK_ON_ROOT = Profile(
    "routes",
    "/home/ubuntu/routes",
    7631,
    7641,
    8381,
    extra={
        **COMMON,
        "ROUTES": "/=python,/chat=nodejs",
        "MOUNTS": "/chat",
        "HEALTH_PY": "/healthz",
        "HEALTH_NODE": "/chat/",
    },
)
FLASK_UNDER_APP = Profile(
    "routes",
    "/home/ubuntu/routes",
    7631,
    7641,
    8381,
    extra={
        **COMMON,
        "ROUTES": "/app=python,/=nodejs",
        "MOUNTS": "/app",
        "HEALTH_PY": "/app/healthz",
        "HEALTH_NODE": "/",
    },
)
PORT = FLASK_ON_ROOT.listen


def ask(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET through Nginx as a browser would (Host 127.0.0.1:8381), redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def ask_json(path: str, headers: dict[str, str] | None = None) -> dict:
    status, _, body = ask(path, headers)
    assert status == 200, (path, status, body)
    return json.loads(body)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the connection closed"
        data += chunk
    return data


def _frame(sock: socket.socket) -> str:
    head = _exactly(sock, 2)
    return _exactly(sock, head[1] & 0x7F).decode()


def websocket_echo(path: str, text: str) -> tuple[str, str]:
    """Open a WebSocket through Nginx, read the server's greeting, send `text`, read its echo."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nUpgrade:"
                " websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key:"
                f" {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += _exactly(sock, 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        greeting = _frame(sock)
        mask, data = os.urandom(4), text.encode()
        sock.sendall(
            bytes([0x81, 0x80 | len(data)])
            + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        )
        return greeting, _frame(sock)


def site_id() -> str:
    status, _, body = ask("/.signalcraft-deploy-site")
    assert status == 200
    return body.strip()


@pytest.fixture(scope="module")
def first_day(sandbox, tmp_path_factory: pytest.TempPathFactory):
    clean_host(FLASK_ON_ROOT)
    repo = AppRepo(Path(tmp_path_factory.mktemp("firstday")) / "app", example=FIRSTDAY)
    result = fab(sandbox, FLASK_ON_ROOT, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    # left running: cleaning it takes longer than the tests (the next run's setup cleans it)
    return repo


def test_flask_owns_root_and_nodejs_serves_under_its_prefix(first_day) -> None:
    assert ask_json("/")["app"] == "flask" and ask_json("/jobs/")["page"] == "jobs"
    chat = ask_json("/chat/rooms/1?x=1")
    assert (chat["app"], chat["path"], chat["prefix"]) == ("nodejs", "/rooms/1", "/chat")
    assert ask_json("/chat")["path"] == "/"
    status, _, body = ask("/chatter")  # not /chat's: Flask's, which has no such page
    assert status == 404 and "nodejs" not in body


def test_a_websocket_goes_through_the_prefix(first_day) -> None:
    greeting, echo = websocket_echo("/chat/socket", "ping")
    assert greeting.startswith("hello ") and greeting.endswith(" /socket")
    assert echo == "echo ping"


def test_redirects_keep_the_port_and_a_script_name_header_moves_nothing(first_day) -> None:
    status, headers, _ = ask("/jobs")  # Werkzeug's slash redirect is absolute, built from Host
    assert status == 308 and headers["Location"] == f"http://127.0.0.1:{PORT}/jobs/"
    where = ask_json("/where")
    assert where["host"] == f"127.0.0.1:{PORT}" and where["url_root"] == f"http://127.0.0.1:{PORT}/"
    assert ask_json("/chat/")["host"] == f"127.0.0.1:{PORT}"
    assert (
        ask_json("/where", {"SCRIPT_NAME": "/evil"})["script_root"] == ""
    )  # Nginx drops the header


def test_a_rollback_after_a_route_change_serves_the_old_routes(sandbox, first_day) -> None:
    first_site = site_id()
    moved = fab(sandbox, FLASK_UNDER_APP, first_day)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    where = ask_json("/app/where", {"SCRIPT_NAME": "/evil"})
    assert (where["script_root"], where["jobs_url"], where["path"]) == (
        "/app",
        "/app/jobs/",
        "/where",
    )
    status, headers, _ = ask("/app/go-to-jobs")
    assert status == 302 and headers["Location"] in (
        "/app/jobs/",
        f"http://127.0.0.1:{PORT}/app/jobs/",
    )
    node = ask_json(
        "/chat/x", {"X-Forwarded-Prefix": "//evil.example"}
    )  # a client's own: Nginx sends none unmounted
    assert (node["app"], node["path"], node["prefix"]) == ("nodejs", "/chat/x", "")
    assert site_id() != first_site

    # Today's settings are the moved routes; the rollback serves the routes the older release was
    # deployed with.
    with e2e_load(
        [f"http://127.0.0.1:{PORT}/healthz", f"http://127.0.0.1:{PORT}/chat/"],
        threads=2,
        max_requests=20_000,
        max_seconds=120,
    ) as load:
        time.sleep(0.3)
        back = fab(sandbox, FLASK_UNDER_APP, None, task="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "records no Nginx site" not in back.stdout + back.stderr
    assert load.result().failed == 0, load.result().samples
    assert site_id() == first_site
    assert ask_json("/")["app"] == "flask"
    chat = ask_json("/chat/x")
    assert (chat["app"], chat["path"], chat["prefix"]) == ("nodejs", "/x", "/chat")
    assert (
        ask_json("/where")["script_root"] == ""
    )  # Gunicorn's reload dropped the mount with its conf
    assert ask("/app/where")[0] == 404  # /app is Flask's own path again, and it has none
    # status probes the live release's own routes and health paths, not today's settings'
    status = fab(sandbox, FLASK_UNDER_APP, None, "--json", task="status")
    health = json.loads(status.stdout)["health"]
    assert {
        label: (h["url"].split(str(PORT))[-1], h["status"])
        for label, h in health.items()
        if "Nginx" in label
    } == {"Nginx -> Gunicorn": ("/healthz", 200), "Nginx -> Node.js": ("/chat/", 200)}, health
