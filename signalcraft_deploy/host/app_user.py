"""The apps' own account (APP_USER): how the deploy user runs a command as it.

Through the app helper (/usr/local/sbin/signalcraft-app, which `setup` installs and lets the deploy user run as
its apps' accounts with sudo): `sudo -n -u APP_USER signalcraft-app /bin/sh -c COMMAND`. When APP_USER is the
deploy user's own name (a host that wants no second account) the command runs as it is, byte for byte what it was
before APP_USER existed. Who the deploy user is comes from the connection (its login: host/io.Transport.login);
without a connection the host decides (`id -un`).
"""

from __future__ import annotations

from typing import Any

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import q, transport_of
from signalcraft_deploy.host.root import APP_HELPER, HELPER


def runs_as_deploy_user(c: Any, s: Settings) -> bool | None:
    """Whether the apps run as the deploy user itself; None when that is for the host to say (no connection)."""
    if c is None:
        return None
    login = transport_of(c).login(c)
    return login is None or login == s.app_user


def as_app(c: Any, s: Settings, command: str) -> str:
    """Shell that runs `command` (a shell command line) as APP_USER, with its stdin."""
    same = runs_as_deploy_user(c, s)
    if same:
        return command
    door = f"sudo -n -u {q(s.app_user)} {APP_HELPER} /bin/sh -c {q(command)}"
    if same is False:
        return door
    return f'if [ "$(id -un)" = {q(s.app_user)} ]; then sh -c {q(command)}; else {door}; fi'


def systemd_first(c: Any, s: Settings) -> str:
    """Shell to run before a task's first PM2 command as the apps' account: when no PM2 daemon of that account runs,
    the root helper starts its unit (`pm2-boot`: under a running systemd, setup's enabled pm2-APP_USER.service), so
    that the daemon the commands then use is systemd's (restarted if it dies), not a child of this SSH session.
    Without systemd, without the unit or with an older helper nothing happens; "" when the apps run as the deploy
    user (as before APP_USER)."""
    if runs_as_deploy_user(c, s):
        return ""
    return (f"{{ pgrep -u {q(s.app_user)} -f {q('^PM2 v[^ ]*: God Daemon')} >/dev/null 2>&1 || "
            f"sudo -n {HELPER} pm2-boot {q(s.app_user)} >/dev/null 2>&1; }}; ")
