"""What a user sees when a deploy is interrupted or the host misbehaves.

Each test asserts the observable outcome: the exit code, one clear message naming the cause and the
fix, and that the running services are as they were (the previous release still answering through
Nginx under a bounded loopback load, PM2 pids unchanged where nothing should restart).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.loadgen import Load
from tests.e2e.conftest import LIVE, REPO, AppRepo, Profile, e2e_load, fab, get, pm2_apps, sh
from tests.e2e.hosts import on_this_machine

FLT = LIVE
PY_URL, NODE_URL = FLT.url("/api/ai/x"), FLT.url("/")


@pytest.fixture(scope="module")
def live(live_app):
    """The worker's live app, running this module's repository (not measured)."""
    return live_app


# ----------------------------------------------------------------------------- helpers


def current() -> str:
    return Path(FLT.root, "current").resolve().name


def head(repo: AppRepo) -> str:
    return repo.git("rev-parse", "HEAD").strip()


def versions(repo: AppRepo) -> tuple[str, str]:
    """The VERSION of app.py and of server.js at the repository's HEAD."""
    py = re.search(r'^VERSION = "(\d+)"', (repo.path / "app.py").read_text(), re.M)
    node = re.search(r'^const VERSION = "(\d+)";', (repo.path / "server.js").read_text(), re.M)
    assert py and node
    return py.group(1), node.group(1)


def bump(repo: AppRepo) -> str:
    """A new commit changing both apps' code; returns the new version (the same in both)."""
    py, node = versions(repo)
    new = str(max(int(py), int(node)) + 1)
    (repo.path / "app.py").write_text(
        (repo.path / "app.py").read_text().replace(f'VERSION = "{py}"', f'VERSION = "{new}"', 1)
    )
    (repo.path / "server.js").write_text(
        (repo.path / "server.js")
        .read_text()
        .replace(f'const VERSION = "{node}";', f'const VERSION = "{new}";', 1)
    )
    repo.git("commit", "-qam", f"v{new}")
    return new


def answers() -> dict[str, tuple[int, str | None, str | None]]:
    """What Nginx answers on a Python route and on `/`: (status, X-Release, version)."""
    out = {}
    for name, url in (("python", PY_URL), ("nodejs", NODE_URL)):
        status, headers, body = get(url)
        out[name] = (status, headers.get("X-Release"), body.get("version"))
    return out


def pids() -> dict[str, list[tuple[int, int]]]:
    """PM2's pids and restart counts of our two apps."""
    return {
        name: sorted((p["pid"], p["restarts"]) for p in procs)
        for name, procs in pm2_apps(FLT.app).items()
    }


def fab_cmd(sb, p: Profile, repo: AppRepo | None, *args: str, task: str = "deploy") -> list[str]:
    cmd = ["fab", "-H", sb.target, "-i", sb.key, task]
    if repo is not None:
        cmd += ["--source-dir", str(repo.path)]
    for key, value in p.settings().items():
        cmd += ["--set", f"{key}={value}"]
    return cmd + list(args)


def popen_fab(
    sb, p: Profile, repo: AppRepo | None, *args: str, task: str = "deploy"
) -> subprocess.Popen[str]:
    with on_this_machine():
        return subprocess.Popen(
            fab_cmd(sb, p, repo, *args, task=task),
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "KNOWN_HOSTS": sb.known_hosts},
        )


def step_done(line: str, step: str) -> bool:
    """A step line as the Reporter prints it: `ok   <step padded to 22> <seconds>s  <detail>`."""
    return line.startswith("ok   ") and line[5:28].strip() == step


def read_until(
    proc: subprocess.Popen[str], step: str, timeout: float = 120
) -> tuple[bool, list[str]]:
    """Read the process's output until step's line appears (True) or it ends (False)."""
    lines: list[str] = []
    found = threading.Event()

    def reader():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if step_done(line, step):
                found.set()
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return found.is_set(), lines


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def load() -> Load:
    return e2e_load(
        [FLT.url("/api/ai/load"), NODE_URL], threads=1, max_requests=20_000, max_seconds=90
    )


# ----------------------------------------------------------------------------- 1. killed at each
# step

STEPS = ["read host", "plan", "trial run", "switch current", "reload apps"]


@pytest.mark.parametrize("step", STEPS)
def test_deploy_killed_after_each_step_then_the_next_deploy_converges(sandbox, live, step):
    """SIGKILL `fab deploy` right after step's line (as a dropped SSH connection would end it); the
    site keeps answering (the old release, or the new one once switched) and the next deploy of the
    same commit, run with no clean-up and no --lock-wait, succeeds and leaves the new release live
    in both apps.
    """
    before, old_release = answers(), current()
    new_version = bump(live)
    sha = head(live)
    with load() as traffic:
        time.sleep(0.3)
        proc = popen_fab(sandbox, FLT, live)
        seen, lines = read_until(proc, step)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # as a dropped connection would end it
        proc.wait(timeout=60)
        assert seen, f"step {step!r} never printed its line:\n" + "\n".join(lines)
        time.sleep(0.5)
        during = answers()
        second = fab(sandbox, FLT, live)
        time.sleep(0.3)
    result = traffic.result()
    # Interrupted: the site kept answering, from the old or (after the switch) the new release.
    for name, (status, _release, version) in during.items():
        assert status == 200 and version in (before[name][2], new_version), (name, before, during)
    # The next deploy needs no manual clean-up: no stale lock, and it converges on the new release.
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Another deploy" not in second.stdout + second.stderr
    assert result.failed == 0, (result.summary(), result.samples)
    assert result.total > 20
    live_release = current()
    assert live_release.endswith(sha[:12]) and live_release != old_release
    after = answers()
    assert after == {
        "python": (200, live_release, new_version),
        "nodejs": (200, live_release, new_version),
    }, (after, second.stdout)
    apps = pm2_apps(FLT.app)
    assert [p["status"] for p in apps[f"{FLT.app}-python"]] == ["online"]
    assert [p["status"] for p in apps[f"{FLT.app}-nodejs"]] == ["online", "online"]
    assert not Path(FLT.root, ".deploy/lock.json").exists()


# ----------------------------------------------------------------------------- 1b. the connection
# cut at the TCP level

CUT_MARK = Path(f"/tmp/{FLT.app}-after-switch-started")


def cut_ssh(port: int) -> None:
    """Cut the SSH connections to this host's `port` at the TCP level (the deploy's is the only
    one): the kernel resets them (`ss -K`), as a dropped network would; where the kernel cannot, the
    sshd process serving each is killed. A connection the deploy makes again at once is left
    alone."""
    query = f"state established '( sport = :{port} )'"

    def connections() -> dict[
        str, set[str]
    ]:  # peer address:port -> pids of the sshd processes serving it
        found: dict[str, set[str]] = {}
        for line in sh(f"ss -tnpH {query}", check=False).stdout.splitlines():
            peers = [
                f
                for f in line.split()
                if re.fullmatch(r"\S+:\d+", f) and not f.endswith(f":{port}")
            ]
            if peers:
                found.setdefault(peers[0], set()).update(re.findall(r'"sshd[^"]*",pid=(\d+)', line))
        return found

    before = connections()
    assert before, "no SSH connection to cut"
    sh(f"ss -K {query}", check=False)
    pids = sorted(
        {pid for peer, serving in connections().items() if peer in before for pid in serving}
    )
    if pids:
        sh("kill -9 " + " ".join(pids), check=False)


def test_a_connection_lost_after_the_switch_is_named_undone_and_the_next_deploy_converges(
    sandbox, live
):
    """The deploy's SSH connection is cut while AFTER_SWITCH runs (a hook that says it started, then
    waits): the deploy connects again, rolls back as for any failure and says so, naming the step;
    the apps answer throughout, and the next deploy of the same commit converges."""
    CUT_MARK.unlink(missing_ok=True)
    before, old_release = answers(), current()
    new_version = bump(live)
    sha = head(live)
    with load() as traffic:
        time.sleep(0.3)
        proc = popen_fab(sandbox, FLT, live, "--set", f"AFTER_SWITCH=touch {CUT_MARK} && sleep 30")
        try:
            for _ in range(1200):
                if CUT_MARK.exists() or proc.poll() is not None:
                    break
                time.sleep(0.1)
            started = CUT_MARK.exists()
            cut_ssh(sandbox.port)
            out = proc.communicate(timeout=180)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        during = answers()
        second = fab(sandbox, FLT, live)
        time.sleep(0.3)
    assert started, "AFTER_SWITCH never started:\n" + out
    assert proc.returncode != 0, out
    no_traceback(out)
    # One message: the step the loss cut, that it was undone, the command that finishes the job; not
    # a misnamed cause. (with what the SSH library saw end it, when it saw something: a reset, an
    # EOF)
    assert re.search(
        rf"The SSH connection to {re.escape(sandbox.target)} was lost( \([^)]+\))? during"
        r" after-switch",
        out,
    ), out
    assert "Connected again and undone: reload apps, switch current, write and check site" in out, (
        out
    )
    assert f"The next deploy converges: run `fab -H {sandbox.target} deploy`" in out, out
    assert f"Rolled back to {old_release}" in out, out
    assert "python3-venv" not in out and "could not run on the host" not in out, out
    assert "Socket exception" not in out, out  # paramiko's own log line: the message above says it
    # The apps kept answering, back on the old release; the next deploy (no clean-up, no
    # --lock-wait) converges.
    assert {name: (status, version) for name, (status, _r, version) in during.items()} == {
        name: (200, before[name][2]) for name in before
    }, (before, during)
    assert traffic.result().failed == 0, (traffic.result().summary(), traffic.result().samples)
    assert second.returncode == 0, second.stdout + second.stderr
    live_release = current()
    assert live_release.endswith(sha[:12]) and live_release != old_release
    assert answers() == {
        "python": (200, live_release, new_version),
        "nodejs": (200, live_release, new_version),
    }
    assert not Path(FLT.root, ".deploy/lock.json").exists()


# ----------------------------------------------------------------------------- 2. two deploys at
# once

SLOW_TRIAL = """

# Slow only in the trial run (the only place SIGNALCRAFT_CHDIR is set): a deploy that holds the lock a while.
if os.environ.get("SIGNALCRAFT_CHDIR"):
    import time as _time
    _time.sleep(8)
"""


def slow_commit(repo: AppRepo) -> tuple[str, str]:
    """A new commit whose trial run takes 8 s; returns (version, sha)."""
    version = bump(repo)
    (repo.path / "app.py").write_text((repo.path / "app.py").read_text() + SLOW_TRIAL)
    repo.git("commit", "-qam", "slow trial run")
    return version, head(repo)


def holder_text(sha: str) -> re.Pattern[str]:
    """How a lock holder is named: user@machine, the commit being deployed and since when."""
    import getpass
    import socket

    return re.compile(
        rf"{re.escape(getpass.getuser())}@{re.escape(socket.gethostname())}, deploying {sha[:12]} "
        r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
    )


def audit_records() -> list[dict]:
    text = Path(FLT.root, ".deploy/audit.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class LockRace:
    sha: str
    version: str
    first: tuple[int | None, str]  # exit code, output
    second: tuple[int | None, str, str]  # exit code, stdout, stderr
    third: tuple[int | None, str]
    unlock: subprocess.CompletedProcess[str]
    first_was_running: bool


@pytest.fixture(scope="module")
def lock_race(sandbox, live) -> LockRace:
    """A slow deploy holds the lock; meanwhile a second deploy (no wait), `unlock` and a third
    (--lock-wait 120) run."""
    version, sha = slow_commit(live)
    first = popen_fab(sandbox, FLT, live)
    third = None
    try:
        seen, lines = read_until(first, "plan")
        assert seen, "\n".join(lines)
        assert Path(FLT.root, ".deploy/lock.json").exists()
        third = popen_fab(sandbox, FLT, live, "--lock-wait", "120")
        with on_this_machine():
            second = subprocess.Popen(
                fab_cmd(sandbox, FLT, live),
                cwd=str(REPO),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "KNOWN_HOSTS": sandbox.known_hosts},
            )
        show = fab(sandbox, FLT, None, task="unlock")
        out2, err2 = second.communicate(timeout=120)
        running = first.poll() is None
        first_out = "\n".join(lines) + "\n" + first.communicate(timeout=300)[0]
        third_out = third.communicate(timeout=300)[0]
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        live.git("revert", "--no-edit", sha)  # the next tests deploy without the slow trial run
    return LockRace(
        sha,
        version,
        (first.returncode, first_out),
        (second.returncode, out2, err2),
        (third.returncode, third_out),
        show,
        running,
    )


def test_two_deploys_at_once_one_waits_or_stops_with_the_holder_named(sandbox, live, lock_race):
    race = lock_race
    assert race.first_was_running, (
        "the first deploy ended before the others were checked; make its trial run slower"
    )
    code, out2, err2 = race.second
    assert code == 75, out2 + err2
    assert f"Another deploy is running on {sandbox.target}" in err2
    assert holder_text(race.sha).search(err2), err2
    assert "--lock-wait" in err2 and "unlock --force" in err2
    no_traceback(out2 + err2)
    assert race.unlock.returncode == 0, race.unlock.stdout + race.unlock.stderr
    assert holder_text(race.sha).search(race.unlock.stdout), race.unlock.stdout
    assert "unlock --force" in race.unlock.stdout
    assert race.first[0] == 0, race.first[1]
    code, out3 = race.third
    assert code == 0, out3
    assert "Another deploy holds the lock" in out3 and "waiting" in out3
    assert holder_text(race.sha).search(out3), out3
    assert current().endswith(race.sha[:12])
    assert answers()["python"][2] == race.version
    # Nobody holds the lock any more.
    after = fab(sandbox, FLT, None, task="unlock")
    assert after.returncode == 0 and "No deploy holds the lock." in after.stdout, (
        after.stdout + after.stderr
    )


def test_a_deploy_that_does_not_wait_prints_one_message_and_does_not_claim_to_wait(lock_race):
    code, out2, err2 = lock_race.second
    assert code == 75, out2 + err2
    assert "waiting" not in out2 + err2, out2 + err2
    assert len([line for line in err2.splitlines() if line.strip()]) == 1, err2


def test_unlock_force_breaks_a_live_lock_and_is_audited(sandbox, live):
    _version, sha = slow_commit(live)
    first = popen_fab(sandbox, FLT, live)
    try:
        seen, lines = read_until(first, "plan")
        assert seen, "\n".join(lines)
        forced = fab(sandbox, FLT, None, "--force", task="unlock")
        still_running = first.poll() is None
        # The lock is free: flock on the host gets it at once, and `unlock` finds no holder.
        free = sh(f"sudo -u ubuntu flock -n {FLT.root}/.deploy/lock true", check=False)
        shown = fab(sandbox, FLT, None, task="unlock")
        first_out = first.communicate(timeout=300)[0]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        live.git("revert", "--no-edit", sha)  # the next tests deploy without the slow trial run
    assert still_running, "the deploy ended before unlock --force ran; make its trial run slower"
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert holder_text(sha).search(forced.stdout), forced.stdout
    assert re.search(r"host pid \d+", forced.stdout), (
        forced.stdout
    )  # it found the process holding the lock
    assert "Lock broken; this was written to the audit log." in forced.stdout
    assert free.returncode == 0, "the lock is still held after unlock --force"
    assert "No deploy holds the lock." in shown.stdout, shown.stdout
    unlocks = [r for r in audit_records() if r.get("event") == "unlock"]
    assert unlocks and unlocks[-1]["broke"]["sha"] == sha, unlocks
    assert unlocks[-1]["by"]["user"]
    # The deploy whose lock was broken still ends cleanly (no traceback), and the site answers.
    no_traceback("\n".join(lines) + first_out)
    assert answers()["python"][0] == 200 and answers()["nodejs"][0] == 200


# ----------------------------------------------------------------------------- 3. nginx -t rejects
# the new site


def test_nginx_rejects_the_new_site_nothing_is_reloaded_and_the_old_site_is_back(
    sandbox, live, tmp_path
):
    """An admin's own site is the default server on a second port; the deploy adds that port with
    SERVER_NAME=_, which makes the new site a second default server there: `nginx -t` refuses it."""
    clash = Path(f"/etc/nginx/conf.d/{FLT.app}-admin-clash.conf")
    clash.write_text("server {\n    listen 127.0.0.1:8189 default_server;\n    return 204;\n}\n")
    sh("nginx -t && nginx -s reload")
    try:
        nginx_rejects_the_new_site(sandbox, live)
    finally:
        clash.unlink()
        sh("nginx -t && nginx -s reload", check=False)


def nginx_rejects_the_new_site(sandbox, live) -> None:
    site = Path(FLT.settings()["NGINX_SITE"])
    site_before, link_before = site.read_bytes(), os.readlink(f"/etc/nginx/sites-enabled/{FLT.app}")
    release_before, pids_before = current(), pids()
    bump(live)
    with load() as traffic:
        time.sleep(0.3)
        result = fab(sandbox, FLT, live, "--set", f"NGINX_LISTEN={FLT.listen},127.0.0.1:8189")
        time.sleep(0.3)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "nginx -t rejected the new site" in out and f"{site}" in out
    assert "a duplicate default server for 127.0.0.1:8189" in out  # what nginx said
    no_traceback(out)
    assert traffic.result().failed == 0, traffic.result().samples
    assert site.read_bytes() == site_before  # byte for byte
    assert os.readlink(f"/etc/nginx/sites-enabled/{FLT.app}") == link_before
    assert not list(site.parent.glob(f"{site.name}.signalcraft-tmp*"))
    assert current() == release_before
    assert pids() == pids_before  # nothing restarted or reloaded
    assert answers()["python"][:2] == (200, release_before)
    assert answers()["nodejs"][:2] == (200, release_before)
    assert sh("nginx -t", check=False).returncode == 0


# ----------------------------------------------------------------------------- 4. crash-loop under
# PM2 only

CRASH_UNDER_PM2 = """

# PM2 sets pm_id in its apps' environment; the trial run does not. Under PM2 this release cannot start.
if os.environ.get("pm_id") is not None:
    raise RuntimeError("crash-loop-marker: this release refuses to start under PM2")
"""


def test_release_that_crash_loops_only_under_pm2_is_refused(sandbox, live):
    """The trial run starts the release under PM2 with its real entries, so it sees what only PM2
    triggers."""
    base = head(live)
    release_before = current()
    bump(live)
    (live.path / "app.py").write_text((live.path / "app.py").read_text() + CRASH_UNDER_PM2)
    live.git("commit", "-qam", "crashes under PM2")
    try:
        with load() as traffic:
            time.sleep(0.3)
            result = fab(sandbox, FLT, live, "--set", "HEALTH_TIMEOUT=8")
            time.sleep(0.5)
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        assert "FAIL trial run" in result.stdout  # caught before the switch: nothing to roll back
        assert "nothing was switched" in out
        no_traceback(out)
        assert current() == release_before
        assert answers()["python"][:2] == (200, release_before)
        assert answers()["nodejs"][:2] == (200, release_before)
        assert [p["status"] for p in pm2_apps(FLT.app)[f"{FLT.app}-python"]] == ["online"]
        # Both of these are what a user sees; report both when they fail.
        problems = []
        if "crash-loop-marker" not in out:
            problems.append(
                "the app's own error output ('crash-loop-marker') is not in the message:\n" + out
            )
        if traffic.result().failed:
            problems.append(
                f"requests failed: {traffic.result().summary()}, e.g."
                f" {traffic.result().samples[:3]}"
            )
        assert not problems, "\n".join(problems)
    finally:
        live.git("reset", "-q", "--hard", base)


# ----------------------------------------------------------------------------- 5. read-only or full
# disk


def _read_only_releases() -> tuple[str, str]:
    path = f"{FLT.root}/releases"
    sh(f"mount --bind {path} {path} && mount -o remount,ro,bind {path}")
    return path, "Read-only file system"


def _full_incoming() -> tuple[str, str]:
    path = f"{FLT.root}/.deploy/incoming"
    sh(f"mkdir -p {path} && mount -t tmpfs -o size=64k,mode=0777 tmpfs {path}")
    sh(f"dd if=/dev/zero of={path}/filler bs=4k 2>/dev/null; true")
    return path, r"no space left|disk (is )?full"


@pytest.mark.parametrize("fault", ["read-only releases", "disk full"])
def test_read_only_or_full_deploy_root_leaves_the_live_release(sandbox, live, fault):
    if sh("mount --version", check=False).returncode != 0:
        pytest.skip("mount is not available here")
    release_before, pids_before = current(), pids()
    bump(live)
    mounted, cause = (_read_only_releases if fault == "read-only releases" else _full_incoming)()
    try:
        with load() as traffic:
            time.sleep(0.3)
            result = fab(sandbox, FLT, live)
            time.sleep(0.3)
        probe = sh(f"head -c 8192 /dev/zero > {mounted}/probe", check=False)
    finally:
        sh(f"umount {mounted}", check=False)
    assert probe.returncode != 0 and re.search(cause, probe.stderr, re.I), (
        f"the fault was not in place: {probe.stderr}"
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    no_traceback(out)
    assert re.search(cause, out, re.I), out  # names the problem
    assert "live release is untouched" in out or "nothing was switched" in out.lower(), out
    assert traffic.result().failed == 0, traffic.result().samples
    assert current() == release_before
    assert pids() == pids_before
    assert answers()["python"][:2] == (200, release_before)
    assert answers()["nodejs"][:2] == (200, release_before)
    assert not Path(FLT.root, ".deploy/lock.json").exists()
