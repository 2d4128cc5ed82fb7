"""Commands run as the apps' own account (host/app_user.py): as they are when APP_USER is the deploy user, through
the app helper with sudo otherwise; with no connection the host decides; quoting survives each way."""

from __future__ import annotations

import getpass
import shlex
import subprocess
from dataclasses import replace

from fabric import Connection
from invoke import Context, MockContext

from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.io import InvokeRunner, use_transport
from signalcraft_deploy.host.root import APP_HELPER

ODD = "it's $HOME; `id` \"quoted\""


def test_as_the_deploy_users_own_name_the_command_runs_as_it_is_with_its_stdin(load) -> None:
    s = replace(load(), app_user=getpass.getuser())  # root too, as CI runs: settings refuse APP_USER=root
    command = f"printf '%s|' {shlex.quote(ODD)}; cat"
    for c in (Context(), None):  # this machine's login; the host's `id -un`
        wrapped = as_app(c, s, command)
        done = subprocess.run(["bash", "-c", wrapped], input="from stdin", capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout) == (0, f"{ODD}|from stdin"), done.stderr
    assert as_app(Context(), s, command) == command  # byte for byte what it was before APP_USER


def test_as_another_account_the_command_goes_through_the_app_helper_with_sudo(load) -> None:
    s = load({"APP_USER": "shop"})
    assert as_app(Connection("ubuntu@web1"), s, "pm2 jlist") == f"sudo -n -u shop {APP_HELPER} /bin/sh -c 'pm2 jlist'"
    assert as_app(Connection("shop@web1"), s, "pm2 jlist") == "pm2 jlist"
    assert as_app(use_transport(MockContext(), InvokeRunner(login="ubuntu")), s, "true").startswith("sudo -n -u shop ")
    assert as_app(use_transport(MockContext(), InvokeRunner()), s, "true") == "true"  # a mock host: the apps' own login
    assert as_app(None, s, "pm2 jlist") == (f"if [ \"$(id -un)\" = shop ]; then sh -c 'pm2 jlist'; "
                                          f"else sudo -n -u shop {APP_HELPER} /bin/sh -c 'pm2 jlist'; fi")


def test_a_host_without_the_apps_account_or_its_door_stops_the_deploy_naming_setup_and_app_user() -> None:
    import pytest
    from invoke.exceptions import Exit

    from signalcraft_deploy.host.facts import HostFacts
    from signalcraft_deploy.tasks.deploy import require_tools

    facts = HostFacts()
    facts.tools = {"pm2", "node", "flock", "sudo", "nginx", "python-venv"}
    with pytest.raises(Exit) as stopped:
        require_tools(facts)
    message = stopped.value.message
    assert "the apps' own account APP_USER, and the deploy user's way to run them as it" in message
    assert "Run `setup`" in message and "so that it knows APP_USER" in message and "set APP_USER to the deploy user's" in message
