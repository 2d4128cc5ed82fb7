"""Least privilege and integrity: what root runs is not a setting's free text, `unlock --force`
never signals a stranger, a ProxyJump gateway's key is checked, bad roots and options are refused at
the door, and --dry-run with SOURCE=git fetches nothing.

Each test drives `fab -H ...` as a user would and looks at the host: files, processes, exit codes,
messages.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.conftest import LIVE, fab, sh

LP = LIVE


@pytest.fixture(scope="module")
def live(live_app):
    """The worker's live app, running this module's repository."""
    return live_app


def test_a_setting_cannot_choose_what_root_runs(sandbox, tmp_path):
    stolen = tmp_path / "shadow-copy"
    for key in ("NGINX_TEST_CMD", "NGINX_RELOAD_CMD"):
        p = replace(LP, extra={key: f"cp /etc/shadow {stolen}"})
        result = fab(sandbox, p, None, task="status")
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{key} (flag --set): found 'cp /etc/shadow {stolen}'" in result.stderr
        assert not stolen.exists()


def test_unlock_force_with_a_stale_pid_kills_nothing(sandbox, live):
    """After a reboot lock.pid can name anyone: a process of the deploy user that is not the lock
    holder survives."""
    state = Path(LP.root, ".deploy")
    bystander = subprocess.Popen(["sudo", "-u", "ubuntu", "sleep", "300"])
    try:
        time.sleep(0.3)
        pid = sh("pgrep -u ubuntu -f '^sleep 300$' | tail -1").stdout.strip()
        # A record left by a deploy that died (no flock held) and a pid that now belongs to someone
        # else.
        sh(
            f'sudo -u ubuntu sh -c \'echo {{\\"sha\\": \\"deadbeef\\"}} > {state}/lock.json; echo'
            f" {pid} > {state}/lock.pid'"
        )
        stale = fab(sandbox, LP, None, "--force", task="unlock")
        assert stale.returncode == 0, stale.stdout + stale.stderr
        assert (
            "a record was left by one that is gone" in stale.stdout and "Removed." in stale.stdout
        )
        assert not (state / "lock.json").exists() and os.path.exists(f"/proc/{pid}")
        # The flock really held, but lock.pid names a process that is not this tool's lock holder.
        holder = subprocess.Popen(
            ["sudo", "-u", "ubuntu", "flock", f"{state}/lock", "sleep", "300"]
        )
        time.sleep(0.5)
        sh(f"sudo -u ubuntu sh -c 'echo {{}} > {state}/lock.json; echo {pid} > {state}/lock.pid'")
        held = fab(sandbox, LP, None, "--force", task="unlock")
        assert held.returncode == 1, held.stdout + held.stderr
        assert (
            f"lock.pid ({pid}) is not this tool's lock holder, so nothing was stopped"
            in held.stderr
        )
        assert os.path.exists(f"/proc/{pid}") and holder.poll() is None
        holder.terminate()
        holder.wait(10)
    finally:
        bystander.terminate()
        bystander.wait(10)
        # The holder's `sleep` outlives sudo and flock and keeps the lock open: the live app's next
        # deploy needs it.
        sh(
            f"pkill -TERM -u ubuntu -xf 'sleep 300'; rm -f {state}/lock.json {state}/lock.pid",
            check=False,
        )


def test_lock_files_and_the_audit_log_are_the_deploy_users_only(sandbox, live):
    for name in ("audit.log", "lock"):
        mode = os.stat(Path(LP.root, ".deploy", name)).st_mode & 0o777
        assert mode == 0o600, f"{name}: {oct(mode)}"


def test_a_proxyjump_gateway_with_a_wrong_key_is_refused(sandbox, tmp_path):
    """The gateway (the host by its name, port 2222) has a wrong key in known_hosts; the target (its
    address) a right one."""
    known = tmp_path / "known_hosts"
    good, gw = sandbox.host_key, sandbox.name
    wrong = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    assert wrong.returncode == 0
    other = (tmp_path / "other.pub").read_text().split()[:2]
    known.write_text(f"[{sandbox.host}]:2222 {good}\n[{gw}]:2222 {' '.join(other)}\n")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host via-gateway\n  HostName {sandbox.host}\n  Port 2222\n  User ubuntu\n  IdentityFile"
        f" {sandbox.key}\n  ProxyJump ubuntu@{gw}:2222\n  UserKnownHostsFile {known}\nHost {gw}\n "
        f" IdentityFile {sandbox.key}\n  UserKnownHostsFile {known}\n"
    )
    result = subprocess.run(
        [
            "fab",
            "-S",
            str(config),
            "-H",
            "via-gateway",
            "status",
            *sum((["--set", f"{k}={v}"] for k, v in LP.settings().items()), []),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "KNOWN_HOSTS"},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    assert (
        f"Host key for ubuntu@{gw}:2222 (the ProxyJump gateway to {sandbox.target}) has CHANGED"
        in out
    )
    assert "SHA256:" in out and f"ssh-keygen -R '[{gw}]:2222' -f {known}" in out


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DEPLOY_ROOT", "/etc/."),
        ("DEPLOY_ROOT", "/."),
        ("DEPLOY_ROOT", "/home/ubuntu/.ssh"),
        ("DEPLOY_ROOT", "/proc/self"),
        ("PYTHON", "-c"),
        ("PM2", "--version"),
    ],
)
def test_roots_and_programs_that_would_be_misread_are_refused_before_the_host_is_touched(
    sandbox, key, value
):
    result = fab(sandbox, replace(LP, extra={key: value}), None, task="status")
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"{key} (flag --set): found {value!r}" in result.stderr and "Traceback" not in result.stderr
    )


def test_a_settings_file_that_is_not_utf8_is_a_clear_error(sandbox, tmp_path, live):
    env_file = tmp_path / "app.env"
    env_file.write_bytes(b"SECRET=caf\xe9\n")
    result = fab(sandbox, replace(LP, extra={"APP_ENV_FILE": str(env_file)}), live)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"{env_file} is not UTF-8 text (byte 0xe9 on line 1)" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_dry_run_with_source_git_fetches_nothing(sandbox, live, tmp_path):
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(live.path), str(bare)], check=True)
    sh(f"chmod -R a+rX {tmp_path}")
    p = replace(LP, extra={"SOURCE": "git", "REPO_URL": f"file://{bare}", "REF": "main"})
    mirror = Path(LP.root, ".deploy/repo.git")
    sh(f"rm -rf {mirror}")
    dry = fab(sandbox, p, None, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "a deploy would fetch it first. Nothing was fetched or changed." in dry.stdout
    assert not mirror.exists()


def test_a_proxyjump_gateway_with_the_right_key_carries_the_connection(sandbox, live, tmp_path):
    known = tmp_path / "known_hosts"
    good, gw = sandbox.host_key, sandbox.name
    known.write_text(f"[{sandbox.host}]:2222 {good}\n[{gw}]:2222 {good}\n")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host via-gateway\n  HostName {sandbox.host}\n  Port 2222\n  User ubuntu\n  IdentityFile"
        f" {sandbox.key}\n  ProxyJump ubuntu@{gw}:2222\n  UserKnownHostsFile {known}\nHost {gw}\n "
        f" IdentityFile {sandbox.key}\n  UserKnownHostsFile {known}\n"
    )
    result = subprocess.run(
        [
            "fab",
            "-S",
            str(config),
            "-H",
            "via-gateway",
            "releases",
            "--set",
            f"DEPLOY_ROOT={LP.root}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "KNOWN_HOSTS"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"* {Path(LP.root, 'current').resolve().name}" in result.stdout
