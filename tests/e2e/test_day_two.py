"""Day two: notifications to a webhook and two environments from one repository, on one host.

One repository holds deploy.env (what both share), deploy.staging.env and deploy.production.env
(each its own APP_NAME, DEPLOY_ROOT, ports, site and APP_ENV_FILE). A local HTTP receiver, opened on
this machine's network as the deploying laptop's would be, records every notification; NOTIFY_URL
comes from the environment, as a CI secret would. In order: staging deploys (started, succeeded);
production deploys beside it on the same host, each answering with its own value; a broken commit
fails its trial on staging (started, failed at the trial run); the fixed commit deploys with a
receiver that hangs (the deploy succeeds, its end delayed at most by NOTIFY_TIMEOUT); a failing
AFTER_SWITCH hook is rolled back automatically (started, rolled back); `rollback` returns staging to
its first release (rollback succeeded). No body holds the app's secret, which the broken commit
prints. Production is the worker's live app (LIVE: its deploy is rarely a first one); staging a
profile of its own (ports 7105-7126). Six deploys and a rollback.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import LIVE, REPO, AppRepo, Profile, WebhookReceiver, clean_host, get
from tests.e2e.hosts import on_this_machine

STAGING = Profile("daytwo-staging", "/home/ubuntu/daytwo-staging", 7105, 7115, 7125)
# Production is the worker's live app (conftest's LIVE), which other modules deploy too: its venv
# and node_modules are there already, so its deploy is not a first one, and it is left deployed.
PRODUCTION = LIVE
PASSWORD = f"pw-{secrets.token_hex(10)}"
BOUND = 3  # NOTIFY_TIMEOUT for the whole module

SHARED = {
    "APP_USER": "signalcraft",
    "HEALTH_TIMEOUT": "20",
    "WHEELS": "local",
    "GUNICORN_WORKERS": "2",
    "NOTIFY_FORMAT": "json",
    "NOTIFY_TIMEOUT": str(BOUND),
}
OWN = ("APP_NAME", "DEPLOY_ROOT", "GUNICORN_BIND", "NODE_PORT", "NGINX_LISTEN", "NGINX_SITE")
# The Flask app answers with the STAGE its environment's APP_ENV_FILE sets.
ANSWER = '"pid": os.getpid(),'
STAGE_ANSWER = '"pid": os.getpid(), "stage": os.environ.get("STAGE"),'
FIXED = STAGE_ANSWER + ' "v": 2,'
BROKEN = (
    '\nraise RuntimeError("cannot reach the database with " + os.environ["DATABASE_PASSWORD"])\n'
)


def env_lines(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


@pytest.fixture(scope="module")
def repo(sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppRepo]:
    """The example app answering its STAGE, with deploy.env and one file per environment."""
    base = tmp_path_factory.mktemp("daytwo")
    repo = AppRepo(base / "app")
    app = repo.path / "app.py"
    app.write_text(app.read_text().replace(ANSWER, STAGE_ANSWER, 1))
    (repo.path / "deploy.env").write_text(env_lines(SHARED))
    for name, p in (("staging", STAGING), ("production", PRODUCTION)):
        secrets_file = base / f"{name}.app.env"  # the app's own secrets: outside the repository
        secrets_file.write_text(f"STAGE={name}\nDATABASE_PASSWORD={PASSWORD}\n")
        own = {k: v for k, v in p.settings().items() if k in OWN}
        (repo.path / f"deploy.{name}.env").write_text(
            env_lines({**own, "APP_ENV_FILE": str(secrets_file)})
        )
    repo.git("add", "-A")
    repo.git("commit", "-qm", "two environments")
    clean_host(STAGING)
    yield repo
    clean_host(STAGING)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def fab_run(sb, repo: AppRepo, environment: str, url: str, *args: str, task: str = "deploy"):
    """`fab <task> --environment NAME` with the repository's settings files, as a Popen (output and
    errors in one stream); NOTIFY_URL from the environment, as a CI secret."""
    cmd = ["fab", "-H", sb.target, "-i", sb.key, task, "--environment", environment]
    cmd += ["--env-file", str(repo.path / "deploy.env"), *args]
    cmd += ["--source-dir", str(repo.path)] if task == "deploy" else []
    env = {**os.environ, "KNOWN_HOSTS": sb.known_hosts, "NOTIFY_URL": url}
    env.pop("SIGNALCRAFT_ENV", None)
    with on_this_machine():
        return subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(REPO),
            env=env,
        )


def fab(sb, repo: AppRepo, environment: str, url: str, *args: str, task: str = "deploy"):
    proc = fab_run(sb, repo, environment, url, *args, task=task)
    out = proc.communicate(timeout=300)[0]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def stage_of(p: Profile) -> tuple[int, str | None]:
    status, _, body = get(p.url("/api/flask/anything"))
    return status, body.get("stage")


def seen(receiver: WebhookReceiver, since: int) -> list[tuple[str | None, str, str]]:
    return [(b.get("environment"), b["event"], b["status"]) for b in receiver.bodies[since:]]


def test_two_environments_live_side_by_side_and_each_deploy_is_told(sandbox, repo, receiver):
    ok(fab(sandbox, repo, "staging", receiver.url))
    ok(fab(sandbox, repo, "production", receiver.url))
    assert stage_of(STAGING) == (200, "staging")
    assert stage_of(PRODUCTION) == (200, "production")
    assert seen(receiver, 0) == [
        ("staging", "deploy", "started"),
        ("staging", "deploy", "succeeded"),
        ("production", "deploy", "started"),
        ("production", "deploy", "succeeded"),
    ]
    done = receiver.bodies[1]
    assert done["app"] == "daytwo-staging" and done["hosts"] == [sandbox.target]
    assert done["commit"] == repo.git("rev-parse", "HEAD").strip()
    assert done["release"].endswith(done["commit"][:12]) and done["seconds"] > 0
    out = ok(fab(sandbox, repo, "staging", receiver.url, task="settings"))
    assert f"{repo.path}/deploy.staging.env over {repo.path}/deploy.env" in out
    assert "NOTIFY_URL" in out and receiver.url not in out and "T0K3N" not in out


def test_a_failed_trial_is_told_with_its_step_and_no_secret(sandbox, repo, receiver):
    before = len(receiver.bodies)
    repo.edit("app.py", "\n_load_dotenv()\n", f"\n_load_dotenv(){BROKEN}", "a broken commit")
    result = fab(sandbox, repo, "staging", receiver.url)
    assert result.returncode != 0
    assert stage_of(STAGING) == (200, "staging")  # the old release still serves
    assert seen(receiver, before) == [
        ("staging", "deploy", "started"),
        ("staging", "deploy", "failed"),
    ]
    failed = receiver.bodies[-1]
    assert failed["step"] == "trial run" and failed["message"], failed


def test_a_hanging_receiver_delays_a_deploy_by_at_most_its_bound(sandbox, repo):
    app = repo.path / "app.py"
    app.write_text(app.read_text().replace(BROKEN, "\n").replace(STAGE_ANSWER, FIXED, 1))
    repo.git("commit", "-qam", "fixed")
    hanging = WebhookReceiver(hang=True)
    lines: list[str] = []
    try:
        proc = fab_run(sandbox, repo, "staging", hanging.url)
        assert proc.stdout is not None
        deployed = None
        for line in proc.stdout:  # when the deploy said it was done, then when fab ended
            lines.append(line)
            if line.startswith("Deployed ") and deployed is None:
                deployed = time.monotonic()
        proc.wait(timeout=60)
        ended = time.monotonic()
    finally:
        hanging.close()
    out = "".join(lines)
    assert proc.returncode == 0 and deployed is not None, out
    assert f"no answer within {BOUND}s" in out and "T0K3N" not in out, out
    assert ended - deployed < BOUND + 2.5, (ended - deployed, out)  # + fab's own exit
    assert stage_of(STAGING) == (200, "staging")
    assert [b["status"] for b in hanging.bodies] == ["started", "succeeded"]


def test_an_automatic_and_a_manual_rollback_are_told(sandbox, repo, receiver):
    before = len(receiver.bodies)
    repo.edit("app.py", FIXED, STAGE_ANSWER + ' "v": 3,', "a release whose AFTER_SWITCH fails")
    fails = ["--set", "AFTER_SWITCH=exit 3", "--set", "AFTER_SWITCH_FAILURE=rollback"]
    result = fab(sandbox, repo, "staging", receiver.url, *fails)
    assert result.returncode != 0 and "Rolled back to" in result.stdout + result.stderr
    ok(fab(sandbox, repo, "staging", receiver.url, task="rollback"))
    assert seen(receiver, before) == [
        ("staging", "deploy", "started"),
        ("staging", "deploy", "rolled back"),
        ("staging", "rollback", "succeeded"),
    ]
    back, manual = receiver.bodies[-2], receiver.bodies[-1]
    assert back["step"] == "after-switch hook", back
    first = receiver.bodies[1]["release"]
    assert manual["release"] == first and manual["hosts"] == [sandbox.target]
    assert stage_of(STAGING) == (200, "staging") and stage_of(PRODUCTION) == (200, "production")


def test_no_body_holds_a_secret(receiver):
    assert len(receiver.bodies) == 9
    for body in receiver.bodies:
        text = json.dumps(body)
        assert PASSWORD not in text and "T0K3N" not in text, text
