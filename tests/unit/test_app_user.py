"""Commands run as the apps' own account (host/app_user.py): as they are when APP_USER is the deploy
user, through the app helper with sudo otherwise; with no connection the host decides; quoting
survives each way.
"""

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

ODD = 'it\'s $HOME; `id` "quoted"'


def test_as_the_deploy_users_own_name_the_command_runs_as_it_is_with_its_stdin(load) -> None:
    s = replace(
        load(), app_user=getpass.getuser()
    )  # root too, as CI runs: settings refuse APP_USER=root
    command = f"printf '%s|' {shlex.quote(ODD)}; cat"
    for c in (Context(), None):  # this machine's login; the host's `id -un`
        wrapped = as_app(c, s, command)
        done = subprocess.run(
            ["bash", "-c", wrapped], input="from stdin", capture_output=True, text=True, timeout=30
        )
        assert (done.returncode, done.stdout) == (0, f"{ODD}|from stdin"), done.stderr
    assert as_app(Context(), s, command) == command  # byte for byte what it was before APP_USER


def test_as_another_account_the_command_goes_through_the_app_helper_with_sudo(load) -> None:
    s = load({"APP_USER": "shop"})
    assert (
        as_app(Connection("ubuntu@web1"), s, "pm2 jlist")
        == f"sudo -n -u shop {APP_HELPER} /bin/sh -c 'pm2 jlist'"
    )
    assert as_app(Connection("shop@web1"), s, "pm2 jlist") == "pm2 jlist"
    assert as_app(use_transport(MockContext(), InvokeRunner(login="ubuntu")), s, "true").startswith(
        "sudo -n -u shop "
    )
    assert (
        as_app(use_transport(MockContext(), InvokeRunner()), s, "true") == "true"
    )  # a mock host: the apps' own login
    assert (
        as_app(None, s, "pm2 jlist") == "if [ \"$(id -un)\" = shop ]; then sh -c 'pm2 jlist'; "
        f"else sudo -n -u shop {APP_HELPER} /bin/sh -c 'pm2 jlist'; fi"
    )


def test_a_host_without_the_apps_account_or_its_door_stops_the_deploy_naming_setup_and_app_user() -> (
    None
):
    import pytest
    from invoke.exceptions import Exit

    from signalcraft_deploy.core.facts import HostFacts
    from signalcraft_deploy.steps.one_host import require_tools

    facts = HostFacts()
    facts.tools = {"pm2", "node", "flock", "sudo", "nginx", "python-venv"}
    with pytest.raises(Exit) as stopped:
        require_tools(facts)
    message = stopped.value.message
    assert (
        "the apps' own account APP_USER, the deploy user's way to run them as it, and its place in"
        " their group" in message
    )
    assert (
        "Run `setup`" in message
        and "so that it knows APP_USER" in message
        and "set APP_USER to the deploy user's" in message
    )


def test_the_lock_makes_a_new_deploy_roots_folders_reachable_and_keeps_its_state_private(
    load, tmp_path
) -> None:
    """A DEPLOY_ROOT under folders that do not exist yet: they are made 0755 (the apps' own account
    must reach the releases), .deploy 0700 (the lock and the audit log are the deploy user's
    only)."""
    import os
    import stat

    from signalcraft_deploy.host.lock import lock_script

    root = tmp_path / "apps" / "shop"
    s = load({"DEPLOY_ROOT": str(root)})
    subprocess.run(
        ["bash", "-c", lock_script(s, {"user": "me"}, 0)],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PM2_HOME": str(tmp_path / "pm2")},
    )  # the lock closes the PM2 home it finds
    modes = {
        p: stat.S_IMODE(os.stat(p).st_mode) for p in (tmp_path / "apps", root, root / ".deploy")
    }
    assert modes == {tmp_path / "apps": 0o755, root: 0o755, root / ".deploy": 0o700}


def test_before_the_first_pm2_command_the_root_helper_starts_the_apps_unit_only_when_no_daemon_of_theirs_runs(
    load, tmp_path
) -> None:
    """systemd_first: `pgrep` for the apps' PM2 daemon; none → `sudo -n signalcraft-root pm2-boot
    APP_USER` (the helper decides whether systemd runs and the unit is there); a failing helper
    never stops the command after.
    """
    import os

    from signalcraft_deploy.host.app_user import systemd_first
    from signalcraft_deploy.host.root import HELPER

    s = load({"APP_USER": "shop"})
    assert (
        systemd_first(Connection("shop@web1"), s) == ""
    )  # the apps run as the deploy user: as before APP_USER
    prefix = systemd_first(Connection("ubuntu@web1"), s)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in ("pgrep", "sudo"):
        (bin_dir / name).write_text(
            f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit ${{{name.upper()}_EXIT:-0}}\n'
        )
        (bin_dir / name).chmod(0o755)
    for daemon, helper, expected in (
        (0, 0, ["pgrep -u shop -f ^PM2 v[^ ]*: God Daemon"]),
        (1, 0, ["pgrep -u shop -f ^PM2 v[^ ]*: God Daemon", f"sudo -n {HELPER} pm2-boot shop"]),
        (1, 2, ["pgrep -u shop -f ^PM2 v[^ ]*: God Daemon", f"sudo -n {HELPER} pm2-boot shop"]),
    ):
        calls.write_text("")
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PGREP_EXIT": str(daemon),
            "SUDO_EXIT": str(helper),
        }
        done = subprocess.run(
            ["sh", "-c", prefix + "echo next"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert (done.returncode, done.stdout) == (0, "next\n")
        assert calls.read_text().splitlines() == expected


def test_only_a_deploy_or_rollback_asks_for_the_apps_unit_before_reading_their_pm2(load) -> None:
    """A deploy's facts (start_pm2) start the apps' PM2 under its unit when none runs; status and
    releases, which only look, never do."""
    from signalcraft_deploy.host.facts import facts_script
    from signalcraft_deploy.host.root import HELPER

    s = load({"APP_USER": "shop"})
    c = Connection("ubuntu@web1")
    deploying = facts_script(s, quick=True, c=c, start_pm2=True)
    assert (
        deploying.count(f"sudo -n {HELPER} pm2-boot shop") == 2
    )  # the backgrounded list, and its fallback
    assert deploying.index("pm2-boot shop") < deploying.index(
        f"sudo -n -u shop {APP_HELPER} /bin/sh -c"
    )
    assert "pm2-boot" not in facts_script(s, quick=True, c=c) and "pm2-boot" not in facts_script(
        s, c=c
    )


def test_the_lock_closes_the_deploy_users_own_pm2_home_unless_the_apps_run_as_it(
    load, tmp_path
) -> None:
    """A PM2 home made under a 022 umask (0755, its dump 0644 holding the apps' environments) is
    made 0700 when the apps run as their own account, and left as it is when APP_USER is the deploy
    user; a link is not followed.
    """
    import os
    import stat

    from signalcraft_deploy.host.lock import lock_script

    def locked(app_user: str, pm2_home: os.PathLike) -> None:
        s = replace(
            load({"DEPLOY_ROOT": str(tmp_path / "app")}), app_user=app_user
        )  # root too, as CI runs
        done = subprocess.run(
            ["bash", "-c", lock_script(s, {"user": "me"}, 0)],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PM2_HOME": str(pm2_home)},
        )
        assert "LOCKED" in done.stdout, done.stdout + done.stderr

    home, elsewhere = tmp_path / "pm2", tmp_path / "elsewhere"
    for folder in (home, elsewhere):
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
    locked(
        getpass.getuser(), home
    )  # the apps run as the deploy user: its PM2 home is theirs, as it was
    assert stat.S_IMODE(home.stat().st_mode) == 0o755
    locked("shop", home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    (tmp_path / "link").symlink_to(elsewhere)
    locked("shop", tmp_path / "link")
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    locked("shop", tmp_path / "none")  # no PM2 home yet: nothing made
    assert not (tmp_path / "none").exists()
