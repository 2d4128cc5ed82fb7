"""A bounded load generator for loopback URLs, used by the benchmarks and the end-to-end tests.

Threads loop GET requests round-robin over the URLs with no pauses, each on a new connection
(``Connection: close``), so every request goes through accept, routing and the app, the way a
reload can break them. It counts, per URL, requests, successes (2xx/3xx) and failures, keeps the
first few failures as samples, and tallies the ``X-Release`` header of each answer, so a test can
tell which release served.

It only ever talks to loopback (127.0.0.0/8, ::1, localhost): any other host is refused with
``ValueError``. It stops by itself after ``max_requests`` requests or ``max_seconds`` seconds.

    with Load(["http://127.0.0.1/api/flask/health", "http://127.0.0.1/"]) as load:
        ...  # deploy, reload
    print(load.result().summary())   # "0 failed / 1234 requests (0.00%) in 5.1 s"

Command line: ``python -m bench.loadgen URL [URL...] --threads 4 --seconds 10``.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

MAX_SAMPLES = 20
# Key in `LoadResult.releases` for answers that carried no X-Release header (e.g. Nginx's own
# pages).
NO_RELEASE = "-"
MAINTENANCE = "503 maintenance"


@dataclass(frozen=True)
class Target:
    """A URL split into what `http.client` needs."""

    url: str
    host: str
    port: int
    path: str
    scheme: str = "http"


@dataclass(frozen=True)
class Failure:
    """One failed request: a status outside 2xx/3xx (``status`` set) or an exception (``status``
    None)."""

    url: str
    status: int | None
    error: str
    at: float  # seconds since the load started


@dataclass(frozen=True)
class UrlCounts:
    """Requests to one URL: ``total == ok + failed``."""

    total: int = 0
    ok: int = 0
    failed: int = 0


@dataclass(frozen=True)
class LoadResult:
    """Counts of a finished (or running) load; ``per_url`` and ``releases`` are keyed by URL."""

    total: int
    ok: int
    failed: int
    per_url: dict[str, UrlCounts]
    releases: dict[str, dict[str, int]]
    samples: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    # Every answer by kind: "200", "503", ..., MAINTENANCE (a 503 with Retry-After: maintenance
    # mode's, by design), "error" (no answer: refused, reset, timed out)
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def failed_not_maintenance(self) -> int:
        """The failed requests but maintenance mode's 503s."""
        return self.failed - self.answers.get(MAINTENANCE, 0)

    def summary(self) -> str:
        """One line: ``0 failed / 1234 requests (0.00%) in 5.1 s``."""
        share = 100.0 * self.failed / self.total if self.total else 0.0
        return (
            f"{self.failed} failed / {self.total} requests ({share:.2f}%) in {self.seconds:.1f} s"
        )


# The fleet test hosts (tests/host/fleet-up) live on this machine in 198.18.0.0/15, the range
# reserved for network benchmarks (RFC 2544): traffic there never leaves the machine either.
BENCH_NET = ipaddress.ip_network("198.18.0.0/15")


def _is_loopback_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_loopback or address in BENCH_NET


def loopback_target(url: str) -> Target:
    """Parse an ``http://`` or ``https://`` URL whose host is loopback; raise ValueError for
    anything else.

    ``localhost`` is accepted only if every address it resolves to is loopback, so a hosts file
    pointing it elsewhere cannot send traffic off the machine.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: only http:// and https:// URLs are supported")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number or out of range
        raise ValueError(f"{url!r}: {exc}") from None
    if not host:
        raise ValueError(f"{url!r}: no host")
    if host.lower() == "localhost":
        try:
            addresses = {
                info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            }
        except OSError as exc:
            raise ValueError(f"{url!r}: localhost does not resolve ({exc})") from None
        if not addresses or not all(_is_loopback_ip(a.split("%")[0]) for a in addresses):
            raise ValueError(
                f"{url!r}: localhost resolves to {sorted(addresses)}, not only loopback addresses;"
                " refused"
            )
    elif not _is_loopback_ip(host):
        raise ValueError(
            f"{url!r}: host {host!r} is not a loopback address (127.0.0.0/8, ::1, localhost) "
            "or a fleet test host's (198.18.0.0/15); refused"
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, host=host, port=port, path=path, scheme=parts.scheme)


class Load:
    """Loop GET requests over loopback URLs from several threads until stopped or a bound is hit.

    Use as a context manager (threads start on enter, stop and are joined on exit) or call
    `start`, `stop` / `wait` and `result` directly.
    """

    def __init__(
        self,
        urls: list[str],
        threads: int = 4,
        max_requests: int = 200_000,
        max_seconds: float = 300.0,
        timeout: float = 5.0,
        cafile: str | None = None,
        rate: float | None = None,
    ) -> None:
        if not urls:
            raise ValueError("no URLs given")
        if (
            threads < 1
            or max_requests < 1
            or max_seconds <= 0
            or timeout <= 0
            or (rate is not None and rate <= 0)
        ):
            raise ValueError(
                "threads and max_requests must be at least 1; max_seconds, timeout and rate above 0"
            )
        # rate: requests per second in all, each sent at its time (a request late by a slow answer
        # goes at once); None: each thread sends its next request as soon as the last one is
        # answered.
        self.rate = rate
        self.targets = [loopback_target(url) for url in urls]
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        # https:// URLs: the server's certificate is verified against `cafile` (default: the
        # system's CAs).
        self._tls = (
            ssl.create_default_context(cafile=cafile)
            if any(t.scheme == "https" for t in self.targets)
            else None
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._issued = 0
        self._active = 0
        self._ok: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._releases: dict[str, Counter[str]] = {t.url: Counter() for t in self.targets}
        self._samples: list[Failure] = []
        self._answers: Counter[str] = Counter()
        self._started = 0.0
        self._finished: float | None = None

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the threads; they run until `stop`, ``max_requests`` or ``max_seconds``."""
        if self._workers:
            raise RuntimeError("this Load has already been started")
        self._started = time.monotonic()
        self._active = self.threads
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"loadgen-{index}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def stop(self) -> LoadResult:
        """Ask the threads to stop, wait for their last requests, and return the result."""
        self._stop.set()
        return self.wait()

    def wait(self, timeout: float | None = None) -> LoadResult:
        """Wait (at most ``timeout`` seconds) for the threads to stop by themselves; return the
        result so far."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.result()

    @property
    def running(self) -> bool:
        """Whether any thread is still sending requests."""
        return any(worker.is_alive() for worker in self._workers)

    def result(self) -> LoadResult:
        """A snapshot of the counts (final once the threads have stopped)."""
        with self._lock:
            per_url = {}
            for target in self.targets:
                ok, failed = self._ok[target.url], self._failed[target.url]
                per_url[target.url] = UrlCounts(total=ok + failed, ok=ok, failed=failed)
            releases = {url: dict(counts) for url, counts in self._releases.items()}
            samples = list(self._samples)
            answers = dict(self._answers)
            end = self._finished if self._finished is not None else time.monotonic()
        ok, failed = sum(c.ok for c in per_url.values()), sum(c.failed for c in per_url.values())
        seconds = end - self._started if self._started else 0.0
        return LoadResult(
            total=ok + failed,
            ok=ok,
            failed=failed,
            per_url=per_url,
            releases=releases,
            samples=samples,
            seconds=seconds,
            answers=answers,
        )

    def _claim(self) -> Target | None:
        """Reserve the next request within the bounds and return its URL (round-robin), at its time
        if the load is paced; None once the load should end."""
        if self._stop.is_set() or time.monotonic() - self._started >= self.max_seconds:
            return None
        with self._lock:
            if self._issued >= self.max_requests:
                return None
            target = self.targets[self._issued % len(self.targets)]
            due = self._started + self._issued / self.rate if self.rate else 0.0
            self._issued += 1
        if due > self._started + self.max_seconds:
            return None
        if due > time.monotonic() and self._stop.wait(due - time.monotonic()):
            return None
        return target

    def _run(self) -> None:
        try:
            while (target := self._claim()) is not None:
                self._record(target, *self._request(target))
        finally:
            with self._lock:
                self._active -= 1
                if not self._active:
                    self._finished = time.monotonic()

    def _request(self, target: Target) -> tuple[int | None, str | None, str]:
        """One GET on a new connection: (status or None, X-Release or None, error text or ""); a
        503 with Retry-After has the error text MAINTENANCE."""
        conn = (
            http.client.HTTPSConnection(
                target.host, target.port, timeout=self.timeout, context=self._tls
            )
            if target.scheme == "https"
            else http.client.HTTPConnection(target.host, target.port, timeout=self.timeout)
        )
        try:
            conn.request("GET", target.path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            retry = response.status == 503 and response.getheader("Retry-After") is not None
            return response.status, response.getheader("X-Release"), MAINTENANCE if retry else ""
        except (
            Exception
        ) as exc:  # every failure is data here: refused, reset, timeout, bad response
            return None, None, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def _record(self, target: Target, status: int | None, release: str | None, error: str) -> None:
        ok = status is not None and 200 <= status < 400
        kind = "error" if status is None else error if error == MAINTENANCE else str(status)
        with self._lock:
            self._answers[kind] += 1
            if ok:
                self._ok[target.url] += 1
            else:
                self._failed[target.url] += 1
                if len(self._samples) < MAX_SAMPLES:
                    text = error or f"HTTP {status}"
                    self._samples.append(
                        Failure(target.url, status, text, time.monotonic() - self._started)
                    )
            if status is not None:
                self._releases[target.url][release or NO_RELEASE] += 1


def main(argv: list[str] | None = None) -> int:
    """Command line: load the URLs, print the summary; exit 1 if any request failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "urls", nargs="+", metavar="URL", help="loopback http:// URL(s), requested round-robin"
    )
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=200_000,
        help="stop after this many requests (default 200000)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="per-request timeout in seconds (default 5)"
    )
    args = parser.parse_args(argv)
    try:
        load = Load(
            args.urls,
            threads=args.threads,
            max_requests=args.max_requests,
            max_seconds=args.seconds,
            timeout=args.timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    with load:
        try:
            load.wait()
        except KeyboardInterrupt:
            pass
    result = load.result()
    for url, counts in result.per_url.items():
        releases = (
            ", ".join(f"{name}: {n}" for name, n in sorted(result.releases[url].items())) or "none"
        )
        print(f"{url}: {counts.failed} failed / {counts.total} (releases: {releases})")
    for sample in result.samples:
        print(f"  at {sample.at:.2f} s {sample.url}: {sample.error}")
    print(result.summary())
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
