"""`setup`: make a fresh host ready for deploys (packages, PM2, PM2 at boot, log rotation, the root helper and its
sudoers drop-in); twice changes nothing. An admin's step: `fab -H admin@host setup --user deploy`
sets the host up for the deploy account `deploy` (by default the connecting one); the connecting
account needs full passwordless sudo, the deploy account none."""

from __future__ import annotations

from typing import Any

from invoke import Collection, Context, task

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root
from signalcraft_deploy.host import setup as setup_ops
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.io import fail, is_remote, run, target_name
from signalcraft_deploy.host.setup import Item, State

SETUP_HELP = {
    **HOST_HELP,
    "dry-run": "read the host and print what setup would install or write, changing nothing",
    "user": (
        "the deploy account to set the host up for (default: the connecting one); only the"
        " connecting one needs full sudo"
    ),
    "remove-app": (
        "take an apps' account off instead (after `remove` of its apps): its boot unit, log"
        " rotation, the account and its home, root's record of it, its sudoers line"
    ),
}


def connecting_user(c: Any) -> str:
    """Who we connect as: the SSH user, or this machine's user."""
    if is_remote(c):
        return str(c.user)
    return run(c, "id -un", warn=True).stdout.strip()


def line(item: Item, dry_run: bool = False) -> str:
    verb = f"would {item.state}" if dry_run and item.state is not State.OK else str(item.state)
    return f"{verb:<14} {item.name:<13} {item.detail}"


def converge(c: Any, s: Settings, facts: setup_ops.SetupFacts, items: list[Item]) -> list[str]:
    """Make the changes the plan lists, in order: packages and PM2 first, then what needs their
    paths."""
    done = []
    if any(i.state is State.INSTALL for i in items):
        setup_ops.install_packages(c, facts)
        done += [f"installed: {i.detail}" for i in items if i.state is State.INSTALL]
        facts = setup_ops.gather(c, s, facts.user)
        refused(facts)
    if setup_ops.boot_item(facts).state is not State.OK:
        done.append("boot unit: " + setup_ops.enable_boot(c, facts))
    if setup_ops.logrotate_item(s, facts).state is not State.OK:
        done.append("log rotation: wrote " + setup_ops.write_logrotate(c, s, facts))
    if setup_ops.drain_item(s, facts).state is not State.OK:
        done.append("nginx drain: " + setup_ops.write_drain(c, s, facts))
    if facts.separate_app:
        done += converge_app_user(c, s, facts)
        facts = setup_ops.gather(c, s, facts.user)
    if setup_ops.helper_item(facts).state is not State.OK:
        done.append("root helper: installed " + root.install(c))
    if setup_ops.sudoers_item(facts).state is not State.OK:  # last: it names what is there now
        done.append("sudoers: wrote " + root.install_sudoers(c, facts.user, facts.apps))
    left = [
        i
        for i in setup_ops.plan_setup(s, setup_ops.gather(c, s, facts.user))
        if i.state is not State.OK
    ]
    if left:
        raise fail("setup could not finish: " + "; ".join(f"{i.name}: {i.detail}" for i in left))
    return done


def converge_app_user(c: Any, s: Settings, facts: setup_ops.SetupFacts) -> list[str]:
    """The apps' own account first (its uid and home are what the rest names), then its group, boot unit, log
    rotation and root's record of it."""
    done = []
    if facts.app_entry is None:
        done.append("app user: " + setup_ops.create_app_user(c, facts))
        facts = setup_ops.gather(c, s, facts.user)
    if setup_ops.app_user_item(facts).state is State.REFUSED:
        raise fail("setup refuses the apps' account: " + setup_ops.app_user_item(facts).detail)
    if setup_ops.app_group_item(facts).state is not State.OK:
        done.append("app group: " + setup_ops.join_app_group(c, facts))
    if setup_ops.app_boot_item(facts).state is not State.OK:
        done.append("app boot unit: " + setup_ops.enable_app_boot(c, facts))
    if setup_ops.app_logrotate_item(s, facts).state is not State.OK:
        done.append("app rotation: wrote " + setup_ops.write_app_logrotate(c, s, facts))
    if setup_ops.app_record_item(facts).state is not State.OK:
        done.append("app record: wrote " + setup_ops.write_app_record(c, facts))
    return done


def refused(facts: setup_ops.SetupFacts) -> None:
    problems = setup_ops.path_problems(facts)
    if problems:
        raise fail("setup refuses to write the boot unit and log rotation: " + " ".join(problems))


@task(iterable=["set_"], help=SETUP_HELP)
def setup(
    c: Context,
    dry_run: bool = False,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    user: str | None = None,
    remove_app: str | None = None,
    environment: str | None = None,
) -> None:
    """Make the host ready for a deploy user: packages, Node.js and PM2, PM2 at boot, log rotation, the root helper."""
    s = settings_for(env_file, set_, environment, APP_USER=remove_app)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    user = setup_ops.check_user(user or connecting_user(c))
    facts = setup_ops.gather(c, s, user)
    if remove_app:
        return remove_app_user(c, s, facts, dry_run)
    if not facts.sudo:
        raise fail(
            f"setup needs full passwordless sudo for the connecting account on {target_name(c)} (a"
            " sudoers line with NOPASSWD: ALL, as an EC2 image's admin has): connect as such an"
            f" admin, e.g. fab -H ubuntu@host setup --user {user}."
        )
    if not facts.user:
        raise fail(
            f"There is no user {user} on {target_name(c)}: create the deploy account first "
            f"(e.g. sudo adduser --disabled-password {user}) and run setup again."
        )
    items = setup_ops.plan_setup(s, facts)
    print(f"Setup of {target_name(c)} for {facts.user} (PM2 home {facts.pm2_home}):")
    for item in items:
        print("  " + line(item, dry_run))
    refused(facts)
    if (
        facts.separate_app
        and facts.app_entry is not None
        and setup_ops.app_user_item(facts).state is State.REFUSED
    ):
        raise fail(
            "setup refuses the apps' account, and changed nothing: "
            + setup_ops.app_user_item(facts).detail
        )
    changes = [i for i in items if i.state is not State.OK]
    if not changes:
        print("Nothing to change: the host is set up.")
        return
    if dry_run:
        print(f"Dry run: {len(changes)} item(s) would change; nothing was changed.")
        return
    for note in converge(c, s, facts, items):
        print("  done           " + note)
    print(f"Changed {len(changes)} item(s); a second run changes nothing.")


def remove_app_user(c: Any, s: Settings, facts: setup_ops.SetupFacts, dry_run: bool) -> None:
    """`setup --remove-app APP_USER`: what setup made for an apps' account, taken off (its apps
    removed first)."""
    if not facts.sudo:
        raise fail(
            "setup --remove-app needs full passwordless sudo for the connecting account on"
            f" {target_name(c)}: connect as an admin, e.g. fab -H ubuntu@host setup --remove-app"
            f" {facts.app} --user {facts.user}."
        )
    if not facts.user:
        raise fail(
            f"There is no user {facts.user or '(none)'} on {target_name(c)}: name the deploy user"
            " with --user."
        )
    problem = setup_ops.removal_problem(facts)
    if problem:
        raise fail(f"setup --remove-app refuses: {problem}. Nothing was removed.")
    items = setup_ops.removal_items(facts)
    print(f"Removal of the apps' account {facts.app} of {facts.user} from {target_name(c)}:")
    for item in items:
        print("  " + line(item, dry_run))
    if not items:
        print(
            f"Nothing to remove: there is no account {facts.app}, and root's record of"
            f" {facts.user}'s apps names none."
        )
        return
    if dry_run:
        refusal = setup_ops.removal_refusal(c, s, facts)
        if refusal:
            print(
                f"Dry run: setup --remove-app would refuse as the host is now: {refusal} Nothing"
                " was changed."
            )
            return
        print(f"Dry run: {len(items)} item(s) would change; nothing was changed.")
        return
    for note in setup_ops.remove_app_user(c, s, facts):
        print("  done           " + note)
    print(f"Removed {facts.app}; a second run removes nothing.")


ns = Collection(setup)
