"""Command building, checked the way users' hosts would receive it: exact commands over a mocked SSH
session (fabric.testing), on a MockContext, and host-key policy with pytest-mock."""

from __future__ import annotations

import re

import paramiko
import pytest
from fabric import Connection
from invoke import MockContext, Result
from invoke.exceptions import Exit

from tasks import install, lock, pm2
from tasks.connect import open_host
from tasks.settings import load_settings

pytest_plugins = ["fabric.testing.fixtures"]


@pytest.fixture
def s():
    return load_settings(environ={}, overrides={"DEPLOY_ROOT": "/srv/my app".replace(" ", "-")})


def test_audit_log_is_read_over_ssh_and_bad_lines_skipped(remote, s):
    remote.expect(cmd="tail -n 5 /srv/my-app/.deploy/audit.log 2>/dev/null || true",
                  out=b'{"event": "deploy", "result": "ok"}\nnot json\n')
    assert lock.read_audit(Connection("host"), s, 5) == [{"event": "deploy", "result": "ok"}]


def test_pm2_start_names_one_app_from_the_current_ecosystem_file(remote, s):
    remote.expect(cmd="pm2 start /srv/my-app/current/ecosystem.config.js --only signalcraft-python")
    pm2.start(Connection("host"), s, s.python_app)


def test_node_reload_is_rolling_and_updates_env():
    s = load_settings(environ={})
    # MockContext answers only this exact command; any other raises NotImplementedError.
    expected = "pm2 reload /home/ubuntu/signalcraft/current/ecosystem.config.js --only signalcraft-nodejs --update-env --force"
    pm2.reload_node(MockContext(run={expected: Result("")}), s)


@pytest.mark.parametrize("code,expected", [
    (3, "Gunicorn is not in"),
    (4, "is too old"),
    (1, "Installing"),
])
def test_venv_install_failures_name_the_cause(s, code, expected):
    c = MockContext(run={re.compile(r"mkdir .*"): Result(""), re.compile(r"(?s)set -e.*"): Result("19.9.0\n", exited=code)},
                    repeat=True)
    with pytest.raises(Exit) as err:
        install.ensure_venv(c, s, "/srv/my-app/venvs/abc", "/srv/my-app/releases/r/requirements.txt")
    assert expected in str(err.value.message)


def test_venv_script_quotes_and_builds_only_once(s):
    script = install.venv_script(s, "/srv/my-app/venvs/abc", "/srv/my-app/releases/r/requirements.txt")
    assert "if [ ! -e /srv/my-app/venvs/abc/.ok ]; then" in script
    assert "python3 -m venv /srv/my-app/venvs/abc" in script
    assert "-r /srv/my-app/releases/r/requirements.txt" in script


def test_unknown_host_key_is_refused_with_the_fix(mocker, s):
    c = Connection("127.0.0.1", port=2222, user="ubuntu")
    mocker.patch.object(c, "open", side_effect=paramiko.SSHException("Server '[127.0.0.1]:2222' not found in known_hosts"))
    with pytest.raises(Exit) as err:
        open_host(c, s)
    assert err.value.code == 3
    assert "unknown" in err.value.message and "ssh-keyscan -p 2222 127.0.0.1" in err.value.message
    assert isinstance(c.client._policy, paramiko.RejectPolicy)


def test_changed_host_key_is_refused(mocker, s):
    c = Connection("127.0.0.1", port=2222, user="ubuntu")
    fake = mocker.Mock()
    fake.get_name.return_value = "ssh-ed25519"
    fake.get_fingerprint.return_value = b"\x01\x02"
    mocker.patch.object(c, "open", side_effect=paramiko.BadHostKeyException("127.0.0.1", fake, fake))
    with pytest.raises(Exit) as err:
        open_host(c, s)
    assert err.value.code == 3 and "CHANGED" in err.value.message and "ssh-keygen -R" in err.value.message
