"""Hooks. BEFORE_SWITCH runs migrations once, in the new release, before it serves; a failing or
slow one stops the deploy with nothing switched; AFTER_SWITCH's failure rolls back or warns;
ON_FAILURE runs after a failed deploy is undone; every hook's output is streamed with its name, the
app's secrets masked.

The migration tests deploy examples/signalcraft-db (Flask-SQLAlchemy + Flask-Migrate, SQLite in
shared/).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLE_DB, AppRepo, Profile, clean_host, e2e_load, fab, get, sh

DB = Profile("migrations", "/home/ubuntu/migrations", 7501, 7511, 7521)
HK = Profile("hooked", "/home/ubuntu/hooked", 7531, 7541, 7551)
MIGRATE = "flask --app app:create_app db upgrade"
TOKEN = "s3cr3t-token-4242"


def current(p: Profile) -> str:
    return Path(p.root, "current").resolve().name


def columns(p: Profile) -> list[str]:
    with sqlite3.connect(f"{p.root}/shared/app.sqlite") as db:
        return [row[1] for row in db.execute("PRAGMA table_info(items)")]


def audit(p: Profile) -> list[dict]:
    return [
        json.loads(line)
        for line in Path(p.root, ".deploy/audit.log").read_text().splitlines()
        if line.strip()
    ]


@pytest.fixture(scope="module")
def db_app(sandbox, tmp_path_factory):
    """examples/signalcraft-db deployed once: the first migration made the table before anything
    served."""
    tmp = tmp_path_factory.mktemp("migrations")
    env_file = tmp / "app.env"
    env_file.write_text(
        f"DATABASE_URL=sqlite:///{DB.root}/shared/app.sqlite\nSECRET_TOKEN={TOKEN}\n"
    )
    DB.extra.update(APP_ENV_FILE=str(env_file), BEFORE_SWITCH=MIGRATE, HEALTH_TIMEOUT="30")
    repo = AppRepo(tmp / "app", example=EXAMPLE_DB)
    clean_host(DB)
    first = fab(sandbox, DB, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "before-switch | " in first.stdout and "Running upgrade  -> 0001" in first.stdout
    assert columns(DB) == ["id", "name"]
    yield repo
    clean_host(DB)
    DB.extra.clear()


def release_two(repo: AppRepo, migration: str) -> None:
    (repo.path / "migrations/versions/0002_add_color.py").write_text(migration)
    text = (repo.path / "app.py").read_text()
    (repo.path / "app.py").write_text(text.replace("SCHEMA = 1", "SCHEMA = 2", 1))
    repo.git("add", "-A")
    repo.git("commit", "-qm", "release 2: items.color")


def test_a_failing_migration_stops_the_deploy_before_the_switch_and_leaves_the_schema_as_it_was(
    sandbox, db_app
):
    before, base = current(DB), db_app.git("rev-parse", "HEAD").strip()
    good = (EXAMPLE_DB / "upgrades/0002_add_color.py").read_text()
    broken = good.replace(
        'server_default="blue"))',
        'server_default="blue"))\n    op.execute("SELECT no_such_column FROM items")',
    )
    assert broken != good
    release_two(db_app, broken)
    with e2e_load(
        [DB.url("/api/flask/health"), DB.url("/")], threads=2, max_requests=8000, max_seconds=90
    ) as load:
        result = fab(sandbox, DB, db_app)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "SELECT no_such_column FROM items" in out and "Nothing was switched" in out
    assert "BEFORE_SWITCH" in out and TOKEN not in out
    assert load.result().failed == 0, load.result().samples
    assert current(DB) == before
    assert columns(DB) == [
        "id",
        "name",
    ]  # the add_column was rolled back with the failing statement
    assert get(DB.url("/api/flask/health"))[2]["schema"] == 1
    assert (
        audit(DB)[-1]["result"] == "failed before switch"
        and audit(DB)[-1]["hooks"]["before-switch"]["result"] == "exit 1"
    )
    db_app.git("reset", "-q", "--hard", base)


def test_the_second_release_migrates_once_before_the_switch_and_its_code_reads_the_new_column(
    sandbox, db_app
):
    status, _, item = get_post(DB.url("/api/flask/items"), {"name": "first"})
    assert status == 201 and "color" not in item
    release_two(db_app, (EXAMPLE_DB / "upgrades/0002_add_color.py").read_text())
    with e2e_load(
        [DB.url("/api/flask/health"), DB.url("/api/flask/items"), DB.url("/")],
        threads=3,
        max_requests=15000,
        max_seconds=120,
    ) as load:
        time.sleep(0.5)
        result = fab(sandbox, DB, db_app)
        time.sleep(0.5)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("Running upgrade 0001 -> 0002") == 1
    assert load.result().total > 100 and load.result().failed == 0, load.result().samples
    assert columns(DB) == ["id", "name", "color"]
    assert json_list(DB.url("/api/flask/items"))[0] == {"id": 1, "name": "first", "color": "blue"}
    assert audit(DB)[-1]["hooks"]["before-switch"]["result"] == "ok"
    rolled = fab(sandbox, DB, None, task="rollback")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "ran BEFORE_SWITCH" in rolled.stderr and "does not undo it" in rolled.stderr


def get_post(url: str, body: dict) -> tuple[int, dict, dict]:
    import urllib.request

    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, dict(resp.headers), json.loads(resp.read())


def json_list(url: str) -> list:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- hooks on the plain
# example app


@pytest.fixture(scope="module")
def hk_app(sandbox, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hooked")
    env_file = tmp / "app.env"
    env_file.write_text(f"SECRET_TOKEN={TOKEN}\n")
    HK.extra.update(APP_ENV_FILE=str(env_file))
    repo = AppRepo(tmp / "app")
    clean_host(HK)
    first = fab(sandbox, HK, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    yield repo
    clean_host(HK)
    HK.extra.clear()


def with_hooks(**hooks: str) -> Profile:
    return Profile(HK.app, HK.root, HK.bind, HK.node, HK.listen, extra={**HK.extra, **hooks})


def test_a_before_switch_that_runs_too_long_is_stopped_and_the_deploy_refused(sandbox, hk_app):
    before, base = current(HK), hk_app.git("rev-parse", "HEAD").strip()
    hk_app.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    marker = (  # hooks run as the apps' account: shared/ is what it may write
        f"{HK.root}/shared/on-failure.txt"
    )
    p = with_hooks(
        BEFORE_SWITCH="echo starting; sleep 61.25; echo never",
        HOOK_TIMEOUT="2",
        ON_FAILURE=f'echo "$DEPLOY_RESULT for $DEPLOY_RELEASE" > {marker}',
    )
    started = time.monotonic()
    result = fab(sandbox, p, hk_app)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert time.monotonic() - started < 60
    assert (
        "did not finish within HOOK_TIMEOUT (2 s)" in out
        and "before-switch | starting" in out
        and "before-switch | never" not in out
    )
    assert current(HK) == before
    assert (
        sh("pgrep -f 'sleep 61.25'", check=False).returncode == 1
    )  # the hook's whole process group is gone
    assert Path(marker).read_text().startswith("failed before switch for ")
    hk_app.git("reset", "-q", "--hard", base)


def test_hooks_see_the_release_and_the_app_env_and_never_print_its_values(sandbox, hk_app):
    hk_app.edit("app.py", 'VERSION = "1"', 'VERSION = "3"', "v3")
    p = with_hooks(
        BEFORE_SWITCH=(
            'echo "in $(pwd) for $DEPLOY_RELEASE after $DEPLOY_PREVIOUS sha $DEPLOY_SHA token'
            ' $SECRET_TOKEN"; command -v gunicorn'
        )
    )
    dry = fab(sandbox, p, hk_app, "--dry-run")
    assert dry.returncode == 0 and "hook      BEFORE_SWITCH `echo" in dry.stdout, (
        dry.stdout + dry.stderr
    )
    before = current(HK)
    result = fab(sandbox, p, hk_app)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    new = current(HK)
    line = next(x for x in result.stdout.splitlines() if "before-switch | in " in x)
    assert (
        f"in {HK.root}/releases/{new} for {new} after {before} sha"
        f" {hk_app.git('rev-parse', 'HEAD').strip()}" in line
    )
    assert "token ***" in line and TOKEN not in out
    assert (
        f"before-switch | {HK.root}/venvs/" in result.stdout
    )  # the release's venv is first on PATH
    assert TOKEN not in Path(HK.root, ".deploy/audit.log").read_text()


@pytest.mark.parametrize("policy", ["rollback", "warn"])
def test_a_failing_after_switch_rolls_back_or_warns_as_set(sandbox, hk_app, policy):
    before = current(HK)
    hk_app.edit("app.py", "VERSION = ", f"VERSION = '{policy}' or ", f"after-switch {policy}")
    p = with_hooks(AFTER_SWITCH="echo warming up; exit 3", AFTER_SWITCH_FAILURE=policy)
    result = fab(sandbox, p, hk_app)
    out = result.stdout + result.stderr
    assert "after-switch | warming up" in result.stdout and "exited with status 3" in out
    if policy == "rollback":
        assert result.returncode != 0, out
        assert "Rolled back to" in out and current(HK) == before
        assert get(HK.url("/api/ai/x"))[1]["X-Release"] == before
    else:
        assert result.returncode == 0, out
        assert "AFTER_SWITCH_FAILURE=warn" in result.stderr and current(HK) != before
        assert get(HK.url("/api/ai/x"))[2]["version"] == "warn"
