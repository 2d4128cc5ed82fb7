"""Output: each step on its own line with its duration; GitHub Actions groups and summaries.

Colour only on a terminal. Under GitHub Actions (GITHUB_ACTIONS=true) each step is a
`::group::`, a failure is an `::error::` annotation, and a Markdown summary is appended to
$GITHUB_STEP_SUMMARY.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from signalcraft_deploy.core.secrets import visible


def _github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _colour(code: str, text: str) -> str:
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not _github():
        return f"\033[{code}m{text}\033[0m"
    return text


@dataclass
class StepRecord:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Reporter:
    """Prints steps as they finish and keeps them for the summary and the audit log."""

    target: str
    steps: list[StepRecord] = field(default_factory=list)
    quiet: bool = False
    prefix: str = ""  # put before every line: the host's name when a fleet's hosts print at once

    def say(self, text: str) -> None:
        if (
            not self.quiet
        ):  # one write per call, newline included: the lines of hosts printing at once never mix
            sys.stdout.write(self._prefixed(visible(text)) + "\n")
            sys.stdout.flush()

    def _prefixed(self, text: str) -> str:
        return "\n".join(self.prefix + line for line in text.split("\n")) if self.prefix else text

    def warn(self, text: str) -> None:
        text = visible(
            text
        )  # it may quote the host: an app's title or folder must not drive the terminal
        sys.stderr.write(self._prefixed(_colour("33", f"warning: {text}")) + "\n")
        sys.stderr.flush()
        if _github():
            print(f"::warning::{text}", flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        record = StepRecord(name=name, seconds=0.0, ok=False)
        if _github():
            print(f"::group::{name}", flush=True)
        start = time.monotonic()
        try:
            yield record
            record.ok = True
        finally:
            record.seconds = time.monotonic() - start
            self.steps.append(record)
            if _github():
                print("::endgroup::", flush=True)
            mark = _colour("32", "ok  ") if record.ok else _colour("31", "FAIL")
            detail = f"  {record.detail}" if record.detail else ""
            self.say(f"{mark} {name:<22} {record.seconds:6.2f}s{detail}")

    def error(self, message: str) -> None:
        if _github():
            print(f"::error::{message.splitlines()[0] if message else 'failed'}", flush=True)

    def durations(self) -> dict[str, float]:
        return {s.name: round(s.seconds, 3) for s in self.steps}

    def write_github_summary(self, title: str, lines: list[str]) -> None:
        path = os.environ.get("GITHUB_STEP_SUMMARY")
        if not _github() or not path:
            return
        out = [f"## {title}", "", "| step | seconds | result |", "| --- | ---: | --- |"]
        out += [
            f"| {s.name} | {s.seconds:.2f} | {'ok' if s.ok else 'failed'} |" for s in self.steps
        ]
        out += [""] + lines + [""]
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
