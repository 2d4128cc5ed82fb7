"""What an operator sees — GitHub Actions output, status (text and --json), releases, logs."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import APP_HOME, APP_USER, REPO, AppRepo, Profile, clean_host, fab, sh

OP = Profile("op", "/home/ubuntu/op", 8951, 3951, 8095)


@pytest.fixture(scope="module")
def deployed(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("op") / "app")
    clean_host(OP)
    yield repo
    clean_host(OP)


def test_github_actions_output(sandbox, deployed, tmp_path):
    summary = tmp_path / "summary.md"
    result = fab(
        sandbox,
        OP,
        deployed,
        env={
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_ACTOR": "octocat",
            "GITHUB_RUN_ID": "4242",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("::group::") == out.count("::endgroup::") >= 8
    assert "::group::trial run" in out and "\x1b[" not in out  # no colour codes in CI logs
    text = summary.read_text()
    assert "Deploy succeeded" in text and "| trial run |" in text and "rollback" in text
    audit = [json.loads(line) for line in open(f"{OP.root}/.deploy/audit.log")]
    assert (
        audit[-1]["by"]["github_actor"] == "octocat" and audit[-1]["by"]["github_run_id"] == "4242"
    )


def test_github_actions_failure_is_annotated(sandbox, deployed, tmp_path):
    deployed.edit("app.py", 'VERSION = "1"', 'VERSION = "1"\nimport no_such_module_abc', "broken")
    summary = tmp_path / "summary.md"
    result = fab(
        sandbox, OP, deployed, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert result.returncode != 0
    assert "::error::" in result.stdout
    assert "Deploy failed" in summary.read_text()
    deployed.git("reset", "-q", "--hard", "HEAD~1")


def test_status_text_and_json(sandbox, deployed):
    text = fab(sandbox, OP, None, task="status")
    assert text.returncode == 0, text.stdout + text.stderr
    current = open(f"{OP.root}/current/REVISION").read().strip()
    assert f"current   {current}" in text.stdout
    assert (
        "op-python" in text.stdout and "op-nodejs" in text.stdout and "nginx -t  ok" in text.stdout
    )
    uid = int(sh(f"id -u {APP_USER}").stdout)
    assert (
        f"apps run as {APP_USER} (uid {uid}), PM2 home {APP_HOME}/.pm2; deployed by ubuntu\n"
        in text.stdout
    ), text.stdout
    assert f"boot      /etc/systemd/system/pm2-{APP_USER}.service enabled;" in text.stdout, (
        text.stdout
    )
    assert (
        f"{APP_HOME}/.pm2/logs: " in text.stdout
        and f"rotated by /etc/logrotate.d/pm2-{APP_USER}" in text.stdout
    )
    assert "WARNING" not in text.stdout, text.stdout
    data = json.loads(fab(sandbox, OP, None, "--json", task="status").stdout)
    assert data["runs_as"] | {"uid": 0} == {
        "user": APP_USER,
        "uid": 0,
        "pm2_home": f"{APP_HOME}/.pm2",
        "deploy_user": "ubuntu",
        "deploy_user_saved": [],
        "unit": f"pm2-{APP_USER}.service",
        "daemon_unit": None,
    }
    assert data["current"]["release"] == current
    py = [a for a in data["apps"] if a["name"] == "op-python"][0]
    assert py["status"] == "online" and py["workers"] >= 1 and py["memory_workers_mb"] > 0
    assert all(h["status"] == 200 for h in data["health"].values())
    assert data["nginx_test_ok"] is True and data["recent"]


def test_releases_and_logs(sandbox, deployed, tmp_path):
    # The host key from --known-hosts alone (no KNOWN_HOSTS, an empty home), as for deploy: releases
    # and logs take the same connection flags (status too: tests/unit/test_cli.py).
    alone = {"KNOWN_HOSTS": "", "HOME": str(tmp_path)}
    unknown = fab(sandbox, OP, None, task="status", env=alone)
    assert unknown.returncode == 3 and "is unknown" in unknown.stderr, (
        unknown.stdout + unknown.stderr
    )
    rel = fab(sandbox, OP, None, "--known-hosts", sandbox.known_hosts, task="releases", env=alone)
    assert rel.returncode == 0, rel.stderr
    lines = rel.stdout.splitlines()
    current = open(f"{OP.root}/current/REVISION").read().strip()
    assert f"* {current}" in lines  # the live release is marked
    assert any(
        line.endswith("(bad: failed its deploy)") for line in lines
    )  # the broken commit's release
    logs = fab(
        sandbox,
        OP,
        None,
        "--lines",
        "5",
        "--known-hosts",
        sandbox.known_hosts,
        task="logs",
        env=alone,
    )
    assert logs.returncode == 0, logs.stderr
    assert "op-python" in logs.stdout
    assert (
        f"{APP_HOME}/.pm2/logs/op-python-out.log" in logs.stdout
    )  # the apps' own account's logs, through its door


def test_status_warns_when_the_apps_run_as_the_deploy_user(sandbox, deployed):
    """APP_USER=ubuntu (the deploy user): status reads the apps' side as ubuntu itself and says what
    that opens."""
    same = Profile(OP.app, OP.root, OP.bind, OP.node, OP.listen, extra={"APP_USER": "ubuntu"})
    text = fab(sandbox, same, None, task="status")
    assert text.returncode == 0, text.stdout + text.stderr
    uid = int(sh("id -u ubuntu").stdout)
    assert (
        f"apps run as ubuntu (uid {uid}), PM2 home /home/ubuntu/.pm2 (the deploy user)\n"
        in text.stdout
    ), text.stdout
    assert (
        "WARNING   the apps run as the deploy user ubuntu: code running inside them can do all"
        " ubuntu can (rewrite the releases, add a key to ~ubuntu/.ssh" in text.stdout
    ), text.stdout


def test_the_building_blocks_on_their_own(sandbox, deployed, tmp_path):
    """install, render-configs, nginx-check and pm2-reload run alone against the live release."""
    again = fab(sandbox, OP, None, task="install")
    assert again.returncode == 0, again.stderr
    assert "is up to date: nothing to install" in again.stdout
    rendered = fab(sandbox, OP, None, task="render-configs")
    assert rendered.returncode == 0 and "0 file(s) changed" in rendered.stdout
    changed = fab(
        sandbox, OP, None, "--set", "GUNICORN_TIMEOUT=99", "--dry-run", task="render-configs"
    )
    assert "-timeout = 120" in changed.stdout and "+timeout = 99" in changed.stdout
    check = fab(sandbox, OP, None, task="nginx-check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok   /api/ai/" in check.stdout and "nginx -t: ok" in check.stdout
    # nginx-check asks whether Nginx sends each route where the live release's apps are: the site
    # that release recorded (.signalcraft/site.json, what a rollback serves again), not today's
    # settings. A record naming another Gunicorn address than the running site's is a route to the
    # wrong place.
    record = Path(OP.root, "current/.signalcraft/site.json")
    kept = record.read_text()
    moved = json.loads(kept)
    moved["description"]["python"] = "127.0.0.1:8959"
    record.write_text(json.dumps(moved))
    try:
        wrong = fab(sandbox, OP, None, task="nginx-check")
    finally:
        record.write_text(kept)
    assert wrong.returncode == 1
    assert (
        "/etc/nginx/sites-enabled/op:" in wrong.stderr and "expected 127.0.0.1:8959" in wrong.stderr
    )
    reload = fab(sandbox, OP, None, task="pm2-reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert "graceful reload (SIGHUP)" in reload.stdout and "rolling reload" in reload.stdout
    # Locally, the Node.js entry is found in the working tree as a deploy finds it in the commit:
    # this repository's root holds no app, so SOURCE_DIR names the example's folder.
    local = subprocess.run(
        [
            "invoke",
            "render-configs",
            "--output",
            str(tmp_path / "out"),
            "--set",
            "SOURCE_DIR=examples/signalcraft",
        ],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert local.returncode == 0, local.stderr
    assert "Node.js entry point: server.js (package.json" in local.stdout, local.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ecosystem.config.js",
        "gunicorn.conf.py",
        "nginx-site.conf",
    ]


def test_pm2_list_over_the_daemon_socket_matches_pm2_jlist_and_falls_back(sandbox, deployed):
    """The facts read asks PM2's daemon over its socket (no CLI start-up); it must see what `pm2
    jlist` sees, and where it cannot (no daemon under that PM2_HOME, a stale socket) the shell runs
    `pm2 jlist`. The apps' PM2 is their own account's (APP_USER), asked as it."""
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.host.facts import PM2_RPC_JS, parse_pm2_jlist, pm2_list_shell

    def as_user(cmd: str, env: str = "", user: str = "ubuntu") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sudo", "-u", user, "-H", "env", *env.split(), "sh", "-c", cmd],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )

    helper = as_user(f'node -e {shlex.quote(PM2_RPC_JS)} "$(command -v pm2)" list', user=APP_USER)
    assert helper.returncode == 0, helper.stderr
    jlist = as_user("pm2 jlist", user=APP_USER)
    fast, ok = parse_pm2_jlist(helper.stdout)
    slow, _ = parse_pm2_jlist(jlist.stdout)
    assert ok and {(p.name, p.pid, p.status) for p in fast} == {
        (p.name, p.pid, p.status) for p in slow
    }
    assert any(p.name == "op-python" and p.status == "online" for p in fast)

    shell = pm2_list_shell(load_settings(environ={}))
    stale = as_user(
        'rm -rf /tmp/pm2-stale && mkdir /tmp/pm2-stale && python3 -c "import socket; '
        "socket.socket(socket.AF_UNIX).bind('/tmp/pm2-stale/rpc.sock')\" && "
        + shell
        + "; pm2 kill >/dev/null",
        env="PM2_HOME=/tmp/pm2-stale",
    )
    procs, readable = parse_pm2_jlist(stale.stdout)
    assert readable and procs == []  # `pm2 jlist` answered: a fresh daemon there, with no apps


def test_pm2_delete_over_the_daemon_socket_stops_and_removes_the_app(sandbox, deployed):
    """Temporary apps (trial, handover) are deleted through PM2's socket: the processes end, PM2
    forgets them, an app that is not there is an error, and where the socket cannot be used the CLI
    does it."""
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.host.pm2 import delete_command

    s = load_settings(environ={})

    def as_ubuntu(cmd: str, env: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sudo", "-u", "ubuntu", "-H", "env", *env.split(), "sh", "-c", cmd],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def pids_of(name: str, env: str = "") -> list[int]:
        from signalcraft_deploy.host.facts import parse_pm2_jlist

        procs, _ = parse_pm2_jlist(as_ubuntu("pm2 jlist", env).stdout)
        return [p.pid for p in procs if p.name == name]

    started = as_ubuntu(
        "pm2 start /bin/sleep --name op-sleeper-a -- 300 >/dev/null && "
        "pm2 start /bin/sleep --name op-sleeper-b -- 300 >/dev/null"
    )
    assert started.returncode == 0, started.stderr
    pids = pids_of("op-sleeper-a") + pids_of("op-sleeper-b")
    assert len(pids) == 2
    gone = as_ubuntu(delete_command(s, "op-sleeper-a", "op-sleeper-b"))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert pids_of("op-sleeper-a") == [] and pids_of("op-sleeper-b") == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert as_ubuntu(delete_command(s, "op-no-such-app")).returncode != 0

    # A PM2 whose client modules the helper cannot find (here: a wrapper script): the CLI deletes
    # instead.
    wrapper = Path(
        "/tmp/signalcraft-op-pm2-wrapper"
    )  # readable by ubuntu (pytest's tmp_path is not)
    wrapper.write_text('#!/bin/sh\nexec pm2 "$@"\n')
    wrapper.chmod(0o755)
    wrapped = load_settings(environ={}, overrides={"PM2": str(wrapper)})
    assert as_ubuntu("pm2 start /bin/sleep --name op-sleeper-c -- 300 >/dev/null").returncode == 0
    assert pids_of("op-sleeper-c")
    fallback = as_ubuntu(delete_command(wrapped, "op-sleeper-c"))
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr
    assert pids_of("op-sleeper-c") == []
    wrapper.unlink()
