"""APP_ENV_FILE's values in the processes' environment: the JSON the client makes of it, the
release's env.json beside its .env, and the loaders that read it inside Gunicorn and Node.js.

Real shells, a real Python running the rendered gunicorn.conf.py, a real Node.js loading env.cjs;
the end-to-end test (tests/e2e/test_app_environment.py) runs them under PM2 on a host.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from invoke import Context

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.render import (
    APP_ENV_CJS,
    APP_ENV_JSON,
    node_entry,
    render_ecosystem,
    render_gunicorn_conf,
)
from signalcraft_deploy.core.secrets import app_environment
from signalcraft_deploy.core.settings import SettingsError
from signalcraft_deploy.remote import source as remote_source
from signalcraft_deploy.steps import upload
from signalcraft_deploy.steps.handover import handover_entry
from signalcraft_deploy.steps.trial import nodejs_trial, python_trial
from tests.unit.conftest import hook_program

NODE = shutil.which("node")


def test_values_are_read_as_python_dotenv_reads_them_without_this_machines_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FROM_THE_LAPTOP", "laptop-only")
    text = (
        "A=1\n"
        'export B="x ${A} y"\n'
        "C=${FROM_THE_LAPTOP}\n"
        "D\n"
        'E="two\\nlines"\n'
        "F=v # a comment\n"
        "G=${MISSING:-fallback}\n"
    )
    assert app_environment(text) == {
        "A": "1",
        "B": "x 1 y",
        "C": "",  # never this machine's environment
        "E": "two\nlines",
        "F": "v",
        "G": "fallback",
    }


def test_a_key_no_environment_can_hold_is_refused_by_name_not_value(load, tmp_path: Path) -> None:
    env = tmp_path / "app.env"
    env.write_text("GOOD=fine\n'BAD=KEY'=hunter2-secret\n")
    with pytest.raises(SettingsError) as caught:
        upload.read_app_env(load({"APP_ENV_FILE": str(env)}))
    message = str(caught.value)
    assert "APP_ENV_FILE" in message and "'BAD=KEY'" in message and "environment" in message
    assert "hunter2" not in message


def test_the_json_and_the_env_go_to_incoming_from_stdin_0600(load, tmp_path: Path) -> None:
    """The command runs for real here (a local Context): the JSON is stdin's first line, the .env
    the rest, byte for byte, whatever quotes, dollars or newlines the values hold."""
    s = load({"DEPLOY_ROOT": str(tmp_path / "root")})
    incoming = Path(s.state_dir) / "incoming"
    incoming.mkdir(parents=True)
    text = (
        'DATABASE_URL="postgres://app:p@ss w0rd\'$j`x`@db/main"\n'
        'MULTI="line one\nline two"\n'
        "UNICODE='caf\u00e9 \u2028 \\ back'\n"
    )
    upload.write_app_env(Context(), s, "r1", text)
    assert (incoming / "r1.env").read_text() == text
    assert json.loads((incoming / "r1.env.json").read_text()) == app_environment(text)
    assert app_environment(text)["DATABASE_URL"] == "postgres://app:p@ss w0rd'$j`x`@db/main"
    for name in ("r1.env", "r1.env.json"):
        assert oct((incoming / name).stat().st_mode & 0o777) == "0o600"


def _assemble(load, root: Path, release: str, env: str | None, live: str = "", **settings: str):
    s = replace(
        load({"DEPLOY_ROOT": str(root), "SHARED_PATHS": "", **settings}),
        app_user=getpass.getuser(),
    )
    incoming = Path(s.state_dir) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (root / "shared/logs").mkdir(parents=True, exist_ok=True)
    (root / "releases").mkdir(exist_ok=True)
    (incoming / f"{release}.extras.tar").write_bytes(
        upload.extras_tar(_FakePlan(release), '{"site": "x"}')  # type: ignore[arg-type]
    )
    if env is not None:
        upload.write_app_env(Context(), s, release, env)
    script = upload.assemble_script(
        s, release, [], str(root / "releases" / live) if live else "", carry_env=env is None
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return root / "releases" / release


class _FakeManifest:
    def __init__(self, release: str) -> None:
        self.release = release

    def to_json(self) -> str:
        return "{}"


class _FakePlan:
    def __init__(self, release: str) -> None:
        self.manifest = _FakeManifest(release)
        self.configs: dict[str, str] = {}


def test_the_release_gets_env_json_and_carries_it_with_the_env(load, tmp_path: Path) -> None:
    root = tmp_path / "root"
    one = _assemble(load, root, "r1", "K=one\nDROPPED=x\n")
    assert json.loads((one / APP_ENV_JSON).read_text()) == {"K": "one", "DROPPED": "x"}
    assert (one / APP_ENV_CJS).read_text() == remote_source("app_env.cjs")
    two = _assemble(load, root, "r2", None, live="r1")  # no APP_ENV_FILE: carried over
    assert (two / ".env").read_text() == "K=one\nDROPPED=x\n"
    assert json.loads((two / APP_ENV_JSON).read_text()) == {"K": "one", "DROPPED": "x"}
    assert oct((two / APP_ENV_JSON).stat().st_mode & 0o777) == "0o600"
    three = _assemble(load, root, "r3", "K=two\n", live="r2")
    assert json.loads((three / APP_ENV_JSON).read_text()) == {"K": "two"}
    assert json.loads((two / APP_ENV_JSON).read_text())["K"] == "one"  # the live one untouched


def test_a_planted_live_env_json_is_not_followed_and_a_shared_env_gets_none(
    load, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    one = _assemble(load, root, "r1", "K=one\n")
    secret = tmp_path / "not-the-apps"
    secret.write_text('{"STOLEN": "yes"}')
    (one / APP_ENV_JSON).unlink()
    (one / APP_ENV_JSON).symlink_to(secret)
    two = _assemble(load, root, "r2", None, live="r1")
    assert not (two / APP_ENV_JSON).exists() and not (two / APP_ENV_JSON).is_symlink()
    (one / APP_ENV_JSON).unlink()
    os.mkfifo(one / APP_ENV_JSON)  # a copy would hang on it
    three = _assemble(load, root, "r3", None, live="r1")
    assert not (three / APP_ENV_JSON).exists()
    # .env as a shared path (the apps' account writes it): its values are never put into env.json
    four = _assemble(load, root, "r4", "K=four\n")
    five = _assemble(load, tmp_path / "root", "r5", None, live="r4", SHARED_PATHS=".env")
    assert (four / APP_ENV_JSON).exists() and not (five / APP_ENV_JSON).exists()


def test_the_extras_ship_the_loader_and_never_the_values() -> None:
    with tarfile.open(fileobj=io.BytesIO(upload.extras_tar(_FakePlan("r1"), "{}"))) as tar:  # type: ignore[arg-type]
        names = tar.getnames()
    assert APP_ENV_CJS in names and APP_ENV_JSON not in names


# Gunicorn executes its config file at start and again on each HUP: this does the same, once per
# step, moving each step's file into place as the release's env.json first.
AS_GUNICORN = """
import json, os, sys
seen = []
for step in json.loads(sys.argv[2]):
    os.replace(step, os.path.join(os.environ["SIGNALCRAFT_CHDIR"], ".signalcraft/env.json"))
    exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), {})
    seen.append({k: os.environ.get(k) for k in ("K", "GONE", "PORT", "NEW")})
print(json.dumps(seen))
"""


def test_the_rendered_gunicorn_conf_loads_the_release_values_and_a_hup_reloads_them(
    load, tmp_path: Path
) -> None:
    release = tmp_path / "r1"
    (release / ".signalcraft").mkdir(parents=True)
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf(load()))
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"K": "A", "GONE": "soon", "PORT": "1"}))
    second.write_text(json.dumps({"K": "B", "NEW": "n"}))
    done = subprocess.run(
        [sys.executable, "-c", AS_GUNICORN, str(conf), json.dumps([str(first), str(second)])],
        env={"PATH": os.environ["PATH"], "SIGNALCRAFT_CHDIR": str(release), "PORT": "8000"},
        capture_output=True,
        text=True,
        check=True,
    )
    start, hup = json.loads(done.stdout)
    # The process's own PORT wins (as load_dotenv's default); a HUP brings the new value and drops
    # the removed key.
    assert start == {"K": "A", "GONE": "soon", "PORT": "8000", "NEW": None}
    assert hup == {"K": "B", "GONE": None, "PORT": "8000", "NEW": "n"}


def test_the_gunicorn_conf_of_a_release_without_env_json_starts(load, tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf(load()))
    done = subprocess.run(
        [sys.executable, str(conf)],
        env={"PATH": os.environ["PATH"], "SIGNALCRAFT_CHDIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_env_cjs_reads_its_own_releases_values_through_the_link(tmp_path: Path) -> None:
    """`current/.signalcraft/env.cjs`, in an ES module package: the values of the release the link
    points at when the process starts; the process's own PORT wins; none for a release without
    env.json; a broken file stops the process without quoting it."""
    for name, values in (("r1", {"REDIS_URL": "redis://one", "PORT": "1"}), ("r2", None)):
        folder = tmp_path / name
        (folder / ".signalcraft").mkdir(parents=True)
        (folder / APP_ENV_CJS).write_text(remote_source("app_env.cjs"))
        if values is not None:
            (folder / APP_ENV_JSON).write_text(json.dumps(values))
        (folder / "package.json").write_text('{"type": "module"}')
        (folder / "server.js").write_text(
            "console.log(JSON.stringify([process.env.REDIS_URL ?? null, process.env.PORT]));\n"
        )
    current = tmp_path / "current"

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NODE), "--require", f"{current}/{APP_ENV_CJS}", f"{current}/server.js"],
            env={"PATH": os.environ["PATH"], "PORT": "3000"},
            capture_output=True,
            text=True,
        )

    current.symlink_to(tmp_path / "r1")
    assert json.loads(start().stdout) == ["redis://one", "3000"]
    current.unlink()
    current.symlink_to(tmp_path / "r2")
    assert json.loads(start().stdout) == [None, "3000"]
    (tmp_path / "r2" / APP_ENV_JSON).write_text('{"REDIS_URL": "redis://hunter2-secret"')
    broken = start()
    assert broken.returncode != 0 and "is not a JSON object" in broken.stderr
    assert "hunter2" not in broken.stderr


def test_every_nodejs_process_loads_env_cjs_of_its_own_release(load, tmp_path: Path) -> None:
    s = load()
    release = f"{s.releases_dir}/r9"
    assert node_entry(s)["node_args"] == ["--require", f"{s.current_dir}/{APP_ENV_CJS}"]
    for entry in (
        handover_entry(s, App.NODEJS, "/v", release)[0],
        nodejs_trial(s, "/v", release, 4999)[0],
    ):
        assert entry["node_args"] == ["--require", f"{release}/{APP_ENV_CJS}"]
        assert entry["script"].startswith(release + "/") and entry["cwd"] == release
    # Gunicorn's trial reads the new release's env.json: its conf's chdir is the release.
    assert python_trial(s, "/v", release, 4998)[0]["env"]["SIGNALCRAFT_CHDIR"] == release
    ecosystem = render_ecosystem(s, "/v")
    assert f'node_args: ["--require", "{s.current_dir}/{APP_ENV_CJS}"]' in ecosystem


def test_a_hook_gets_the_values_the_processes_get_and_masks_them(tmp_path: Path) -> None:
    """remote/hook.py takes the release's env.json (python-dotenv's reading: a quoted value over two
    lines) over its .env, and masks those values in the hook's output."""
    release = tmp_path / "release"
    (release / ".signalcraft").mkdir(parents=True)
    text = 'DB_URL="postgres://u:pw-9876@db/app"\nMULTI="first\nsecond"\n'
    (release / ".env").write_text(text)
    (release / APP_ENV_JSON).write_text(json.dumps(app_environment(text)))
    spec = {
        "name": "after-switch",
        "command": 'printf "%s|%s\\n" "$MULTI" "$DB_URL"',
        "cwd": str(release),
        "env_file": str(release / ".env"),
        "env_json": str(release / APP_ENV_JSON),
        "env": {},
        "timeout": 30,
    }
    out, _ = hook_program(spec, tmp_path)
    # each line of the multi-line value too: the hook's output is masked a line at a time
    assert out == ["***", "***|***"]


def test_a_release_an_older_version_made_gets_the_loader_before_it_runs_again(
    load, tmp_path: Path
) -> None:
    """PM2 keeps node_args across a reload: a release without env.cjs gets it before a rollback's
    trial (give_loader) and, as the live release, in a deploy's assembly (a failed deploy's undo
    reloads it); no values come with it, and a link there is not written through."""
    from signalcraft_deploy.host import releases

    s = load({"DEPLOY_ROOT": str(tmp_path / "root")})
    Path(s.state_dir).mkdir(parents=True)
    old = Path(s.releases_dir, "r1")
    (old / ".signalcraft").mkdir(parents=True)
    releases.give_loader(Context(), s, str(old))
    assert (old / APP_ENV_CJS).read_text() == remote_source("app_env.cjs")
    assert oct((old / APP_ENV_CJS).stat().st_mode & 0o777) == "0o644"
    assert not (old / APP_ENV_JSON).exists() and os.listdir(s.state_dir) == []
    planted = Path(s.releases_dir, "r0")
    (planted / ".signalcraft").mkdir(parents=True)
    (planted / APP_ENV_CJS).symlink_to(tmp_path / "elsewhere")
    releases.give_loader(Context(), s, str(planted))
    assert not (tmp_path / "elsewhere").exists()
    (old / APP_ENV_CJS).unlink()
    new = _assemble(load, tmp_path / "root", "r2", "K=v\n", live="r1")
    assert (old / APP_ENV_CJS).read_text() == (new / APP_ENV_CJS).read_text()
