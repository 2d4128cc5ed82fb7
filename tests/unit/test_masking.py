"""The one masking rule (remote/masking.py), as a table: every case runs through the client's path
(core/secrets.py, what the tool prints) and the host's (the hook program, inlined and run by python3
as the host runs it), and both must print the same line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_deploy import remote
from signalcraft_deploy.core.secrets import masker, secret_values
from signalcraft_deploy.host.hooks import VERDICT

# (the app's .env, a line the app or a hook prints, the line as the tool shows it)
CASES = [
    pytest.param(
        "DATABASE_URL=postgres://app:p@ss w0rd!@db.internal:5432/app\n",
        "could not connect to postgres://app:p@ss w0rd!@db.internal:5432/app",
        "could not connect to ***",
        id="a URL is hidden whole, not around its password",
    ),
    pytest.param(
        "DATABASE_URL=postgres://app:hunter2-db@db/app\n",
        'FATAL: password "hunter2-db" rejected',
        'FATAL: password "***" rejected',
        id="a URL's password alone",
    ),
    pytest.param(
        "DATABASE_URL=postgres://app:p@ss w0rd!@db/app\n",
        "form: p%40ss+w0rd%21 path: p%40ss%20w0rd%21 every char: postgres%3A%2F%2Fapp%3Ap%40ss%20w0rd"
        "%21%40db%2Fapp",
        "form: *** path: *** every char: ***",
        id="URL-encoded forms",
    ),
    pytest.param(
        "SECRET_KEY='s3\"cr\\et-value'\n",
        '{"secret_key": "s3\\"cr\\\\et-value"}',
        '{"secret_key": "***"}',
        id="JSON-escaped form",
    ),
    pytest.param(
        "API_TOKEN=tok%2F99-abc\n",
        "decoded: tok/99-abc",
        "decoded: ***",
        id="a URL-encoded value written decoded",
    ),
    pytest.param(
        "A_TOKEN=abcd-1234\nB_TOKEN=abcd-1234-extra\n",
        "b=abcd-1234-extra a=abcd-1234",
        "b=*** a=***",
        id="longest first",
    ),
    pytest.param(
        'export API_TOKEN="tok_123456789"\n',
        "glued: xxtok_123456789yy",
        "glued: xx***yy",
        id="glued",
    ),
    pytest.param(
        "NOTE=plain value # a comment\n",
        "note: plain value # a comment",
        "note: *** # a comment",
        id="an unquoted comment is not part of the value",
    ),
    pytest.param(
        "SHORT=abc\nPIN_SECRET=wxyz\n",
        "short abc, pin wxyz",
        "short abc, pin ***",
        id="MIN_LENGTH is 4",
    ),
    pytest.param(
        "PORT=5000\nWORKERS=4\nACCOUNT=123456789\n",
        "listening on 5000 with 4 workers for 123456789",
        "listening on 5000 with 4 workers for ***",
        id="short numbers are not secrets, long ones are",
    ),
    pytest.param(
        "FLASK_ENV=production\nSESSION_SALT=pepper\n",
        "production mode, salt pepper",
        "production mode, salt ***",
        id="a plain word only under a key that names a secret",
    ),
    pytest.param(
        "API_TOKEN=tok_123456789\n",
        "token tok_\x1b[31m123456789\x1b[0m",
        "token ***",
        id="a secret coloured in part",
    ),
    pytest.param("", "nothing to hide", "nothing to hide", id="no .env values"),
]


def client_shows(env_text: str, line: str) -> str:
    return masker(secret_values(env_text, None))(line)


def host_prints(tmp_path: Path, env_text: str, line: str) -> str:
    """The line as the hook program on the host prints it, echoed by a hook command."""
    (tmp_path / ".env").write_text(env_text)
    spec = {
        "name": "before-switch",
        "command": 'printf "%s\\n" "$MASKING_CASE"',
        "cwd": str(tmp_path),
        "env_file": str(tmp_path / ".env"),
        "env": {"MASKING_CASE": line},
        "timeout": 30,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-", json.dumps(spec)],
        input=remote.program("hook"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    out = done.stdout.splitlines()
    assert done.returncode == 0 and out[-1].startswith(VERDICT), done.stdout + done.stderr
    return "\n".join(out[:-1])


@pytest.mark.parametrize(("env_text", "line", "shown"), CASES)
def test_the_client_and_the_host_mask_alike(
    tmp_path: Path, env_text: str, line: str, shown: str
) -> None:
    assert client_shows(env_text, line) == shown
    assert host_prints(tmp_path, env_text, line) == shown
