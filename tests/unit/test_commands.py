"""Command building, checked the way users' hosts would receive it: exact commands over a mocked SSH
session (fabric.testing), on a MockContext, and host-key policy with pytest-mock."""

from __future__ import annotations

import getpass
import re
import shlex
import signal
import subprocess
import time
from dataclasses import replace

import paramiko
import pytest
from fabric import Connection
from invoke import Context, Result
from invoke.exceptions import Exit

from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy.host import install, lock, pm2
from signalcraft_deploy.host.connect import open_host
from signalcraft_deploy.host.facts import PM2_RPC_JS
from tests.unit.conftest import mock_host

pytest_plugins = ["fabric.testing.fixtures"]


@pytest.fixture
def s():
    return load_settings(environ={}, overrides={"DEPLOY_ROOT": "/srv/my app".replace(" ", "-")})


def test_audit_log_is_read_over_ssh_and_bad_lines_skipped(remote, s):
    remote.expect(
        cmd="tail -n 5 /srv/my-app/.deploy/audit.log 2>/dev/null || true",
        out=b'{"event": "deploy", "result": "ok"}\nnot json\n',
    )
    assert lock.read_audit(Connection("host"), s, 5) == [
        {"event": "deploy", "result": "ok", "format": 2}
    ]


START = (
    'f=/srv/my-app/current/ecosystem.config.cjs; [ -e "$f" ] ||'
    " f=/srv/my-app/current/ecosystem.config.js; P=$(command -v pm2 || echo pm2) && { node -e "
    + shlex.quote(PM2_RPC_JS)
    + ' "$P" start "$f" signalcraft-python; r=$?;'  # through PM2's daemon socket, or else its CLI:
    + ' if [ $r = 3 ]; then "$P" start "$f" --only signalcraft-python; else [ $r = 0 ]; fi; }'
)


def test_pm2_start_names_one_app_from_the_current_ecosystem_file(remote, s):
    """The release's own PM2 file: ecosystem.config.cjs in an ES module package, else
    ecosystem.config.js; as the deploy user when it is the apps' own account (APP_USER, here
    signalcraft)."""
    remote.expect(cmd=START)
    pm2.start(Connection("signalcraft@host"), s, s.python_app)


def test_pm2_runs_as_the_apps_own_account_through_the_app_helper(remote, s):
    remote.expect(
        cmd=(
            "sudo -n -u signalcraft /usr/local/sbin/signalcraft-app /bin/sh -c"
            f" {shlex.quote(START)}"
        )
    )
    pm2.start(Connection("ubuntu@host"), s, s.python_app)


def test_node_reload_is_rolling_and_updates_env():
    s = load_settings(environ={})
    # MockContext answers only this exact command; any other raises NotImplementedError.
    expected = (
        'f=/home/ubuntu/signalcraft/current/ecosystem.config.cjs; [ -e "$f" ] ||'
        ' f=/home/ubuntu/signalcraft/current/ecosystem.config.js; pm2 reload "$f" --only'
        " signalcraft-nodejs --update-env --force"
    )
    pm2.reload_node(mock_host(run={expected: Result("")}), s)


@pytest.mark.parametrize(
    "code,expected",
    [
        (3, "Gunicorn is not in"),
        (4, "is too old"),
        (1, "Installing"),
    ],
)
def test_venv_install_failures_name_the_cause(s, code, expected):
    c = mock_host(
        run={
            re.compile(r"mkdir .*"): Result(""),
            re.compile(r"(?s)set -e.*"): Result("19.9.0\n", exited=code),
        },
        repeat=True,
    )
    with pytest.raises(Exit) as err:
        install.ensure_venv(
            c, s, "/srv/my-app/venvs/abc", "/srv/my-app/releases/r/requirements.txt"
        )
    assert expected in str(err.value.message)


def test_venv_script_quotes_and_builds_only_once(s):
    script = install.venv_script(
        s, "/srv/my-app/venvs/abc", "/srv/my-app/releases/r/requirements.txt"
    )
    assert "if [ ! -e /srv/my-app/venvs/abc/.ok ]; then" in script
    assert "python3 -m venv /srv/my-app/venvs/abc" in script
    assert "-r /srv/my-app/releases/r/requirements.txt" in script


def test_unknown_host_key_is_refused_with_the_fix(mocker, s):
    c = Connection("127.0.0.1", port=2222, user="ubuntu")
    mocker.patch(
        "signalcraft_deploy.host.connect.nodelay_socket"
    )  # no TCP connection: the SSH layer is what is mocked here
    mocker.patch.object(
        c,
        "open",
        side_effect=paramiko.SSHException("Server '[127.0.0.1]:2222' not found in known_hosts"),
    )
    with pytest.raises(Exit) as err:
        open_host(c, s)
    assert err.value.code == 3
    assert "unknown" in err.value.message and "ssh-keyscan -p 2222 127.0.0.1" in err.value.message
    assert isinstance(c.client._policy, paramiko.RejectPolicy)


def openssh_fingerprint(key: paramiko.PKey, tmp_path) -> str:
    pub = tmp_path / "key.pub"
    pub.write_text(f"{key.get_name()} {key.get_base64()}\n")
    return subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]


def test_changed_host_key_is_refused_with_openssh_fingerprints_and_the_right_fix(
    mocker, s, tmp_path
):
    c = Connection("127.0.0.1", port=2222, user="ubuntu")
    mocker.patch(
        "signalcraft_deploy.host.connect.nodelay_socket"
    )  # no TCP connection: the SSH layer is what is mocked here
    got, expected = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    mocker.patch.object(
        c, "open", side_effect=paramiko.BadHostKeyException("127.0.0.1", got, expected)
    )
    with pytest.raises(Exit) as err:
        open_host(c, s)
    message = err.value.message
    assert err.value.code == 3 and "Host key for ubuntu@127.0.0.1:2222 has CHANGED" in message
    assert (
        f"got ssh-rsa {openssh_fingerprint(got, tmp_path)}, expected"
        f" {openssh_fingerprint(expected, tmp_path)}" in message
    )
    assert "ssh-keygen -R '[127.0.0.1]:2222' -f " in message


def test_a_proxyjump_gateway_gets_the_same_host_key_checks_and_is_named_when_it_fails(
    mocker, s, tmp_path
):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host web\n  HostName 10.0.0.5\n  ProxyJump jump@bastion.example:2201\n"
        f"  UserKnownHostsFile {tmp_path}/hosts_a {tmp_path}/hosts_b\n"
    )
    from fabric import Config

    c = Connection("web", user="ubuntu", config=Config(runtime_ssh_path=str(config)))
    assert c.gateway is not None and c.gateway.host == "bastion.example" and c.gateway.port == 2201
    mocker.patch.object(
        c,
        "open",
        side_effect=paramiko.SSHException(
            "Server '[bastion.example]:2201' not found in known_hosts"
        ),
    )
    with pytest.raises(Exit) as err:
        open_host(c, s)
    message = err.value.message
    assert isinstance(
        c.gateway.client._policy, paramiko.RejectPolicy
    )  # Fabric's AutoAddPolicy is gone there too
    assert (
        "Host key for jump@bastion.example:2201 (the ProxyJump gateway to ubuntu@10.0.0.5:22) is"
        " unknown" in message
    )
    assert (
        f"in none of {tmp_path}/hosts_a, {tmp_path}/hosts_b" in message
    )  # UserKnownHostsFile is honoured
    assert f"ssh-keyscan -p 2201 bastion.example >> {tmp_path}/hosts_a" in message


def test_gunicorn_hup_signals_the_master_from_pm2s_pid_file_and_falls_back_to_pm2(tmp_path, s):
    """The HUP goes to the pid in PM2's pid file if that process is a Gunicorn; otherwise through
    `pm2 sendSignal`."""
    fake_pm2 = tmp_path / "pm2"
    fake_pm2.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/pm2-called\n')
    fake_pm2.chmod(0o755)
    s2 = replace(
        load_settings(environ={}, overrides={"PM2": str(fake_pm2)}), app_user=getpass.getuser()
    )  # as itself

    # A process whose command line says gunicorn and that records the HUP it gets.
    script = tmp_path / "gunicorn"
    script.write_text(
        "import signal, sys, time\nsignal.signal(signal.SIGHUP, lambda *a:"
        f" open({str(tmp_path / 'hup')!r}, 'w').write('x'))\nprint('ready',"
        " flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen(["python3", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pid_file = tmp_path / "app-0.pid"
        pid_file.write_text(str(proc.pid))
        pm2.hup_python(Context(), s2, str(pid_file))
        for _ in range(100):
            if (tmp_path / "hup").exists():
                break
            time.sleep(0.02)
        assert (tmp_path / "hup").exists() and not (tmp_path / "pm2-called").exists()
        pid_file.write_text("999999999")  # gone: PM2 is asked instead
        pm2.hup_python(Context(), s2, str(pid_file))
        assert (tmp_path / "pm2-called").read_text().split() == [
            "sendSignal",
            "SIGHUP",
            s2.python_app,
        ]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_output_excerpt_keeps_the_line_that_names_the_cause():
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "app.py", line 3',
            "    import nope",
            "ModuleNotFoundError: No module named 'nope'",
        ]
        + [f"[INFO] Booting worker with pid: {n}" for n in range(30)]
    )
    lines = pm2.output_excerpt(text)
    assert (
        lines[0] == "ModuleNotFoundError: No module named 'nope'"
        and lines[-1].endswith("pid: 29")
        and len(lines) == 17
    )
    short = "boot\nValueError: bad value\nexit"
    assert pm2.output_excerpt(short) == ["boot", "ValueError: bad value", "exit"]
