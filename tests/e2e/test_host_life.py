"""The host's life after the deploy: `setup` twice, a reboot (and one after a rollback), log
rotation under load, a nearly full disk, trial excerpts, and the setting named when it is at fault.

The reboot is done for a deploy user of its own (`rebooted`) whose apps run as an account of their
own (`bootapps`, its APP_USER): killing every process of `signalcraft` would end the PM2 daemon
other tests' apps share. The sandbox has no running systemd, so the test starts the apps' account's
unit `setup` enabled (found through its multi-user.target.wants link) the way systemd would: as
`User=`, with only `Environment=` and the login variables, from `/`, then waits for the forking
`ExecStart` to leave a live daemon in `PIDFile`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pwd
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_HOME,
    LIVE,
    AppRepo,
    Profile,
    Sandbox,
    add_deploy_user,
    clean_host,
    e2e_load,
    fab,
    get,
    kill_user,
    pm2_apps,
    sh,
)

U = "rebooted"
HOME = f"/home/{U}"
APPS = "bootapps"  # the boot test's apps' own account
APPS_HOME = f"/var/lib/signalcraft-apps/{APPS}"
BOOT = Profile("boot", f"{HOME}/app", 7301, 7311, 7321, extra={"APP_USER": APPS})
DISK = Profile("fulldisk", "/home/ubuntu/full-disk", 7303, 7313, 7323, extra={"MIN_FREE_MB": "100"})
TRIAL = LIVE
UNIT = f"/etc/systemd/system/pm2-{APPS}.service"  # the apps' PM2 at boot
WANTS = f"/etc/systemd/system/multi-user.target.wants/pm2-{APPS}.service"
ROTATION = f"/etc/logrotate.d/pm2-{APPS}"
OWN_UNIT = (  # the deploy user's own PM2 (setup still writes its unit)
    f"/etc/systemd/system/pm2-{U}.service"
)
OWN_WANTS = f"/etc/systemd/system/multi-user.target.wants/pm2-{U}.service"
OWN_ROTATION = f"/etc/logrotate.d/pm2-{U}"
SUDOERS = (  # the drop-in: the root helper as root, the app helper as bootapps
    f"/etc/sudoers.d/signalcraft-{U}"
)
RECORD = f"/var/lib/signalcraft-deploy/app-users/{U}.json"
SETUP_FILES = (UNIT, WANTS, ROTATION, OWN_UNIT, OWN_WANTS, OWN_ROTATION, SUDOERS, RECORD)


def clean_boot() -> None:
    """Nothing of the boot user's deploys left: its and its apps' processes, PM2 homes, deploy root,
    site and what setup wrote."""
    kill_user(U)
    kill_user(APPS)
    sh(
        f"rm -rf {HOME}/.pm2 {APPS_HOME}/.pm2 {BOOT.root} /etc/nginx/sites-enabled/{BOOT.app}"
        f" /etc/nginx/sites-available/{BOOT.app}* " + " ".join(SETUP_FILES),
        check=False,
    )
    sh("nginx -t && nginx -s reload", check=False)


@pytest.fixture(scope="module")
def boot_sb(sandbox):
    """A deploy user of its own (passwordless sudo, key login like ubuntu's), with nothing set up
    yet."""
    sb = add_deploy_user(sandbox, U, f"/etc/sudoers.d/90-{U}")
    clean_boot()
    yield sb
    clean_boot()
    sh(f"rm -f /etc/sudoers.d/90-{U}; userdel -r {U}; userdel -r {APPS}", check=False)


def fingerprint() -> dict[str, str]:
    """The files setup can write (content, mode, mtime; the link's target), and the names under /etc
    and the home."""
    out = {}
    for path in SETUP_FILES:
        p = Path(path)
        if p.is_symlink():
            out[path] = "-> " + os.readlink(p)
        elif p.exists():
            out[path] = (
                f"{hashlib.sha256(p.read_bytes()).hexdigest()} {oct(p.stat().st_mode)}"
                f" {p.stat().st_mtime_ns}"
            )
        else:
            out[path] = "missing"
    out["/etc names"] = hashlib.sha256(
        sh("find /etc -xdev -printf '%p %y %m\\n' | sort").stdout.encode()
    ).hexdigest()
    out["home"] = sh(f"find {HOME} {APPS_HOME} -printf '%p %y %m %s %T@\\n' | sort").stdout
    return out


def run_setup(sb: Sandbox, *args: str):
    result = fab(sb, BOOT, None, *args, task="setup")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def item(out: str, name: str) -> str:
    found = [
        line.strip()
        for line in out.splitlines()
        if re.match(rf"^\s+\S.*?\s{re.escape(name)}\s", line)
    ]
    assert found, (name, out)
    return found[0]


def test_setup_twice_changes_nothing_the_second_time(boot_sb):
    before = fingerprint()
    dry = run_setup(boot_sb, "--dry-run")
    for name in ("nginx", "python3-venv", "logrotate", "node", "pm2"):
        assert item(dry, name).startswith("ok "), dry  # the sandbox has them all
    assert item(dry, "pm2").startswith("ok") and "7.0.4" in item(dry, "pm2")
    assert item(dry, "boot unit").startswith("would write") and item(
        dry, "log rotation"
    ).startswith("would write"), dry
    assert item(dry, "app boot unit").startswith("would write") and item(
        dry, "app rotation"
    ).startswith("would write"), dry
    assert "nothing was changed" in dry and "apt packages" not in dry
    assert fingerprint() == before

    first = run_setup(boot_sb)
    assert (
        "done           boot unit:" in first
        and "done           log rotation: wrote " + OWN_ROTATION in first
    ), first
    assert (
        "done           app boot unit: wrote " + UNIT in first
        and "app rotation: wrote " + ROTATION in first
    ), first
    assert (
        "done           sudoers: wrote " + SUDOERS in first
        and oct(Path(SUDOERS).stat().st_mode)[-3:] == "440"
    ), first
    unit = Path(UNIT).read_text()
    assert (
        f"User={APPS}\n" in unit
        and "ExecStart=/usr/lib/node_modules/pm2/bin/pm2 resurrect\n" in unit
    )
    assert f"PIDFile={APPS_HOME}/.pm2/pm2.pid\n" in unit and "Type=forking\n" in unit
    assert os.readlink(WANTS) == UNIT and os.readlink(OWN_WANTS) == OWN_UNIT
    assert (
        f"su {APPS} {APPS}\n" in Path(ROTATION).read_text()
    )  # the apps' logs are rotated as their account
    assert (
        "copytruncate" in Path(ROTATION).read_text()
        and oct(Path(ROTATION).stat().st_mode)[-3:] == "644"
    )
    after_first = fingerprint()

    for args in (("--dry-run",), ()):
        again = run_setup(boot_sb, *args)
        assert "Nothing to change: the host is set up." in again, again
        assert {line.split()[0] for line in again.splitlines()[1:-1]} == {"ok"}, again
    assert fingerprint() == after_first
    print(first)


# ----------------------------------------------------------------------------- reboot


def unit_service(path: str) -> dict[str, list[str]]:
    """The [Service] lines of a unit: key -> values (Environment= may repeat)."""
    section, out = "", {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def boot_like_systemd(listen_urls: list[str], deadline: float = 30.0) -> float:
    """Start the enabled unit as systemd would; return the seconds until every URL answers 200
    through Nginx."""
    unit = unit_service(str(Path(WANTS).resolve()))
    assert unit["Type"] == ["forking"] and unit["User"] == [APPS]
    pw = pwd.getpwnam(unit["User"][0])
    env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell}
    env.update(dict(value.split("=", 1) for value in unit.get("Environment", [])))
    start = time.monotonic()
    with open(f"/tmp/{U}-execstart.log", "w") as log:
        done = subprocess.run(
            shlex.split(unit["ExecStart"][0]),
            user=pw.pw_uid,
            group=pw.pw_gid,
            extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=deadline,
        )
    assert done.returncode == 0, Path(f"/tmp/{U}-execstart.log").read_text()
    pid = int(
        Path(unit["PIDFile"][0]).read_text().strip()
    )  # Type=forking: the daemon left behind is the service
    assert os.stat(f"/proc/{pid}").st_uid == pw.pw_uid
    while time.monotonic() - start < deadline:
        if all(get(url, timeout=2)[0] == 200 for url in listen_urls):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(
        f"not every URL answered within {deadline} s: {[(u, get(u)[0]) for u in listen_urls]}"
    )


def reboot_and_check(repo: AppRepo) -> float:
    live = Path(BOOT.root, "current").resolve().name
    kill_user(APPS)  # a power cut: the apps' account's PM2 and both apps
    kill_user(U)
    assert (
        get(BOOT.url("/api/flask/health"))[0] == 502 and get(BOOT.url("/"))[0] == 502
    )  # both apps are down
    seconds = boot_like_systemd([BOOT.url("/api/flask/health"), BOOT.url("/")])
    for path in ("/api/flask/health", "/"):
        status, headers, body = get(BOOT.url(path))
        assert status == 200 and headers.get("X-Release") == live, (path, headers, body)
    apps = pm2_apps(BOOT.app, user=APPS)
    assert {n: {p["status"] for p in procs} for n, procs in apps.items()} == {
        "boot-python": {"online"},
        "boot-nodejs": {"online"},
    }
    cwds = {
        sh(f"readlink /proc/{p['pid']}/cwd").stdout.strip()
        for procs in apps.values()
        for p in procs
    }
    assert cwds == {str(Path(BOOT.root, "releases", live))}, cwds
    pids = " ".join(str(p["pid"]) for procs in apps.values() for p in procs)
    assert set(sh(f"ps -o user= -p {pids}").stdout.split()) == {APPS}  # back as the apps' account
    return seconds


def saved_list() -> dict[str, set[tuple[str, str]]]:
    """PM2's saved list (dump.pm2) of the boot user's apps' account: app -> {(cwd, script)}."""
    out: dict[str, set[tuple[str, str]]] = {}
    for entry in json.loads(Path(f"{APPS_HOME}/.pm2/dump.pm2").read_text()):
        out.setdefault(entry["name"], set()).add((entry["pm_cwd"], entry["pm_exec_path"]))
    return out


@pytest.fixture(scope="module")
def boot_repo(tmp_path_factory) -> AppRepo:
    return AppRepo(tmp_path_factory.mktemp("rebooted") / "app")


def test_after_a_deploy_and_after_a_rollback_a_reboot_brings_both_apps_back(
    boot_sb, boot_repo, capsys
):
    first = fab(boot_sb, BOOT, boot_repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "does not start at boot" not in first.stderr and "not rotated" not in first.stderr, (
        first.stderr
    )
    current = f"{BOOT.root}/current"
    saved = saved_list()
    assert saved["boot-nodejs"] == {(current, f"{current}/server.js")}, (
        saved
    )  # the saved list runs `current`
    assert {cwd for cwd, _ in saved["boot-python"]} == {current}
    assert (
        not Path(f"{HOME}/.pm2/dump.pm2").exists()
        or "boot-" not in Path(f"{HOME}/.pm2/dump.pm2").read_text()
    )
    status = fab(boot_sb, BOOT, None, task="status")
    uid = pwd.getpwnam(APPS).pw_uid
    assert (
        f"apps run as {APPS} (uid {uid}), PM2 home {APPS_HOME}/.pm2; deployed by {U}\n"
        in status.stdout
    ), status.stdout
    assert "WARNING" not in status.stdout, status.stdout
    assert f"boot      {UNIT} enabled; PM2's saved list matches what runs" in status.stdout, (
        status.stdout
    )
    assert (
        "MB free on the filesystem" in status.stdout and "rotated by " + ROTATION in status.stdout
    ), status.stdout
    after_deploy = reboot_and_check(boot_repo)

    boot_repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    second = fab(boot_sb, BOOT, boot_repo)
    assert second.returncode == 0, second.stdout + second.stderr
    back = fab(boot_sb, BOOT, None, task="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert get(BOOT.url("/api/ai/x"))[2].get("version") == "1"
    after_rollback = reboot_and_check(boot_repo)
    assert get(BOOT.url("/api/ai/x"))[2].get("version") == "1"
    with capsys.disabled():
        print(
            f"\n[host life] serving again after a reboot: {after_deploy:.2f} s after a deploy, "
            f"{after_rollback:.2f} s after a rollback"
        )


def test_rotation_under_load_keeps_every_line_and_the_apps(boot_sb, capsys):
    log = Path(f"{APPS_HOME}/.pm2/logs/{BOOT.app}-python-out.log")
    assert log.exists() and pm2_apps(BOOT.app, user=APPS), (
        "run after the reboot test: the apps must be up"
    )
    with open(log, "ab") as fh:  # 50 MB, as weeks of access log would
        line = b"filler " + b"x" * 92 + b"\n"
        fh.write(line * (50 * 2**20 // len(line)))
    before = log.stat().st_size
    pids = {n: [p["pid"] for p in procs] for n, procs in pm2_apps(BOOT.app, user=APPS).items()}
    marker = f"/api/ai/rotation-{uuid.uuid4().hex[:8]}"
    with e2e_load(
        [BOOT.url(marker), BOOT.url("/")], threads=2, max_requests=6000, max_seconds=60
    ) as load:
        time.sleep(1.0)
        rotated = sh(
            f"logrotate -f {ROTATION}", check=False, timeout=120
        )  # as cron (root) would, forced
        time.sleep(1.0)
    result = load.result()
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    after = log.stat().st_size
    gz = log.with_name(log.name + ".1.gz")
    assert after < 2**20 and gz.exists(), (after, sorted(p.name for p in log.parent.iterdir()))
    assert result.failed == 0 and result.total > 100, result.summary()
    assert {
        n: [p["pid"] for p in procs] for n, procs in pm2_apps(BOOT.app, user=APPS).items()
    } == pids  # nothing restarted
    assert {pwd.getpwuid(f.stat().st_uid).pw_name for f in (log, gz)} == {
        APPS
    }  # rotated as the apps' account
    tail = f"/api/ai/after-rotation-{uuid.uuid4().hex[:8]}"
    assert get(BOOT.url(tail))[0] == 200
    for _ in range(50):
        if tail in log.read_text():
            break
        time.sleep(0.1)
    assert tail in log.read_text()  # the app still writes to the live file
    logged = gzip.decompress(gz.read_bytes()).decode("utf-8", "replace").count(
        marker
    ) + log.read_text().count(marker)
    asked = result.per_url[BOOT.url(marker)].ok
    assert logged == asked, (
        logged,
        asked,
    )  # no access-log line lost across the copy and truncation
    with capsys.disabled():
        print(
            f"\n[host life] rotation: {before / 2**20:.1f} MB live log before, {after / 1024:.1f}"
            f" kB after, {gz.stat().st_size / 1024:.1f} kB compressed ({gz.name});"
            f" {result.summary()}; {logged}/{asked} lines kept"
        )


# ----------------------------------------------------------------------------- disk nearly full


def clean(p: Profile) -> None:
    """clean_host, and the PM2 log files its apps leave in ubuntu's PM2 home."""
    clean_host(p)
    sh(f"rm -f {APP_HOME}/.pm2/logs/{p.app}-*", check=False)


def tree(root: str) -> str:
    """Every file under the root (size, mtime) and every directory; the deploy lock's own files left
    out."""
    return sh(
        f"cd {root} && find . -path './.deploy/lock*' -prune -o -type d -printf '%p/\\n' "
        "-o -printf '%p %s %T@\\n' | sort"
    ).stdout


def test_a_nearly_full_disk_stops_the_deploy_before_anything_changes(sandbox, app_repo):
    clean_host(DISK)
    sh(
        f"install -d -o ubuntu -g ubuntu {DISK.root} && mount -t tmpfs -o"
        f" size=300m,uid=ubuntu,gid=ubuntu,mode=0755 fulldisk {DISK.root}"
    )
    try:
        first = fab(sandbox, DISK, app_repo)
        assert first.returncode == 0, first.stdout + first.stderr
        free = int(sh(f"df -Pk {DISK.root} | tail -1").stdout.split()[3]) // 1024
        sh(
            f"fallocate -l {free - 60}M {DISK.root}/my-big-file && chown ubuntu"
            f" {DISK.root}/my-big-file"
        )
        app_repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
        before, pids = tree(DISK.root), pm2_apps(DISK.app)
        site = Path(f"/etc/nginx/sites-available/{DISK.app}").read_text()
        refused = fab(sandbox, DISK, app_repo)
        out = refused.stdout + refused.stderr
        assert refused.returncode == 1, out
        assert "Traceback" not in out
        assert re.search(
            r"Only \d+ MB free on the filesystem of /home/ubuntu/full-disk, below MIN_FREE_MB=100"
            r" \(flag --set\); "
            r"nothing was changed",
            out,
        ), out
        assert re.search(r"What takes space: other files \d+ MB, ", out) and re.search(
            r"venvs \d+ MB \(1\)", out
        ), out
        assert "PM2 logs" in out and "another filesystem" in out, out
        assert "lower MIN_FREE_MB" in out
        assert tree(DISK.root) == before and pm2_apps(DISK.app) == pids
        assert Path(f"/etc/nginx/sites-available/{DISK.app}").read_text() == site
        assert get(DISK.url("/api/ai/x"))[2].get("version") == "1"
        print(out)
    finally:
        clean(DISK)
        sh(f"umount {DISK.root} || umount -l {DISK.root}; rmdir {DISK.root}", check=False)


# ----------------------------------------------------------------------------- trial excerpts, the
# setting at fault


@pytest.fixture(scope="module")
def trial_live(live_app):
    """The worker's live app, running this module's repository."""
    return live_app


def trial_logs() -> list[str]:
    return sorted(
        p.name
        for p in Path(f"{APP_HOME}/.pm2/logs").iterdir()
        if p.name.startswith(f"{TRIAL.app}-") and ("-trial" in p.name or "-handover" in p.name)
    )


def test_two_failing_trials_in_a_row_each_show_only_their_own_error(sandbox, trial_live):
    trial_live.edit(
        "app.py", 'VERSION = "1"', 'VERSION = "1"\nraise RuntimeError("first-failure")', "broken 1"
    )
    first = fab(sandbox, TRIAL, trial_live)
    assert first.returncode != 0 and "first-failure" in first.stdout + first.stderr, (
        first.stdout + first.stderr
    )
    # The second failure writes only a line or two: a tail of the trial app's log would reach back
    # into the first run's.
    trial_live.edit(
        "app.py",
        'raise RuntimeError("first-failure")',
        'import sys\nprint("second-failure", file=sys.stderr, flush=True)\nsys.exit(3)',
        "broken 2",
    )
    second = fab(sandbox, TRIAL, trial_live)
    out = second.stdout + second.stderr
    assert second.returncode != 0 and "second-failure" in out, out
    assert "first-failure" not in out, out
    assert "Fix the app and deploy again." in out
    assert trial_logs() == []  # the trial apps' log files went with them
    assert get(TRIAL.url("/api/ai/x"))[0] == 200
    print(out)


def test_a_worker_class_gunicorn_cannot_load_names_the_setting(sandbox, trial_live):
    trial_live.edit(
        "app.py",
        'import sys\nprint("second-failure", file=sys.stderr, flush=True)\nsys.exit(3)',
        "",
        "fixed",
    )
    bad = Profile(
        TRIAL.app,
        TRIAL.root,
        TRIAL.bind,
        TRIAL.node,
        TRIAL.listen,
        extra={"GUNICORN_WORKER_CLASS": "nosuch.Worker"},
    )
    result = fab(sandbox, bad, trial_live)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "The cause is the setting GUNICORN_WORKER_CLASS (flag --set): 'nosuch.Worker'" in out, (
        out
    )
    assert "Fix the app" not in out
    assert trial_logs() == []
    assert get(TRIAL.url("/api/ai/x"))[0] == 200
    print(out)


def test_a_health_route_the_app_does_not_have_names_health_py_and_its_value(sandbox, trial_live):
    trial_live.edit(
        "app.py",
        '        full_path = "/" + path\n',
        '        full_path = "/" + path\n        if "/gone" in full_path:\n'
        '            return jsonify({"error": "not here"}), 404\n',
        "no /gone route",
    )
    bad = Profile(
        TRIAL.app,
        TRIAL.root,
        TRIAL.bind,
        TRIAL.node,
        TRIAL.listen,
        extra={"HEALTH_PY": "/api/ai/gone"},
    )
    result = fab(sandbox, bad, trial_live)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert (
        "The cause is likely the setting HEALTH_PY (flag --set): the new release answers its"
        " route '/api/ai/gone' with 404. Set HEALTH_PY to a route the app answers with 200"
    ) in out, out
    assert "Fix the app" not in out
    assert get(TRIAL.url("/api/ai/x"))[0] == 200


# ----------------------------------------------------------------------------- remove: one app off,
# the other serving


def boot_state() -> dict[str, object]:
    """What `remove` changes for the boot user's app: its site files, its apps' PM2 list and saved
    list, DEPLOY_ROOT."""
    return {
        "nginx": sh(f"find /etc/nginx -name '{BOOT.app}*' -printf '%p %y %s\\n' | sort").stdout,
        "pm2": sorted(pm2_apps(BOOT.app, user=APPS)),
        "saved": sorted(saved_list()) if Path(f"{APPS_HOME}/.pm2/dump.pm2").exists() else None,
        "root": (
            sh(
                f"find {BOOT.root} -maxdepth 2 -printf '%p %y\\n' 2>/dev/null | sort", check=False
            ).stdout
        ),
    }


def test_remove_takes_one_app_off_while_another_keeps_serving(
    boot_sb, boot_repo, trial_live, capsys
):
    """The boot user's app removed while the live app (another deploy user's, another apps' account)
    is under load: no request of the live app fails; the removed app's site, PM2 entries and saved
    entries are gone and nothing of it is left in Nginx's folders; --dry-run changes nothing;
    DEPLOY_ROOT stays until --purge --confirm boot; then the admin's setup --remove-app takes its
    account off."""
    if not Path(
        f"{BOOT.root}/current"
    ).exists():  # run alone (-k): the reboot test's deploy is not there
        if not Path(UNIT).exists():
            run_setup(boot_sb)
        deployed = fab(boot_sb, BOOT, boot_repo)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert get(BOOT.url("/api/ai/x"))[0] == 200 and get(LIVE.url("/api/ai/x"))[0] == 200
    before = boot_state()
    assert before["pm2"] == ["boot-nodejs", "boot-python"] and "boot-python" in before["saved"], (
        before
    )

    dry = fab(boot_sb, BOOT, None, "--dry-run", task="remove")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"  site      remove /etc/nginx/sites-available/{BOOT.app} and its link" in dry.stdout, (
        dry.stdout
    )
    assert (
        f"  pm2       delete boot-nodejs, boot-python from {APPS}'s PM2; pm2 save" in dry.stdout
    ), dry.stdout
    assert dry.stdout.rstrip().endswith("Dry run: nothing was changed.") and boot_state() == before

    with e2e_load(
        [LIVE.url("/api/ai/x"), LIVE.url("/")], threads=2, max_requests=3000, max_seconds=30
    ) as load:
        time.sleep(0.5)
        removed = fab(boot_sb, BOOT, None, task="remove")
        time.sleep(0.5)
    result = load.result()
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert result.failed == 0 and result.total > 50, result.summary()
    after = boot_state()
    assert after["nginx"] == "" and after["pm2"] == [] and after["saved"] == [], after
    assert (
        sh("find /etc/nginx -name '.signalcraft-*'").stdout == ""
    )  # no temporary file of root's left either
    assert get(BOOT.url("/api/ai/x"))[0] == 0  # nothing listens on its port any more
    assert Path(BOOT.root, "releases").is_dir() and not os.path.lexists(
        f"{BOOT.root}/current"
    )  # kept without --purge
    assert (
        "an admin removes them with: fab -H <admin>@" in removed.stdout
        and f"setup --remove-app {APPS} --user {U}" in removed.stdout
    ), removed.stdout

    Path(
        BOOT.root, ".ssh"
    ).mkdir()  # DEPLOY_ROOT holding what deploys never make there (a home's): refused, untouched
    refused = fab(boot_sb, BOOT, None, "--purge", "--confirm", BOOT.app, task="remove")
    said = refused.stdout + refused.stderr
    assert (
        refused.returncode != 0
        and f"{BOOT.root} holds .ssh, which this tool does not make" in said
        and "Nothing was changed." in said
    ), said
    assert Path(BOOT.root, "releases").is_dir() and Path(BOOT.root, ".deploy").is_dir()
    Path(BOOT.root, ".ssh").rmdir()
    purged = fab(boot_sb, BOOT, None, "--purge", "--confirm", BOOT.app, task="remove")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not os.path.lexists(BOOT.root) and f"{BOOT.root} included" in purged.stdout, (
        purged.stdout
    )
    again = fab(
        boot_sb, BOOT, None, task="remove"
    )  # converged: nothing to do, and no deploy root made again
    assert again.returncode == 0 and f"Nothing of {BOOT.app} is left" in again.stdout, (
        again.stdout + again.stderr
    )
    assert not os.path.lexists(BOOT.root)
    admin = fab(boot_sb, BOOT, None, "--remove-app", APPS, "--user", U, task="setup")
    assert admin.returncode == 0, admin.stdout + admin.stderr
    assert not any(os.path.lexists(p) for p in (UNIT, WANTS, ROTATION, APPS_HOME)), admin.stdout
    assert sh(f"getent passwd {APPS}", check=False).returncode != 0
    assert APPS not in Path(SUDOERS).read_text() and APPS not in Path(RECORD).read_text()
    assert get(LIVE.url("/api/ai/x"))[0] == 200
    said = (
        f"[host life] remove under the live app's load: {result.summary()}; --dry-run"
        f" {dry.seconds:.1f} s, remove {removed.seconds:.1f} s, --purge refused"
        f" {refused.seconds:.1f} s, --purge {purged.seconds:.1f} s, again {again.seconds:.1f} s,"
        f" setup --remove-app {admin.seconds:.1f} s"
    )
    with capsys.disabled():
        print("\n" + said)
    print(said, dry.stdout, removed.stdout, purged.stdout, admin.stdout, sep="\n")
