"""Host keys are verified, secrets stay secret, files are narrow, bad input stops at the door.

Every check runs the documented front door (`fab -H ubuntu@<host>:2222 ...`) and looks at what a
user would see (exit code, one message) and at the host (files, modes, listeners, `ps`).
"""

from __future__ import annotations

import inspect
import os
import secrets
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_HOME,
    APP_USER,
    REPO,
    AppRepo,
    Profile,
    clean_host,
    fab,
    get,
    pm2_apps,
    sh,
)
from tests.e2e.hosts import on_this_machine

SEC = Profile("sec", "/home/ubuntu/sec", 8911, 3911, 8091)
SECRET = f"s3cr3t-{secrets.token_hex(12)}"
FAB = shutil.which("fab") or "fab"


def run_fab(
    sb,
    p: Profile,
    repo: AppRepo | None,
    *args: str,
    task: str = "deploy",
    env: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    host: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`fab` as a user runs it, with full control of the environment (`drop` removes variables)."""
    cmd = [FAB, "-H", host or sb.target, "-i", sb.key, task]
    if repo is not None:
        cmd += ["--source-dir", str(repo.path)]
    for key, value in p.settings().items():
        cmd += ["--set", f"{key}={value}"]
    base = {k: v for k, v in os.environ.items() if k not in drop}
    with on_this_machine():
        return subprocess.run(
            cmd + list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
            env={**base, **(env or {})},
        )


def tree(p: Profile) -> str:
    """Every file under the deploy root and the profile's Nginx files, with size and mtime (empty if
    none)."""
    return sh(
        f"find {p.root} /etc/nginx/sites-available /etc/nginx/sites-enabled \\( -name '{p.app}*' -o"
        f" -path '{p.root}*' \\) -printf '%p %s %T@\\n' 2>/dev/null | sort",
        check=False,
    ).stdout


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


class PsSampler:
    """Samples every process's command line (`ps -eo args`) while a deploy runs; keeps lines holding
    `needle`."""

    def __init__(self, needle: str):
        self.needle, self.hits, self.samples = needle, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.samples += 1
            self.hits += [line for line in out.splitlines() if self.needle in line]
            time.sleep(0.01)

    def __enter__(self) -> PsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Live:
    repo: AppRepo
    profile: Profile
    env_file: Path
    first: subprocess.CompletedProcess[str]
    ps_hits: list[str] = field(default_factory=list)
    ps_samples: int = 0


@pytest.fixture(scope="module")
def live(sandbox, tmp_path_factory) -> Live:
    """A first deploy under the sec profile with the app's secrets in APP_ENV_FILE, `ps` sampled
    throughout."""
    base = tmp_path_factory.mktemp("sec")
    env_file = base / "app.env"
    env_file.write_text(f"SECRET_TOKEN={SECRET}\nDATABASE_URL=postgres://app:{SECRET}@db/app\n")
    profile = replace(SEC, extra={"APP_ENV_FILE": str(env_file)})
    repo = AppRepo(base / "app")
    clean_host(profile)
    with PsSampler(SECRET) as sampler:
        first = fab(sandbox, profile, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    yield Live(repo, profile, env_file, first, sampler.hits, sampler.samples)
    clean_host(profile)


# ----------------------------------------------------------------------------- 6. host keys

TASKS = [
    "deploy",
    "status",
    "releases",
    "rollback",
    "unlock",
    "nginx-check",
    "pm2-reload",
    "install",
    "render-configs",
    "logs",
]


def parallel_fab(
    sb,
    p: Profile,
    repo: AppRepo | None,
    tasks: list[str],
    env: dict[str, str],
    drop=("KNOWN_HOSTS",),
):
    """Run each task at once (they only connect and are refused, so they can share the time)."""
    procs = {}
    for task in tasks:
        cmd = [FAB, "-H", sb.target, "-i", sb.key, task]
        if task == "deploy" and repo is not None:
            cmd += ["--source-dir", str(repo.path)]
        for key, value in p.settings().items():
            cmd += ["--set", f"{key}={value}"]
        base = {k: v for k, v in os.environ.items() if k not in drop}
        with on_this_machine():
            procs[task] = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=str(REPO),
                env={**base, **env},
            )
    out = {}
    for task, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[task] = (proc.returncode, stdout + stderr)
    return out


def make_empty_home(folder: Path) -> dict[str, str]:
    """HOME with an empty ~/.ssh/known_hosts, and KNOWN_HOSTS pointing at an empty file."""
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/known_hosts").write_text("")
    (folder / "empty_known_hosts").write_text("")
    return {"HOME": str(home), "KNOWN_HOSTS": str(folder / "empty_known_hosts")}


@pytest.fixture
def empty_home(tmp_path) -> dict[str, str]:
    return make_empty_home(tmp_path)


@pytest.fixture(scope="module")
def unknown_key_runs(sandbox, live, tmp_path_factory):
    """Every task run once against a host whose key is in no known_hosts file; the host's listing
    around it."""
    home = make_empty_home(tmp_path_factory.mktemp("unknown"))
    before = tree(live.profile)
    results = parallel_fab(sandbox, live.profile, live.repo, TASKS, home)
    return results, home, before, tree(live.profile)


def test_unknown_host_key_is_refused_by_every_task_and_the_hint_works(
    sandbox, live, unknown_key_runs
):
    results, home, before, after = unknown_key_runs
    for task, (code, out) in results.items():
        assert code == 3, (task, out)
        assert f"Host key for {sandbox.target} is unknown" in out, (task, out)
        assert f"ssh-keyscan -p 2222 {sandbox.host} >> ~/.ssh/known_hosts" in out, (task, out)
        assert out.strip().count("\n") == 0 or task == "deploy", (
            task,
            out,
        )  # one line (deploy also prints its step)
        no_traceback(out)
    assert "--accept-new-host" in results["deploy"][1]
    assert after == before  # the host is untouched
    # The hint works: ssh-keyscan into ~/.ssh/known_hosts, and the same command is accepted.
    scanned = sh(f"ssh-keyscan -p 2222 {sandbox.host} 2>/dev/null", check=False).stdout
    assert "ssh-ed25519" in scanned
    Path(home["HOME"], ".ssh/known_hosts").write_text(scanned)
    try:
        status = run_fab(sandbox, live.profile, None, task="status", env=home)
    finally:
        Path(home["HOME"], ".ssh/known_hosts").write_text("")
    assert status.returncode == 0, status.stdout + status.stderr


def test_the_flags_named_in_the_unknown_host_message_exist_on_each_task(unknown_key_runs):
    from signalcraft_deploy import ns

    results = unknown_key_runs[0]
    takes = {
        task: {
            "--" + name.replace("_", "-")
            for name in inspect.signature(ns.tasks[task].body).parameters
        }
        for task in TASKS
    }
    missing = [
        f"{task}: {flag}"
        for task, (_code, out) in results.items()
        for flag in ("--accept-new-host", "--known-hosts")
        if flag in out and flag not in takes[task]
    ]
    assert not missing, "the message suggests flags the task does not take: " + ", ".join(missing)


def test_accept_new_host_records_the_key_in_the_given_file_and_proceeds(
    sandbox, live, empty_home, tmp_path
):
    given = tmp_path / "given_known_hosts"
    result = run_fab(
        sandbox,
        live.profile,
        live.repo,
        "--accept-new-host",
        "--known-hosts",
        str(given),
        env={"HOME": empty_home["HOME"]},
        drop=("KNOWN_HOSTS",),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Added host key for [{sandbox.host}]:2222 (ssh-ed25519) to {given}" in result.stdout
    host_key = sandbox.host_key.split()
    recorded = given.read_text().split()
    assert recorded[0] == f"[{sandbox.host}]:2222" and recorded[1:3] == host_key
    assert (
        Path(empty_home["HOME"], ".ssh/known_hosts").read_text() == ""
    )  # only the file it was given
    # From now on the host is known through that file, without --accept-new-host.
    again = run_fab(
        sandbox,
        live.profile,
        live.repo,
        "--known-hosts",
        str(given),
        env={"HOME": empty_home["HOME"]},
        drop=("KNOWN_HOSTS",),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to deploy" in again.stdout


def test_changed_host_key_is_refused(sandbox, live, empty_home, tmp_path):
    sh(f"ssh-keygen -q -t ed25519 -N '' -f {tmp_path}/other")
    other = (tmp_path / "other.pub").read_text().split()
    Path(empty_home["KNOWN_HOSTS"]).write_text(f"[{sandbox.host}]:2222 {other[0]} {other[1]}\n")
    before = tree(live.profile)
    results = parallel_fab(
        sandbox, live.profile, live.repo, ["deploy", "status", "unlock"], empty_home
    )
    results["deploy --accept-new-host"] = (lambda r: (r.returncode, r.stdout + r.stderr))(
        run_fab(sandbox, live.profile, live.repo, "--accept-new-host", env=empty_home)
    )
    for task, (code, out) in results.items():
        assert code == 3, (task, out)
        assert f"Host key for {sandbox.target} has CHANGED" in out, (task, out)
        assert f"ssh-keygen -R '[{sandbox.host}]:2222'" in out, (task, out)
        no_traceback(out)
    assert tree(live.profile) == before
    assert (
        Path(empty_home["KNOWN_HOSTS"]).read_text().count("\n") == 1
    )  # --accept-new-host never replaces a key


# ----------------------------------------------------------------------------- 7. secrets


def test_secrets_never_appear_in_output_logs_audit_ps_or_rendered_files(sandbox, live):
    p = live.profile
    root = Path(p.root)
    assert SECRET not in live.first.stdout + live.first.stderr
    assert live.ps_samples > 10 and live.ps_hits == [], live.ps_hits
    # The app gets them: the release's own .env, 0640, ubuntu's in the apps' account's group (a
    # secret belongs to its release, and only the apps read it).
    env = (root / "current").resolve() / ".env"
    assert env.read_text() == live.env_file.read_text()
    stat = env.stat()
    assert oct(stat.st_mode & 0o777) == "0o640"
    assert (stat.st_uid, stat.st_gid) == (
        int(sh("id -u ubuntu").stdout),
        int(sh(f"id -g {APP_USER}").stdout),
    )
    assert not (root / "current/.env").is_symlink() and not (root / "shared/.env").exists()
    # Nowhere else: not in the audit log, the rendered PM2 file, any other file of the deploy, Nginx
    # or PM2's files.
    assert SECRET not in (root / ".deploy/audit.log").read_text()
    assert SECRET not in (root / "current/ecosystem.config.js").read_text()
    found = sh(
        f"grep -rlF -- {SECRET} {p.root} /etc/nginx /home/ubuntu/.pm2 {APP_HOME}/.pm2; true"
    ).stdout.split()
    # ... but the same values as JSON beside it, which the apps' processes read at their start
    # (same owner, group and mode).
    values = env.parent / ".signalcraft/env.json"
    assert sorted(found) == sorted([str(env), str(values)]), found
    assert (values.stat().st_uid, values.stat().st_gid, values.stat().st_mode & 0o777) == (
        stat.st_uid,
        stat.st_gid,
        0o640,
    )
    # Nor in what the tool prints about the host.
    for task, args in (
        ("status", ("--json",)),
        ("status", ()),
        ("releases", ()),
        ("logs", ()),
        ("nginx-check", ()),
        ("deploy", ("--dry-run",)),
    ):
        result = fab(sandbox, p, live.repo if task == "deploy" else None, *args, task=task)
        assert result.returncode == 0, (task, result.stdout + result.stderr)
        assert SECRET not in result.stdout + result.stderr, (task, args)


# ----------------------------------------------------------------------------- 8. modes and
# listeners


def listeners(port: int) -> list[str]:
    return [
        line.split()[3]
        for line in sh(f"ss -ltnH '( sport = :{port} )'").stdout.splitlines()
        if line.strip()
    ]


def test_files_are_not_world_writable_and_gunicorn_is_on_loopback_only(sandbox, live):
    p = live.profile
    site = p.settings()["NGINX_SITE"]
    writable = sh(f"find {p.root} {site} -perm -o+w ! -type l").stdout.split()
    assert writable == [], writable
    assert (
        oct(Path(site).stat().st_mode & 0o777) == "0o640" and Path(site).stat().st_uid == 0
    )  # root reads it; no one else
    addresses = listeners(p.bind)
    assert addresses and all(a.startswith("127.") for a in addresses), addresses


def test_a_public_gunicorn_bind_is_refused_up_front_and_caught_by_nginx_check(sandbox, live):
    p = live.profile
    before = tree(p)
    refused = fab(sandbox, p, live.repo, "--set", "GUNICORN_BIND=0.0.0.0:8921")
    out = refused.stdout + refused.stderr
    assert refused.returncode == 2, out
    assert "GUNICORN_BIND (flag --set): found '0.0.0.0:8921'; expected a loopback address" in out
    assert "ALLOW_PUBLIC_BIND=true" in out
    no_traceback(out)
    assert tree(p) == before
    try:
        public = fab(
            sandbox,
            p,
            live.repo,
            "--set",
            "GUNICORN_BIND=0.0.0.0:8921",
            "--set",
            "ALLOW_PUBLIC_BIND=true",
        )
        assert public.returncode == 0, public.stdout + public.stderr
        assert "0.0.0.0:8921" in listeners(8921)
        # The same host checked with the loopback settings (ALLOW_PUBLIC_BIND=false): nginx-check
        # names the address.
        check = fab(sandbox, p, None, "--set", "GUNICORN_BIND=127.0.0.1:8921", task="nginx-check")
        out = check.stdout + check.stderr
        assert check.returncode != 0, out
        assert "Gunicorn's port 8921 is reachable on 0.0.0.0:8921, not only on loopback" in out
        no_traceback(out)
    finally:
        back = fab(sandbox, p, live.repo)
    assert back.returncode == 0, back.stdout + back.stderr
    assert listeners(8921) == []
    assert all(a.startswith("127.") for a in listeners(p.bind))
    assert get(p.url("/api/ai/x"))[0] == 200


# ----------------------------------------------------------------------------- 9. bad input,
# through the front door Every bad value's message is tests/unit/test_bad_input.py's (no host is
# reached: settings are checked first). Here: a bad input given to a deploy whose host is real
# leaves that host as it was.


def test_bad_input_stops_before_the_host_is_touched(sandbox, tmp_path):
    app = AppRepo(tmp_path / "app")
    before = tree(SEC)
    result = fab(sandbox, SEC, app, "--set", "NODE_PORT=70000")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert (
        out.strip()
        == "Settings error: NODE_PORT (flag --set): found '70000'; expected a whole number from 1"
        " to 65535."
    ), out
    assert tree(SEC) == before


# ----------------------------------------------------------------------------- sudo asking for a
# password

PW_USER = "scpwtest"
PW = Profile(PW_USER, f"/home/{PW_USER}/app", 8931, 3931, 8093)


@pytest.fixture
def password_sudo_user(sandbox):
    """A second login on the sandbox host whose sudo asks for a password (ubuntu's own sudoers is
    left alone: other deploys share that user). Removed afterwards with everything it started."""
    sudoers = f"/etc/sudoers.d/91-{PW_USER}-password"
    try:
        sh(f"useradd --create-home --shell /bin/bash {PW_USER} && usermod -p '*' {PW_USER}")
        sh(
            f"install -d -o {PW_USER} -g {PW_USER} -m 0700 /home/{PW_USER}/.ssh && install -o"
            f" {PW_USER} -g {PW_USER} -m 0600 {sandbox.key}.pub"
            f" /home/{PW_USER}/.ssh/authorized_keys"
        )
        sh(
            f"t=$(mktemp) && printf '%s ALL=(ALL) ALL\\n' {PW_USER} > $t && visudo -cqf $t &&"
            f" install -m 0440 $t {sudoers}; rm -f $t"
        )
        assert (
            sh(f"visudo -cq && sudo -u {PW_USER} sudo -n true", check=False).returncode != 0
        )  # a password is required
        yield f"{PW_USER}@{sandbox.host}:{sandbox.port}"
    finally:
        sh(f"rm -f {sudoers}", check=False)
        pidfile = Path(f"/home/{PW_USER}/.pm2/pm2.pid")
        if pidfile.exists():  # the PM2 daemon `pm2 jlist` started for this user
            sh(f"kill {int(pidfile.read_text())}", check=False)
        for _ in range(50):
            pids = sh(f"ps -u {PW_USER} -o pid=", check=False).stdout.split()
            if not pids:
                break
            time.sleep(0.2)
        for pid in sh(f"ps -u {PW_USER} -o pid=", check=False).stdout.split():
            sh(f"kill -9 {pid}", check=False)
        sh(f"userdel -r {PW_USER}", check=False)
        sh(
            f"rm -rf /etc/nginx/sites-available/{PW_USER}* /etc/nginx/sites-enabled/{PW_USER}",
            check=False,
        )
        assert sh("visudo -cq", check=False).returncode == 0


def test_sudo_that_asks_for_a_password_stops_the_deploy_with_a_clear_message(
    sandbox, live, password_sudo_user
):
    result = run_fab(
        sandbox, PW, live.repo, host=password_sudo_user, env={"KNOWN_HOSTS": sandbox.known_hosts}
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    no_traceback(out)
    # Nothing changed: only the lock file, no release, no Nginx site, no PM2 app.
    files = sh(f"cd {PW.root} && find . -mindepth 1 | sort", check=False).stdout.split()
    assert files == ["./.deploy", "./.deploy/lock"], files
    assert not Path(f"/etc/nginx/sites-available/{PW_USER}").exists()
    assert pm2_apps(PW_USER, user=PW_USER) == {}
    # One clear message: passwordless sudo is what is missing, and nothing else is blamed.
    assert "passwordless sudo" in out and "NOPASSWD" in out, out
    assert "apt install nginx" not in out, out
