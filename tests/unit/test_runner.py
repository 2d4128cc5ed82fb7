"""The step runner over a mocked SSH session (fabric.testing): the exact commands each step and undo
sends, in order, for a failure at every position; the audit record it writes; the deploy's own step
list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fabric import Connection
from fabric.testing.base import Command, Session

from signalcraft_deploy.host.io import ConnectionLost, fail, run
from signalcraft_deploy.steps.deploy import DEPLOY_STEPS
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Failure, Outcome, Step, run_steps

pytest_plugins = ["fabric.testing.fixtures"]

COUNT = 5


@dataclass
class State:
    c: Any
    rep: Reporter = field(default_factory=lambda: Reporter("host", quiet=True))
    record: dict[str, Any] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)
    settled: int = 0
    reconnected: list[str | None] = field(
        default_factory=list
    )  # what each reconnect says (None: connected)

    def reconnect(self) -> str | None:
        return self.reconnected.pop(0)

    def again(self) -> str:
        return "fab -H ubuntu@web1:22 deploy"

    def write_audit(self) -> None:
        self.audits.append(dict(self.record))

    def settle(self) -> None:
        self.settled += 1

    def mask(self, text: str) -> str:
        return text.replace("hunter2", "***")


def step(
    i: int, *, commits: bool = False, undoes_itself: bool = False, when: bool = True
) -> Step[State]:
    return Step(
        f"step {i}",
        do=lambda st: run(st.c, f"do {i}").stdout.strip(),
        undo=lambda st: run(st.c, f"undo {i}") and None,
        when=lambda st: when,
        commits=commits,
        undoes_itself=undoes_itself,
    )


def session(*commands: str | tuple[str, int]) -> Session:
    """One SSH connection that must receive exactly these commands, in order (a tuple gives an exit
    code)."""
    expected = []
    for command in commands:
        cmd, code = command if isinstance(command, tuple) else (command, 0)
        expected.append(Command(cmd=cmd, exit=code, out=f"{cmd} done\n".encode()))
    return Session(commands=expected)


def test_every_step_runs_in_order_and_the_audit_says_ok(remote):
    remote.expect_sessions(session(*(f"do {i}" for i in range(COUNT))))
    st = State(Connection("host"))
    assert run_steps(st, [step(i) for i in range(COUNT)]) == [f"step {i}" for i in range(COUNT)]
    assert st.audits == [{"result": "ok", "steps": st.rep.durations()}]
    assert [line.detail for line in st.rep.steps] == [f"do {i} done" for i in range(COUNT)]


@pytest.mark.parametrize("failing", range(COUNT))
def test_a_failing_step_undoes_exactly_the_steps_before_it_newest_first(remote, failing):
    before = [f"do {i}" for i in range(failing)]
    undos = [f"undo {i}" for i in reversed(range(failing))]
    remote.expect_sessions(session(*before, (f"do {failing}", 1), *undos))
    st = State(Connection("host"))
    with pytest.raises(Failure) as caught:
        run_steps(st, [step(i) for i in range(COUNT)])
    failure = caught.value
    assert failure.step == f"step {failing}" and failure.undone == [
        f"step {i}" for i in reversed(range(failing))
    ]
    assert failure.outcome is Outcome.FAILED and st.settled == 1
    assert "exit 1" in failure.message
    assert (
        st.audits[-1]["result"] == "failed before switch"
        and st.audits[-1]["reason"] == failure.message
    )
    assert [line.name for line in st.rep.steps if line.name.startswith("undo")] == [
        f"undo step {i}" for i in reversed(range(failing))
    ]


@pytest.mark.parametrize(
    ("failing", "outcome"),
    [(1, Outcome.FAILED), (2, Outcome.FAILED), (3, Outcome.ROLLED_BACK), (4, Outcome.ROLLED_BACK)],
)
def test_a_failure_after_the_committing_step_is_a_rollback(remote, failing, outcome):
    remote.expect_sessions(
        session(
            *(f"do {i}" for i in range(failing)),
            (f"do {failing}", 1),
            *(f"undo {i}" for i in reversed(range(failing))),
        )
    )
    st = State(Connection("host"))
    steps = [step(0), step(1), step(2, commits=True), step(3), step(4)]
    with pytest.raises(Failure) as caught:
        run_steps(st, steps)
    assert caught.value.outcome is outcome and st.audits[-1]["result"] == str(outcome)


def test_a_step_whose_undo_reverses_a_partial_do_is_undone_first_when_it_fails(remote):
    remote.expect_sessions(session("do 0", "do 1", ("do 2", 1), "undo 2", "undo 1", "undo 0"))
    st = State(Connection("host"))
    with pytest.raises(Failure) as caught:
        run_steps(st, [step(0), step(1), step(2, undoes_itself=True), step(3)])
    assert caught.value.undone == ["step 2", "step 1", "step 0"]


def test_skipped_steps_are_neither_run_nor_undone_and_a_failing_undo_does_not_stop_the_others(
    remote,
):
    remote.expect_sessions(session("do 0", "do 2", ("do 3", 1), ("undo 2", 1), "undo 0"))
    st = State(Connection("host"))
    with pytest.raises(Failure) as caught:
        run_steps(st, [step(0), step(1, when=False), step(2), step(3)])
    assert caught.value.undone == ["step 0"]
    assert caught.value.notes and caught.value.notes[0].startswith("could not undo step 2")


def test_after_undo_sees_the_outcome_and_its_notes_reach_the_failure(remote):
    remote.expect_sessions(session("do 0", ("do 1", 1), "undo 0"))
    st = State(Connection("host"))
    seen = []

    def after(state: State, outcome: Outcome) -> list[str]:
        seen.append(outcome)
        return ["previous release serves"]

    with pytest.raises(Failure) as caught:
        run_steps(st, [step(0, commits=True), step(1)], after_undo=after)
    assert seen == [Outcome.ROLLED_BACK] and caught.value.notes == ["previous release serves"]


def test_an_exit_raised_by_a_step_keeps_its_message(remote):
    remote.expect_sessions(session("do 0", "undo 0"))
    st = State(Connection("host"))

    def refuse(_: State) -> str:
        raise fail("Nginx check failed; nothing was switched")

    with pytest.raises(Failure) as caught:
        run_steps(st, [step(0), Step("check", refuse)])
    assert caught.value.message == "Nginx check failed; nothing was switched"


def test_the_deploy_steps_in_order_with_the_switch_as_the_one_committing_step():
    names = [s.name for s in DEPLOY_STEPS]
    assert names == [
        "record takeover",
        "put release on host",
        "install dependencies",
        "prepare app user",
        "show config changes",
        "start process trial",
        "trial run",
        "check process trial",
        "write and check site",
        "install certbot hook",
        "before-switch hook",
        "switch current",
        "reload apps",
        "reload nginx",
        "check health",
        "move processes",
        "after-switch hook",
        "save and prune",
    ]
    assert [s.name for s in DEPLOY_STEPS if s.commits] == ["switch current"]
    assert {s.name for s in DEPLOY_STEPS if s.undo} == {
        "put release on host",
        "write and check site",
        "start process trial",
        "switch current",
        "reload apps",
        "move processes",
    }


def cut(i: int) -> Step[State]:
    """A step whose connection dies under it (host.io raises ConnectionLost where the channel
    dies)."""

    def lose(_: State) -> str:
        raise ConnectionLost("ubuntu@web1:22")

    return Step(f"step {i}", do=lose, undo=lambda st: run(st.c, f"undo {i}") and None)


@pytest.mark.parametrize(("failing", "outcome"), [(1, Outcome.FAILED), (3, Outcome.ROLLED_BACK)])
def test_a_lost_connection_connects_again_undoes_as_any_failure_and_names_the_step(
    remote, failing, outcome
):
    remote.expect_sessions(
        session(
            *(f"do {i}" for i in range(failing)), *(f"undo {i}" for i in reversed(range(failing)))
        )
    )
    st = State(Connection("host"), reconnected=[None])
    steps = [step(0), step(1), step(2, commits=True), step(3), step(4)]
    steps[failing] = cut(failing)
    with pytest.raises(Failure) as caught:
        run_steps(st, steps)
    failure = caught.value
    assert failure.outcome is outcome and failure.undone == [
        f"step {i}" for i in reversed(range(failing))
    ]
    undone = ", ".join(f"step {i}" for i in reversed(range(failing)))
    assert (
        failure.message
        == f"The SSH connection to ubuntu@web1:22 was lost during step {failing} (0s in). Connected"
        f" again and undone: {undone}. The next deploy converges: run `fab -H ubuntu@web1:22"
        " deploy` (with the same flags)."
    )
    assert st.audits[-1]["result"] == str(outcome)
    assert (
        st.audits[-1]["reason"]
        == f"The SSH connection to ubuntu@web1:22 was lost during step {failing} (0s in)."
    )


def test_a_lost_connection_that_cannot_be_made_again_undoes_nothing_and_names_what_is_left(remote):
    remote.expect_sessions(session("do 0", "do 1", "do 2"))
    st = State(
        Connection("host"),
        reconnected=[
            "connecting again failed (No route to host); the host frees the deploy "
            "lock once it sees the connection closed"
        ],
    )
    with pytest.raises(Failure) as caught:
        run_steps(
            st, [step(0), Step("step 1", do=step(1).do), step(2, commits=True), cut(3), step(4)]
        )
    failure = caught.value
    assert (
        failure.outcome is Outcome.LOST and failure.undone == [] and st.audits == []
    )  # nothing reaches the host
    assert (
        failure.message
        == "The SSH connection to ubuntu@web1:22 was lost during step 3 (0s in). It could not be"
        " undone: Connecting again failed (No route to host); the host frees the deploy lock"
        " once it sees the connection closed. Not undone: step 2, step 0. The next deploy"
        " converges: once the host is reachable and its deploy lock free, run `fab -H"
        " ubuntu@web1:22 deploy` (with the same flags)."
    )


def test_a_connection_lost_again_while_undoing_is_a_note_and_the_other_undos_still_run(remote):
    remote.expect_sessions(session("do 0", "do 1", "undo 0"))
    st = State(Connection("host"), reconnected=[None])
    lost_undo = Step("step 1", do=step(1).do, undo=cut(1).do)
    with pytest.raises(Failure) as caught:
        run_steps(st, [step(0), lost_undo, cut(2)])
    failure = caught.value
    assert failure.undone == ["step 0"]
    assert failure.notes == [
        "could not undo step 1: The SSH connection to ubuntu@web1:22 was lost. Run the task again "
        "once the host is reachable."
    ]
    assert (
        "Connected again and undone: step 0. Some of it could not be undone (below)."
        in failure.message
    )
    assert failure.outcome is Outcome.LOST  # not "rolled back": a part of it is not
    assert failure.message.endswith("\n  " + failure.notes[0])


class LostAgainState(State):
    def write_audit(self) -> None:
        raise ConnectionLost("ubuntu@web1:22")


def test_a_connection_lost_again_before_the_audit_is_a_note_not_a_second_error(remote):
    remote.expect_sessions(session("do 0", "undo 0"))
    st = LostAgainState(Connection("host"), reconnected=[None])
    with pytest.raises(Failure) as caught:
        run_steps(st, [step(0), cut(1)])
    assert caught.value.undone == ["step 0"]
    assert caught.value.notes == [
        "the audit record could not be written: the SSH connection was lost"
    ]


def test_a_connection_lost_while_the_host_is_read_says_nothing_was_changed():
    from signalcraft_deploy.steps.runner import lost_outside_steps

    rep = Reporter("ubuntu@web1:22", quiet=True)
    with pytest.raises(ConnectionLost) as lost, rep.step("plan"):
        raise ConnectionLost("ubuntu@web1:22")
    assert (
        lost_outside_steps(lost.value, rep, "fab -H ubuntu@web1:22 deploy")
        == "The SSH connection to ubuntu@web1:22 was lost during plan (0s in), before the deploy"
        " changed anything on the host. The next deploy converges: run `fab -H ubuntu@web1:22"
        " deploy` (with the same flags)."
    )
