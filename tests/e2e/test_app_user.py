"""The apps' own account, as `setup` makes it: a system account with no way in and no rights of its
own, in a group the deploy user joins, with its own boot unit, log rotation and door (the app
helper, through sudo); root's record of it. Checked on the host as each account sees it, not through
the tool.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, Sandbox, sh
from tests.e2e.hosts import on_this_machine

APP = "shopapp"
APP_HOME = f"/var/lib/signalcraft-apps/{APP}"
HELPER = "/usr/local/sbin/signalcraft-app"


def run_setup(sb: Sandbox, *args: str) -> str:
    with on_this_machine():
        done = subprocess.run(
            [
                "fab",
                "-H",
                sb.as_user("admin").target,
                "-i",
                sb.key,
                "setup",
                "--user",
                "ubuntu",
                "--known-hosts",
                sb.known_hosts,
                "--set",
                f"APP_USER={APP}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def set_up(sandbox: Sandbox) -> tuple[str, str]:
    first = run_setup(sandbox)
    return first, run_setup(sandbox)


def test_setup_makes_a_system_account_with_no_way_in_and_no_sudo_and_a_second_run_changes_nothing(
    set_up,
) -> None:
    first, second = set_up
    assert (
        f"done           app user: created {APP} (home {APP_HOME}, no shell, locked password)"
        in first
    ), first
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
    assert env == {
        "HOME": APP_HOME,
        "USER": APP,
        "LOGNAME": APP,
        "SHELL": "/usr/sbin/nologin",
        "PM2_HOME": f"{APP_HOME}/.pm2",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }
    assert sh(f"stat -c '%U %a' {APP_HOME}/.pm2").stdout.strip() == f"{APP} 700"
    for refused in (
        f"sudo -n -u {APP} /bin/sh -c id",
        f"sudo -n -u root {HELPER} /usr/bin/id",
        f"sudo -n -u {APP} -i",
    ):
        assert sh(f"sudo -u ubuntu -H {refused}", check=False).returncode != 0, refused


def test_the_account_has_no_sudo_and_root_keeps_the_record(set_up) -> None:
    for attempt in (
        "sudo -n true",
        "sudo -n /usr/local/sbin/signalcraft-root version",
        "sudo -n -u ubuntu true",
    ):
        assert sh(f"runuser -u {APP} -- {attempt}", check=False).returncode != 0, attempt
    record = Path("/var/lib/signalcraft-deploy/app-users/ubuntu.json")
    assert sh(f"stat -c '%U %a' {record}").stdout.strip() == "root 600"
    uid = int(sh(f"id -u {APP}").stdout)
    apps = json.loads(record.read_text())[
        "apps"
    ]  # the sandbox's own setup added the default one, APP_NAME's (and
    assert apps[APP] == {"uid": uid, "home": APP_HOME} and {APP, "signalcraft"} <= set(
        apps
    )  # other modules' theirs)
    drop_in = Path("/etc/sudoers.d/signalcraft-ubuntu").read_text()
    assert "ubuntu ALL=(root) NOPASSWD: /usr/local/sbin/signalcraft-root\n" in drop_in
    [runas] = re.findall(rf"^ubuntu ALL=\(([^)]*)\) NOPASSWD: {re.escape(HELPER)}$", drop_in, re.M)
    assert (
        {APP, "signalcraft"} <= set(runas.split(", "))
        and "root" not in runas
        and "ubuntu" not in runas
    )
    unit = Path(f"/etc/systemd/system/pm2-{APP}.service").read_text()
    assert f"User={APP}\n" in unit and f"PIDFile={APP_HOME}/.pm2/pm2.pid\n" in unit


# ----------------------------------------------------------------------------- attacks on the door

MARKS = Path("/tmp/signalcraft-door-marks")  # a door call that got through leaves its file here


@pytest.fixture
def marks() -> Iterator[Path]:
    sh(f"rm -rf {MARKS} && install -d -m 1777 {MARKS}")
    yield MARKS
    sh(f"rm -rf {MARKS}")


def as_(user: str, cmd: str) -> subprocess.CompletedProcess[str]:
    """`cmd` in a shell of `user`'s (no terminal, stdin empty: how the tool's SSH commands run)."""
    return sh(f"runuser -u {user} -- /bin/sh -c {shlex.quote(cmd)} </dev/null", check=False)


def door(how: str, mark: str) -> str:
    """The door opened with sudo options `how`, to leave the file `mark` as whoever it runs as."""
    return f"sudo -n {how} {HELPER} /usr/bin/touch {MARKS}/{mark}"


def test_the_apps_account_can_open_neither_the_door_nor_any_sudo(set_up, marks) -> None:
    for n, how in enumerate(
        ("", f"-u {APP}", "-u signalcraft", "-u ubuntu", "-u root", "-u admin")
    ):
        done = as_(APP, door(how, f"app-{n}"))
        assert done.returncode != 0, (how, done.stdout, done.stderr)
    listed = as_(APP, "sudo -n -l")
    assert listed.returncode != 0 and "NOPASSWD" not in listed.stdout, listed.stdout + listed.stderr
    assert sorted(p.name for p in marks.iterdir()) == []
    # The same door, opened by the deploy user as the account, works: the marks would have shown a
    # way through.
    assert as_("ubuntu", door(f"-u {APP}", "deploy")).returncode == 0
    assert sh(f"stat -c %U {marks}/deploy").stdout.strip() == APP


def test_the_deploy_user_opens_the_door_as_its_apps_accounts_only(set_up, marks) -> None:
    for n, how in enumerate(
        (
            "",
            "-u root",
            "-u '#0'",
            "-u '#-1'",
            "-u '#4294967295'",
            "-u admin",
            "-u ubuntu",
            "-u nobody",
            f"-g root -u {APP}",
            f"-g ubuntu -u {APP}",
            f"-u {APP} -D /",
            f"-u {APP} -R /",
            f"-u {APP} -C 4",
        )
    ):  # (-C 3 is sudo's own default, so sudo allows it)
        done = as_("ubuntu", door(how, f"deploy-{n}"))
        assert done.returncode != 0, (how, done.stdout, done.stderr)
    for other in (
        f"sudo -n -u {APP} /usr/bin/touch {MARKS}/plain",
        f"sudo -n -u {APP} -s /usr/bin/touch {MARKS}/shell",
        f"sudo -n -u {APP} -e {MARKS}/edited",
        f"sudo -n -u root {HELPER} /usr/bin/touch {MARKS}/root",
    ):
        assert as_("ubuntu", other).returncode != 0, other
    assert sorted(p.name for p in marks.iterdir()) == []


DOOR_ENV = {
    "HOME": APP_HOME,
    "USER": APP,
    "LOGNAME": APP,
    "SHELL": "/usr/sbin/nologin",
    "PM2_HOME": f"{APP_HOME}/.pm2",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def test_the_callers_environment_never_reaches_the_door(set_up) -> None:
    # No SETENV: sudo refuses to pass on a variable, or the caller's environment, to the door.
    for how in (
        f"-u {APP} PM2_HOME=/tmp/x",
        f"-E -u {APP}",
        f"--preserve-env=PM2_HOME -u {APP}",
        f"-u {APP} HOME=/tmp/x",
        f"-u {APP} LD_PRELOAD=/tmp/x.so",
    ):
        done = as_("ubuntu", f"PM2_HOME=/tmp/x sudo -n {how} {HELPER} /usr/bin/env")
        assert done.returncode != 0 and "/tmp/x" not in done.stdout, (how, done.stdout, done.stderr)
    # Whatever the caller's environment, folder and umask, the door's are its own: the passwd
    # entry's and fixed ones.
    poisoned = (
        "cd /tmp && umask 000 && env HOME=/tmp/evil PM2_HOME=/tmp/x PATH=/tmp/evil:/usr/bin:/bin "
        "NODE_OPTIONS=--require=/tmp/evil.js PYTHONPATH=/tmp/evil PM2_SOCKET_USER=ubuntu TERM=xterm"
    )
    said = as_("ubuntu", f"{poisoned} sudo -n -u {APP} {HELPER} /usr/bin/env")
    assert dict(line.split("=", 1) for line in said.stdout.splitlines()) == DOOR_ENV, (
        said.stdout + said.stderr
    )
    where = as_("ubuntu", f"{poisoned} sudo -n -u {APP} {HELPER} /bin/sh -c 'pwd; umask'")
    assert where.stdout.split() == [APP_HOME, "0027"], where.stdout + where.stderr


def test_the_door_refuses_to_run_as_root(set_up, marks) -> None:
    done = sh(f"{HELPER} /usr/bin/touch {MARKS}/root", check=False)
    assert (
        done.returncode == 2
        and done.stderr
        == "signalcraft-app: refused: this runs programs as an app user, never as root\n"
    ), done.stdout + done.stderr
    assert not (marks / "root").exists()


def test_the_door_gets_a_terminal_of_its_own_and_the_tool_gets_the_programs_bytes(set_up) -> None:
    # An operator at a terminal: the door never gets that terminal (a program of the apps' account
    # could push keystrokes into it), but a pseudo-terminal of sudo's, even where an admin turned
    # use_pty off for all else.
    sh(
        "printf 'Defaults !use_pty\\n' > /etc/sudoers.d/00-test-no-pty && chmod 0440"
        " /etc/sudoers.d/00-test-no-pty"
    )
    try:
        said = as_("ubuntu", f"script -qec 'tty; sudo -n -u {APP} {HELPER} /usr/bin/tty' /dev/null")
    finally:
        sh("rm -f /etc/sudoers.d/00-test-no-pty")
    # (through a terminal, lines end in "\r\n", and the terminal may echo a control character: "^@")
    terminals = re.findall(r"/dev/pts/[0-9]+", said.stdout)
    assert len(terminals) == 2 and terminals[0] != terminals[1], said.stdout
    # The tool (no terminal, as its SSH commands run): the door has none either, and what the
    # program wrote arrives byte for byte (no "\r\n"); PM2's list is one line of JSON with no
    # terminal codes. (A first call that starts the account's daemon says so before the list, in
    # colour even into a pipe: PM2's own, not a terminal's.)
    piped = as_("ubuntu", f"sudo -n -u {APP} {HELPER} /bin/sh -c 'tty; printf \"a\\nb\\n\"'")
    assert piped.stdout == "not a tty\na\nb\n", repr(piped.stdout)
    first = as_("ubuntu", f"sudo -n -u {APP} {HELPER} pm2 jlist").stdout
    assert isinstance(json.loads(first.splitlines()[-1]), list), first
    listed = as_("ubuntu", f"sudo -n -u {APP} {HELPER} pm2 jlist").stdout
    assert "\r" not in listed and "\x1b" not in listed and isinstance(json.loads(listed), list), (
        repr(listed)
    )
