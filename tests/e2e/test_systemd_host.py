"""PM2's boot unit under a real systemd: host h200 (tests/host/systemd-host) boots Debian 12 with
systemd as pid 1.

The other test hosts have no running systemd, so there `setup`'s unit pm2-<app user>.service is only
written and linked. Here the admin runs `fab -H admin@... setup --user ubuntu`, which makes the
apps' own account `signalcraft` (APP_USER) and starts its unit, the deploy user `ubuntu` (the
sudoers drop-in only) deploys the example app, whose apps run as signalcraft under that PM2, and the
tests use the host as its admin would: `systemctl reboot` (the host boots again by itself; once
with maintenance mode on), signalcraft's PM2 daemon killed with SIGKILL (Restart=on-failure), and a
deploy whose Nginx change is applied with `systemctl reload nginx`. What they look at is what a user would see: answers
through the host's Nginx at http://198.18.200.2:<port>/, `systemctl is-enabled/is-active
pm2-signalcraft`, signalcraft's `pm2 jlist`, and the user and systemd unit of every process of the
apps.

tests/e2e/run starts h200 in the background before the workers (tests/host/systemd-host up 200; the
first one on a machine builds the cached root file system, a few minutes) and says so in
SIGNALCRAFT_SYSTEMD_HOST; the tests wait for it and are skipped, saying why, if it does not come up.
Alone: `tests/host/systemd-host up 200` first. The measured times (reboot to serving, SIGKILL to
serving) are printed: `-rP` shows them (an xdist worker's own stdout is not shown).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.e2e.conftest import APP_HOME, APP_USER, REPO, AppRepo, Profile, fab, get
from tests.e2e.hosts import CLIENT, TestHost, on_this_machine

HOST = TestHost(  # acted on over SSH as its admin (sudo), as any host other than the worker's own
    int(os.environ.get("SIGNALCRAFT_SYSTEMD_HOST") or 200), port=22
)
UNIT = (  # the apps' own account's PM2 (setup starts it; the deploy never does)
    f"pm2-{APP_USER}.service"
)
PM2_HOME = f"{APP_HOME}/.pm2"
PY_ROUTES = "api/ai,api/iot,api/lightweight-analyze,api/flask"  # the default
SD = Profile("sdh", "/home/ubuntu/sdh", 7401, 7411, 7421, extra={"HEALTH_TIMEOUT": "30"})
STATE = (
    CLIENT / f"systemd-host-h{HOST.number}"
)  # tests/host/systemd-host's progress: building, booting, up, failed
# seconds to wait for a host that tests/e2e/run is bringing up (a first build takes a few minutes)
WAIT_UP = 600.0
BOOT_WAIT = 180.0  # seconds a reboot may take until both apps answer again
MARK = (  # /run is a tmpfs of the boot: gone once the host has booted again
    "/run/signalcraft-before-reboot"
)


def url(path: str, p: Profile = SD) -> str:
    return f"http://{HOST.host}:{p.listen}{path}"


PY_URL, NODE_URL = "/api/flask/health", "/"


def on_host(cmd: str, user: str = "root", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command on h200 as `user` (over SSH as admin, with sudo); a connection that hangs counts as
    a failure."""
    try:
        return HOST.run(cmd, user=user, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        return subprocess.CompletedProcess(err.cmd, 255, "", f"timed out after {timeout} s")


def systemd_says() -> str:
    return on_host("systemctl is-system-running", timeout=20).stdout.strip()


def unit(prop: str, name: str = UNIT) -> str:
    return on_host(f"systemctl show -p {prop} --value {name}").stdout.strip()


def is_(what: str, name: str = UNIT) -> str:
    return on_host(f"systemctl is-{what} {name}").stdout.strip()


def answers(p: Profile = SD) -> dict[str, tuple[int, str, dict]]:
    """Both apps through the host's Nginx: path -> (status, X-Release, JSON body)."""
    out = {}
    for path in (PY_URL, NODE_URL, "/api/ai/x"):
        status, headers, body = get(url(path, p), timeout=5)
        out[path] = (status, headers.get("X-Release", ""), body)
    return out


def release_of(seen: dict[str, tuple[int, str, dict]]) -> str:
    """The one release both apps answer with (asserting they do)."""
    assert {s for s, _, _ in seen.values()} == {200}, seen
    releases = {r for _, r, _ in seen.values()}
    assert len(releases) == 1 and "" not in releases, seen
    return releases.pop()


def pm2_pids() -> dict[str, set[int]]:
    """PM2's apps of the apps' account (its pm2 jlist) -> their pids; asked only while its PM2
    daemon lives (a `pm2` command with no daemon would start one, outside systemd)."""
    out = on_host(
        f'pid=$(cat {PM2_HOME}/pm2.pid 2>/dev/null) && kill -0 "$pid" 2>/dev/null && cd / && '
        f"runuser -u {APP_USER} -- env HOME={APP_HOME} PM2_HOME={PM2_HOME} pm2 jlist"
    ).stdout
    start = out.find("[")
    apps: dict[str, set[int]] = {}
    for item in json.loads(out[start:]) if start >= 0 else []:
        if item["name"].startswith(SD.app + "-"):
            apps.setdefault(item["name"], set()).add(int(item["pid"]))
    return apps


def processes_of(user: str) -> dict[int, tuple[int, str]]:
    """Every process of `user` on the host: pid -> (seconds it has run, its systemd unit's
    cgroup)."""
    out = on_host(
        f"for p in $(pgrep -u {user}); do printf '%s %s %s\\n' $p $(ps -o etimes= -p $p) "
        "$(sed -n 's|^0::||p' /proc/$p/cgroup 2>/dev/null); done"
    ).stdout
    procs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            procs[int(parts[0])] = (int(parts[1]), parts[2])
    return procs


def port_holders(*ports: int) -> set[int]:
    """The pids holding the listening sockets of `ports` (ss)."""
    filt = " or ".join(f"sport = :{port}" for port in ports)
    out = on_host(f"ss -Hltnp '( {filt} )'").stdout
    return {
        int(part.split("=", 1)[1])
        for part in out.replace(",", " ").replace(")", " ").split()
        if part.startswith("pid=")
    }


def wait_for(what: str, check, seconds: float):
    """Poll `check()` until it returns something true, for at most `seconds`; return it."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.2)


def serving() -> bool:
    return all(get(url(path), timeout=3)[0] == 200 for path in (PY_URL, NODE_URL))


def in_maintenance() -> bool:
    """Maintenance mode answers the home page (503, Retry-After); the health route is open."""
    status, headers, _ = get(url(NODE_URL), timeout=3)
    return status == 503 and headers.get("Retry-After") == "600" and get(url(PY_URL))[0] == 200


def reboot(ready=serving) -> tuple[float, float]:
    """`systemctl reboot` as the admin; wait until the host has booted again (systemd running) and
    both apps answer (`ready`). Returns the seconds from the reboot command to sshd and systemd
    answering again, and to both apps serving.
    """
    assert on_host(f"touch {MARK}").returncode == 0
    start = time.monotonic()
    on_host(
        "systemctl reboot", timeout=30
    )  # the SSH connection may drop as the host goes down: not checked

    def booted() -> bool:
        done = on_host(f"test ! -e {MARK} && systemctl is-system-running --wait", timeout=60)
        return done.stdout.strip() in ("running", "degraded")

    wait_for("h200 back from the reboot", booted, BOOT_WAIT)
    up = time.monotonic() - start
    wait_for("both apps answering after the reboot", ready, BOOT_WAIT - up)
    return up, time.monotonic() - start


def clean() -> None:
    """Nothing of an earlier run of this module on a host that stayed up: PM2, the deploy root, the
    site, the unit."""
    on_host(
        f"systemctl disable --now {UNIT} pm2-ubuntu.service; systemctl reset-failed {UNIT}"
        f" pm2-ubuntu.service; pkill -KILL -u ubuntu; pkill -KILL -u {APP_USER}; rm -rf"
        f" /home/ubuntu/.pm2 {PM2_HOME} {SD.root} /etc/nginx/sites-enabled/{SD.app}"
        f" /etc/nginx/sites-available/{SD.app}* /etc/systemd/system/{UNIT}"
        f" /etc/systemd/system/multi-user.target.wants/{UNIT}"
        f" /var/lib/signalcraft-deploy/sites/*--{SD.app}.json; systemctl daemon-reload; systemctl"
        " reload nginx"
    )


@pytest.fixture(scope="module")
def host() -> TestHost:
    """h200 up (waited for while tests/e2e/run brings it up), set up by its admin for the deploy
    user ubuntu."""
    if not CLIENT.is_dir():
        pytest.skip(
            "the end-to-end tests run inside a test host's worker (tests/e2e/run): /run/testhost is"
            " missing"
        )
    coming = os.environ.get("SIGNALCRAFT_SYSTEMD_HOST") == str(HOST.number)
    deadline = time.monotonic() + (WAIT_UP if coming else 15)
    how = (
        "tests/e2e/run started it in the background (its log:"
        f" /run/signalcraft-testhosts/h{HOST.number}.log)"
        if coming
        else f"start it with `tests/host/systemd-host up {HOST.number}` (tests/e2e/run does)"
    )
    while True:
        state = STATE.read_text().strip() if STATE.exists() else "not started"
        if state == "up" and systemd_says() in ("running", "degraded"):
            break
        if state.startswith("failed"):
            pytest.skip(f"the systemd host h{HOST.number} failed to come up; {how}")
        if time.monotonic() > deadline:
            pytest.skip(
                f"the systemd host h{HOST.number} is not up (tests/host/systemd-host says:"
                f" {state}); {how}"
            )
        time.sleep(2)
    clean()
    admin = HOST.as_user("admin")
    with on_this_machine():
        setup = subprocess.run(
            [
                "fab",
                "-H",
                admin.target,
                "-i",
                admin.key,
                "setup",
                "--user",
                "ubuntu",
                "--known-hosts",
                admin.known_hosts,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert f"app boot unit: wrote /etc/systemd/system/{UNIT}" in setup.stdout, setup.stdout
    assert f"started {UNIT}" in setup.stdout, setup.stdout
    assert (
        is_("enabled") == "enabled"
    )  # systemd itself reads the unit setup wrote and its wants link
    assert is_("active") == "active"  # and runs the apps' PM2 from setup on, before any deploy
    assert (
        on_host("sudo -n true", user="ubuntu").returncode != 0
    )  # the deploy user: the drop-in only
    return HOST


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> AppRepo:
    """The example app with a Procfile process: a reboot must bring it back with the web apps."""
    app = AppRepo(tmp_path_factory.mktemp("systemd-host") / "app")
    (app.path / "clock.py").write_text("import time\n\nwhile True:\n    time.sleep(60)\n")
    (app.path / "Procfile").write_text("clock: python clock.py\n")
    app.git("add", "clock.py", "Procfile")
    app.git("commit", "-qm", "a Procfile process")
    return app


def deploy(repo: AppRepo | None, p: Profile = SD, task: str = "deploy", *args: str) -> str:
    result = fab(HOST, p, repo, "--known-hosts", HOST.known_hosts, *args, task=task)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def under_systemd(before_reboot: float | None = None) -> dict[str, set[int]]:
    """PM2 and both apps run as the apps' account in its unit (systemd started the daemon), each
    process started by the last boot when `before_reboot` says when that was."""
    assert is_("active") == "active", on_host(f"systemctl status {UNIT}").stdout
    main = int(unit("MainPID"))
    assert main == int(on_host(f"cat {PM2_HOME}/pm2.pid").stdout.strip())  # PIDFile: PM2's daemon
    apps = pm2_pids()
    # the web apps, and the Procfile's process (see `repo`)
    assert set(apps) == {f"{SD.app}-python", f"{SD.app}-nodejs", f"{SD.app}-clock"}, apps
    procs = processes_of(APP_USER)
    for pid in {main}.union(*apps.values()):
        assert pid in procs, (pid, "not a process of " + APP_USER, procs)
        ran, cgroup = procs[pid]
        assert cgroup == f"/system.slice/{UNIT}", (pid, cgroup)
        if before_reboot is not None:
            assert ran <= time.monotonic() - before_reboot + 1, (
                pid,
                ran,
            )  # a process of the new boot
    assert not {pid for procs in apps.values() for pid in procs} & set(processes_of("ubuntu"))
    return apps


def test_a_reboot_after_a_deploy_brings_both_apps_back_through_the_boot_unit(host, repo):
    out = deploy(repo)
    assert "does not start at boot" not in out, out
    release = release_of(answers())
    before = (
        under_systemd()
    )  # the deploy's apps are in systemd's PM2 already, not in the SSH session's scope
    shown = fab(
        HOST, SD, None, task="status"
    )  # (KNOWN_HOSTS in its environment: status takes no --known-hosts)
    status = shown.stdout + shown.stderr
    assert shown.returncode == 0, status
    assert (
        f"apps run as {APP_USER} (uid " in status
        and f"PM2 home {PM2_HOME}; deployed by ubuntu" in status
    ), status
    assert "WARNING" not in status and f"boot      /etc/systemd/system/{UNIT} enabled;" in status, (
        status
    )
    print(
        f"\n[h200] after the deploy: {UNIT} is {is_('enabled')} and {is_('active')}; PM2 apps"
        f" {before}"
    )

    start = time.monotonic()
    up, serving_again = reboot()
    assert release_of(answers()) == release  # the same release, by itself
    after = under_systemd(start)
    assert after != before, (before, after)
    print(
        f"[h200] reboot after a deploy: sshd and systemd back in {up:.1f} s, both apps serving in"
        f" {serving_again:.1f} s (release {release}; PM2 apps {after})"
    )


def test_after_a_rollback_a_reboot_brings_back_the_rolled_back_release(host, repo):
    if not serving():
        deploy(repo)
    first = answers()
    first_release = release_of(first)
    assert first["/api/ai/x"][2].get("version") == "1", first
    repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2 of the Flask app")
    repo.edit(
        "server.js", 'const VERSION = "1";', 'const VERSION = "2";', "v2 of the Node.js app"
    )  # both reload
    deploy(repo)
    second_release = release_of(answers())
    assert second_release != first_release and answers()["/api/ai/x"][2].get("version") == "2"
    deploy(None, SD, "rollback")
    assert release_of(answers()) == first_release
    deploy(None, SD, "maintenance", "on")  # and maintenance mode is on at the reboot
    assert in_maintenance()

    start = time.monotonic()
    up, serving_again = reboot(ready=in_maintenance)
    deploy(None, SD, "maintenance", "off")
    seen = answers()
    assert release_of(seen) == first_release, (
        first_release,
        second_release,
        seen,
    )  # not the newer one
    assert seen["/api/ai/x"][2].get("version") == "1", seen
    under_systemd(start)
    print(
        f"\n[h200] reboot after a rollback: sshd and systemd back in {up:.1f} s, maintenance mode"
        f" serving in {serving_again:.1f} s (release {first_release}, not {second_release})"
    )


def test_a_pm2_daemon_killed_with_sigkill_is_restarted_by_systemd(host, repo):
    if (
        is_("active") != "active" or not serving()
    ):  # PM2 started by a deploy runs outside the unit: boot into it
        if not serving():
            deploy(repo)
        reboot()
    release = release_of(answers())
    old_main = int(unit("MainPID"))
    restarts = int(unit("NRestarts") or 0)
    old = set(processes_of(APP_USER))
    assert old_main in old and port_holders(SD.bind, SD.node) <= old

    start = time.monotonic()
    assert on_host(f"kill -9 $(cat {PM2_HOME}/pm2.pid)").returncode == 0

    def restarted() -> bool:
        main = unit("MainPID")
        return (
            is_("active") == "active"
            and main not in ("0", str(old_main))
            and int(unit("NRestarts") or 0) > restarts
            and serving()
        )

    wait_for("PM2 restarted by systemd and both apps answering", restarted, 120)
    seconds = time.monotonic() - start
    assert release_of(answers()) == release
    left = old & set(processes_of(APP_USER))
    assert not left, f"old processes of {APP_USER} still run: {left}"
    holders = port_holders(SD.bind, SD.node)
    procs = processes_of(APP_USER)
    assert holders and not holders & old, (holders, old)
    assert {procs[pid][1] for pid in holders} == {f"/system.slice/{UNIT}"}, (holders, procs)
    print(
        f"\n[h200] PM2's daemon killed with SIGKILL: systemd restarted it (NRestarts {restarts} ->"
        f" {unit('NRestarts')}), both apps serving again in {seconds:.1f} s"
    )


def test_a_deploy_while_the_apps_pm2_is_stopped_starts_it_through_its_unit_not_over_ssh(host, repo):
    """The apps' PM2 stopped by the admin (`systemctl stop`): the next deploy has the root helper
    start the unit (pm2-boot) before it reads PM2's list, so the daemon and both apps are systemd's
    again, not children of the deploy's SSH session (which a `pm2 jlist` through the app helper
    would have spawned)."""
    deploy(repo)  # live: the repository's commit (after the rollback test it was an older one)
    release = release_of(answers())
    assert on_host(f"systemctl stop {UNIT}").returncode == 0
    assert is_("active") != "active" and not serving()  # both apps went with their PM2
    start = time.monotonic()
    deploy(repo)  # the same commit: nothing to change but the stopped daemon
    seconds = time.monotonic() - start
    wait_for("both apps answering after the deploy", serving, 30)
    assert release_of(answers()) == release
    under_systemd()
    print(
        f"\n[h200] apps' PM2 stopped, then a deploy: {UNIT} started by the root helper, both apps"
        f" systemd's again ({seconds:.1f} s for the deploy)"
    )


def test_systemctl_reload_nginx_applies_the_site_change_without_restarting_nginx(host, repo):
    """The deploy user holds only the sudoers drop-in: the root helper runs NGINX_RELOAD_CMD, and
    accepts `systemctl reload nginx` (core.settings and remote.root_helper: RELOAD_RE), so this
    deploy is ubuntu's too.
    """
    if not serving():
        deploy(repo)
    assert (
        get(url("/v2/ml/x"))[1].get("X-App") == "nodejs"
    )  # not one of the Python routes yet: Node.js answers
    master = unit("MainPID", "nginx.service")
    assert master not in ("", "0") and master == on_host("cat /run/nginx.pid").stdout.strip()
    reloads = on_host(
        "journalctl -u nginx.service -o cat --no-pager | grep -c '^Reloaded nginx.service'"
    ).stdout.strip()

    changed = Profile(
        SD.app,
        SD.root,
        SD.bind,
        SD.node,
        SD.listen,
        extra={
            **SD.extra,
            "PY_ROUTES": PY_ROUTES + ",v2/ml",
            "NGINX_RELOAD_CMD": "systemctl reload nginx",
        },
    )
    deploy(repo, changed)
    status, headers, body = get(url("/v2/ml/x"))
    assert status == 200 and headers.get("X-App") == "flask" and body.get("path") == "/v2/ml/x", (
        status,
        headers,
        body,
    )
    assert unit("MainPID", "nginx.service") == master  # reloaded, not restarted
    assert is_("active", "nginx.service") == "active"
    now = on_host(
        "journalctl -u nginx.service -o cat --no-pager | grep -c '^Reloaded nginx.service'"
    ).stdout.strip()
    assert int(now or 0) > int(reloads or 0), (reloads, now)  # systemd did the reload
    print(
        f"\n[h200] systemctl reload nginx: /v2/ml/ now goes to Flask; nginx master {master}"
        " unchanged"
    )
