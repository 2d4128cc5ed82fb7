"""`deploy`, `rollback`, `releases` and `status` over several hosts (`fab -H web1,web2,web3 ...`).

The tasks in deploy.py and status.py hand over to these functions when `executor.fleet_hosts`
gives more than one Connection; the phases are steps/fleet.py's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.connect import open_host
from signalcraft_deploy.host.io import fail, q, run
from signalcraft_deploy.host.lock import DeployLock, who
from signalcraft_deploy.host.releases import previous_release
from signalcraft_deploy.steps import fleet
from signalcraft_deploy.steps.fleet import Member, Result
from signalcraft_deploy.steps.upload import Shipment
from signalcraft_deploy.tasks import deploy as single


@contextmanager
def all_locked(
    group: list[Member],
    s: Settings,
    info: dict[str, Any] | None,
    wait: int,
    known_hosts: str | None,
    accept_new_host: bool,
    then: str = "",
) -> Iterator[None]:
    """Phase 1, and every lock held until the block ends (released side by side, however it
    ends)."""
    try:
        lock_all(group, s, info, wait, known_hosts, accept_new_host, then)
        yield
    finally:
        fleet.release_locks(group)


def lock_all(
    group: list[Member],
    s: Settings,
    info: dict[str, Any] | None,
    wait: int,
    known_hosts: str | None,
    accept_new_host: bool,
    then: str = "",
) -> None:
    """Phase 1: connect to every host, take every lock (none when `info` is None: a dry run).
    Any failure: every lock released, nothing changed anywhere, the hosts named."""

    def work(m: Member) -> None:
        open_host(m.c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        if info is not None:
            lock = DeployLock(m.c, s, info, wait, m.rep.say, m.rep.warn, then=then)
            lock.__enter__()  # on failure it has released itself
            m.lock = lock

    failed = fleet.parallel(group, work)
    if failed:
        fleet.release_locks(group)
        for m, _ in failed:
            m.result = Result.FAILED
        raise fail(
            "Nothing was changed on any host: "
            + (
                "a host could not be reached or locked:\n"
                if len(failed) == 1
                else "hosts could not be reached or locked:\n"
            )
            + fleet.describe_failures(failed),
            code=fleet.exit_code(failed),
        )


def read_all(
    group: list[Member], s: Settings, shipment: Shipment | None, dry_run: bool, deploy_id: str
) -> None:
    """Each host read under its lock, and planned; a host with nothing to deploy is reported (and audited) as such."""
    now, hosts = datetime.now(UTC), [m.label for m in group]

    def work(m: Member) -> None:
        m.facts, ship, m.plan, m.settings = single.read_host(m.c, s, m.lock, shipment, dry_run, now)
        if ship is None:  # a dry run, and this host's mirror does not have REF yet
            m.rep.say(
                f"Dry run: the host's mirror does not have {s.ref} yet: a deploy would fetch it"
                " first."
            )
            m.result = Result.DRY_RUN
        elif m.plan is None or (m.plan.nothing_to_do and not dry_run):
            release = m.plan.manifest.release if m.plan else (m.facts.current_release or "")
            single.report_unchanged(
                m.c, s, m.rep, release, ship.tree.sha, deploy_id=deploy_id, fleet=hosts
            )
            m.result = Result.UNCHANGED
        elif dry_run:
            single.print_plan(m.rep, s, m.plan, m.facts)
            m.result = Result.DRY_RUN
        m.shipment = ship
        if m.result in (Result.UNCHANGED, Result.DRY_RUN):
            m.stop_clock()

    failed = fleet.parallel(group, work)
    if failed:
        for m, _ in failed:
            m.result = Result.FAILED
        raise fail(
            "Nothing was changed on any host: reading them failed:\n"
            + fleet.describe_failures(failed),
            code=fleet.exit_code(failed),
        )


def deploy_fleet(
    conns: list[Any],
    s: Settings,
    shipment: Shipment | None,
    *,
    dry_run: bool,
    lock_wait: int,
    known_hosts: str | None,
    accept_new_host: bool,
    batch: str,
    on_failure: str,
) -> None:
    group, deploy_id = fleet.members(conns), fleet.new_deploy_id()
    print(
        f"Fleet deploy {deploy_id}: {', '.join(m.label for m in group)} (batch {batch}, on failure:"
        f" {on_failure})"
    )
    info = {
        "sha": shipment.tree.sha if shipment else s.ref,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "deploy_id": deploy_id,
        **who(),
    }
    with all_locked(
        group,
        s,
        None if dry_run else info,
        lock_wait,
        known_hosts,
        accept_new_host,
        host_facts.facts_script(s, quick=True, start_pm2=not dry_run),
    ):
        read_all(group, s, shipment, dry_run, deploy_id)
        if dry_run:
            if s.before_switch:
                print(
                    f"BEFORE_SWITCH runs once, on {group[0].label}, after every host is prepared"
                    " and before any switches."
                )
            print("Dry run: nothing was changed on any host.")
            return
        work = [m for m in group if m.result != Result.UNCHANGED]
        if not work:
            fleet.summary(group, deploy_id)
            print(f"Nothing to deploy on any of the {len(group)} hosts.")
            return
        run_fleet(work, group, s, deploy_id, "deploy", batch, on_failure)


def run_fleet(
    work: list[Member],
    group: list[Member],
    s: Settings,
    deploy_id: str,
    event: str,
    batch: str,
    on_failure: str,
) -> None:
    """Phases 2 to 4 for the hosts that have something to do; the table; an exit if any host failed."""
    hosts = [m.label for m in group]

    def make_run(m: Member) -> Any:
        assert m.facts is not None and m.plan is not None
        own = m.settings or (
            s
            if event == "deploy"
            else single.release_settings(s, json.loads(m.plan.manifest.to_json()))
        )
        if event == "deploy":
            own, m.plan = single.plan_step(m.c, own, m.rep, m.facts, m.plan)
        return single.new_run(
            m.c, own, m.rep, m.plan, m.facts, m.shipment, event, deploy_id=deploy_id, fleet=hosts
        )

    failed = fleet.prepare(work, make_run)
    if not failed:
        failed = fleet.roll_out(work, s, batch, on_failure)
    fleet.summary(group, deploy_id)
    if failed:
        raise fleet.fleet_exit(failed, group, event)
    release = work[0].plan.manifest.release if work[0].plan else "?"
    print(
        f"{'Deployed' if event == 'deploy' else 'Rolled back to'} {release} on {len(work)} host(s)."
    )


def rollback_fleet(
    conns: list[Any],
    s: Settings,
    to: str | None,
    known_hosts: str | None,
    batch: str,
    on_failure: str,
    accept_new_host: bool = False,
) -> None:
    if to == "before-takeover":
        raise Exit(
            "rollback --to before-takeover works on one host at a time: fab -H <host> rollback --to"
            " before-takeover",
            code=2,
        )
    group, deploy_id = fleet.members(conns), fleet.new_deploy_id()
    info = {
        "event": "rollback",
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "deploy_id": deploy_id,
        **who(),
    }
    with all_locked(group, s, info, 0, known_hosts, accept_new_host):
        failed = fleet.parallel(group, lambda m: setattr(m, "facts", host_facts.gather(m.c, s)))
        if failed:
            raise fail(
                "Nothing was changed on any host: reading them failed:\n"
                + fleet.describe_failures(failed)
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
        print(f"Fleet rollback {deploy_id}: every host -> {target}")

        def plan_rollback(m: Member) -> None:
            m.settings, m.plan = single.rollback_plan(
                m.c, s, m.facts, target, m.rep.warn
            )  # the release's own site

        failed = fleet.parallel(group, plan_rollback)
        if failed:
            raise fail("Nothing was changed on any host:\n" + fleet.describe_failures(failed))
        single.warn_of_migrations(group[0].c, s, group[0].rep, first.current_release)
        for m in group:
            if m.facts and m.facts.current_release == target:
                m.result = Result.UNCHANGED  # already there: nothing to do on this host
        work = [m for m in group if m.result != Result.UNCHANGED]
        if not work:
            print(f"Every host already runs {target}; nothing to roll back.")
            return
        run_fleet(work, group, s, deploy_id, "rollback", batch, on_failure)
        fleet.parallel(
            group, lambda m: run(m.c, f"rm -f {q(s.state_dir)}/bad/{q(target)}", warn=True)
        )


def releases_fleet(
    conns: list[Any], s: Settings, known_hosts: str | None = None, accept_new_host: bool = False
) -> None:
    """Each host's releases, read in parallel, and whether they all run the same one."""
    group = fleet.members(conns)

    def work(m: Member) -> None:
        open_host(m.c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        m.facts = host_facts.gather(m.c, s, quick=True)

    failed = fleet.parallel(group, work)
    if failed:
        raise fail(
            "Could not read every host:\n" + fleet.describe_failures(failed),
            code=fleet.exit_code(failed),
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
    group = fleet.members(conns)
    data: dict[str, Any] = {}

    def work(m: Member) -> None:
        open_host(m.c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        data[m.label] = collect(m.c, s)

    failed = fleet.parallel(group, work)
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
            "Could not read every host:\n" + fleet.describe_failures(failed),
            code=fleet.exit_code(failed),
        )


ns = (
    Collection()
)  # no tasks of its own: deploy.py's and status.py's tasks call these with several hosts
