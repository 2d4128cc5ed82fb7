"""The commands README.md and docs/ show for your own host, run as shown, in the order a user runs
them: the tool's wheel built in a copy of this checkout and installed into a venv of its own, the
example app set up with `init` (and `init --vendor`), `setup`, a dry run, a deploy, then status,
releases, logs, rollback, unlock and remove's dry run.

`your-host` is this worker's own test host through an SSH config entry in the user's home, so every
line runs verbatim (tests/unit/test_docs.py holds DOCUMENTED to the pages). What a user does
between the lines without a command (editing deploy.env for this host, EC2's `ubuntu` having full
sudo for its own `setup`) is the test's own, around the lines. The app deploys as the worker's live
app (LIVE), so this is a deploy of a new commit, not a first deploy.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_deploy import __version__
from tests.e2e.conftest import (
    EXAMPLE,
    LIVE,
    NOT_SOURCE,
    REPO,
    AppRepo,
    Sandbox,
    get,
    sh,
    ssh_config,
    users_env,
)
from tests.e2e.hosts import on_this_machine

BUILD = "pip wheel --no-deps -w dist ."
TOOL_VENV = "python3 -m venv ~/.venvs/deploy"
ACTIVATE = ". ~/.venvs/deploy/bin/activate"
INSTALL = "pip install dist/signalcraft_deploy-0.4.0-py3-none-any.whl"
TO_APP = "cd ~/your-app"
APP_VENV = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt gunicorn"
INIT = "signalcraft-deploy init"
VENDOR = "signalcraft-deploy init --vendor"
EDIT = "$EDITOR deploy.env"
FREEZE = "invoke freeze"
COMMIT = 'git add -A && git commit -m "Deploy with signalcraft-deploy"'
ADMIN_SETUP = "fab -H admin@your-host setup --user ubuntu"
SETUP = "fab -H ubuntu@your-host setup"
DRY_RUN = "fab -H ubuntu@your-host deploy --dry-run"
DEPLOY = "fab -H ubuntu@your-host deploy"
STATUS = "fab -H ubuntu@your-host status"
RELEASES = "fab -H ubuntu@your-host releases"
LOGS = "fab -H ubuntu@your-host logs --lines 20"
ROLLBACK = "fab -H ubuntu@your-host rollback"
UNLOCK = "fab -H ubuntu@your-host unlock"
REMOVE_DRY_RUN = "fab -H ubuntu@your-host remove --dry-run"
DOCUMENTED = (
    TOOL_VENV,
    ACTIVATE,
    BUILD,
    INSTALL,
    TO_APP,
    APP_VENV,
    INIT,
    VENDOR,
    EDIT,
    FREEZE,
    COMMIT,
    ADMIN_SETUP,
    SETUP,
    DRY_RUN,
    DEPLOY,
    STATUS,
    RELEASES,
    LOGS,
    ROLLBACK,
    UNLOCK,
    REMOVE_DRY_RUN,
)
# The test's own lines between them (bash functions of the script's preamble).
GRANT_SUDO, REVOKE_SUDO = "grant_ubuntu_full_sudo", "revoke_ubuntu_full_sudo"
SEQUENCE = (
    *DOCUMENTED[: DOCUMENTED.index(SETUP)],
    GRANT_SUDO,
    SETUP,
    REVOKE_SUDO,
    *DOCUMENTED[DOCUMENTED.index(SETUP) + 1 :],
)
MARK = "=== docs command: "
CLOCK = "=== seconds since the start: "  # after each command, for a look at what costs
SUDOERS = "/etc/sudoers.d/zz-docs-ubuntu"
# What deploy.env must say for this host (the editor's part): the live app's settings and the
# example app's routes (its Flask app answers every path, so init gives it `/`).
HOST_SETTINGS = {
    **LIVE.settings(),
    "ROUTES": (
        "/api/ai=python,/api/iot=python,/api/lightweight-analyze=python,/api/flask=python,/=nodejs"
    ),
    "MOUNTS": "",
    "HEALTH_NODE": "/",
}
EDITOR = f"""import sys
sys.path.insert(0, {str(REPO)!r})
from signalcraft_deploy.tasks.init import set_key
path = sys.argv[1]
text = open(path).read()
for key, value in {HOST_SETTINGS!r}.items():
    text = set_key(text, key, value)
open(path, "w").write(text)
"""


def script() -> str:
    preamble = f"""set -eo pipefail
grant_ubuntu_full_sudo() {{ echo 'ubuntu ALL=(ALL) NOPASSWD: ALL' > {SUDOERS}; chmod 0440 {SUDOERS}; }}
revoke_ubuntu_full_sudo() {{ rm -f {SUDOERS}; }}
trap revoke_ubuntu_full_sudo EXIT
"""
    lines = [
        f'echo {shlex.quote(MARK + line)}\n{line}\necho "{CLOCK}$SECONDS s"'
        if line in DOCUMENTED
        else line
        for line in SEQUENCE
    ]
    return preamble + "\n".join(lines) + "\n"


def outputs(said: str) -> dict[str, str]:
    """Each documented command's output, by command."""
    parts = said.split(MARK)[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


@pytest.fixture(scope="module")
def session(sandbox: Sandbox, live_app: AppRepo, tmp_path_factory: pytest.TempPathFactory):
    """The whole documented sequence, once: (its exit status, each command's output)."""
    assert __version__ in INSTALL
    root = tmp_path_factory.mktemp("docs")
    home, checkout = root / "home", root / "signalcraft-deploy"
    shutil.copytree(REPO, checkout, ignore=NOT_SOURCE)
    AppRepo(home / "your-app", EXAMPLE)
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh/config").write_text(ssh_config(sandbox, {"your-host": 22}))
    editor = root / "editor.py"
    editor.write_text(EDITOR)
    env = users_env(home) | {
        "EDITOR": f"{sys.executable} {editor}",
        "PIP_CACHE_DIR": str(Path.home() / ".cache/pip"),  # the machine's cache: fewer downloads
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    try:
        with on_this_machine():  # a user's laptop: it reaches the package index and the host
            done = subprocess.run(
                ["bash", "-c", script()],
                cwd=checkout,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=900,
            )
    finally:
        sh(f"rm -f {SUDOERS}")
    return done.returncode, outputs(done.stdout), done.stdout


def test_every_documented_command_runs_and_succeeds(session) -> None:
    status, said, whole = session
    assert status == 0 and list(said) == list(DOCUMENTED), whole[-4000:]


def test_init_wrote_the_files_and_vendored_the_wheel(session) -> None:
    _, said, _ = session
    assert "wrote     deploy.env" in said[INIT], said[INIT]
    assert f"signalcraft_deploy-{__version__}-py3-none-any.whl" in said[VENDOR], said[VENDOR]


def test_setup_finds_the_host_set_up(session) -> None:
    _, said, _ = session
    for command in (ADMIN_SETUP, SETUP):
        assert "Nothing to change" in said[command], said[command]


def test_the_dry_run_changes_nothing_and_the_deploy_serves_the_new_release(session) -> None:
    _, said, _ = session
    assert "Dry run: nothing was changed." in said[DRY_RUN], said[DRY_RUN]
    assert "Deployed " in said[DEPLOY], said[DEPLOY]
    release = said[DEPLOY].split("Deployed ", 1)[1].split()[0]
    assert f"current   {release}" in said[STATUS], said[STATUS]
    assert f"* {release}" in said[RELEASES], said[RELEASES]


def test_rollback_returns_to_the_release_status_named_and_it_answers(session) -> None:
    _, said, _ = session
    previous = said[STATUS].split("previous  ", 1)[1].split()[0]
    assert f"Rolled back to {previous}." in said[ROLLBACK], said[ROLLBACK]
    status, _, body = get(LIVE.url("/api/flask/health"))
    assert (status, body.get("release")) == (200, previous), body


def test_logs_unlock_and_remove_s_dry_run_say_what_they_found_and_change_nothing(session) -> None:
    _, said, _ = session
    assert f"{LIVE.app}-python-out.log" in said[LOGS], said[LOGS]
    assert "No deploy holds the lock." in said[UNLOCK], said[UNLOCK]
    assert "Dry run: nothing was changed." in said[REMOVE_DRY_RUN], said[REMOVE_DRY_RUN]
    status, _, body = get(LIVE.url("/"))
    assert (status, body.get("app")) == (200, "nodejs"), body
