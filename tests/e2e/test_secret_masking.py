"""The app's secrets (APP_ENV_FILE) never appear in what the tool prints or logs.

An app prints its DATABASE_URL (password included) at import; a later commit fails its import with
that URL in the traceback. `fab logs` and the failing deploy show `***` where the secret was, and
the deploy still names the cause. Own names, deploy root and ports (7801-7821) on the shared sandbox
host.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import AppRepo, Profile, clean_host, fab, get

SM = Profile("masked", "/home/ubuntu/masked", 7801, 7811, 7821)
PASSWORD = f"pw-{secrets.token_hex(10)}"
DATABASE_URL = f"postgres://app:{PASSWORD}@db.internal:5432/app"

# Appended to the example's app.py: read the release's .env (the app's own secrets) and say where it
# connects.
CONNECT = """

def _database_url() -> str:
    env = HERE / ".env"
    pairs = [line.split("=", 1) for line in env.read_text().splitlines() if "=" in line] if env.exists() else []
    return dict(pairs).get("DATABASE_URL", "")


print(f"masked connecting to {_database_url()}", flush=True)
"""
FAILS = """
import urllib.parse  # noqa: E402

raise RuntimeError(f"masked database unreachable: {_database_url()} ({urllib.parse.quote(_database_url(), safe='')})")
"""


def no_secret(text: str) -> None:
    for form in (PASSWORD, DATABASE_URL, quote(DATABASE_URL, safe="")):
        assert form not in text, text


@pytest.fixture(scope="module")
def live(sandbox, tmp_path_factory):
    """The example app, printing its DATABASE_URL at import, deployed once with that URL in
    APP_ENV_FILE."""
    base = tmp_path_factory.mktemp("masked")
    repo = AppRepo(base / "app")
    text = (repo.path / "app.py").read_text()
    (repo.path / "app.py").write_text(text + CONNECT)
    repo.git("commit", "-qam", "the app says where it connects")
    env_file = base / "app.env"
    env_file.write_text(f"DATABASE_URL={DATABASE_URL}\nFLASK_DEBUG=0\n")
    clean_host(SM)
    p = Profile(
        SM.app,
        SM.root,
        SM.bind,
        SM.node,
        SM.listen,
        extra={**SM.extra, "APP_ENV_FILE": str(env_file)},
    )
    first = fab(sandbox, p, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    no_secret(first.stdout + first.stderr)
    yield repo, p
    clean_host(SM)


def test_the_pm2_logs_the_tool_prints_show_no_secret(sandbox, live):
    repo, p = live
    shown = fab(sandbox, p, None, "--lines", "200", task="logs")
    out = shown.stdout + shown.stderr
    assert shown.returncode == 0, out
    assert "masked connecting to ***" in out, out
    no_secret(out)


def test_a_failing_trial_names_the_cause_and_shows_no_secret(sandbox, live):
    repo, p = live
    before = Path(p.root, "current").resolve().name
    text = (repo.path / "app.py").read_text()
    (repo.path / "app.py").write_text(text + FAILS)
    repo.git("commit", "-qam", "the import fails with the URL in its message")
    try:
        failed = fab(sandbox, p, repo)
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0, out
        assert "failed its trial run" in out, out
        assert "RuntimeError: masked database unreachable: *** (***)" in out, out
        no_secret(out)
        assert Path(p.root, "current").resolve().name == before
        assert get(p.url("/api/flask/x"))[0] == 200  # the live release keeps serving
        no_secret(Path(p.root, ".deploy/audit.log").read_text())
        logs = fab(sandbox, p, None, "--lines", "200", task="logs")
        assert logs.returncode == 0, logs.stdout + logs.stderr
        no_secret(logs.stdout + logs.stderr)
    finally:
        repo.git("reset", "-q", "--hard", "HEAD~1")
