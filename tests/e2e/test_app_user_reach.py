"""What code running inside the app can reach, tried from inside the running app (issue 24's first
test).

The test's app gets a route, `GET /api/flask/reach` (a blueprint, `reach.py`), that tries from
inside its Gunicorn worker what an attacker who runs code in the app would try, and answers JSON:
for each try `{"ok": bool, "errno": str}`, and the worker's uid and user name. Two deploys of it
live side by side on the host:
- BEFORE, with APP_USER=ubuntu (the deploy user: the apps ran so before the apps' own account
  existed, and still do on a host that wants no second account): the reaches are open, which is what
  this test asserts for it;
- AFTER, with the default apps' own account (the harness's `signalcraft`): the reaches are closed,
  and what the app needs (its SHARED_PATHS, its logs, its own .env) still works. OTHER is a third
  app with an account of its own (`reachapp`, made by the same setup as
  tests/e2e/test_app_user.py's), whose .env each of them tries to read.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import APP_HOME, APP_USER, AppRepo, Profile, clean_host, fab, pm2_jlist, sh
from tests.e2e.test_app_user import run_setup

# a second apps' account of the deploy user (not test_app_user's, which must create its own)
OTHER_USER = "reachapp"
BEFORE = Profile(
    "reachb",
    "/home/ubuntu/reach-before",
    7701,
    7711,
    7721,
    extra={"APP_USER": "ubuntu", "SHARED_PATHS": "data/"},
)
AFTER = Profile("reach", "/home/ubuntu/reach", 7703, 7713, 7723, extra={"SHARED_PATHS": "data/"})
OTHER = Profile(
    "reachother", "/home/ubuntu/reach-other", 7705, 7715, 7725, extra={"APP_USER": OTHER_USER}
)

REACH_PY = '''\
"""GET /api/flask/reach: what this app's own process can reach on its host (tests/e2e/test_app_user_reach.py).

Each try answers {"ok": bool, "errno": str}. Nothing is changed by a try that works: files it creates are removed,
files it opens for appending get no byte. `deploy` names the deploy user, `other` another app's .env, `door_as`
another app's own account.
"""

import errno
import os
import pwd
import subprocess
import sys
from pathlib import Path

import flask
from flask import Blueprint, jsonify, request

reach = Blueprint("reach", __name__)
RELEASE = Path(__file__).resolve().parent  # releases/<release>/ (current/ points here)
ROOT = RELEASE.parent.parent  # DEPLOY_ROOT


def opened(path, mode):
    def go():
        with open(path, mode):
            pass
    return go


def created(folder):
    def go():
        probe = os.path.join(str(folder), ".reach-probe-%d" % os.getpid())
        with open(probe, "x") as fh:
            fh.write("reach\\n")
        os.unlink(probe)
    return go


def listed(folder):
    return lambda: os.listdir(str(folder))


def ran(*argv):
    def go():
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20)
        if done.returncode:
            raise OSError(errno.EPERM, "exit %d" % done.returncode)
    return go


def logged():
    with open(os.environ["pm_out_log_path"], "a") as fh:  # the file PM2 names for this app's output
        fh.write("reach: a line from the app\\n")
        # and one that would drive the terminal of whoever reads the log (title, clipboard, clear the screen)
        fh.write("reach: \\x1b]0;titled by the app\\x07\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b[2J cleared\\n")


def attempt(go):
    try:
        go()
    except OSError as err:
        return {"ok": False, "errno": errno.errorcode.get(err.errno, str(err.errno))}
    except Exception as err:  # e.g. KeyError: no such variable
        return {"ok": False, "errno": type(err).__name__}
    return {"ok": True, "errno": ""}


def previous_release():
    others = sorted(p for p in (ROOT / "releases").iterdir() if p.name != RELEASE.name and not p.name.endswith(".tmp"))
    return others[-1] if others else ROOT / "releases" / "none"


def first(folder):
    found = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return found[0] if found else folder / "none"


@reach.get("/api/flask/reach")
def tries():
    home = Path(pwd.getpwnam(request.args["deploy"]).pw_dir)
    site_packages = Path(flask.__file__).resolve().parent.parent
    found = {
        # the live release, a release a rollback returns to, its venv, its node_modules, the deploy root
        "append_live_app_py": opened(ROOT / "current" / "app.py", "a"),
        "create_in_release": created(RELEASE),
        "create_in_previous_release": created(previous_release()),
        "create_in_venv_bin": created(Path(sys.prefix) / "bin"),
        "create_in_site_packages": created(site_packages),
        "create_in_node_modules": created(first(ROOT / "node_modules")),
        "create_in_deploy_root": created(ROOT),
        # the deploy user's home and its keys
        "create_in_deploy_home": created(home),
        "append_authorized_keys": opened(home / ".ssh" / "authorized_keys", "a"),
        "list_deploy_home": listed(home),
        # sudo of any kind
        "sudo_true": ran("sudo", "-n", "true"),
        "sudo_root_helper": ran("sudo", "-n", "/usr/local/sbin/signalcraft-root", "version"),
        "sudo_as_deploy_user": ran("sudo", "-n", "-u", request.args["deploy"], "true"),
        "sudo_app_helper": ran(
            "sudo", "-n", "-u", request.args["door_as"], "/usr/local/sbin/signalcraft-app", "/bin/true"
        ),
        # secrets and records that are not this app's
        "read_audit_log": opened(ROOT / ".deploy" / "audit.log", "r"),
        "read_other_env": opened(request.args["other"], "r"),
        "read_deploy_pm2_dump": opened(home / ".pm2" / "dump.pm2", "r"),
        # what the app needs
        "write_shared_path": created(RELEASE / "data"),
        "write_logs": created(RELEASE / "logs"),
        "write_pm2_log": logged,
        "read_own_env": opened(RELEASE / ".env", "r"),
    }
    answer = {name: attempt(go) for name, go in found.items()}
    answer["uid"] = os.getuid()
    answer["user"] = pwd.getpwuid(os.getuid()).pw_name
    return jsonify(answer)
'''

# The reaches that must be closed to the apps' own account, by the issue's four (R1-R4 of
# docs/design/app-user.md).
MUST_FAIL = {
    "R1 its release, a rollback's, venv, node_modules": (
        "append_live_app_py",
        "create_in_release",
        "create_in_previous_release",
        "create_in_venv_bin",
        "create_in_site_packages",
        "create_in_node_modules",
        "create_in_deploy_root",
    ),
    "R2 the deploy user's home and keys": ("create_in_deploy_home", "append_authorized_keys"),
    "R3 sudo": ("sudo_true", "sudo_root_helper", "sudo_as_deploy_user", "sudo_app_helper"),
    "R4 audit log, another app's .env, the deploy user's PM2 dump": (
        "read_audit_log",
        "read_other_env",
        "read_deploy_pm2_dump",
    ),
}
MUST_SUCCEED = ("write_shared_path", "write_logs", "write_pm2_log", "read_own_env")


def reach_app(repo: AppRepo) -> None:
    """The example app with the reach blueprint registered, and a data/ folder SHARED_PATHS
    keeps."""
    (repo.path / "reach.py").write_text(REACH_PY)
    (repo.path / "data").mkdir()
    (repo.path / "data" / "README").write_text("kept across releases (SHARED_PATHS)\n")
    repo.git("add", "-A")
    repo.edit(
        "app.py",
        "app = Flask(__name__, static_folder=None)\n",
        "app = Flask(__name__, static_folder=None)\n    from reach import reach\n   "
        " app.register_blueprint(reach)\n",
        "a route that reports what the app can reach",
    )


def deploy(sandbox, p: Profile, repo: AppRepo, releases: int) -> None:
    """One release or two (the second one's rollback target is the first), each through the
    documented front door."""
    for n in range(1, releases + 1):
        if n == 2:
            repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "a second release")
        done = fab(sandbox, p, repo)
        assert done.returncode == 0, done.stdout + done.stderr


def tried(p: Profile) -> dict:
    query = f"deploy=ubuntu&other={OTHER.root}/current/.env&door_as={OTHER_USER}"
    with urllib.request.urlopen(p.url(f"/api/flask/reach?{query}"), timeout=60) as resp:
        return json.loads(resp.read())


def users_of(p: Profile, pm2_user: str) -> dict[str, set[str]]:
    """The user of each process of the profile's two apps (PM2's pids and their children: Gunicorn's
    workers)."""
    found: dict[str, set[str]] = {}
    for item in pm2_jlist(pm2_user):
        if item["name"] in (f"{p.app}-python", f"{p.app}-nodejs") and item["pid"]:
            pid = item["pid"]
            users = sh(f"ps -o user:32= -p {pid} --ppid {pid}").stdout.split()
            found.setdefault(item["name"], set()).update(users)
    return found


@pytest.fixture(scope="module")
def deployed(sandbox, tmp_path_factory) -> Iterator[dict[str, dict]]:
    run_setup(
        sandbox, "--set", f"APP_USER={OTHER_USER}"
    )  # the second apps' account, OTHER's (the last --set wins)
    # The deploy user's PM2 home as PM2 makes it under a 022 umask, on a host where that user ran
    # PM2 before (its dump.pm2 is 0644 and holds every value of its apps' environments).
    sh("sudo -u ubuntu -H sh -c 'umask 022 && pm2 ping >/dev/null' && chmod 0755 ~ubuntu/.pm2")
    base = tmp_path_factory.mktemp("reach")
    try:
        for p in (OTHER, BEFORE, AFTER):
            env_file = base / f"{p.app}.env"
            env_file.write_text(f"SECRET_KEY=reach-{p.app}\n")
            repo = AppRepo(base / p.app)
            reach_app(repo)
            # OTHER is only the owner of the .env the others try to read: one release is enough.
            deploy(
                sandbox,
                Profile(
                    p.app,
                    p.root,
                    p.bind,
                    p.node,
                    p.listen,
                    extra={**p.extra, "APP_ENV_FILE": str(env_file)},
                ),
                repo,
                1 if p is OTHER else 2,
            )
        found = {
            "before": tried(BEFORE),
            "after": tried(AFTER),
            "processes": {"before": users_of(BEFORE, "ubuntu"), "after": users_of(AFTER, APP_USER)},
        }
        report(found)
        yield found
    finally:
        clean_host(BEFORE, app_user="ubuntu")
        clean_host(AFTER)
        clean_host(OTHER, app_user=OTHER_USER)


def report(found: dict) -> None:
    """What was measured, printed (pytest -rP shows it): each try before and after, and the modes
    that decide them."""

    def cell(answer: dict) -> str:
        return "ok" if answer["ok"] else answer["errno"]

    print(f"{'try':28} {'before (APP_USER=ubuntu)':26} after (APP_USER={APP_USER})")
    for name, answer in found["before"].items():
        if isinstance(answer, dict):
            print(f"{name:28} {cell(answer):26} {cell(found['after'][name])}")
    print("processes", found["processes"])
    print(
        sh(
            "stat -c '%U:%G %a %n' ~ubuntu ~ubuntu/.ssh ~ubuntu/.pm2 ~ubuntu/.pm2/dump.pm2"
            f" {AFTER.root} {AFTER.root}/current/.env {AFTER.root}/shared {AFTER.root}/shared/data"
            f" {OTHER.root}/current/.env {AFTER.root}/.deploy {BEFORE.root}/current/.env",
            check=False,
        ).stdout
    )


def closed(answer: dict, names: tuple[str, ...]) -> dict[str, dict]:
    return {name: answer[name] for name in names if answer[name]["ok"]}


def test_the_apps_run_as_their_own_account_and_as_the_deploy_user_when_app_user_says_so(
    deployed,
) -> None:
    assert (deployed["before"]["user"], deployed["after"]["user"]) == ("ubuntu", APP_USER)
    assert deployed["processes"]["before"] == {
        "reachb-python": {"ubuntu"},
        "reachb-nodejs": {"ubuntu"},
    }
    assert deployed["processes"]["after"] == {
        "reach-python": {APP_USER},
        "reach-nodejs": {APP_USER},
    }


def test_before_code_in_the_app_reaches_its_releases_the_deploy_users_keys_the_root_helper_and_the_secrets(
    deployed,
):
    before = deployed["before"]
    # Today's behaviour with APP_USER = the deploy user: each of the four reaches is open.
    for name in (
        "append_live_app_py",
        "create_in_release",
        "create_in_previous_release",
        "create_in_venv_bin",
        "create_in_site_packages",
        "create_in_node_modules",
        "create_in_deploy_root",  # R1
        "create_in_deploy_home",
        "append_authorized_keys",  # R2
        "sudo_root_helper",  # R3: the root helper, with every verb the deploy user has,
        # and the app helper as each apps' account setup made for the deploy user
        "sudo_app_helper",
        "read_audit_log",
        "read_other_env",
        "read_deploy_pm2_dump",
    ):  # R4
        assert before[name] == {"ok": True, "errno": ""}, (name, before)
    # The deploy user holds only setup's drop-in: no other sudo (this is the same for both).
    assert not before["sudo_true"]["ok"] and not before["sudo_as_deploy_user"]["ok"], before
    assert closed(before, MUST_SUCCEED) == {name: before[name] for name in MUST_SUCCEED}, before


@pytest.mark.parametrize("reach", sorted(MUST_FAIL))
def test_after_code_in_the_app_cannot_reach(deployed, reach: str) -> None:
    after = deployed["after"]
    assert closed(after, MUST_FAIL[reach]) == {}, after
    for name in MUST_FAIL[reach]:
        assert after[name]["errno"] in ("EACCES", "EPERM"), (name, after[name])


def test_after_the_app_still_writes_its_shared_paths_and_logs_and_reads_its_own_env(
    deployed,
) -> None:
    after = deployed["after"]
    assert {name: after[name] for name in MUST_SUCCEED} == {
        name: {"ok": True, "errno": ""} for name in MUST_SUCCEED
    }
    out_log = sh(f"cat {APP_HOME}/.pm2/logs/reach-python-out*.log").stdout
    assert "reach: a line from the app" in out_log


def test_what_the_app_writes_in_its_log_is_shown_by_logs_without_driving_the_operators_terminal(
    sandbox, deployed
):
    done = fab(sandbox, AFTER, None, "--lines", "100", task="logs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reach: a line from the app" in done.stdout, done.stdout
    assert (
        "reach: ^[]0;titled by the app^G^[]52;c;ZWNobyBwd25lZA==^G^[[2J cleared" in done.stdout
    ), done.stdout
    assert not set(done.stdout) & {"\x1b", "\x07", "\x9b"}, repr(done.stdout)


def test_after_the_deploy_users_home_lists_only_as_its_mode_lets_every_account(deployed) -> None:
    # Listing ~ubuntu is for its mode to say (Ubuntu makes homes 0750, Debian 0755): the app is any
    # other account.
    world = int(sh("stat -c %a ~ubuntu").stdout.strip(), 8) & 0o005 == 0o005
    assert deployed["after"]["list_deploy_home"]["ok"] is world, deployed["after"]
    assert deployed["before"]["list_deploy_home"]["ok"] is True
