"""Notifications: NOTIFY_URL told when a deploy starts, succeeds, fails or is rolled back, and when
`rollback` runs; one notification per event for all the hosts of a fleet.

Sent from this machine (a host may have no route out), each in a thread of its own: a deploy never
waits for its start to be told, and at its end waits at most NOTIFY_TIMEOUT seconds in all for
every notification, then prints one warning and goes on. A receiver that fails or hangs changes
neither the exit code nor the deploy's output beyond that warning. What is sent went through the
run's masker (APP_ENV_FILE's values, REPO_URL's password); the URL itself is never printed but for
its scheme and host (a webhook's URL holds its token).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from invoke.exceptions import Exit

from signalcraft_deploy.core.secrets import masker_for
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.lock import who, who_text
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Ended, Outcome, RunFailed

STATUS = {Outcome.ROLLED_BACK: "rolled back"}  # any other failure: "failed"


@dataclass(frozen=True)
class Notice:
    """One notification's facts; the JSON body is these fields (None left out)."""

    event: str  # deploy or rollback
    status: str  # started, succeeded, unchanged, failed, rolled back
    app: str
    environment: str | None
    hosts: list[str]
    by: str
    commit: str | None = None
    release: str | None = None
    seconds: float | None = None
    step: str | None = None  # the failing step
    message: str | None = None  # its first line


def fields_of(notice: Notice) -> dict[str, Any]:
    return {k: v for k, v in asdict(notice).items() if v is not None}


def slack_text(n: Notice) -> str:
    """One line for a chat: what, where, which release, and for a failure the step and why."""
    where = f"{n.app}{f' ({n.environment})' if n.environment else ''}"
    parts = [f"{where}: {n.event} {n.status} on {', '.join(n.hosts)}"]
    parts += [f"release {n.release}"] if n.release else []
    parts += [f"commit {n.commit[:12]}"] if n.commit else []
    parts += [f"in {n.seconds:.1f}s"] if n.seconds is not None else []
    parts += [f"by {n.by}"]
    tail = f"\nfailed at {n.step}: {n.message}" if n.step else ""
    return slack_escaped(" · ".join(parts) + tail)


def slack_escaped(text: str) -> str:
    """Slack reads `<...>` as a link or a mention (`<!channel>`) and `&` as an entity: its message
    format asks for these three escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(notice: Notice, fmt: str) -> bytes:
    payload = {"text": slack_text(notice)} if fmt == "slack" else fields_of(notice)
    return json.dumps(payload).encode()


def shown_url(url: str) -> str:
    """The webhook as output may name it: its scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def post(url: str, data: bytes, timeout: float) -> None:
    """POST `data` as JSON; raises on a refused connection, a time-out or a status other than
    2xx."""
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http/https only)
        answer.read(65536)


@dataclass
class Sending:
    """One notification on its way."""

    status: str
    thread: threading.Thread = field(init=False)
    error: str | None = None
    done: bool = False


@dataclass
class Notifier:
    """The notifications of one deploy or rollback (none when NOTIFY_URL is unset)."""

    s: Settings
    event: str
    hosts: list[str]
    commit: str | None = None
    enabled: bool = True  # False: a dry run, told nothing
    # Where the one warning line goes (the Reporter's: coloured, a GitHub annotation in Actions).
    warn: Callable[[str], None] = field(
        default=lambda text: print(f"warning: {text}", file=sys.stderr)
    )
    post: Callable[[str, bytes, float], None] = post
    started: float = field(default_factory=time.monotonic)
    sent: list[Sending] = field(default_factory=list)

    def send(self, status: str, **details: Any) -> None:
        """Send one notification in the background (nothing when no URL is set)."""
        if not (self.enabled and self.s.notify_url):
            return
        mask = masker_for(self.s)
        shown: dict[str, Any] = {
            k: mask(v) if isinstance(v, str) else v for k, v in details.items()
        }
        notice = Notice(
            self.event,
            status,
            self.s.app_name,
            self.s.environment,
            self.hosts,
            who_text(who()),
            self.commit,
            **shown,
        )
        data = body(notice, self.s.notify_format)
        sending = Sending(status)
        before = self.sent[-1].thread if self.sent else None
        sending.thread = threading.Thread(
            target=self._deliver, args=(sending, data, before), daemon=True
        )
        self.sent.append(sending)
        sending.thread.start()

    def _deliver(self, sending: Sending, data: bytes, before: threading.Thread | None) -> None:
        assert self.s.notify_url
        if before is not None:  # in order: the start before the end
            before.join(self.s.notify_timeout)
        try:
            self.post(self.s.notify_url, data, float(self.s.notify_timeout))
        except Exception as err:  # noqa: BLE001 (whatever the receiver did: a warning, never more)
            sending.error = _why(err, self.s.notify_timeout)
        sending.done = True

    def wait(self) -> None:
        """Wait for every notification, NOTIFY_TIMEOUT seconds in all; a warning for each not
        delivered."""
        deadline = time.monotonic() + self.s.notify_timeout
        for sending in self.sent:
            sending.thread.join(max(0.0, deadline - time.monotonic()))
        for sending in self.sent:
            why = sending.error or (
                None if sending.done else f"no answer within {self.s.notify_timeout}s"
            )
            if why:
                self.warn(
                    f"the {self.event} {sending.status} notification to"
                    f" {shown_url(self.s.notify_url or '')} was not delivered ({why}); the"
                    f" {self.event}'s result is unchanged."
                )
        self.sent.clear()

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)


def _why(err: Exception, timeout: int) -> str:
    code = getattr(err, "code", None)
    if isinstance(code, int):
        return f"HTTP {code}"
    reason = getattr(err, "reason", None) or err
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout}s"
    return str(reason).splitlines()[0][:200] if str(reason) else type(err).__name__


def failed_step(rep: Reporter | None) -> str | None:
    """The step a failure outside the runner stopped in (connect, read host, plan...)."""
    failing = [r.name for r in (rep.steps if rep else []) if not r.ok]
    return next((name for name in reversed(failing) if not name.startswith("undo ")), None)


@contextmanager
def notifying(n: Notifier, rep: Reporter | None = None) -> Iterator[Notifier]:
    """Around a deploy or rollback: its start (a deploy's), then its failure; the block tells its
    success with `told`. Leaves once every notification is delivered or NOTIFY_TIMEOUT is up."""
    if n.event == "deploy":
        n.send("started")
    try:
        yield n
    except RunFailed as err:
        n.send(
            STATUS.get(err.outcome, "failed"),
            release=err.release,
            seconds=n.seconds(),
            step=err.step,
            message=_first_line(err.message),
        )
        raise
    except Exception as err:  # an Exit, or what the tool did not foresee: told, then raised as is
        said = err.message if isinstance(err, Exit) else f"{type(err).__name__}: {err}"
        step = failed_step(rep) or n.event
        n.send("failed", seconds=n.seconds(), step=step, message=_first_line(said))
        raise
    except KeyboardInterrupt:  # Ctrl-C, or a CI job cancelled: not an Exception, told all the same
        step = failed_step(rep) or n.event
        n.send("failed", seconds=n.seconds(), step=step, message="interrupted (Ctrl-C)")
        raise
    finally:
        n.wait()


def told(n: Notifier, ended: Ended | None) -> None:
    """How a deploy or rollback that did not fail ended (nothing for a dry run)."""
    if ended is not None:
        status = "succeeded" if ended.changed else "unchanged"
        n.send(status, release=ended.release, seconds=n.seconds())


def _first_line(message: Any) -> str:
    """A failure's message in one line: its first (with the next when the first ends in ':', as
    a fleet's does before naming the host)."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    line = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines or [""])[0]
    return line[:300]
