"""Commands run as the apps' own account (host/app_user.py): as they are when APP_USER is the deploy user, through
the app helper with sudo otherwise; quoting survives both."""

from __future__ import annotations

import getpass
import shlex
import subprocess
from dataclasses import replace

from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.root import APP_HELPER


def test_as_the_deploy_users_own_name_the_command_runs_as_it_is_with_its_stdin(load) -> None:
    s = replace(load(), app_user=getpass.getuser())  # root too, as CI runs: settings refuse APP_USER=root
    odd = "it's $HOME; `id` \"quoted\""
    command = as_app(s, f"printf '%s|' {shlex.quote(odd)}; cat")
    done = subprocess.run(["bash", "-c", command], input="from stdin", capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, f"{odd}|from stdin"), done.stderr


def test_as_another_account_the_command_goes_through_the_app_helper_with_sudo(load) -> None:
    s = load({"APP_USER": "shop"})
    command = as_app(s, "pm2 jlist")
    assert command.endswith(f"else sudo -n -u shop {APP_HELPER} /bin/sh -c 'pm2 jlist'; fi")
    assert command.startswith("if [ \"$(id -un)\" = shop ]; then sh -c 'pm2 jlist';")
