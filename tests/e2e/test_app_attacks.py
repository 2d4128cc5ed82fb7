"""Code running as the apps' own account attacks the deploy user through what the deploy reads of it
(each test fails if the attack works; they were found by an adversarial review of the apps' account,
and each was measured):
- the stdin of a door command (`sudo -n -u APP_USER signalcraft-app ...`, run by the deploy user's
  `sh -s`): a pipe of the deploy user's, 0600, so /proc/<pid>/fd/0 cannot be opened by the account
  (EACCES);
- a working folder whose name holds newlines and a section marker: it used to write a
  `site_defaults` section into the deploy user's facts and set PYTHON to the app's program, which
  the deploy user then ran;
- a process title on our port with the same: the root helper's `listeners` showed it as lines of
  their own.
"""

from __future__ import annotations

import shlex
import time

import pytest

from tests.e2e.conftest import APP_USER, AppRepo, Profile, clean_host, fab, sh

P = Profile("attacked", "/home/ubuntu/attacked", 7861, 7871, 7881)
PROOF = "/tmp/attack-door-stdin-proof"
ATTACKER = r"""
import os, time
me, uid = os.getpid(), os.getuid()
open("/tmp/attack-stdin.pid", "w").write(str(me))
done, deadline = set(), time.time() + 280
payload = b"\nid > PROOF 2>&1\n"
while time.time() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me or pid in done:
            continue
        try:
            if os.stat("/proc/" + pid).st_uid != uid:
                continue
            ppid = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[1]
            if open("/proc/%s/comm" % ppid).read().strip() != "sudo":
                continue
            if not os.readlink("/proc/%s/fd/0" % pid).startswith("pipe:"):
                continue
            done.add(pid)
            fd = os.open("/proc/%s/fd/0" % pid, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, payload)
            os.close(fd)
            print("wrote into the stdin of", pid, open("/proc/%s/cmdline" % pid).read().replace("\0", " "), flush=True)
        except OSError as err:
            print("skip", pid, err, flush=True)
    time.sleep(0.0005)
""".replace("PROOF", PROOF)


def start_attacker(name: str, program: str, settle: float = 2) -> None:
    """Start `program` (Python) as the apps' account, outside any deploy, as code in the app could
    run: its text in /tmp/NAME.py, its output in /tmp/NAME.log; give it `settle` seconds to get
    ready."""
    sh(f"printf %s {shlex.quote(program)} > /tmp/{name}.py && chmod 0644 /tmp/{name}.py")
    sh(
        f"setsid runuser -u {APP_USER} -- python3 /tmp/{name}.py > /tmp/{name}.log 2>&1 <"
        " /dev/null &"
    )
    time.sleep(settle)


@pytest.fixture(scope="module")
def deployed(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("attacked") / "app")
    done = fab(sandbox, P, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    yield repo
    clean_host(P)


def test_the_app_makes_the_deploy_user_run_its_shell_through_a_door_commands_stdin(
    sandbox, deployed
) -> None:
    sh(f"rm -f {PROOF} /tmp/attack-stdin.log")
    start_attacker("attack-stdin", ATTACKER, settle=1)
    try:
        status = fab(sandbox, P, None, task="status")
        time.sleep(1)
        proof = sh(f"cat {PROOF} 2>/dev/null", check=False).stdout
        log = sh("cat /tmp/attack-stdin.log", check=False).stdout
        print("status exit", status.returncode, "\nattacker log:\n", log, "\nproof:", proof)
        assert "(ubuntu)" not in proof, f"the app ran `id` as the deploy user: {proof!r}\n{log}"
    finally:
        sh("kill $(cat /tmp/attack-stdin.pid)", check=False)  # the attacker, by its own pid


CWD_PROOF = "/tmp/attack-cwd-proof"
CWD_ATTACKER = r"""
import os, time
MARK = "@@signalcraft:"
a = 'x\n' + MARK + 'site_defaults\n{"PYTHON": "'
b = 'python3"}\n' + MARK + 'junk'
os.makedirs("/tmp/evilpy", exist_ok=True)
with open("/tmp/evilpy/python3", "w") as fh:
    fh.write('#!/bin/sh\nid >> PROOF 2>&1\nexec /usr/bin/python3 "$@"\n')
os.chmod("/tmp/evilpy", 0o755)
os.chmod("/tmp/evilpy/python3", 0o755)
deep = os.path.join("/tmp", a, "tmp", "evilpy", b)
os.makedirs(deep, exist_ok=True)
os.chdir(deep)
open("/tmp/attack-cwd-attacker.pid", "w").write(str(os.getpid()))
time.sleep(280)
""".replace("PROOF", CWD_PROOF)


def test_an_app_process_cwd_injects_site_defaults_and_the_deploy_user_runs_the_apps_python(
    sandbox, deployed
) -> None:
    """No race: a process of the apps' account sits in a folder whose name holds newlines; before
    the fix the next deploy's facts (sec cwds, `find -printf %l`) carried a forged `site_defaults`
    section setting PYTHON, which read_host applied, and the deploy user ran /tmp/evilpy/python3."""
    sh(f"rm -rf {CWD_PROOF} /tmp/evilpy /tmp/attack-cwd-attacker.pid")
    start_attacker("attack-cwd-attacker", CWD_ATTACKER)
    try:
        deployed.edit("app.py", 'VERSION = "', 'VERSION = "cwd', "a change to deploy")
        done = fab(sandbox, P, deployed)
        proof = sh(f"cat {CWD_PROOF} 2>/dev/null", check=False).stdout
        print(
            "deploy exit",
            done.returncode,
            done.stdout[-3000:],
            done.stderr[-2000:],
            "\nproof:",
            proof,
        )
        assert "(ubuntu)" not in proof, (
            f"the deploy user ran the app's /tmp/evilpy/python3: {proof!r}"
        )
    finally:
        sh("kill $(cat /tmp/attack-cwd-attacker.pid)", check=False)  # the attacker, by its own pid


CMD_PROOF = "/tmp/attack-cmdline-proof"
CMD_ATTACKER = r"""
import os, socket, time
MARK = "@@signalcraft:"
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::1", PORT))   # GUNICORN_BIND's port on ::1: a socket of its own, beside Gunicorn's 127.0.0.1 one
s.listen(1)
os.set_inheritable(s.fileno(), True)
os.makedirs("/tmp/evilpy2", exist_ok=True)
with open("/tmp/evilpy2/python3", "w") as fh:
    fh.write('#!/bin/sh\nid >> PROOF 2>&1\nexec /usr/bin/python3 "$@"\n')
os.chmod("/tmp/evilpy2", 0o755)
os.chmod("/tmp/evilpy2/python3", 0o755)
title = "python3\n" + MARK + 'site_defaults\n{"PYTHON": "/tmp/evilpy2/python3"}\n' + MARK + "junk"
code = "import os, time; open('/tmp/attack-cmd.pid', 'w').write(str(os.getpid())); time.sleep(280)"
os.execv("/usr/bin/python3", [title, "-c", code])
""".replace("PROOF", CMD_PROOF).replace("PORT", str(P.bind))


def test_an_app_process_title_on_our_port_injects_site_defaults_into_a_rollbacks_facts(
    sandbox, deployed
) -> None:
    """The root helper's `listeners` prints the command line of the apps' account's processes on our
    ports (own_uids) with their newlines: a `fab rollback` (full facts, then host_settings) takes
    the app's PYTHON. Before the fix the proof file got `uid=999(signalcraft)`: PYTHON was the app's
    program for the rollback (any key at its default, APP_USER among them, was the app's to set this
    way)."""
    sh(f"rm -rf {CMD_PROOF} /tmp/evilpy2 /tmp/attack-cmd.pid")
    start_attacker("attack-cmd", CMD_ATTACKER)
    try:
        print(sh(f"ss -ltnpH | grep :{P.bind}", check=False).stdout)
        deployed.edit(
            "app.py", 'VERSION = "', 'VERSION = "two', "a second release to roll back from"
        )
        second = fab(sandbox, P, deployed)
        print("second deploy exit", second.returncode, second.stdout[-1500:], second.stderr[-1500:])
        done = fab(sandbox, P, None, task="rollback")
        proof = sh(f"cat {CMD_PROOF} 2>/dev/null", check=False).stdout
        print(
            "rollback exit",
            done.returncode,
            done.stdout[-3000:],
            done.stderr[-2000:],
            "\nproof:",
            proof,
        )
        assert not proof, (
            f"the rollback took the app's PYTHON /tmp/evilpy2/python3 (ran as: {proof!r})"
        )
    finally:
        sh("kill $(cat /tmp/attack-cmd.pid)", check=False)  # the attacker, by its own pid
