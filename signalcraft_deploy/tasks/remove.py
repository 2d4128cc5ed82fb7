"""`remove`: take the app off a host (its site, PM2 apps, logs, `current`; DEPLOY_ROOT with --purge --confirm APP_NAME),
leaving the host's other apps and Nginx serving. The steps are steps/remove.py's."""

from __future__ import annotations

from invoke import Collection, Context, task

from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.steps.remove import check_confirm, remove_from_host

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
    environment: str | None = None,
) -> None:
    """Take the app off the host: its Nginx site, PM2 apps, logs and `current` (DEPLOY_ROOT too with --purge)."""
    s = settings_for(env_file, set_, environment)
    check_confirm(s, purge, confirm)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    remove_from_host(c, s, purge=purge, dry_run=dry_run)


ns = Collection(remove)
