"""`deploy`, `rollback` and `releases`: their flags, then one host's deploy (steps/one_host.py) or,
given several hosts, a fleet's (steps/fleet.py).

The order of a deploy is `steps/deploy.py`'s `DEPLOY_STEPS`, run by `steps/runner.py`. Steps run
inside this task (never as `pre=` tasks, which under `fab -H` would run locally).
"""

from __future__ import annotations

from dataclasses import replace

from invoke import Collection, Context, task

from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.fleet_hosts import fleet_aware, fleet_hosts
from signalcraft_deploy.host.io import target_name
from signalcraft_deploy.steps import fleet, one_host
from signalcraft_deploy.steps.notify import Notifier, notifying, told
from signalcraft_deploy.steps.one_host import DeployOptions
from signalcraft_deploy.steps.report import Reporter

DEPLOY_HELP = {
    **HOST_HELP,
    "dry-run": "read the host and print the plan (steps, diffs, reloads) without changing anything",
    "lock-wait": "seconds to wait for another deploy to finish (default 0: stop at once)",
    "ref": "git ref to deploy when SOURCE=git (overrides REF)",
    "source-dir": "local app folder to ship when SOURCE=upload (overrides SOURCE_DIR)",
    "batch": (
        "with several hosts (-H a,b,c): how many switch at once after the first, a count or a"
        " percentage (default 1)"
    ),
    "on-failure": (
        "with several hosts: 'rollback' (default) returns the hosts already switched when one"
        " fails; 'keep' leaves them on the new release"
    ),
    "drop-directives": (
        "take over the old Nginx site even though the new one drops the directives listed"
    ),
}


@fleet_aware
@task(iterable=["set_"], help=DEPLOY_HELP)
def deploy(
    c: Context,
    dry_run: bool = False,
    lock_wait: int = 0,
    ref: str | None = None,
    source_dir: str | None = None,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    batch: str | None = None,
    on_failure: str | None = None,
    drop_directives: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Deploy the app: ship, install, trial run, write the site, switch, reload by what changed."""
    s = settings_for(env_file, set_, environment, REF=ref, SOURCE_DIR=source_dir)
    options = DeployOptions(
        dry_run=bool(dry_run),
        lock_wait=int(lock_wait or 0),
        drop_directives=bool(drop_directives),
        known_hosts=known_hosts,
        accept_new_host=bool(accept_new_host),
        batch=fleet.check_batch(batch),
        on_failure=fleet.check_on_failure(on_failure),
    )
    rep = Reporter(target_name(c))
    shipment = one_host.local_shipment_or_exit(s, rep)
    hosts = fleet_hosts(c)
    commit = shipment.tree.sha if shipment else None
    news = Notifier(s, "deploy", [target_name(h) for h in hosts], commit, not dry_run, rep.warn)
    with notifying(news, rep):
        if len(hosts) > 1:
            told(news, fleet.deploy_fleet(hosts, s, shipment, options))
        else:
            told(news, one_host.deploy_one(c, s, rep, shipment, options))


ROLLBACK_HELP = {
    **HOST_HELP,
    "batch": DEPLOY_HELP["batch"],
    "on-failure": DEPLOY_HELP["on-failure"],
    "to": (
        "release to return to (default: the one before the current; "
        "'before-takeover' returns to the host as it was before the first deploy)"
    ),
}


@fleet_aware
@task(iterable=["set_"], help=ROLLBACK_HELP)
def rollback(
    c: Context,
    to: str | None = None,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    batch: str | None = None,
    on_failure: str | None = None,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Return to the previous release (or --to RELEASE) with the same graceful reloads as a deploy."""
    s = settings_for(env_file, set_, environment)
    options = DeployOptions(known_hosts=known_hosts, accept_new_host=bool(accept_new_host))
    hosts, rep = fleet_hosts(c), Reporter(target_name(c))
    news = Notifier(s, "rollback", [target_name(h) for h in hosts], warn=rep.warn)
    with notifying(news, rep):
        if len(hosts) > 1:
            batch, on_failure = fleet.check_batch(batch), fleet.check_on_failure(on_failure)
            options = replace(options, batch=batch, on_failure=on_failure)
            told(news, fleet.rollback_fleet(hosts, s, to, options))
        else:
            told(news, one_host.rollback_one(c, s, rep, to, options))


@fleet_aware
@task(iterable=["set_"], help={**HOST_HELP})
def releases(
    c: Context,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """List the releases on the host, newest first, marking the current one and bad ones."""
    s = settings_for(env_file, set_, environment)
    if len(hosts := fleet_hosts(c)) > 1:
        fleet.releases_fleet(hosts, s, known_hosts, accept_new_host)
    else:
        open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        one_host.print_releases(c, s)


ns = Collection(deploy, rollback, releases)
