"""A deploy (or rollback) over several hosts: DEPLOY_STEPS in phases, the hosts side by side.

1. lock    every host, in parallel: connect (host key checked), take the deploy lock, read the host.
           An unreachable host, an unknown host key or a held lock stops everything here: nothing
           has changed anywhere, and the message names the host.
2. prepare in parallel (at most PARALLEL at once): plan, upload, install, render, trial run,
           nginx-check: the steps before the switch. A failure on any host stops the deploy on all
           of them before any host switches (each host's steps are undone).
   BEFORE_SWITCH runs once, on the first host, after every host is prepared.
3. rollout host by host (`--batch N` or `N%`; the first host always alone): switch, reload,
           health gate, AFTER_SWITCH. Every host's gate program is started before the first
           switch, so that a host's turn costs no interpreter start. A host that fails is rolled
           back by its own undos; the hosts already switched are rolled back too
           (`--on-failure rollback`, the default) or kept (`keep`); the hosts not reached are
           left as they were.
4. finish  in parallel: pm2 save, prune, audit.

The steps are the single-host ones (steps/deploy.py), run by the same runner in parts that share
each host's list of done steps, so a host's undo covers every phase it went through. One summary
table follows, and a line saying whether every host serves the same release. Each host's audit
record carries the same `deploy_id`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from invoke.exceptions import Exit, UnexpectedExit

from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import How, Plan
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import fail, target_name
from signalcraft_deploy.host.lock import DeployLock
from signalcraft_deploy.steps.deploy import DEPLOY_STEPS, DeployRun, after_undo
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Failure, Outcome, Step, abandon, run_steps

PARALLEL = 10  # hosts worked on at once in the parallel phases


def _names(first: str, last: str | None) -> list[Step[DeployRun]]:
    names = [s.name for s in DEPLOY_STEPS]
    return DEPLOY_STEPS[names.index(first) : names.index(last) if last else None]


PREPARE = _names(DEPLOY_STEPS[0].name, "before-switch")
BEFORE = _names("before-switch", "switch")
ROLLOUT = _names("switch", "finish")
FINISH = _names("finish", None)


class Result:
    """What happened to a host, as the summary table says it."""

    UNCHANGED = "unchanged"
    DRY_RUN = "dry run"
    OK = "ok"
    FAILED = "FAILED"
    ROLLED_BACK = "rolled back"
    KEPT = "kept (switched)"
    STOPPED = "stopped, unchanged"
    UNTOUCHED = "not reached, unchanged"


@dataclass
class Member:
    """One host of the fleet and where its deploy stands."""

    c: Any
    label: str
    rep: Reporter
    lock: DeployLock | None = None
    facts: HostFacts | None = None
    plan: Plan | None = None
    # the settings this host's release runs with (Node.js entry point from its package.json)
    settings: Any = None
    run: DeployRun | None = None
    shipment: Any = None  # the release's code (SOURCE=git: as this host's mirror has it)
    done: list[Step[DeployRun]] = field(default_factory=list)
    result: str = Result.UNTOUCHED
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    @property
    def serves(self) -> str:
        """The release this host serves now."""
        current = self.facts.current_release if self.facts else None
        if self.result in (Result.OK, Result.KEPT) and self.plan:
            return self.plan.manifest.release
        return current or "nothing"

    def stop_clock(self) -> None:
        self.seconds = time.monotonic() - self.started


def members(conns: Sequence[Any]) -> list[Member]:
    labels = [str(getattr(c, "original_host", None) or target_name(c)) for c in conns]
    width = max(len(label) for label in labels)
    return [
        Member(c, label, Reporter(target_name(c), prefix=f"{label:<{width}} | "))
        for c, label in zip(conns, labels, strict=True)
    ]


def new_deploy_id() -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def message(err: BaseException) -> str:
    if isinstance(err, Failure):
        return err.message
    if isinstance(err, Exit):
        return str(err.message or "")
    if isinstance(err, UnexpectedExit):
        return f"a command failed on the host (exit {err.result.exited})"
    return f"{type(err).__name__}: {err}"


def parallel(
    group: Sequence[Member], work: Callable[[Member], None], limit: int = PARALLEL
) -> list[tuple[Member, BaseException]]:
    """Run `work` for each member, at most `limit` at once; the failures, in the members' order."""
    if not group:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(group)))) as pool:
        futures = [(m, pool.submit(work, m)) for m in group]
    failed = []
    for m, future in futures:
        err = future.exception()
        if err is not None:
            lines = [line.strip() for line in message(err).splitlines() if line.strip()]
            m.error = (
                " ".join(lines[:2])
                if lines and lines[0].endswith(":")
                else (lines[0] if lines else type(err).__name__)
            )
            failed.append((m, err))
    return failed


def exit_code(failed: list[tuple[Member, BaseException]]) -> int:
    codes = [
        err.code
        for _, err in failed
        if isinstance(err, Exit) and not isinstance(err, Failure) and err.code
    ]
    return codes[0] if codes else 1


def describe_failures(failed: list[tuple[Member, BaseException]]) -> str:
    return "\n".join(f"  {m.label} ({target_name(m.c)}): {message(err)}" for m, err in failed)


def release_locks(group: Sequence[Member]) -> None:
    """Every host's lock, released side by side (each waits for its lock command to end)."""

    def release(m: Member) -> None:
        lock, m.lock = m.lock, None
        if lock is not None:
            lock.__exit__(None, None, None)

    parallel([m for m in group if m.lock is not None], release)


# ----------------------------------------------------------------------------- phases 2 to 4


def give_up(group: Sequence[Member], why: str, result: str) -> None:
    """Undo what each member's steps did so far (in parallel) and mark it `result`."""

    def undo(m: Member) -> None:
        assert m.run is not None
        failure = abandon(m.run, m.done, Exit(why), after_undo=after_undo)
        m.result = Result.ROLLED_BACK if failure.outcome is Outcome.ROLLED_BACK else result

    for m, err in parallel(group, undo):
        m.result, m.error = Result.FAILED, f"its undo failed: {message(err)}"


def run_phase(
    group: Sequence[Member], steps: list[Step[DeployRun]], limit: int = PARALLEL, last: bool = False
) -> list[tuple[Member, BaseException]]:
    def work(m: Member) -> None:
        assert m.run is not None
        run_steps(m.run, steps, after_undo=after_undo, done=m.done, last=last)

    failed = parallel(group, work, limit)
    for m, err in failed:
        outcome = err.outcome if isinstance(err, Failure) else Outcome.FAILED
        m.result = Result.ROLLED_BACK if outcome is Outcome.ROLLED_BACK else Result.FAILED
    return failed


def batches(group: list[Member], batch: str) -> list[list[Member]]:
    """The first host alone, then the rest `batch` at a time (a count, or a percentage of the
    fleet)."""
    text = str(batch or "1").strip()
    size = (
        max(1, -(-len(group) * int(text[:-1]) // 100)) if text.endswith("%") else max(1, int(text))
    )
    rest = group[1:]
    return [group[:1]] + [rest[i : i + size] for i in range(0, len(rest), size)]


def check_batch(batch: str | None) -> str:
    text = str(batch or "1").strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) < 1 or (text.endswith("%") and int(number) > 100):
        raise Exit(
            f"--batch {batch}: expected a number of hosts (1, 2, ...) or a percentage (1% to"
            " 100%).",
            code=2,
        )
    return text


def check_on_failure(value: str | None) -> str:
    value = value or "rollback"
    if value not in ("rollback", "keep"):
        raise Exit(
            f"--on-failure {value}: expected 'rollback' (every host back on its release) or"
            " 'keep'.",
            code=2,
        )
    return value


def roll_out(
    group: list[Member], s: Settings, batch: str, on_failure: str
) -> list[tuple[Member, BaseException]]:
    """Phase 3 and 4. Returns the failures (empty when every host is on the new release)."""
    first = group[0]
    if BEFORE and bool(s.before_switch) and first.run is not None and first.run.is_deploy:
        failed = run_phase([first], BEFORE)
        if failed:
            give_up(group[1:], f"BEFORE_SWITCH failed on {first.label}", Result.STOPPED)
            return failed
    # Every host's health gate started now, side by side: a host's turn then costs its switch,
    # reload and checks only.
    # type: ignore[union-attr]
    parallel([m for m in group if m.run is not None], lambda m: m.run.start_gate())
    switched: list[Member] = []
    todo = batches(group, batch)
    for i, part in enumerate(todo):
        failed = run_phase(part, ROLLOUT)
        failing = {id(m) for m, _ in failed}
        switched += [m for m in part if id(m) not in failing]
        if failed:
            why = f"{', '.join(m.label for m, _ in failed)} failed its deploy"
            give_up([m for later in todo[i + 1 :] for m in later], why, Result.UNTOUCHED)
            if on_failure == "rollback":
                give_up(switched, why + "; --on-failure rollback", Result.ROLLED_BACK)
            else:
                for m, err in run_phase(switched, FINISH, last=True):
                    failed.append((m, err))
                for m in switched:
                    if m.result not in (Result.FAILED, Result.ROLLED_BACK):
                        m.result = Result.KEPT
            return failed
    failed = run_phase(group, FINISH, last=True)
    for m in group:
        if m.result not in (Result.FAILED, Result.ROLLED_BACK):
            m.result = Result.OK
    return failed


def prepare(
    group: list[Member], make_run: Callable[[Member], DeployRun]
) -> list[tuple[Member, BaseException]]:
    """Phase 2 for every member: its run made (the plan step) and the steps before the switch
    done."""

    def work(m: Member) -> None:
        m.run = make_run(m)
        run_steps(m.run, PREPARE, after_undo=after_undo, done=m.done, last=False)

    failed = parallel(group, work)
    for m, _ in failed:
        m.result = Result.FAILED
    if failed:
        others = [m for m in group if m.run is not None and m.result != Result.FAILED]
        give_up(
            others,
            f"{', '.join(m.label for m, _ in failed)} failed before the switch",
            Result.STOPPED,
        )
    return failed


# ----------------------------------------------------------------------------- the summary


def reloaded(m: Member) -> str:
    if m.plan is None or m.result in (Result.UNCHANGED, Result.STOPPED) and not m.done:
        return "-"
    acts = [f"{a.app}: {a.how}" for a in m.plan.actions if a.how is not How.NONE]
    return ", ".join(acts) or "-"


def summary(group: Sequence[Member], deploy_id: str, say: Callable[[str], None] = print) -> bool:
    """The table (host, from, to, what reloaded, result, time) and the consistency line; True if
    consistent."""
    for m in (
        group
    ):  # the time spent on each host: its steps (the clock, when it had none beyond the read)
        m.seconds = (
            sum(step.seconds for step in m.rep.steps) or m.seconds or time.monotonic() - m.started
        )
    rows = [("host", "from", "to", "reloaded", "result", "time")]
    for m in group:
        frm = (m.facts.current_release if m.facts else None) or "-"
        to = m.plan.manifest.release if m.plan else "-"
        result = m.result + (
            f": {m.error}" if m.error and m.result in (Result.FAILED, Result.ROLLED_BACK) else ""
        )
        rows.append((m.label, frm, to, reloaded(m), result, f"{m.seconds:.1f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(r[:5])) + f"  {r[5]}"
        for r in rows
    ]
    say(f"\nFleet {deploy_id}:")
    for line in lines:
        say("  " + line)
    serving: dict[str, list[str]] = {}
    for m in group:
        serving.setdefault(m.serves, []).append(m.label)
    if len(serving) == 1:
        say(f"Fleet consistent: all {len(group)} hosts serve {next(iter(serving))}.")
        return True
    say(
        "Fleet NOT consistent: "
        + "; ".join(f"{', '.join(hosts)} serve {rel}" for rel, hosts in serving.items())
        + "."
    )
    return False


def fleet_exit(
    failed: list[tuple[Member, BaseException]], group: Sequence[Member], what: str
) -> Exit:
    changed = any(m.result in (Result.KEPT,) for m in group)
    tail = (
        "The hosts switched before it were kept (--on-failure keep)."
        if changed
        else "Every host is back on (or still on) the release it had."
    )
    return fail(
        f"The {what} failed on"
        f" {', '.join(m.label for m, _ in failed)}:\n{describe_failures(failed)}\n{tail}",
        code=exit_code(failed),
    )
