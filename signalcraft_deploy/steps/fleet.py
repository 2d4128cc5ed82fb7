"""A deploy (or rollback) over several hosts: DEPLOY_STEPS in phases, the hosts side by side.

1. lock    every host, in parallel: connect (host key checked), take the deploy lock, read the host.
           An unreachable host, an unknown host key or a held lock stops everything here: nothing
           has changed anywhere, and the message names the host.
2. prepare in parallel (at most PARALLEL at once): plan, put the release on the host, install
           its dependencies, trial run, write and check the site: the steps before the switch. A
           failure on any host stops the deploy on all of them before any host switches (each
           host's steps are undone).
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

`deploy_fleet`, `rollback_fleet`, `releases_fleet` and `status_fleet` are what the tasks
(tasks/deploy.py, tasks/status.py) call when they are given more than one host.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from invoke.exceptions import Exit, UnexpectedExit

from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import How, Plan, release_settings
from signalcraft_deploy.core.secrets import visible
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.connect import open_host
from signalcraft_deploy.host.io import fail, q, run, target_name
from signalcraft_deploy.host.lock import DeployLock, who
from signalcraft_deploy.host.releases import previous_release
from signalcraft_deploy.steps.deploy import DEPLOY_STEPS, DeployRun, after_undo
from signalcraft_deploy.steps.one_host import (
    DeployOptions,
    HostDeploy,
    new_run,
    plan_host,
    plan_step,
    read_host,
    report_unchanged,
    rollback_plan,
    warn_of_migrations,
)
from signalcraft_deploy.steps.plan_report import print_plan
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import (
    Ended,
    Failure,
    Outcome,
    RunFailed,
    Step,
    abandon,
    run_steps,
)
from signalcraft_deploy.steps.upload import Shipment

PARALLEL = 10  # hosts worked on at once in the parallel phases


def _names(first: str, last: str | None) -> list[Step[DeployRun]]:
    names = [s.name for s in DEPLOY_STEPS]
    return DEPLOY_STEPS[names.index(first) : names.index(last) if last else None]


PREPARE = _names(DEPLOY_STEPS[0].name, "before-switch hook")
BEFORE = _names("before-switch hook", "switch current")
ROLLOUT = _names("switch current", "save and prune")
FINISH = _names("save and prune", None)


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
    codes = [err.code for _, err in failed if isinstance(err, Exit) and err.code]
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


def _start_gate(m: Member) -> None:
    if m.run is not None:
        m.run.start_gate()


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
    parallel([m for m in group if m.run is not None], _start_gate)
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
    acts = [a.shown for a in m.plan.actions if a.how is not How.NONE]
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
) -> RunFailed:
    """The fleet's failure: every failing host named, the first one's step, rolled back when any
    host was."""
    changed = any(m.result in (Result.KEPT,) for m in group)
    tail = (
        "The hosts switched before it were kept (--on-failure keep)."
        if changed
        else "Every host is back on (or still on) the release it had."
    )
    first, err = failed[0]
    back = any(m.result == Result.ROLLED_BACK for m in group)
    release = first.plan.manifest.release if first.plan else None
    return RunFailed(
        visible(
            f"The {what} failed on"
            f" {', '.join(m.label for m, _ in failed)}:\n{describe_failures(failed)}\n{tail}"
        ),
        f"{first.label}: {err.step if isinstance(err, Failure) else what}",
        Outcome.ROLLED_BACK if back else Outcome.FAILED,
        release,
        exit_code(failed),
    )


# ----------------------------------------------------------------------------- a fleet's deploy


@dataclass(frozen=True)
class FleetDeploy:
    """What every phase of a fleet's deploy (or rollback) shares."""

    group: list[Member]
    s: Settings
    deploy_id: str
    options: DeployOptions


@contextmanager
def all_locked(fd: FleetDeploy, info: dict[str, Any] | None, then: str = "") -> Iterator[None]:
    """Phase 1, and every lock held until the block ends (released side by side, however it
    ends)."""
    try:
        lock_all(fd, info, then)
        yield
    finally:
        release_locks(fd.group)


def lock_all(fd: FleetDeploy, info: dict[str, Any] | None, then: str = "") -> None:
    """Phase 1: connect to every host, take every lock (none when `info` is None: a dry run).
    Any failure: every lock released, nothing changed anywhere, the hosts named."""
    options = fd.options

    def work(m: Member) -> None:
        open_host(
            m.c, fd.s, known_hosts=options.known_hosts, accept_new_host=options.accept_new_host
        )
        if info is not None:
            lock = DeployLock(m.c, fd.s, info, options.lock_wait, m.rep.say, m.rep.warn, then=then)
            # Held past this function (until all_locked's block ends), so not in a with block;
            # on failure it has released itself.
            lock.__enter__()
            m.lock = lock

    failed = parallel(fd.group, work)
    if failed:
        release_locks(fd.group)
        for m, _ in failed:
            m.result = Result.FAILED
        raise fail(
            "Nothing was changed on any host: "
            + (
                "a host could not be reached or locked:\n"
                if len(failed) == 1
                else "hosts could not be reached or locked:\n"
            )
            + describe_failures(failed),
            code=exit_code(failed),
        )


def singletons_here(s: Settings, m: Member, group: Sequence[Member]) -> Settings:
    """The settings for one host: only the first host in -H order runs the Procfile's singletons
    (SINGLETONS), or none with RUN_SINGLETONS=no; yes would run them on every host: refused."""
    if s.run_singletons == "yes" and len(group) > 1:
        raise fail(
            f"RUN_SINGLETONS ({s.origins.get('RUN_SINGLETONS', 'default')}) is yes: on a fleet of"
            f" {len(group)} hosts every host would run the SINGLETONS (a scheduler would fire once"
            " per host). Leave it at auto (the first host in -H runs them) or set no. Nothing was"
            " changed."
        )
    return replace(s, singleton_host=s.run_singletons != "no" and m is group[0])


def read_all(fd: FleetDeploy, shipment: Shipment | None) -> None:
    """Each host read under its lock, and planned; a host with nothing to deploy is reported (and
    audited) as such."""
    now, hosts, dry_run = datetime.now(UTC), [m.label for m in fd.group], fd.options.dry_run

    def work(m: Member) -> None:
        h = read_host(m.c, fd.s, m.rep, m.lock)
        h = replace(h, s=singletons_here(h.s, m, fd.group))
        h, m.plan = plan_host(h, shipment, fd.options, now)
        m.facts, m.settings, m.shipment = h.facts, h.s, h.shipment
        if h.shipment is None:  # a dry run, and this host's mirror does not have REF yet
            m.rep.say(
                f"Dry run: the host's mirror does not have {fd.s.ref} yet: a deploy would fetch it"
                " first."
            )
            m.result = Result.DRY_RUN
        elif m.plan is None or (m.plan.nothing_to_do and not dry_run):
            release = m.plan.manifest.release if m.plan else (m.facts.current_release or "")
            report_unchanged(h, release, h.shipment.tree.sha, deploy_id=fd.deploy_id, fleet=hosts)
            m.result = Result.UNCHANGED
        elif dry_run:
            print_plan(m.rep, h.s, m.plan, m.facts)
            m.result = Result.DRY_RUN
        if m.result in (Result.UNCHANGED, Result.DRY_RUN):
            m.stop_clock()

    failed = parallel(fd.group, work)
    if failed:
        for m, _ in failed:
            m.result = Result.FAILED
        raise fail(
            "Nothing was changed on any host: reading them failed:\n" + describe_failures(failed),
            code=exit_code(failed),
        )


def deploy_fleet(
    conns: list[Any], s: Settings, shipment: Shipment | None, options: DeployOptions
) -> Ended | None:
    """Deploy to every host of a fleet, in the phases above; what is live at the end (None: a dry
    run)."""
    fd = FleetDeploy(members(conns), s, new_deploy_id(), options)
    print(
        f"Fleet deploy {fd.deploy_id}: {', '.join(m.label for m in fd.group)} (batch"
        f" {options.batch}, on failure: {options.on_failure})"
    )
    info = {
        "sha": shipment.tree.sha if shipment else s.ref,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "deploy_id": fd.deploy_id,
        **who(),
    }
    read = host_facts.facts_script(s, quick=True, start_pm2=not options.dry_run)
    with all_locked(fd, None if options.dry_run else info, read):
        read_all(fd, shipment)
        if options.dry_run:
            if s.before_switch:
                print(
                    f"BEFORE_SWITCH runs once, on {fd.group[0].label}, after every host is"
                    " prepared and before any switches."
                )
            print("Dry run: nothing was changed on any host.")
            return None
        work = [m for m in fd.group if m.result != Result.UNCHANGED]
        if not work:
            summary(fd.group, fd.deploy_id)
            print(f"Nothing to deploy on any of the {len(fd.group)} hosts.")
            return Ended(fd.group[0].serves, changed=False)
        return run_fleet(fd, work, "deploy")


def run_fleet(fd: FleetDeploy, work: list[Member], event: str) -> Ended:
    """Phases 2 to 4 for the hosts that have something to do; the table; an exit if any host
    failed."""
    hosts = [m.label for m in fd.group]

    def make_run(m: Member) -> DeployRun:
        assert m.facts is not None and m.plan is not None
        own = m.settings or (
            fd.s
            if event == "deploy"
            else release_settings(fd.s, json.loads(m.plan.manifest.to_json()))
        )
        h = HostDeploy(m.c, own, m.rep, m.facts, m.shipment)
        if event == "deploy":
            h, m.plan = plan_step(h, m.plan, fd.options.drop_directives)
        return new_run(h, m.plan, event, deploy_id=fd.deploy_id, fleet=hosts)

    failed = prepare(work, make_run)
    if not failed:
        failed = roll_out(work, fd.s, fd.options.batch, fd.options.on_failure)
    summary(fd.group, fd.deploy_id)
    if failed:
        raise fleet_exit(failed, fd.group, event)
    release = work[0].plan.manifest.release if work[0].plan else "?"
    print(
        f"{'Deployed' if event == 'deploy' else 'Rolled back to'} {release} on {len(work)} host(s)."
    )
    return Ended(release)


def refuse_before_takeover(to: str | None) -> None:
    if to == "before-takeover":
        raise Exit(
            "rollback --to before-takeover works on one host at a time: fab -H <host> rollback --to"
            " before-takeover",
            code=2,
        )


def rollback_fleet(conns: list[Any], s: Settings, to: str | None, options: DeployOptions) -> Ended:
    """Return every host of a fleet to the same release (the one before the first host's current
    one, or `to`)."""
    refuse_before_takeover(to)
    fd = FleetDeploy(members(conns), s, new_deploy_id(), options)
    group = fd.group
    info = {
        "event": "rollback",
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "deploy_id": fd.deploy_id,
        **who(),
    }
    with all_locked(fd, info):
        failed = parallel(group, lambda m: setattr(m, "facts", host_facts.gather(m.c, s)))
        if failed:
            raise fail(
                "Nothing was changed on any host: reading them failed:\n"
                + describe_failures(failed)
            )
        first = group[0].facts
        assert first is not None
        target = to or previous_release(first, first.current_release)
        lacking = [m.label for m in group if m.facts is None or target not in m.facts.releases]
        if not target or lacking:
            raise fail(
                f"Refusing to roll back: release {target or '(none before the current one)'} is not"
                f" on {', '.join(lacking) or 'the first host'}; every host must return to the same"
                " release. See `releases`, and pick one with --to RELEASE."
            )
        print(f"Fleet rollback {fd.deploy_id}: every host -> {target}")

        def plan_rollback(m: Member) -> None:
            assert m.facts is not None
            # the release's own site
            own = singletons_here(s, m, group)
            m.settings, m.plan = rollback_plan(m.c, own, m.facts, target, m.rep.warn)

        failed = parallel(group, plan_rollback)
        if failed:
            raise fail("Nothing was changed on any host:\n" + describe_failures(failed))
        warn_of_migrations(group[0].c, s, group[0].rep, first.current_release)
        for m in group:
            if m.facts and m.facts.current_release == target:
                m.result = Result.UNCHANGED  # already there: nothing to do on this host
        work = [m for m in group if m.result != Result.UNCHANGED]
        if not work:
            print(f"Every host already runs {target}; nothing to roll back.")
            return Ended(target, changed=False)
        ended = run_fleet(fd, work, "rollback")
        parallel(group, lambda m: run(m.c, f"rm -f {q(s.state_dir)}/bad/{q(target)}", warn=True))
    return ended


# ----------------------------------------------------------------------------- reading a fleet


def releases_fleet(
    conns: list[Any], s: Settings, known_hosts: str | None = None, accept_new_host: bool = False
) -> None:
    """Each host's releases, read in parallel, and whether they all run the same one."""
    group = members(conns)

    def work(m: Member) -> None:
        open_host(m.c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        m.facts = host_facts.gather(m.c, s, quick=True)

    failed = parallel(group, work)
    if failed:
        raise fail(
            "Could not read every host:\n" + describe_failures(failed), code=exit_code(failed)
        )
    for m in group:
        assert m.facts is not None
        print(f"{m.label} ({m.rep.target}):")
        for name in reversed(m.facts.releases):
            mark = "* " if name == m.facts.current_release else "  "
            print(
                f"  {mark}{name}"
                + ("  (bad: failed its deploy)" if name in m.facts.bad_releases else "")
            )
        if not m.facts.releases:
            print(f"  no releases under {s.releases_dir}")
    live = {m.facts.current_release for m in group if m.facts}
    print(
        f"Fleet consistent: every host runs {live.pop()}."
        if len(live) == 1
        else "Fleet NOT consistent: "
        + "; ".join(f"{m.label} runs {m.facts.current_release if m.facts else '?'}" for m in group)
    )


def status_fleet(
    conns: list[Any],
    s: Settings,
    collect: Any,
    render: Any,
    as_json: bool,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
) -> None:
    """`status` of every host, read in parallel, printed one host after another."""
    group = members(conns)
    data: dict[str, Any] = {}

    def work(m: Member) -> None:
        open_host(m.c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        data[m.label] = collect(m.c, s)

    failed = parallel(group, work)
    if as_json:
        print(
            json.dumps(
                {
                    "hosts": [data.get(m.label) for m in group if m.label in data],
                    "unreachable": {m.label: m.error for m, _ in failed},
                },
                indent=2,
            )
        )
    else:
        for m in group:
            if m.label in data:
                print(render(data[m.label]) + "\n")
        live = {data[m.label]["current"]["release"] for m in group if m.label in data}
        print(
            f"Fleet consistent: every host runs {live.pop()}."
            if len(live) == 1 and not failed
            else "Fleet NOT consistent: "
            + "; ".join(
                f"{m.label} runs {data[m.label]['current']['release']}"
                for m in group
                if m.label in data
            )
        )
    if failed:
        raise fail(
            "Could not read every host:\n" + describe_failures(failed),
            code=exit_code(failed),
        )
