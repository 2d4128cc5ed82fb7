"""The apps' own account (APP_USER): how the deploy user runs a command as it.

Through the app helper (/usr/local/sbin/signalcraft-app, which `setup` installs and lets the deploy
user run as its apps' accounts with sudo): `sudo -n -u APP_USER signalcraft-app /bin/sh -c COMMAND`.
When APP_USER is the deploy user's own name (a host that wants no second account) the command runs
as it is, byte for byte what it was before APP_USER existed. Who the deploy user is comes from the
connection (its login: host/io.Transport.login); without a connection the host decides (`id -un`).
"""

from __future__ import annotations

from typing import Any

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import q, transport_of
from signalcraft_deploy.host.root import APP_HELPER, HELPER


def runs_as_deploy_user(c: Any, s: Settings) -> bool | None:
    """Whether the apps run as the deploy user itself; None when that is for the host to say (no
    connection)."""
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


def reach_command(s: Settings) -> str:
    """Shell (as the deploy user) that lets the apps' account pass the deploy user's own folders
    above DEPLOY_ROOT that others cannot (a home of mode 0750, Ubuntu's): an ACL entry
    u:APP_USER:--x on each, and nothing else (it cannot list them or read what is in them)."""
    return (
        f'd={q(s.deploy_root)}; while [ "$d" != / ]; do d=$(dirname "$d"); '
        'if [ -O "$d" ] && [ $(( $(stat -c %a "$d") % 2 )) = 0 ]; then '
        f'setfacl -m u:{q(s.app_user)}:--x "$d" || exit 1; fi; done'
    )


def move_command(s: Settings) -> str:
    """Shell (as the deploy user) that readies a host whose apps ran as the deploy user for their
    own account: every release's .env and env.json readable by its group (a rollback runs an
    older release as it), what the apps wrote in shared/ theirs to write (remote/shared_paths.py,
    which follows no link), and the deploy user's PM2 folder (its dump holds the apps' environment)
    closed to others."""
    from signalcraft_deploy.remote import program

    app = q(s.app_user)
    return "; ".join(
        [
            (
                f"for f in {q(s.releases_dir)}/*/.env {q(s.releases_dir)}/*/.signalcraft/env.json;"
                f' do if [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ]; then chgrp {app} "$f" &&'
                ' chmod 0640 "$f" || exit 1; fi; done'
            ),
            'if [ -d "${PM2_HOME:-$HOME/.pm2}" ]; then chmod 0700 "${PM2_HOME:-$HOME/.pm2}"; fi',
            (
                f"if [ -d {q(s.shared_dir)} ]; then {q(s.python)} -I -S -c"
                f" {q(program('shared_paths'))} adopt {q(s.shared_dir)} {app} </dev/null || exit"
                " 1; fi"
            ),
        ]
    )


def prepare(c: Any, s: Settings, moving: bool) -> str:
    """Ready the host for the apps' own account (the way to DEPLOY_ROOT; with `moving`, the files of
    apps that ran as the deploy user), then check, as that account, that it reaches DEPLOY_ROOT."""
    from signalcraft_deploy.host.io import fail, run

    done = run(c, reach_command(s) + (f"; {move_command(s)}" if moving else ""), warn=True)
    if not done.ok:
        raise fail(
            f"Could not ready the host for the apps' account {s.app_user} (APP_USER):"
            f" {done.stderr.strip()[-400:]}. Run `setup` (it installs the acl package), then deploy"
            " again."
        )
    reach = run(c, as_app(c, s, f"test -x {q(s.deploy_root)}"), warn=True)
    if not reach.ok:
        raise fail(
            f"The apps' account {s.app_user} (APP_USER) cannot reach DEPLOY_ROOT {s.deploy_root}: a"
            " folder above it is closed to it and not the deploy user's to open. Give it o+x"
            " (chmod o+x FOLDER), or set DEPLOY_ROOT to a folder the deploy user owns all the way"
            " down from one others can pass."
        )
    parts = ["way to DEPLOY_ROOT open to " + s.app_user]
    if moving:
        parts.append("releases' .env, shared/ and PM2's folder readied for the move")
    return "; ".join(parts)


def systemd_first(c: Any, s: Settings) -> str:
    """Shell to run before a task's first PM2 command as the apps' account: when no PM2 daemon of
    that account runs, the root helper starts its unit (`pm2-boot`: under a running systemd, setup's
    enabled pm2-APP_USER.service), so that the daemon the commands then use is systemd's (restarted
    if it dies), not a child of this SSH session. Without systemd, without the unit or with an older
    helper nothing happens; "" when the apps run as the deploy user (as before APP_USER)."""
    if runs_as_deploy_user(c, s):
        return ""
    return (
        f"{{ pgrep -u {q(s.app_user)} -f {q('^PM2 v[^ ]*: God Daemon')} >/dev/null 2>&1 || "
        f"sudo -n {HELPER} pm2-boot {q(s.app_user)} >/dev/null 2>&1; }}; "
    )
