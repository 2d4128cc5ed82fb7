"""`fab -H web1,web2,web3 deploy` as one rolling deploy over three separate hosts.

The hosts are test hosts h101..h103 (tests/host/testhost: own network namespace, sshd, host key,
Nginx, users, files and PM2 each; no route to a package index, so every deploy here uses
WHEELS=local), named web1..web3 in an SSH config of the module's; their deploy user holds only the
sudoers drop-in of their admin's `setup --user ubuntu`. One fleet for
the module, and the tests run in order on it: each starts from what the one before left. Load
goes through each host's own Nginx (198.18.K.2:80), bounded; what is asserted is what a user
sees: HTTP answers, `current`, PM2's pids, the audit log, the summary table and the exit status.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import APP_USER, REPO, AppRepo, WebhookReceiver, e2e_load, get
from tests.e2e.hosts import TestHost, on_this_machine

HOSTS = ("web1", "web2", "web3")
# h101..h103, started by tests/e2e/run; SIGNALCRAFT_FLEET_HOSTS=121,122,123 names other test hosts.
NUMBERS = dict(
    zip(
        HOSTS,
        map(int, os.environ.get("SIGNALCRAFT_FLEET_HOSTS", "101,102,103").split(",")),
        strict=True,
    )
)
ROOT = "/home/ubuntu/signalcraft"
# A commit whose health route fails through Nginx where a file of the host's own says REGION=broken:
# it passes the trial run (called directly) everywhere, and fails the health gate on web2 only.
HEALTH_OLD = "    def health() -> Response:\n        return jsonify(_health())"
HEALTH_BROKEN = (
    "    def health() -> Response:\n        from flask import request\n"
    '        marker = Path("/home/ubuntu/region")\n'
    '        env = marker.read_text() if marker.exists() else ""\n'
    '        if "REGION=broken" in env and request.headers.get("X-Forwarded-For"):\n'
    '            return Response("broken on this host", status=500)\n'
    "        return jsonify(_health())"
)


@dataclass
class Fleet:
    ssh_config: str
    known_hosts: str
    hosts: dict[str, TestHost]


def host_sh(fleet: Fleet, host: str, cmd: str, user: str = "ubuntu", check: bool = True) -> str:
    """Run a shell command ON a fleet host as `user`, the way its own admin would (over SSH, with
    sudo)."""
    done = fleet.hosts[host].run(cmd, user=user, check=False, timeout=60)
    if check:
        assert done.returncode == 0, f"{host}: {cmd}: {done.stderr}"
    return done.stdout


def clean(fleet: Fleet, host: str) -> None:
    host_sh(
        fleet,
        host,
        "pm2 kill >/dev/null 2>&1; rm -f ~/before-switch.log",
        user=APP_USER,
        check=False,
    )
    host_sh(
        fleet,
        host,
        "pm2 kill >/dev/null 2>&1; rm -rf ~/signalcraft ~/.pm2 ~/before-switch.log",
        check=False,
    )
    host_sh(
        fleet,
        host,
        "rm -f /etc/nginx/sites-enabled/signalcraft /etc/nginx/sites-available/signalcraft*; ln"
        " -sfn /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default; nginx -s"
        " reload",
        user="root",
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Fleet:
    hosts = {h: TestHost(n, port=22) for h, n in NUMBERS.items()}
    config = tmp_path_factory.mktemp("fleet-ssh") / "ssh_config"
    config.write_text(
        "".join(
            f"Host {h}\n    HostName {t.host}\n    User ubuntu\n    IdentityFile {t.key}\n"
            f"    IdentitiesOnly yes\n    UserKnownHostsFile {t.known_hosts}\n"
            "    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 5\n"
            for h, t in hosts.items()
        )
    )
    f = Fleet(str(config), hosts["web1"].known_hosts, hosts)
    for h, t in hosts.items():
        with on_this_machine():
            setup = subprocess.run(
                [
                    "fab",
                    "-H",
                    t.as_user("admin").target,
                    "-i",
                    t.key,
                    "setup",
                    "--user",
                    "ubuntu",
                    "--known-hosts",
                    t.known_hosts,
                ],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=REPO,
            )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        clean(f, h)
    return f


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> AppRepo:
    return AppRepo(tmp_path_factory.mktemp("fleet") / "app")


def fab(
    fleet: Fleet,
    repo: AppRepo | None,
    *args: str,
    task: str = "deploy",
    hosts: str = ",".join(HOSTS),
    known_hosts: str | None = None,
    settings: dict[str, str] | None = None,
    ssh_config: str | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [
        "fab",
        "-S",
        ssh_config or fleet.ssh_config,
        "-H",
        hosts,
        task,
        "--set",
        f"KNOWN_HOSTS={known_hosts or fleet.known_hosts}",
    ]
    if repo is not None:
        cmd += ["--source-dir", str(repo.path)]
    # Two Gunicorn workers per host: three hosts share this machine's cores with the load, and a
    # HUP's new workers must boot before the old ones' backlog times out (a 5 s client timeout).
    for key, value in {
        "WHEELS": "local",
        "HEALTH_TIMEOUT": "15",
        "GUNICORN_WORKERS": "2",
        **(settings or {}),
    }.items():
        cmd += ["--set", f"{key}={value}"]
    start = time.monotonic()
    with on_this_machine():
        done = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=600, cwd=str(REPO)
        )
    done.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return done


def url(host: str, path: str) -> str:
    return f"http://198.18.{NUMBERS[host]}.2{path}"


def current(fleet: Fleet, host: str) -> str:
    return host_sh(
        fleet, host, f'basename "$(readlink {ROOT}/current)" 2>/dev/null || true', check=False
    ).strip()


def pm2_pids(fleet: Fleet, host: str) -> dict[str, list[int]]:
    """The apps' pids in the PM2 of the apps' own account (a first call's "[PM2] Spawning ..." is
    not the list)."""
    out = host_sh(fleet, host, "pm2 jlist 2>/dev/null || true", user=APP_USER, check=False)
    lists = [
        line for line in out.splitlines() if line.startswith("[") and not line.startswith("[PM2")
    ]
    apps: dict[str, list[int]] = {}
    for item in json.loads(lists[-1]) if lists else []:
        apps.setdefault(item["name"], []).append(item["pid"])
    return apps


def releases(fleet: Fleet, host: str) -> set[str]:
    return set(host_sh(fleet, host, f"ls {ROOT}/releases 2>/dev/null || true", check=False).split())


def audit(fleet: Fleet, host: str) -> list[dict]:
    return [
        json.loads(line)
        for line in host_sh(fleet, host, f"cat {ROOT}/.deploy/audit.log", check=False).splitlines()
    ]


def served(host: str) -> str:
    return get(url(host, "/api/ai/x"))[1].get("X-Release", "")


@contextmanager
def load_on_every_host():
    loads = {
        h: e2e_load(
            [url(h, "/api/ai/load"), url(h, "/")], threads=2, max_requests=15_000, max_seconds=150
        )
        for h in HOSTS
    }
    with (
        on_this_machine()
    ):  # the load's threads are on this machine's network, as a client's would be
        for load in loads.values():
            load.start()
    time.sleep(0.3)
    try:
        yield loads
    finally:
        time.sleep(0.3)
        for load in loads.values():
            load.stop()


def row(out: str, host: str) -> str:
    """The summary table's line for a host."""
    lines = [
        line
        for line in out.splitlines()
        if line.strip().startswith(host + " ") and " | " not in line
    ]
    assert lines, out
    return lines[-1]


def snapshot(fleet: Fleet) -> dict[str, tuple[str, dict, set]]:
    return {h: (current(fleet, h), pm2_pids(fleet, h), releases(fleet, h)) for h in HOSTS}


# ----------------------------------------------------------------------------- the hosts themselves


def test_hosts_are_separate(fleet: Fleet) -> None:
    host_sh(fleet, "web1", "echo mine > ~/only-on-web1 && pm2 ping >/dev/null")
    assert host_sh(fleet, "web1", "cat ~/only-on-web1").strip() == "mine"
    assert (
        host_sh(fleet, "web2", "test -e ~/only-on-web1 && echo seen || echo absent").strip()
        == "absent"
    )
    # web1's PM2 daemon is not among web2's processes, and web2 has its own PM2 home
    assert "PM2" in host_sh(fleet, "web1", "ps -eo comm")
    assert "PM2" not in host_sh(fleet, "web2", "ps -eo comm")
    assert host_sh(fleet, "web2", "ls ~/.pm2 2>/dev/null | wc -l").strip() == "0"
    # each host's sshd has its own key, and each Nginx answers on its own address only for itself
    assert len({t.host_key for t in fleet.hosts.values()}) == 3
    for h in HOSTS:
        assert get(url(h, "/"))[0] == 200
    host_sh(fleet, "web1", "rm -f ~/only-on-web1; pm2 kill >/dev/null", check=False)
    # and no host can reach a package index
    assert "unreachable" in host_sh(
        fleet, "web2", "curl -sS -m 3 https://pypi.org/simple/ 2>&1 || echo unreachable"
    )


def test_without_wheels_a_host_with_no_index_fails_install_naming_the_setting(
    fleet: Fleet, repo: AppRepo
) -> None:
    done = fab(fleet, repo, hosts="web1", settings={"WHEELS": "index"})
    assert done.returncode != 0
    assert "WHEELS=local" in done.stderr + done.stdout, done.stdout + done.stderr
    assert "FAIL install dependencies" in done.stdout
    assert current(fleet, "web1") == ""  # nothing went live
    assert get(url("web1", "/"))[2] == {}  # still the host's default site (plain text)


# ----------------------------------------------------------------------------- deploys across three
# hosts


def test_first_deploy_and_a_code_change_drop_nothing_on_any_host(
    fleet: Fleet, repo: AppRepo
) -> None:
    with load_on_every_host() as loads:
        first = fab(fleet, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert {current(fleet, h) for h in HOSTS} == {served(h) for h in HOSTS}
    assert len({current(fleet, h) for h in HOSTS}) == 1
    assert all(load.result().failed == 0 for load in loads.values()), {
        h: lo.result().samples for h, lo in loads.items()
    }

    repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    with load_on_every_host() as loads:
        done = fab(fleet, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    for h, load in loads.items():
        result = load.result()
        assert result.total > 50 and result.failed == 0, (h, result.summary(), result.samples)
        assert get(url(h, "/api/ai/x"))[2]["version"] == "2"
        assert "python: hup" in row(done.stdout, h) and " ok " in row(done.stdout, h)
    releases_live = {current(fleet, h) for h in HOSTS}
    assert len(releases_live) == 1 and releases_live.pop().endswith(
        repo.git("rev-parse", "HEAD")[:12]
    )
    assert "Fleet consistent: all 3 hosts serve" in done.stdout
    ids = {audit(fleet, h)[-1]["deploy_id"] for h in HOSTS}
    assert len(ids) == 1 and ids.pop() in done.stdout  # one deploy id, in every host's audit record


def test_a_no_op_on_three_hosts_changes_nothing_and_a_dry_run_plans_each(
    fleet: Fleet, repo: AppRepo
) -> None:
    """What a no-op costs on one host and on three (its reads run side by side) is bench/fleet.py's
    figure."""
    pids = {h: pm2_pids(fleet, h) for h in HOSTS}
    done = fab(fleet, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Nothing to deploy on any of the 3 hosts." in done.stdout
    one = fab(fleet, repo, hosts="web1")
    assert one.returncode == 0 and "Nothing to deploy" in one.stdout
    assert {h: pm2_pids(fleet, h) for h in HOSTS} == pids
    repo.edit("app.py", 'VERSION = "2"', 'VERSION = "2b"', "a change to plan, not to deploy")
    dry = fab(fleet, repo, "--dry-run")
    assert dry.returncode == 0 and "Dry run: nothing was changed on any host." in dry.stdout, (
        dry.stdout + dry.stderr
    )
    assert all(f"{h} | Plan for ubuntu@198.18.{NUMBERS[h]}.2:22:" in dry.stdout for h in HOSTS)
    assert all(f"{h} |   python    pm2 sendSignal SIGHUP" in dry.stdout for h in HOSTS)
    repo.edit("app.py", 'VERSION = "2b"', 'VERSION = "2"', "back")
    fleet_id = re.search(r"Fleet deploy (\S+):", done.stdout).group(1)
    assert all(
        any(r.get("deploy_id") == fleet_id and r["result"] == "unchanged" for r in audit(fleet, h))
        for h in HOSTS
    )


def test_a_commit_failing_only_on_web2_is_rolled_back_everywhere(
    fleet: Fleet, repo: AppRepo
) -> None:
    before = snapshot(fleet)
    old = before["web1"][0]
    # A file of this host's own, outside the releases (the app's .env belongs to each release now).
    host_sh(fleet, "web2", "echo REGION=broken > /home/ubuntu/region")
    repo.edit("app.py", HEALTH_OLD, HEALTH_BROKEN, "health fails through Nginx where REGION=broken")
    repo.edit("app.py", 'VERSION = "2"', 'VERSION = "3"', "v3")
    # The hook runs as the apps' own account: its ~ is that account's home, and ubuntu's deploy root
    # is /home/ubuntu's.
    hook = (
        'echo "$DEPLOY_RELEASE on $(basename "$(readlink /home/ubuntu/signalcraft/current)")" >>'
        " ~/before-switch.log"
    )
    told = WebhookReceiver()
    notify = {"NOTIFY_URL": told.url, "NOTIFY_FORMAT": "json"}
    with load_on_every_host() as loads:
        done = fab(fleet, repo, settings={"BEFORE_SWITCH": hook, **notify})
    told.close()
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert all(load.result().failed == 0 for load in loads.values()), {
        h: lo.result().samples for h, lo in loads.items()
    }
    # web1 switched first and was rolled back; web2 failed its gate and was rolled back; web3 was
    # never switched
    assert "rolled back" in row(done.stdout, "web1") and "rolled back" in row(done.stdout, "web2")
    assert "not reached, unchanged" in row(done.stdout, "web3")
    assert "Health check failed" in row(done.stdout, "web2")
    assert f"Fleet consistent: all 3 hosts serve {old}" in done.stdout
    assert (
        "web1 | ok   switch current" in done.stdout
        and "web3 | ok   switch current" not in done.stdout
    )
    after = snapshot(fleet)
    for h in HOSTS:
        assert after[h][0] == old and served(h) == old
    assert after["web3"][1] == before["web3"][1]  # web3's processes were never touched
    # BEFORE_SWITCH ran once for the fleet, on web1, while web1 still served the old release
    said = host_sh(fleet, "web1", "cat ~/before-switch.log", user=APP_USER).split()
    assert said == [after["web1"][2].difference(before["web1"][2]).pop(), "on", old]
    for h in ("web2", "web3"):
        assert (
            host_sh(
                fleet, h, "cat ~/before-switch.log 2>/dev/null || true", user=APP_USER, check=False
            )
            == ""
        )
    ids = {audit(fleet, h)[-1]["deploy_id"] for h in HOSTS}
    assert len(ids) == 1
    assert {audit(fleet, h)[-1]["result"] for h in HOSTS} == {"rolled back", "failed before switch"}
    # One notification per event for the whole fleet, naming every host and the failing one's step
    assert [(b["status"], len(b["hosts"])) for b in told.bodies] == [
        ("started", 3),
        ("rolled back", 3),
    ]
    assert told.bodies[-1]["step"] == "web2: check health", told.bodies[-1]


def test_held_lock_unreachable_host_or_unknown_key_change_nothing(
    fleet: Fleet, repo: AppRepo, tmp_path: Path
) -> None:
    before = snapshot(fleet)
    # another deploy holds web3's lock: a flock on the lock file, by a process we can end by its pid
    web3 = fleet.hosts["web3"]
    with on_this_machine():
        holder = subprocess.Popen(
            [
                "ssh",
                *web3.ssh_options(),
                "-l",
                "admin",
                web3.host,
                (
                    f"sudo -n -u ubuntu bash -c 'echo $$; exec flock -o {ROOT}/.deploy/lock sleep"
                    " 60 </dev/null >/dev/null 2>&1'"
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
    assert holder.stdout is not None
    pid = int(holder.stdout.readline())
    try:
        time.sleep(0.5)
        locked = fab(fleet, repo)
    finally:
        host_sh(fleet, "web3", f"kill {pid}", user="root", check=False)
        holder.wait(10)
    assert locked.returncode == 75, locked.stdout + locked.stderr
    assert "Nothing was changed on any host" in locked.stderr and "web3" in locked.stderr
    assert snapshot(fleet) == before

    # web3 unreachable: a route that answers "no route to host" for its address (traffic leaves
    # nothing)
    with on_this_machine():
        subprocess.run(["ip", "route", "add", "unreachable", f"{web3.host}/32"], check=True)
    try:
        gone = fab(fleet, repo)
    finally:
        with on_this_machine():
            subprocess.run(["ip", "route", "del", "unreachable", f"{web3.host}/32"], check=True)
    assert gone.returncode == 3, gone.stdout + gone.stderr
    assert (
        "Nothing was changed on any host" in gone.stderr
        and f"Cannot connect to ubuntu@{web3.host}:22" in gone.stderr
    )
    assert snapshot(fleet) == before

    partial = tmp_path / "known_hosts"
    partial.write_text(
        "".join(
            line + "\n"
            for line in Path(fleet.known_hosts).read_text().splitlines()
            if not line.startswith((f"{web3.host} ", f"[{web3.host}]:"))
        )
    )
    # The SSH config's UserKnownHostsFile is read too (KNOWN_HOSTS adds to it): point it at the
    # partial file.
    config = tmp_path / "ssh_config"
    config.write_text(Path(fleet.ssh_config).read_text().replace(fleet.known_hosts, str(partial)))
    assert str(partial) in config.read_text()
    unknown = fab(fleet, repo, known_hosts=str(partial), ssh_config=str(config))
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    assert f"Host key for ubuntu@{web3.host}:22 is unknown" in unknown.stderr
    assert snapshot(fleet) == before


def test_rollback_returns_every_host_to_one_release(fleet: Fleet, repo: AppRepo) -> None:
    live = current(fleet, "web1")
    only_on_web1 = sorted(
        releases(fleet, "web1") - releases(fleet, "web2")
    )  # the first test's failed release
    assert only_on_web1
    refused = fab(fleet, None, "--to", only_on_web1[0], task="rollback")
    assert refused.returncode != 0 and "not on web2, web3" in refused.stderr, (
        refused.stdout + refused.stderr
    )
    assert {current(fleet, h) for h in HOSTS} == {live}

    told = WebhookReceiver()
    with load_on_every_host() as loads:
        done = fab(
            fleet, None, task="rollback", settings={"NOTIFY_URL": told.url, "NOTIFY_FORMAT": "json"}
        )
    told.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(load.result().failed == 0 for load in loads.values())
    back = {current(fleet, h) for h in HOSTS}
    assert len(back) == 1 and back != {live}
    assert all(get(url(h, "/api/ai/x"))[2]["version"] == "1" for h in HOSTS)
    live = back.pop()
    assert [(b["event"], b["status"], b["release"]) for b in told.bodies] == [
        ("rollback", "succeeded", live)
    ]
    listing = fab(fleet, None, task="releases")
    assert listing.returncode == 0 and f"Fleet consistent: every host runs {live}" in listing.stdout
    status = fab(fleet, None, "--json", task="status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [h["current"]["release"] for h in json.loads(status.stdout)["hosts"]] == [live] * 3


def test_on_failure_keep_leaves_the_switched_hosts(fleet: Fleet, repo: AppRepo) -> None:
    before = snapshot(fleet)
    with load_on_every_host() as loads:
        done = fab(fleet, repo, "--on-failure", "keep")
    assert done.returncode != 0
    assert all(load.result().failed == 0 for load in loads.values())
    new = repo.git("rev-parse", "HEAD")[:12]
    assert "kept (switched)" in row(done.stdout, "web1") and current(fleet, "web1").endswith(new)
    assert "rolled back" in row(done.stdout, "web2") and current(fleet, "web2") == before["web2"][0]
    assert (
        "not reached, unchanged" in row(done.stdout, "web3")
        and snapshot(fleet)["web3"][:2] == before["web3"][:2]
    )
    assert "Fleet NOT consistent" in done.stdout
    assert "kept (--on-failure keep)" in done.stderr


CLOCK = """import os, time
from pathlib import Path

ticks = Path.home() / "fleet-ticks.log"
while True:
    with ticks.open("a") as fh:
        fh.write(f"{int(time.time())} {os.getpid()}\\n")
    time.sleep(1)
"""


def test_a_singleton_runs_on_the_first_host_only(fleet: Fleet, repo: AppRepo) -> None:
    """A Procfile's scheduler (SINGLETONS' default: `clock`) ticks on web1 alone; web2's own copy,
    started by hand, is stopped."""
    repo.git("reset", "-q", "--hard", repo.git("rev-list", "--max-parents=0", "HEAD").strip())
    (repo.path / "clock.py").write_text(CLOCK)
    (repo.path / "Procfile").write_text("clock: python clock.py\n")
    repo.git("add", "clock.py", "Procfile")
    repo.git("commit", "-qm", "a clock")
    for h in HOSTS:
        host_sh(fleet, h, "rm -f ~/fleet-ticks.log", user=APP_USER)
    host_sh(fleet, "web2", "pm2 start sleep --name signalcraft-clock -- 600", user=APP_USER)
    done = fab(fleet, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(2.5)
    lines = {
        h: host_sh(fleet, h, "cat ~/fleet-ticks.log 2>/dev/null || true", user=APP_USER)
        for h in HOSTS
    }
    assert len(lines["web1"].splitlines()) >= 2, lines
    assert lines["web2"] == lines["web3"] == "", lines
    assert "signalcraft-clock" in pm2_pids(fleet, "web1")
    assert all("signalcraft-clock" not in pm2_pids(fleet, h) for h in ("web2", "web3"))
