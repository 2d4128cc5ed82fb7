"""The runner: carry out a list of steps in order; on failure undo the done ones in reverse.

A step has a name (the word printed and audited), a condition (`when`), `do` (returns the detail
printed on its line) and an `undo` for what it changed. The runner prints and times each step.
On failure it waits for what the steps left running in the background, then undoes the steps
done so far, newest first, each as far as its undo reaches. A failing step's own undo runs only
if the step says its undo also reverses a partial `do` (`undoes_itself`). Whether a failure
"failed before the switch" or "rolled back" follows from whether a step marked `commits` (the
switch) was done. The audit record is written either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from invoke.exceptions import Exit, UnexpectedExit

from signalcraft_deploy.steps.report import Reporter


class Outcome(StrEnum):
    """How a run ended; the values are the words of the audit log's `result`."""

    OK = "ok"
    FAILED = "failed before switch"
    ROLLED_BACK = "rolled back"
    UNCHANGED = "unchanged"


class RunState(Protocol):
    """What the runner needs of the state the steps share."""

    rep: Reporter
    record: dict[str, Any]

    def write_audit(self) -> None: ...

    def mask(self, text: str) -> str:
        """`text` with the run's secrets hidden (everything a step says may hold output of the host)."""

    def settle(self) -> None:
        """Wait for whatever the steps left running in the background."""


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
    undoes_itself: bool = False  # its undo also reverses a partial `do`, so it runs when this step fails


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
            notes.append(f"could not undo {step.name}: {(state.mask(str(err.message)).splitlines() or [''])[0]}")
    return undone, notes


def run_steps(state: S, steps: Sequence[Step[S]], after_undo: Callable[[S, Outcome], list[str]] | None = None,
              done: list[Step[S]] | None = None, last: bool = True) -> list[str]:
    """Run each step whose `when` holds; return the names of the steps done. Raise `Failure` on failure.

    A run may be carried out in parts (a fleet deploy's phases): pass the same `done` list to each
    part, and `last=False` to all but the final one (only the final part audits success).
    """
    done = [] if done is None else done
    for step in steps:
        if not step.when(state):
            continue
        try:
            with state.rep.step(step.name) as line:
                line.detail = _run(step.do, state)
        except Exit as err:
            err.message = state.mask(str(err.message or ""))
            raise abandon(state, done, err, step, after_undo) from None
        done.append(step)
    if last:
        _audit(state, Outcome.OK)
    return [d.name for d in done]


def abandon(state: S, done: list[Step[S]], err: Exit, step: Step[S] | None = None,
            after_undo: Callable[[S, Outcome], list[str]] | None = None) -> Failure:
    """Undo the steps done so far, newest first, and audit: after `step` failed with `err`, or (no step)
    when a run is given up from outside (another host of a fleet failed). Returns the `Failure`."""
    outcome = Outcome.ROLLED_BACK if any(d.commits for d in done) else Outcome.FAILED
    state.settle()
    undo = ([step] if step is not None and step.undoes_itself else []) + done[::-1]
    undone, notes = undo_steps(state, undo)
    notes += after_undo(state, outcome) if after_undo else []
    name = step.name if step is not None else "abandoned"
    failure = Failure(name, err, outcome, undone, notes)
    _audit(state, outcome, reason=failure.message.splitlines()[0] if failure.message else name)
    done.clear()
    return failure


def _run(action: Callable[[S], str | None], state: S) -> str:
    """Run a step's do or undo; a command that failed unexpectedly is a failure like any other."""
    try:
        return state.mask(action(state) or "")
    except UnexpectedExit as err:
        result = err.result
        output = state.mask((result.stderr or result.stdout or "").strip()[-500:])
        raise Exit(f"A command on the host failed (exit {result.exited}): {output or state.mask(result.command)}") from None


def _audit(state: RunState, outcome: Outcome, reason: str | None = None) -> None:
    state.record.update(result=str(outcome), steps=state.rep.durations())
    if reason:
        state.record["reason"] = reason
    state.write_audit()
