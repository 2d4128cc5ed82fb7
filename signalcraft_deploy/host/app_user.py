"""The apps' own account (APP_USER): how the deploy user runs a command as it.

Through the app helper (/usr/local/sbin/signalcraft-app, which `setup` installs and lets the deploy user run as
its apps' accounts with sudo): `sudo -n -u APP_USER signalcraft-app /bin/sh -c COMMAND`. When APP_USER is the
deploy user's own name (a host that wants no second account) the command runs as it is. Which of the two is
decided on the host (`id -un`), so the commands are built from the settings alone.
"""

from __future__ import annotations

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import q
from signalcraft_deploy.host.root import APP_HELPER


def as_app(s: Settings, command: str) -> str:
    """Shell that runs `command` (a shell command line) as APP_USER, with its stdin."""
    inner = q(command)
    return (f'if [ "$(id -un)" = {q(s.app_user)} ]; then sh -c {inner}; '
            f"else sudo -n -u {q(s.app_user)} {APP_HELPER} /bin/sh -c {inner}; fi")
