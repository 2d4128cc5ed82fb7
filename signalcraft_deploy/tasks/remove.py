"""`remove`: take the app off a host (its site, PM2 apps, logs, `current`; DEPLOY_ROOT with --purge --confirm APP_NAME),
leaving the host's other apps and Nginx serving. The steps are steps/remove.py's."""

from __future__ import annotations

from datetime import UTC, datetime

from invoke import Collection, Context, task

from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import root
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.io import fail, q, run, target_name
from signalcraft_deploy.host.lock import DeployLock, who
from signalcraft_deploy.steps.remove import (
    PURGE_STEPS,
    REMOVE_STEPS,
    RemoveRun,
    admin_note,
    check_confirm,
    nothing_left,
    plan_lines,
    purge_guard,
)
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Failure, run_steps

REMOVE_HELP = {
    **HOST_HELP,
    "dry-run": "read the host and list each action remove would take, changing nothing",
    "purge": (
        "also delete DEPLOY_ROOT (releases, venvs, shared/ data, the audit log); needs --confirm"
        " APP_NAME"
    ),
    "confirm": "the app's name (APP_NAME), to confirm --purge",
}


@task(iterable=["set_"], help=REMOVE_HELP)
def remove(
    c: Context,
    dry_run: bool = False,
    purge: bool = False,
    confirm: str | None = None,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
) -> None:
    """Take the app off the host: its Nginx site, PM2 apps, logs and `current` (DEPLOY_ROOT too with
    --purge)."""
    s = settings_for(env_file, set_)
    check_confirm(s, purge, confirm)
    rep = Reporter(target_name(c))
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    deploy_user = run(c, "id -un", warn=True).stdout.strip()
    note = admin_note(s, rep.target, deploy_user)
    if dry_run:
        facts = host_facts.gather(
            c, s, quick=True, spawn_pm2=False
        )  # a look: no PM2 daemon started
        rep.say(f"Plan for {rep.target}: remove {s.app_name}")
        for line in plan_lines(s, facts, purge, deploy_user):
            rep.say(line)
        refused = (
            run(c, purge_guard(s), warn=True) if purge else None
        )  # a read: what the purge would refuse
        if refused is not None and not refused.ok:
            rep.say(
                f"  purge     refused: {(refused.stderr or refused.stdout).strip()[-300:]}; remove"
                " --purge would stop before anything changes"
            )
        if note:
            rep.say(f"  setup's   {note}")
        rep.say("Dry run: nothing was changed.")
        return
    root_gone = not run(c, f"[ -e {q(s.deploy_root)} ] || [ -L {q(s.deploy_root)} ]", warn=True).ok
    if root_gone and nothing_left(s, host_facts.gather(c, s, quick=True, spawn_pm2=False)):
        # a rerun after --purge: the lock (whose script makes DEPLOY_ROOT/.deploy) would leave a
        # deploy root behind
        rep.say(
            f"Nothing of {s.app_name} is left on {rep.target} (no {s.deploy_root}, no site of its,"
            " no PM2 app of its). Nothing was changed."
        )
        if note:
            rep.say(note)
        return
    info = {"event": "remove", "since": datetime.now(UTC).isoformat(timespec="seconds"), **who()}
    look = host_facts.facts_script(
        s, quick=True, c=c, spawn_pm2=False
    )  # a read that starts no PM2 daemon
    with DeployLock(c, s, info, 0, rep.say, rep.warn, then=look) as lock:
        facts = host_facts.parse_facts(lock.read_then())
        root.ensure(
            c
        )  # before anything changes: the root helper is this version's (installed if we may)
        state = RemoveRun(
            c,
            s,
            rep,
            facts,
            purge,
            {
                "event": "remove",
                "by": who(),
                "host": rep.target,
                "from": facts.current_release,
                "purge": purge,
            },
        )
        try:
            run_steps(state, REMOVE_STEPS, last=not purge)
            if purge:  # a part of its own: its failure undoes none of the above (see PURGE_STEPS)
                run_steps(state, PURGE_STEPS, done=[])
        except Failure as failure:
            undone = f"\nUndone: {', '.join(failure.undone)}." if failure.undone else ""
            notes = "".join(f"\n  {n}" for n in failure.notes)
            raise fail(
                f"{failure.message}{undone}{notes}\nRun remove again once the cause is fixed: it"
                " converges."
            ) from None
    rep.say(
        f"Removed {s.app_name} from {rep.target}"
        + (
            f", {s.deploy_root} included."
            if purge
            else (
                f"; {s.releases_dir} and {s.shared_dir} are kept (remove --purge --confirm"
                f" {s.app_name} deletes them)."
            )
        )
    )
    if note:
        rep.say(note)


ns = Collection(remove)
