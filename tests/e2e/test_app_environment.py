"""APP_ENV_FILE's values in the apps' environment, and nowhere else.

A copy of the example app that reads its configuration the twelve-factor way: Flask answers
`os.environ.get("DATABASE_URL")` (and a key only the first file has), Node.js answers
`process.env.REDIS_URL`; neither loads the .env itself. Deployed with values A, then B (the usual
reload: Gunicorn's HUP, Node's rolling reload, under a light load that must see no failure), then
rolled back (A again). The values are then looked for, in every form masking knows, in PM2's dump,
`pm2 env`, `pm2 describe`, `pm2 jlist`, the rendered ecosystem file, `ps -eo args` and everything
the tool printed. One deploy of its own (profile "appenv", ports 7603-7623), shared by the tests,
which run in order.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from signalcraft_deploy.remote.masking import secret_forms
from tests.e2e.conftest import (
    APP_HOME,
    APP_USER,
    AppRepo,
    Profile,
    clean_host,
    e2e_load,
    fab,
    get,
    pm2_jlist,
    sh,
)

AE = Profile("appenv", "/home/ubuntu/appenv", 7603, 7613, 7623)


def values(tag: str) -> dict[str, str]:
    token = secrets.token_hex(8)
    return {
        "DATABASE_URL": f"postgres://app:pw-{tag}-{token}@db.internal:5432/app",
        "REDIS_URL": f"redis://:rpw-{tag}-{token}@cache.internal:6379/0",
    }


A, B = values("a"), values("b")
ONLY_IN_A = f"only-a-{secrets.token_hex(6)}"


def env_text(found: dict[str, str], extra: str = "") -> str:
    return "".join(f"{k}={v}\n" for k, v in found.items()) + extra


def twelve_factor_app(repo: AppRepo) -> None:
    """The example app made to read os.environ / process.env only: no load_dotenv, two answers."""
    app = repo.path / "app.py"
    text = app.read_text()
    assert "\n_load_dotenv()\n" in text and '"pid": os.getpid(),' in text
    text = text.replace("\n_load_dotenv()\n", "\n").replace(
        '"pid": os.getpid(),',
        '"pid": os.getpid(), "database_url": os.environ.get("DATABASE_URL"),'
        ' "only_in_a": os.environ.get("ONLY_IN_A"),',
    )
    app.write_text(text)
    server = repo.path / "server.js"
    text = server.read_text()
    assert "pid: process.pid });" in text
    server.write_text(
        text.replace(
            "pid: process.pid });", "pid: process.pid, redis_url: process.env.REDIS_URL });"
        )
    )
    repo.git("commit", "-qam", "configuration from the environment only")


def answers(p: Profile) -> tuple[str | None, str | None, str | None]:
    status, _, flask = get(p.url("/api/flask/environ"))
    assert status == 200, flask
    status, _, node = get(p.url("/environ"))
    assert status == 200, node
    return flask.get("database_url"), flask.get("only_in_a"), node.get("redis_url")


def ok(result) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def deployed(sandbox, tmp_path_factory):
    """The app deployed once with the values A; `said` collects everything the tool prints."""
    base = tmp_path_factory.mktemp("appenv")
    repo = AppRepo(base / "app")
    twelve_factor_app(repo)
    env_file = base / "app.env"
    env_file.write_text(env_text(A, f"ONLY_IN_A={ONLY_IN_A}\n"))
    p = Profile(AE.app, AE.root, AE.bind, AE.node, AE.listen, extra={"APP_ENV_FILE": str(env_file)})
    clean_host(AE)
    said = [ok(fab(sandbox, p, repo))]
    first = Path(AE.root, "current").resolve().name
    yield {"repo": repo, "p": p, "env_file": env_file, "said": said, "first": first}
    clean_host(AE)


def test_both_apps_see_the_values_in_their_environment(deployed):
    assert answers(deployed["p"]) == (A["DATABASE_URL"], ONLY_IN_A, A["REDIS_URL"])
    release = Path(AE.root, "current")
    for name in (".env", ".signalcraft/env.json"):  # the deploy user's, read by the apps' group
        info = sh(f"stat -c '%U %G %a' {release}/{name}").stdout.split()
        assert info == ["ubuntu", APP_USER, "640"], (name, info)


def test_new_values_take_effect_with_the_usual_reload_and_a_rollback_brings_the_old_back(
    sandbox, deployed
):
    p, said = deployed["p"], deployed["said"]
    deployed["env_file"].write_text(env_text(B))
    with e2e_load(
        [p.url("/api/flask/environ"), p.url("/environ")],
        threads=2,
        max_requests=5_000,
        max_seconds=60,
    ) as load:
        time.sleep(0.3)
        out = ok(fab(sandbox, p, deployed["repo"]))
        said.append(out)
    result = load.result()
    assert f"{AE.app}-python: hup, {AE.app}-nodejs: handover" in out, out
    assert result.total > 20 and result.failed == 0, result.samples
    # The key B no longer has is gone from Gunicorn's workers after the HUP.
    assert answers(p) == (B["DATABASE_URL"], None, B["REDIS_URL"])
    # The release rolled back to as an older version made it, without the Node.js loader, which
    # PM2 still names in node_args after the reload: `current` never points at a release without it.
    first = Path(AE.root, "releases", deployed["first"])
    sh(f"rm {first}/.signalcraft/env.cjs")
    said.append(ok(fab(sandbox, p, None, task="rollback")))
    assert answers(p) == (A["DATABASE_URL"], ONLY_IN_A, A["REDIS_URL"])
    assert (
        Path(AE.root, "current").resolve() == first and (first / ".signalcraft/env.cjs").is_file()
    )


def test_the_values_are_in_no_pm2_record_command_line_or_output(deployed):
    """After the deploys and the rollback (PM2's list saved each time): no form of any value in
    PM2's dump and its views of the apps, the ecosystem file, any command line, or the output."""
    ids = [str(item["pm_id"]) for item in pm2_jlist() if item["name"].startswith(AE.app + "-")]
    assert len(ids) >= 2, ids
    as_app = f"sudo -u {APP_USER} -H pm2"
    places = {
        "dump.pm2": sh(f"cat {APP_HOME}/.pm2/dump.pm2").stdout,
        "pm2 jlist": sh(f"{as_app} jlist").stdout,
        "ps -eo args": sh("ps -ww -eo args").stdout,  # whole lines: without -ww ps cuts at 80
        "ecosystem": sh(f"cat {AE.root}/current/ecosystem.config.js").stdout,
        "output": "\n".join(deployed["said"]),
        **{f"pm2 env {i}": sh(f"{as_app} env {i}").stdout for i in ids},
        **{
            f"pm2 describe {name}": sh(f"{as_app} describe {name}").stdout
            for name in (f"{AE.app}-python", f"{AE.app}-nodejs")
        },
    }
    assert f"{AE.root}/current/.signalcraft/env.cjs" in places["ecosystem"]
    # What PM2 keeps: the loader's path, not the values.
    assert f"{AE.root}/current/.signalcraft/env.cjs" in places["dump.pm2"]
    hidden = {form for v in [*A.values(), *B.values(), ONLY_IN_A] for form in secret_forms(v)}
    for where, text in places.items():
        assert text.strip(), where
        leaked = sorted(form for form in hidden if form in text)
        assert not leaked, f"{where} holds {leaked}"
