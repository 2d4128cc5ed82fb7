"""The runner: carry out a list of steps in order; on failure undo the done ones in reverse.

A step has a name (the word printed and audited), a condition (`when`), `do` (returns the detail
printed on its line) and an `undo` for what it changed. The runner prints and times each step.
On failure it waits for what the steps left running in the background, then undoes the steps
done so far, newest first, each as far as its undo reaches. A failing step's own undo runs only
if the step says its undo also reverses a partial `do` (`undoes_itself`). Whether a failure
"failed before the switch" or "rolled back" follows from whether a step marked `commits` (the
switch) was done. The audit record is written either way.

A lost SSH connection (`host.io.ConnectionLost`) is a failure like any other once the runner has
connected again: the same undos, and a message that names the step it cut, what was undone and the
command that finishes the job. If it cannot connect again, nothing is undone and the message says
what was left as it was (the deploy lock went with the connection, so the next deploy may run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from invoke.exceptions import Exit, UnexpectedExit

from signalcraft_deploy.host.io import ConnectionLost
from signalcraft_deploy.steps.report import Reporter


class Outcome(StrEnum):
    """How a run ended; the values are the words of the audit log's `result`."""

    OK = "ok"
    FAILED = "failed before switch"
    ROLLED_BACK = "rolled back"
    UNCHANGED = "unchanged"
    LOST = "connection lost"  # and not undone: not made again, or lost again while undoing


class RunState(Protocol):
    """What the runner needs of the state the steps share."""

    rep: Reporter
    record: dict[str, Any]

    def write_audit(self) -> None: ...

    def mask(self, text: str) -> str:
        """`text` with the run's secrets hidden (everything a step says may hold output of the
        host)."""

    def settle(self) -> None:
        """Wait for whatever the steps left running in the background."""

    def reconnect(self) -> str | None:
        """Connect to the host again after the connection was lost: None when connected, else why
        not."""

    def again(self) -> str:
        """The command that finishes the job a lost connection cut short (run again, it
        converges)."""


S = TypeVar("S", bound=RunState)


def always(_: Any) -> bool:
    return True


@dataclass(frozen=True)
class Step(Generic[S]):
    name: str
    do: Callable[[S], str | None]
    undo: Callable[[S], str | None] | None = None
    when: Callable[[S], bool] = always
    commits: bool = False  # once done, a failure is a rollback (the switch)
    undoes_itself: bool = (
        False  # its undo also reverses a partial `do`, so it runs when this step fails
    )


@dataclass
class Failure(Exception):
    """A run that failed: the step, the error, what was undone and what the undos said."""

    step: str
    error: Exit
    outcome: Outcome
    undone: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return str(self.error.message)


class RunFailed(Exit):
    """A deploy or rollback that failed in its steps, as the user sees it (the message), with what a
    report of it needs: the step, how it ended (failed before the switch, or rolled back) and the
    release it was making."""

    def __init__(
        self, message: str, step: str, outcome: Outcome, release: str | None = None, code: int = 1
    ):
        super().__init__(message, code=code)
        self.step, self.outcome, self.release = step, outcome, release


@dataclass(frozen=True)
class Ended:
    """What a deploy or rollback that did not fail left live, for whoever reports it."""

    release: str
    changed: bool = True  # False: nothing to deploy (or every host already ran it)


def undo_steps(state: S, steps: Sequence[Step[S]]) -> tuple[list[str], list[str]]:
    """Undo steps in the order given; a failing undo is reported and the others still run."""
    undone, notes = [], []
    for step in steps:
        if step.undo is None:
            continue
        try:
            with state.rep.step(f"undo {step.name}") as line:
                line.detail = _run(step.undo, state)
            undone.append(step.name)
        except Exit as err:
            notes.append(
                f"could not undo {step.name}:"
                f" {(state.mask(str(err.message)).splitlines() or [''])[0]}"
            )
    return undone, notes


def run_steps(
    state: S,
    steps: Sequence[Step[S]],
    after_undo: Callable[[S, Outcome], list[str]] | None = None,
    done: list[Step[S]] | None = None,
    last: bool = True,
) -> list[str]:
    """Run each step whose `when` holds; return the names of the steps done. Raise `Failure` on
    failure.

    A run may be carried out in parts (a fleet deploy's phases): pass the same `done` list to each
    part, and `last=False` to all but the final one (only the final part audits success).
    """
    done = [] if done is None else done
    for step in steps:
        if not step.when(state):
            continue
        started = time.monotonic()
        try:
            with state.rep.step(step.name) as line:
                line.detail = _run(step.do, state)
        except ConnectionLost as lost:
            raise connection_lost(
                state, done, lost, step, time.monotonic() - started, after_undo
            ) from None
        except Exit as err:
            err.message = state.mask(str(err.message or ""))
            raise abandon(state, done, err, step, after_undo) from None
        done.append(step)
    if last:
        _audit(state, Outcome.OK)
    return [d.name for d in done]


def abandon(
    state: S,
    done: list[Step[S]],
    err: Exit,
    step: Step[S] | None = None,
    after_undo: Callable[[S, Outcome], list[str]] | None = None,
) -> Failure:
    """Undo the steps done so far, newest first, and audit: after `step` failed with `err`, or (no
    step) when a run is given up from outside (another host of a fleet failed). Returns the
    `Failure`."""
    outcome = Outcome.ROLLED_BACK if any(d.commits for d in done) else Outcome.FAILED
    try:
        state.settle()
    except ConnectionLost:
        pass  # what was left running went with the connection
    undone, notes = undo_steps(state, to_undo(done, step))
    try:
        notes += after_undo(state, outcome) if after_undo else []
    except ConnectionLost as lost:
        notes.append(f"what serves now could not be checked: {lost.message}")
    name = step.name if step is not None else "abandoned"
    failure = Failure(name, err, outcome, undone, notes)
    try:
        _audit(state, outcome, reason=failure.message.splitlines()[0] if failure.message else name)
    except ConnectionLost:
        notes.append("the audit record could not be written: the SSH connection was lost")
    done.clear()
    return failure


def to_undo(done: Sequence[Step[S]], step: Step[S] | None) -> list[Step[S]]:
    """The steps to undo after `step` failed, newest first (the failed one when its undo reverses a
    partial do)."""
    return ([step] if step is not None and step.undoes_itself else []) + list(done[::-1])


def connection_lost(
    state: S,
    done: list[Step[S]],
    lost: ConnectionLost,
    step: Step[S],
    seconds: float,
    after_undo: Callable[[S, Outcome], list[str]] | None = None,
) -> Failure:
    """The connection died during `step`: connect again and undo as for any failure, or, if that
    cannot be done, leave everything as it is; either way one message naming the step, what was
    undone or not, and what to run.
    """
    cut = (
        f"The SSH connection to {lost.where} was lost{lost.why} during {step.name} ({seconds:.0f}s"
        " in)."
    )
    event = str(state.record.get("event") or "deploy")
    why = state.reconnect()
    if why is None:
        failure = abandon(state, done, Exit(cut), step, after_undo)
        undone, missed = (
            ", ".join(failure.undone),
            [n for n in failure.notes if n.startswith("could not undo")],
        )
        parts = [
            cut,
            "Connected again"
            + (f" and undone: {undone}" if undone else ": nothing needed undoing")
            + ".",
        ]
        parts += ["Some of it could not be undone (below)."] if missed else []
        parts += [f"The next {event} converges: run `{state.again()}` (with the same flags)."]
        if (
            missed
        ):  # not "rolled back": the host is partly back (an undo lost the new connection too, say)
            failure.outcome = Outcome.LOST
        below = (
            ""
            if failure.outcome is Outcome.ROLLED_BACK
            else "".join(f"\n  {note}" for note in failure.notes)
        )
        failure.error.message = state.mask(
            " ".join(parts) + below
        )  # a rollback's message lists the notes itself
        return failure
    pending = [s.name for s in to_undo(done, step) if s.undo is not None]
    left = (
        f"Not undone: {', '.join(pending)}."
        if pending
        else "Nothing needed undoing: no step before it had changed the host."
    )
    message = (
        f"{cut} It could not be undone: {why[:1].upper() + why[1:]}. {left} The next {event}"
        f" converges: once the host is reachable and its deploy lock free, run `{state.again()}`"
        " (with the same flags)."
    )
    # as abandon does: a fleet that gives this host up later finds nothing left to undo
    done.clear()
    return Failure(step.name, Exit(state.mask(message)), Outcome.LOST)


def lost_outside_steps(
    lost: ConnectionLost, rep: Reporter, again: str, event: str = "deploy"
) -> str:
    """The message of a connection lost outside the steps: while the host was read and planned (its
    step's line failed), before the deploy changed anything; or after the last step, once it was
    done."""
    last = rep.steps[-1] if rep.steps else None
    if last is not None and not last.ok:
        where = (
            f"during {last.name} ({last.seconds:.0f}s in), before the {event} changed anything on"
            " the host"
        )
    else:
        where = f"after the {event}'s last step; it was done, but its audit record may be missing"
    return (
        f"The SSH connection to {lost.where} was lost{lost.why} {where}. The next {event}"
        f" converges: run `{again}` (with the same flags)."
    )


def _run(action: Callable[[S], str | None], state: S) -> str:
    """Run a step's do or undo; a command that failed unexpectedly is a failure like any other."""
    try:
        return state.mask(action(state) or "")
    except UnexpectedExit as err:
        result = err.result
        output = state.mask((result.stderr or result.stdout or "").strip()[-500:])
        raise Exit(
            f"A command on the host failed (exit {result.exited}):"
            f" {output or state.mask(result.command)}"
        ) from None


def _audit(state: RunState, outcome: Outcome, reason: str | None = None) -> None:
    state.record.update(result=str(outcome), steps=state.rep.durations())
    if reason:
        state.record["reason"] = reason
    state.write_audit()
