"""Notifications (steps/notify.py) against a real HTTP receiver on 127.0.0.1: what each event sends
in both formats, that secrets never reach a body, and that a receiver that fails or hangs changes
neither the result of the deploy nor its time beyond NOTIFY_TIMEOUT."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from signalcraft_deploy.core.settings import Settings, SettingsError, load_settings
from signalcraft_deploy.steps.notify import Notice, Notifier, notifying, slack_text, told
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Ended, Outcome, RunFailed
from signalcraft_deploy.tasks.settings import effective_text

SECRET = "s3cr3t-Pa55word-value"
TOKEN = "T000/B000/XXXXtokenXXXX"


class Sink:
    """An HTTP receiver: records each body; answers `status`, or never (hang)."""

    def __init__(self, status: int = 200, hang: bool = False):
        self.bodies: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hang:
                    time.sleep(30)
                    return
                sink.bodies.append(json.loads(data))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def settings(tmp_path: Path, url: str, fmt: str = "json", timeout: str = "2") -> Settings:
    (tmp_path / "app.env").write_text(f"DATABASE_PASSWORD={SECRET}\n")
    return load_settings(
        environ={"NOTIFY_URL": url, "NOTIFY_FORMAT": fmt, "NOTIFY_TIMEOUT": timeout},
        overrides={"APP_ENV_FILE": str(tmp_path / "app.env"), "APP_NAME": "shop"},
        cwd=str(tmp_path),
    )


def notifier(s: Settings, warnings: list[str], event: str = "deploy") -> Notifier:
    return Notifier(s, event, ["ubuntu@web1:22", "ubuntu@web2:22"], "a" * 40, warn=warnings.append)


def test_a_deploy_tells_its_start_and_success_once_for_all_hosts(tmp_path: Path, sink: Sink):
    warnings: list[str] = []
    n = notifier(settings(tmp_path, sink.url), warnings)
    with notifying(n):
        told(n, Ended("20261207-120000-aaaaaaa"))
    assert [b["status"] for b in sink.bodies] == ["started", "succeeded"]
    done = sink.bodies[1]
    assert done["event"] == "deploy" and done["app"] == "shop"
    assert done["hosts"] == ["ubuntu@web1:22", "ubuntu@web2:22"]
    assert done["release"] == "20261207-120000-aaaaaaa" and done["commit"] == "a" * 40
    assert isinstance(done["seconds"], float) and "step" not in done
    assert warnings == []


def test_a_rolled_back_deploy_names_the_step_and_masks_secrets(tmp_path: Path, sink: Sink):
    warnings: list[str] = []
    n = notifier(settings(tmp_path, sink.url), warnings)
    failure = RunFailed(
        f"health gate: /healthz answered 500 (password {SECRET})\nmore lines",
        "health gate",
        Outcome.ROLLED_BACK,
        "20261207-120000-bbbbbbb",
        code=1,
    )
    with pytest.raises(RunFailed) as raised, notifying(n):
        raise failure
    assert raised.value is failure and raised.value.code == 1  # the result is the deploy's own
    last = sink.bodies[-1]
    assert (last["status"], last["step"], last["release"]) == (
        "rolled back",
        "health gate",
        "20261207-120000-bbbbbbb",
    )
    assert last["message"].startswith("health gate: /healthz answered 500")
    assert "more lines" not in last["message"]
    assert all(SECRET not in json.dumps(b) and TOKEN not in json.dumps(b) for b in sink.bodies)


def test_a_failure_outside_the_steps_names_the_failing_line(tmp_path: Path, sink: Sink):
    rep = Reporter("ubuntu@web1:22", quiet=True)
    n = notifier(settings(tmp_path, sink.url), [])
    with pytest.raises(Exit), notifying(n, rep):
        with rep.step("connect"):
            raise Exit("Cannot connect to ubuntu@web1:22: refused.")
    assert (sink.bodies[-1]["status"], sink.bodies[-1]["step"]) == ("failed", "connect")


def test_a_rollback_tells_how_it_ended_and_a_dry_run_tells_nothing(tmp_path: Path, sink: Sink):
    s = settings(tmp_path, sink.url)
    n = notifier(s, [], event="rollback")
    with notifying(n):
        told(n, Ended("20261207-110000-ccccccc"))
    quiet = Notifier(s, "deploy", ["ubuntu@web1:22"], "a" * 40, enabled=False)
    with notifying(quiet):
        told(quiet, None)
    assert [(b["event"], b["status"]) for b in sink.bodies] == [("rollback", "succeeded")]


def test_the_slack_format_is_one_text_field(tmp_path: Path, sink: Sink):
    n = notifier(settings(tmp_path, sink.url, fmt="slack"), [])
    with pytest.raises(RunFailed), notifying(n):
        raise RunFailed(f"trial run failed: {SECRET}", "trial run", Outcome.FAILED, "r1")
    assert [set(b) for b in sink.bodies] == [{"text"}, {"text"}]
    assert sink.bodies[0]["text"].startswith("shop: deploy started on ubuntu@web1:22")
    assert "deploy failed" in sink.bodies[1]["text"]
    assert "failed at trial run: trial run failed: ***" in sink.bodies[1]["text"]
    assert SECRET not in sink.bodies[1]["text"]


def test_a_failing_receiver_is_one_warning_that_never_shows_the_token(tmp_path: Path):
    failing = Sink(status=500)
    try:
        warnings: list[str] = []
        n = notifier(settings(tmp_path, failing.url), warnings)
        with notifying(n):
            told(n, Ended("r1"))
    finally:
        failing.close()
    assert len(warnings) == 2 and all("HTTP 500" in w for w in warnings)
    assert all(TOKEN not in w and "http://127.0.0.1/…" in w for w in warnings)


def test_a_hanging_receiver_delays_the_end_by_at_most_the_bound(tmp_path: Path):
    hanging = Sink(hang=True)
    try:
        warnings: list[str] = []
        n = notifier(settings(tmp_path, hanging.url, timeout="1"), warnings)
        started = time.monotonic()
        with notifying(n):
            told(n, Ended("r1"))
        took = time.monotonic() - started
    finally:
        hanging.close()
    assert took < 1.5, took
    assert len(warnings) == 2 and all("no answer within 1s" in w for w in warnings)


def test_a_receiver_that_refuses_connections_is_a_warning(tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    warnings: list[str] = []
    n = notifier(settings(tmp_path, f"http://127.0.0.1:{port}/x"), warnings)
    with notifying(n):
        told(n, Ended("r1"))
    assert len(warnings) == 2 and all("was not delivered" in w for w in warnings)


def test_the_url_is_a_secret_never_shown(tmp_path: Path):
    s = settings(tmp_path, f"https://hooks.example.com/services/{TOKEN}")
    shown = effective_text(s)
    assert TOKEN not in shown
    assert "NOTIFY_URL" in shown and "environment" in shown.split("NOTIFY_URL")[1].splitlines()[0]
    with pytest.raises(SettingsError) as bad:
        load_settings(environ={"NOTIFY_URL": f"hooks.example.com/{TOKEN}"}, cwd=str(tmp_path))
    assert "NOTIFY_URL (environment)" in str(bad.value) and TOKEN not in str(bad.value)


def fleet_member(label: str, result: str):
    from types import SimpleNamespace

    from signalcraft_deploy.core.facts import HostFacts
    from signalcraft_deploy.steps.fleet import Member

    plan = SimpleNamespace(manifest=SimpleNamespace(release="r2"), actions=[])
    return Member(
        c=None,
        label=label,
        rep=Reporter(label, quiet=True),
        facts=HostFacts(current_release="r1"),
        plan=plan,  # type: ignore[arg-type]
        result=result,
    )


def test_a_fleet_s_failure_is_one_notification_naming_the_host_and_its_step(
    tmp_path: Path, sink: Sink
):
    from signalcraft_deploy.steps.fleet import Result, fleet_exit
    from signalcraft_deploy.steps.runner import Failure

    web1, web2 = fleet_member("web1", Result.ROLLED_BACK), fleet_member("web2", Result.ROLLED_BACK)
    cause = Failure("check health", Exit(f"health: 502 ({SECRET})"), Outcome.ROLLED_BACK)
    n = notifier(settings(tmp_path, sink.url), [])
    with pytest.raises(RunFailed) as raised, notifying(n):
        raise fleet_exit([(web2, cause)], [web1, web2], "deploy")
    assert raised.value.code == 1 and "The deploy failed on web2" in str(raised.value.message)
    assert [b["status"] for b in sink.bodies] == ["started", "rolled back"]
    last = sink.bodies[-1]
    assert last["hosts"] == ["ubuntu@web1:22", "ubuntu@web2:22"]
    assert (last["step"], last["release"]) == ("web2: check health", "r2")
    assert last["message"].startswith("The deploy failed on web2: web2 (this machine): health: 502")
    assert SECRET not in json.dumps(last)


def test_an_unforeseen_error_is_told_as_failed_and_raised_as_is(tmp_path: Path, sink: Sink):
    rep = Reporter("ubuntu@web1:22", quiet=True)
    n = notifier(settings(tmp_path, sink.url), [])
    with pytest.raises(OSError), notifying(n, rep):
        with rep.step("read host"):
            raise OSError("Socket is closed")
    last = sink.bodies[-1]
    assert (last["status"], last["step"], last["message"]) == (
        "failed",
        "read host",
        "OSError: Socket is closed",
    )


def test_an_interrupted_deploy_is_told_as_failed_not_left_started(tmp_path: Path, sink: Sink):
    """Ctrl-C (or a CI job cancelled with SIGINT) is a KeyboardInterrupt, not an Exception: the
    receiver must still see the start's end, and the interrupt is raised as it was."""
    n = notifier(settings(tmp_path, sink.url), [])
    with pytest.raises(KeyboardInterrupt), notifying(n):
        raise KeyboardInterrupt
    assert [b["status"] for b in sink.bodies] == ["started", "failed"]
    assert sink.bodies[-1]["message"] == "interrupted (Ctrl-C)"


def test_a_url_with_a_control_character_is_refused_before_it_can_be_quoted_in_a_warning(
    tmp_path: Path,
):
    """http.client refuses a path with a control character by quoting the whole path (the token)
    in its error, which the warning would print: the setting refuses such a URL, unshown."""
    with pytest.raises(SettingsError) as bad:
        load_settings(
            environ={"NOTIFY_URL": f"https://hooks.example.com/services/{TOKEN}\x7f"},
            cwd=str(tmp_path),
        )
    assert "NOTIFY_URL (environment)" in str(bad.value) and TOKEN not in str(bad.value)


def test_a_slack_message_escapes_what_slack_reads_as_markup() -> None:
    """A health failure quoting `<urlopen error ...>`, or a message holding `<!channel>`, is text in
    the chat, not a link or a mention of everyone."""
    notice = Notice(
        event="deploy",
        status="failed",
        app="shop",
        environment=None,
        hosts=["web1"],
        by="ci",
        step="check health",
        message="URLError: <urlopen error [Errno 111]> & <!channel>",
    )
    text = slack_text(notice)
    assert "&lt;urlopen error [Errno 111]&gt; &amp; &lt;!channel&gt;" in text
    assert "<" not in text and ">" not in text
