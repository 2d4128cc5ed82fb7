"""The apps' own account, as `setup` makes it: a system account with no way in and no rights of its own, in a
group the deploy user joins, with its own boot unit, log rotation and door (the app helper, through sudo);
root's record of it. Checked on the host as each account sees it, not through the tool.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, Sandbox, sh
from tests.e2e.hosts import on_this_machine

APP = "shopapp"
APP_HOME = f"/var/lib/signalcraft-apps/{APP}"
HELPER = "/usr/local/sbin/signalcraft-app"


def run_setup(sb: Sandbox, *args: str) -> str:
    with on_this_machine():
        done = subprocess.run(["fab", "-H", sb.as_user("admin").target, "-i", sb.key, "setup", "--user", "ubuntu",
                               "--known-hosts", sb.known_hosts, "--set", f"APP_USER={APP}", *args],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def set_up(sandbox: Sandbox) -> tuple[str, str]:
    first = run_setup(sandbox)
    return first, run_setup(sandbox)


def test_setup_makes_a_system_account_with_no_way_in_and_no_sudo_and_a_second_run_changes_nothing(set_up) -> None:
    first, second = set_up
    assert f"done           app user: created {APP} (home {APP_HOME}, no shell, locked password)" in first, first
    assert "Nothing to change: the host is set up." in second, second
    name, _, uid, gid, _, home, shell = sh(f"getent passwd {APP}").stdout.strip().split(":")
    assert (name, home, shell) == (APP, APP_HOME, "/usr/sbin/nologin") and 0 < int(uid) < 1000
    assert sh(f"passwd -S {APP}").stdout.split()[1] in ("L", "LK")
    assert sh(f"id -Gn {APP}").stdout.split() == [APP]
    assert "not allowed to run sudo" in sh(f"sudo -l -U {APP}").stdout
    assert sh(f"stat -c '%U:%G %a' {APP_HOME}").stdout.strip() == f"{APP}:{APP} 750"
    assert APP in sh("id -Gn ubuntu").stdout.split()


def test_the_deploy_user_reaches_the_account_only_through_the_app_helper(set_up) -> None:
    said = sh(f"sudo -u ubuntu -H sudo -n -u {APP} {HELPER} /usr/bin/env").stdout
    env = dict(line.split("=", 1) for line in said.splitlines())
    assert env == {"HOME": APP_HOME, "USER": APP, "LOGNAME": APP, "SHELL": "/usr/sbin/nologin", "PM2_HOME": f"{APP_HOME}/.pm2",
                   "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    assert sh(f"stat -c '%U %a' {APP_HOME}/.pm2").stdout.strip() == f"{APP} 700"
    for refused in (f"sudo -n -u {APP} /bin/sh -c id", f"sudo -n -u root {HELPER} /usr/bin/id", f"sudo -n -u {APP} -i"):
        assert sh(f"sudo -u ubuntu -H {refused}", check=False).returncode != 0, refused


def test_the_account_has_no_sudo_and_root_keeps_the_record(set_up) -> None:
    for attempt in ("sudo -n true", "sudo -n /usr/local/sbin/signalcraft-root version", "sudo -n -u ubuntu true"):
        assert sh(f"runuser -u {APP} -- {attempt}", check=False).returncode != 0, attempt
    record = Path("/var/lib/signalcraft-deploy/app-users/ubuntu.json")
    assert sh(f"stat -c '%U %a' {record}").stdout.strip() == "root 600"
    uid = int(sh(f"id -u {APP}").stdout)
    apps = json.loads(record.read_text())["apps"]  # the sandbox's own setup added the default one, APP_NAME's
    assert apps[APP] == {"uid": uid, "home": APP_HOME} and sorted(apps) == [APP, "signalcraft"]
    drop_in = Path("/etc/sudoers.d/signalcraft-ubuntu").read_text()
    assert "ubuntu ALL=(root) NOPASSWD: /usr/local/sbin/signalcraft-root\n" in drop_in
    assert f"ubuntu ALL=({APP}, signalcraft) NOPASSWD: {HELPER}\n" in drop_in
    unit = Path(f"/etc/systemd/system/pm2-{APP}.service").read_text()
    assert f"User={APP}\n" in unit and f"PIDFile={APP_HOME}/.pm2/pm2.pid\n" in unit
