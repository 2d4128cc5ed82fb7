"""Maintenance mode as the real Nginx serves it: the site and its maintenance files rendered by
remote/nginx_site.py, run by the nginx binary in a scratch prefix on free loopback ports, in front
of two small HTTP apps that say which of them answered. What a client observes: the status, the
page, what the apps were asked.

Each test starts its own Nginx (about 0.1 s; 16 tests in under 2 s); skipped where nginx is not
installed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from signalcraft_deploy.remote import nginx_site
from signalcraft_deploy.remote.nginx_site import render, render_maintenance, upstream_for

SITE = "/etc/nginx/sites-available/shop"
CERT, KEY = "/etc/ssl/maintenance-test/cert.pem", "/etc/ssl/maintenance-test/key.pem"
MAINTENANCE: dict[str, Any] = {
    "retry_after": 600,
    "open": ["/api/flask/health"],
    "prefixes": ["/status"],
    "probe": ["/", "/api/flask/health"],
    "html": "<h1>Down for maintenance</h1>\n",
    "json": '{"error": "maintenance"}\n',
}


class App(BaseHTTPRequestHandler):
    """Answers 200 with {"app": its name, "path": the path it was asked for}."""

    name = ""

    def answer(self) -> None:
        body = json.dumps({"app": self.name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = answer

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A running Nginx serving one site (and its maintenance files, if given)."""

    def __init__(self, prefix: Path, http_port: int, tls_port: int):
        self.prefix, self.http_port, self.tls_port = prefix, http_port, tls_port

    def ask(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        tls: bool = False,
        source: str = "127.0.0.1",
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request, its path sent as it is."""
        conn: http.client.HTTPConnection
        if tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.tls_port, timeout=5, context=context, source_address=(source, 0)
            )
        else:
            conn = http.client.HTTPConnection(
                "127.0.0.1", self.http_port, timeout=5, source_address=(source, 0)
            )
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()


def _nginx_conf(prefix: Path) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the prefix's files
    temps = "".join(f"    {k}_temp_path {prefix}/{k};\n" for k in ("client_body", "proxy"))
    temps += "".join(f"    {k}_temp_path {prefix}/{k};\n" for k in ("fastcgi", "uwsgi", "scgi"))
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n{temps}"
        f"    include {prefix}/site.conf;\n}}\n"
    )


def _cert(prefix: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=localhost", "-keyout", str(prefix / "key.pem")]
        + ["-out", str(prefix / "cert.pem")],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def serve(tmp_path: Path, nginx_bin: str) -> Iterator[Callable[..., Served]]:
    """serve(maintenance=..., **site changes): Nginx running the site, in maintenance mode as
    `maintenance` says (None: off)."""
    apps = []
    for name in ("python", "nodejs"):
        handler = type(f"App_{name}", (App,), {"name": name})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        apps.append(server)
    started: list[Path] = []

    def start(maintenance: dict[str, Any] | None = MAINTENANCE, **changes: Any) -> Served:
        prefix = tmp_path / "nginx"
        (prefix / "m").mkdir(parents=True)
        served = Served(prefix, free_port(), free_port())
        up = upstream_for(SITE)
        desc = {
            "site": SITE,
            "upstream": up,
            "listen": [f"127.0.0.1:{served.http_port}"],
            "tls_listen": [f"127.0.0.1:{served.tls_port}"],
            "server_name": "_",
            "routes": ["api"],
            "python": f"127.0.0.1:{apps[0].server_address[1]}",
            "node": f"127.0.0.1:{apps[1].server_address[1]}",
            "body_size": "",
            "tls": None,
            **changes,
        }
        if desc["tls"]:
            _cert(prefix)

        def local(text: str) -> str:
            text = text.replace(nginx_site.MAINTENANCE_DIR, str(prefix / "m"))
            return text.replace(CERT, str(prefix / "cert.pem")).replace(
                KEY, str(prefix / "key.pem")
            )

        (prefix / "site.conf").write_text(local(render(desc)))
        if maintenance is not None:
            files = render_maintenance(up, maintenance)
            (prefix / "m" / f"{up}.maps").write_text(local(files["maps"]))
            (prefix / "m" / f"{up}.server").write_text(local(files["server"]))
            (prefix / "m" / up).mkdir()
            (prefix / "m" / up / "503.html").write_text(maintenance["html"])
            (prefix / "m" / up / "503.json").write_text(maintenance["json"])
        (prefix / "nginx.conf").write_text(_nginx_conf(prefix))
        command = [nginx_bin, "-p", str(prefix), "-e", str(prefix / "error.log")]
        command += ["-c", str(prefix / "nginx.conf")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        started.append(prefix)
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", served.http_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        return served

    yield start
    for prefix in started:
        try:
            os.kill(int((prefix / "nginx.pid").read_text()), signal.SIGQUIT)
        except (OSError, ValueError):
            pass
    for server in apps:
        server.shutdown()


def test_a_closed_path_answers_503_with_retry_after_and_the_health_route_reaches_its_app(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    status, headers, body = served.ask("/api/orders", method="POST")
    assert (status, headers["Retry-After"], body) == (503, "600", MAINTENANCE["html"].encode())
    status, headers, body = served.ask("/x", {"Accept": "application/json"})
    assert (status, body) == (503, MAINTENANCE["json"].encode())
    assert headers["Content-Type"].startswith("application/json")
    status, _, body = served.ask("/api/flask/health")
    assert (status, json.loads(body)["app"]) == (200, "python")
    assert served.ask("/status/db")[0] == 200 and served.ask("/statusx")[0] == 503


def test_with_tls_redirect_the_plain_http_listener_answers_the_maintenance_marker(
    serve: Callable[..., Served],
) -> None:
    """The reload's proof asks the first plain-HTTP listener for the maintenance file's id: a
    redirect there would fail every `maintenance on` of a TLS_REDIRECT site."""
    served = serve(tls={"cert": CERT, "key": KEY, "redirect": True})
    expect = render_maintenance(upstream_for(SITE), MAINTENANCE)["id"]
    status, _, body = served.ask("/.signalcraft-deploy-maintenance")
    assert (status, body.decode().strip()) == (200, expect)
    assert served.ask("/x", tls=True)[0] == 503
    assert served.ask("/api/flask/health", tls=True)[0] == 200
    assert served.ask("/api/flask/health")[0] == 301  # open paths still go to HTTPS
    status, headers, body = served.ask("/x")  # closed ones answer the page on plain HTTP too
    assert (status, headers["Retry-After"], body) == (503, "600", MAINTENANCE["html"].encode())


def test_the_home_page_opens_to_the_tools_header_only_from_the_host_itself(
    serve: Callable[..., Served],
) -> None:
    """The tool's checks run on the host and ask Nginx on one of its own addresses; a client
    elsewhere that sends the same header still gets the maintenance page."""
    served = serve()
    probe = {"X-Signalcraft-Health": "1"}
    status, _, body = served.ask("/", probe)
    assert (status, json.loads(body)["app"]) == (200, "nodejs")
    assert served.ask("/", probe, source="127.0.0.2")[0] == 503  # another address
    assert served.ask("/", source="127.0.0.1")[0] == 503  # no header
    assert served.ask("/api/flask/health", source="127.0.0.2")[0] == 200  # open to everyone


@pytest.mark.parametrize(
    "path", ["/api/flask/health%0A", "/status%0A", "/api/flask/health%0a", "/status/%0A/x"]
)
def test_a_newline_after_an_open_path_does_not_open_it(
    serve: Callable[..., Served], path: str
) -> None:
    """Nginx decodes %0A into $uri; a regex's `$` also matches before a final newline."""
    expect = 200 if path.startswith("/status/") else 503
    assert serve().ask(path)[0] == expect


def test_a_health_route_with_a_trailing_slash_stays_open(serve: Callable[..., Served]) -> None:
    """Flask's @app.route("/health/") is common: HEALTH_PY=/api/flask/health/ must stay open."""
    served = serve({**MAINTENANCE, "open": ["/api/flask/health/"], "probe": ["/healthz/"]})
    status, _, body = served.ask("/api/flask/health/")
    assert (status, json.loads(body)["app"]) == (200, "python")
    assert served.ask("/api/flask/health")[0] == 503  # only the path as it is named
    assert served.ask("/healthz/", {"X-Signalcraft-Health": "1"})[0] == 200


def test_the_tools_checks_reach_any_path_so_a_deploy_that_moves_a_health_route_passes_its_gate(
    serve: Callable[..., Served],
) -> None:
    """Maintenance mode's open paths are the health routes when it was turned on; a deploy while it
    is on may move them (HEALTH_NODE, a new mount prefix): its gate asks the new ones."""
    served = serve()
    probe = {"X-Signalcraft-Health": "1"}
    status, _, body = served.ask("/chat/healthz", probe)
    assert (status, json.loads(body)["app"]) == (200, "nodejs")
    assert served.ask("/chat/healthz", probe, source="127.0.0.2")[0] == 503
    assert served.ask("/chat/healthz")[0] == 503


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        ("application/json", "json"),
        ("application/problem+json; q=0.5", "json"),
        ("Application/JSON", "json"),
        ("application/json;q=0", "html"),  # JSON refused in so many words
        ("text/html, application/json; q=0.0", "html"),
        ("*/*", "html"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
    ],
)
def test_the_page_is_the_one_accept_asks_for(
    serve: Callable[..., Served], accept: str, page: str
) -> None:
    status, _, body = serve().ask("/x", {"Accept": accept})
    assert (status, body.decode()) == (503, MAINTENANCE[page])


def test_the_gates_own_probe_program_reaches_a_health_route_not_named_open(
    serve: Callable[..., Served],
) -> None:
    """remote/probe.py, as the health gate and `status` run it on the host, through Nginx."""
    from signalcraft_deploy.remote import probe

    served = serve()
    assert probe.fetch(f"http://127.0.0.1:{served.http_port}/chat/healthz")[0] == 200
    assert probe.fetch(f"http://127.0.0.1:{served.http_port}/")[0] == 200
    assert served.ask("/chat/healthz")[0] == 503  # a client without the header
