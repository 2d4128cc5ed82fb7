"""bench.loadgen against a tiny HTTP server on 127.0.0.1: counts, failures, the loopback rule, its
bounds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadgen import MAX_SAMPLES, NO_RELEASE, Load, loopback_target, main


class Handler(BaseHTTPRequestHandler):
    """``/fail`` answers 500, ``/bare`` 200 without X-Release, anything else 200 with ``X-Release:
    r1``."""

    def do_GET(self) -> None:
        status = 500 if self.path == "/fail" else 200
        body = b"{}"
        self.send_response(status)
        if self.path != "/bare":
            self.send_header("X-Release", "r1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_counts_add_up(base: str) -> None:
    urls = [f"{base}/a", f"{base}/b", f"{base}/bare"]
    load = Load(urls, threads=3, max_requests=300)
    load.start()
    result = load.wait(timeout=30)

    assert not load.running
    assert result.total == 300
    assert (result.ok, result.failed, result.samples) == (300, 0, [])
    assert sum(c.total for c in result.per_url.values()) == result.total
    for url in urls:
        counts = result.per_url[url]
        assert counts.total == counts.ok + counts.failed
        assert counts.total == 100  # round-robin: every URL gets its share
    assert result.releases[f"{base}/a"] == {"r1": 100}
    assert result.releases[f"{base}/bare"] == {NO_RELEASE: 100}
    assert result.summary().startswith("0 failed / 300 requests (0.00%) in ")


def test_http_500_counts_as_failure(base: str) -> None:
    with Load([f"{base}/ok", f"{base}/fail"], threads=2, max_requests=100) as load:
        load.wait(timeout=30)
    result = load.result()

    assert (result.total, result.ok, result.failed) == (100, 50, 50)
    assert result.per_url[f"{base}/fail"].failed == 50
    assert result.per_url[f"{base}/ok"].failed == 0
    assert len(result.samples) == MAX_SAMPLES
    assert all(
        s.url == f"{base}/fail" and s.status == 500 and s.error == "HTTP 500"
        for s in result.samples
    )
    assert result.releases[f"{base}/fail"] == {"r1": 50}  # a failed answer still says who gave it
    assert result.summary().startswith("50 failed / 100 requests (50.00%)")


def test_connection_refused_counts_as_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with Load([url], threads=1, max_requests=5) as load:
        load.wait(timeout=30)
    result = load.result()

    assert (result.total, result.failed) == (5, 5)
    assert result.samples[0].status is None
    assert result.samples[0].error.startswith("ConnectionRefusedError")
    assert result.releases[url] == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://example.com/",
        "http://192.168.1.1:8001/api/flask/health",
        "http://[2001:db8::1]/",
        "http://0.0.0.0/",
        "http://127.0.0.1.example.com/",
        "http://127.0.0.1@example.com/",
        "ftp://127.0.0.1/",
        "http:///nohost",
    ],
)
def test_refuses_anything_but_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        Load([url])
    with pytest.raises(ValueError):  # one bad URL among good ones refuses the whole load
        Load(["http://127.0.0.1/", url])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.9.8.7:3000/x?y=1",
        "http://[::1]:8001/",
        "http://localhost:80/",
    ],
)
def test_accepts_loopback(url: str) -> None:
    assert loopback_target(url).url == url


def test_stops_by_itself_after_max_seconds(base: str) -> None:
    started = time.monotonic()
    load = Load([f"{base}/a"], threads=2, max_requests=10_000_000, max_seconds=0.5)
    load.start()
    result = load.wait(timeout=10)

    assert not load.running
    assert time.monotonic() - started < 5
    assert 0.5 <= result.seconds < 5
    assert 0 < result.total < 10_000_000


def test_a_paced_load_sends_its_rate_and_no_more(base: str) -> None:
    load = Load([f"{base}/a", f"{base}/b"], threads=4, max_seconds=1.0, rate=40)
    load.start()
    result = load.wait(timeout=10)
    # 40 a second for 1 s: requests 0..39 are due before the end (a closed loop sends thousands
    # here).
    assert 35 <= result.total <= 41, result.total
    assert (
        abs(result.per_url[f"{base}/a"].total - result.per_url[f"{base}/b"].total) <= 1
    )  # round-robin still


def test_a_paced_load_stops_at_once_when_asked(base: str) -> None:
    with Load([f"{base}/a"], threads=2, max_seconds=60, rate=1) as load:
        time.sleep(0.2)
    assert not load.running and load.result().total <= 2


def test_stop_ends_the_load_early(base: str) -> None:
    with Load([f"{base}/a"], threads=2, max_seconds=60) as load:
        time.sleep(0.3)
    assert not load.running
    assert load.result().seconds < 5


def test_cli_prints_summary_and_exit_status(base: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"{base}/a", "--threads", "1", "--seconds", "0.3"]) == 0
    assert " failed / " in capsys.readouterr().out.splitlines()[-1]
    assert main([f"{base}/fail", "--threads", "1", "--max-requests", "3"]) == 1
    with pytest.raises(SystemExit):
        main(["http://10.0.0.1/"])
