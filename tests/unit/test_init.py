"""`init`: the files it writes into an app's repository, that it never overwrites without --force
(and then shows the diff), that a second run changes nothing, and that what it writes works: the
settings file is the declarations' defaults, the fabfile/tasks.py expose the collection and take the
app's own tasks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit

from signalcraft_deploy import __version__
from signalcraft_deploy.core.render import BUNDLED_TEMPLATES, TEMPLATES
from signalcraft_deploy.core.settings import KEY_NAMES, KEYS, SettingsError, load_settings
from signalcraft_deploy.tasks import init as init_module
from signalcraft_deploy.tasks.init import (
    FIRST_DEPLOY,
    ROLLBACK_WORKFLOW,
    SETTINGS_FILE,
    TEMPLATES_COPY,
    WORKFLOW,
    init,
    init_app,
    install_spec,
    set_key,
    settings_text,
)

REPO = Path(__file__).resolve().parents[2]
FILES = ["fabfile.py", "tasks.py", SETTINGS_FILE, WORKFLOW, ROLLBACK_WORKFLOW, ".gitignore"]
FIRSTDAY_DIR = REPO / "tests/e2e/apps/firstday"
FIRSTDAY = {p.name: p.read_text() for p in FIRSTDAY_DIR.iterdir() if p.is_file()}
# An app with a factory in a package, a blueprint mounted by register_blueprint, and an Express
# server on /.
FACTORY = {
    "shop/__init__.py": (
        "from flask import Flask\n\n\ndef create_app(config=None):\n    app = Flask(__name__)\n   "
        " from shop.views import api\n    app.register_blueprint(api, url_prefix='/api')\n   "
        " app.add_url_rule('/admin/login', 'login', lambda: 'x', methods=['GET', 'POST'])\n   "
        " return app\n"
    ),
    "shop/views.py": (
        "from flask import Blueprint\n\napi = Blueprint('api', __name__,"
        " url_prefix='/ignored')\n\n\n@api.route('/items', methods=['GET', 'POST'])\ndef items():\n"
        "    return []\n\n\n@api.get('/items/<int:n>')\ndef item(n):\n    return"
        " {}\n\n\n@api.get('/ping')\ndef ping():\n    return 'ok'\n"
    ),
    "package.json": '{"name": "shop", "scripts": {"start": "node web/server.js"}}',
    "web/server.js": (
        "const app = require('express')();\napp.get('/', (q, r) =>"
        " r.send('hi'));\napp.listen(3000);\n"
    ),
}
# Flask on / from wsgi.py, Express mounting a router under /chat, a venv and node_modules whose
# files are not the app's.
EXPRESS = {
    "wsgi.py": (
        "import flask\n\napplication: flask.Flask ="
        " flask.Flask(__name__)\n\n\n@application.route('/')\ndef index():\n    return"
        " 'hi'\n\n\n@application.get('/status')\ndef status():\n    return 'ok'\n"
    ),
    "package.json": '{"main": "chat"}',
    "chat/index.js": (
        "const express = require('express');\nconst app = express();\napp.use(\"/chat\", router);\n"
        "app.get('/chat/health', h);\n"
    ),
    ".venv/lib/python3.12/site-packages/other/app.py": (
        "from flask import Flask\napp = Flask('other')\n"
    ),
    "node_modules/express/index.js": "app.use('/express-internal', x)\n",
    "static/app.js": (
        "axios.get('/api/items').then(show);\n"
    ),  # the browser's: not a prefix of Node.js's
}
NOTHING = {"README.md": "# an app to be\n"}
APPS = {"firstday": FIRSTDAY, "factory": FACTORY, "express": EXPRESS, "nothing": NOTHING}


def write_app(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_it_writes_every_file_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    outcomes, _ = init_app(tmp_path)
    assert [(o.path, o.word) for o in outcomes] == [(path, "wrote") for path in FILES]
    before = snapshot(tmp_path)
    again, _ = init_app(tmp_path)
    assert [o.word for o in again] == ["unchanged"] * len(FILES)
    assert snapshot(tmp_path) == before


def test_a_file_that_differs_is_kept_without_force_and_replaced_with_a_diff_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fabfile.py").write_text("# my own fabfile\n")
    init(Context(), dir=str(tmp_path))
    out = capsys.readouterr().out
    assert (
        "kept      fabfile.py  (differs from what init writes: `init --force` shows the diff and"
        " replaces it)" in out
    )
    assert (tmp_path / "fabfile.py").read_text() == "# my own fabfile\n"
    init(Context(), dir=str(tmp_path), force=True)
    out = capsys.readouterr().out
    assert "--- a/fabfile.py\n+++ b/fabfile.py\n" in out and "-# my own fabfile\n" in out
    assert "replaced  fabfile.py" in out
    assert "from signalcraft_deploy import ns" in (tmp_path / "fabfile.py").read_text()


def test_the_ignore_lines_are_added_to_an_existing_gitignore_once(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text(".venv\n.env")
    init_app(tmp_path)
    assert (
        (tmp_path / ".gitignore").read_text()
        == ".venv\n.env\n# installed packages, venvs, bytecode, render-configs' output: never part of a release\n"
        "node_modules/\nvenv/\n__pycache__/\n/rendered/\n"
    )
    init_app(tmp_path)
    assert (tmp_path / ".gitignore").read_text().count("/rendered/") == 1
    assert subprocess.run(["git", "init", "-q", str(tmp_path)]).returncode == 0
    for ignored in (
        "node_modules/x/index.js",
        ".venv/bin/python",
        "venv/pyvenv.cfg",
        "pkg/__pycache__/a.pyc",
        "rendered/a",
    ):
        assert (
            subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", ignored]).returncode
            == 0
        ), ignored
    assert (
        subprocess.run(
            ["git", "-C", str(tmp_path), "check-ignore", "-q", "static/rendered/a"]
        ).returncode
        == 1
    )


def test_the_settings_file_holds_every_key_first_the_ones_a_first_deploy_needs() -> None:
    text = settings_text()
    for key in KEYS:
        assert f"# {key.help}" in text, key.name
        assert f"\n{key.name}=" in text or f"\n# {key.name}=" in text, key.name
    active = [line.split("=")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert active == list(FIRST_DEPLOY) and set(FIRST_DEPLOY) <= set(KEY_NAMES)
    assert text.index("A first deploy needs these") < text.index("# --- The rest")


def test_the_settings_file_gives_the_defaults_as_it_is_and_with_every_line_uncommented(
    tmp_path: Path,
) -> None:
    defaults = load_settings(environ={}, cwd=str(tmp_path)).public()
    (tmp_path / "deploy.env").write_text(settings_text())
    assert load_settings(env_file="deploy.env", environ={}, cwd=str(tmp_path)).public() == defaults
    uncommented = re.sub(r"^# ([A-Z][A-Z0-9_]*=)", r"\1", settings_text(), flags=re.M)
    (tmp_path / "all.env").write_text(uncommented)
    s = load_settings(env_file="all.env", environ={}, cwd=str(tmp_path))
    assert s.public() == defaults
    assert {
        k for k, where in s.origins.items() if where.startswith(str(tmp_path / "all.env"))
    } == set(KEY_NAMES)


def test_templates_copies_the_bundled_templates_and_points_templates_dir_at_them(
    tmp_path: Path,
) -> None:
    write_app(tmp_path, FACTORY)
    init_app(tmp_path)
    settings = tmp_path / SETTINGS_FILE
    settings.write_text(
        re.sub("^APP_NAME=.*$", "APP_NAME=shop", settings.read_text(), flags=re.M)
    )  # the user's own value
    outcomes, _ = init_app(tmp_path, templates=True)
    words = {o.path: o.word for o in outcomes}
    assert words[SETTINGS_FILE] == "updated" and "+TEMPLATES_DIR=deploy-templates" in next(
        o.diff for o in outcomes if o.path == SETTINGS_FILE
    )
    for name in TEMPLATES:
        assert (tmp_path / TEMPLATES_COPY / name).read_text() == (
            BUNDLED_TEMPLATES / name
        ).read_text()
    s = load_settings(env_file=SETTINGS_FILE, environ={}, cwd=str(tmp_path))
    assert (s.templates_dir, s.app_name) == (str(tmp_path / TEMPLATES_COPY), "shop")
    again, _ = init_app(tmp_path, templates=True)
    assert all(o.word == "unchanged" for o in again)


def test_templates_leaves_a_templates_dir_the_user_set(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("TEMPLATES_DIR=mine\n")
    outcomes, notes = init_app(tmp_path, templates=True)
    assert (tmp_path / SETTINGS_FILE).read_text() == "TEMPLATES_DIR=mine\n"
    assert (
        f"{SETTINGS_FILE} sets TEMPLATES_DIR=mine already: the copies in {TEMPLATES_COPY}/ are used"
        " once it names them." in notes
    )


def test_outside_a_git_checkout_it_says_a_deploy_ships_a_commit(tmp_path: Path) -> None:
    _, notes = init_app(tmp_path)
    assert any("is not in a git checkout" in note and "git init" in note for note in notes)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert not any("git checkout" in note for note in init_app(tmp_path)[1])


def test_set_key_takes_the_line_the_commented_line_or_appends() -> None:
    assert set_key("A=1\nTEMPLATES_DIR=x\n", "TEMPLATES_DIR", "y") == "A=1\nTEMPLATES_DIR=y\n"
    assert set_key("# TEMPLATES_DIR=\nB=2\n", "TEMPLATES_DIR", "y") == "TEMPLATES_DIR=y\nB=2\n"
    assert set_key("B=2", "TEMPLATES_DIR", "y") == "B=2\nTEMPLATES_DIR=y\n"


def test_the_workflow_deploys_in_one_line_with_the_host_key_from_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(init_module.importlib.metadata, "distribution", lambda name: FakeDist(None))
    init_app(tmp_path)
    text = (tmp_path / WORKFLOW).read_text()
    assert '        run: fab -H "ubuntu@$EC2_HOST" deploy\n' in text
    assert (
        "EC2_KNOWN_HOSTS: ${{ secrets.EC2_KNOWN_HOSTS }}" in text and "> ~/.ssh/known_hosts" in text
    )
    assert "EC2_SSH_KEY: ${{ secrets.EC2_SSH_KEY }}" in text
    assert "  cancel-in-progress: false\n" in text
    assert f"run: pip install signalcraft-deploy=={__version__}\n" in text
    assert "requirements.txt\n" not in text.split("run: pip install", 1)[1].split("\n", 1)[0]


def test_the_workflow_passes_github_s_schema(tmp_path: Path) -> None:
    init_app(tmp_path)
    checker = Path(sys.executable).with_name("check-jsonschema")
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed next to this Python")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(tmp_path / WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class FakeDist:
    def __init__(self, direct_url: dict | None, installer: str | None = "pip"):
        self.direct_url, self.installer = direct_url, installer

    def read_text(self, name: str) -> str | None:
        if name == "INSTALLER":
            return self.installer
        return json.dumps(self.direct_url) if self.direct_url is not None else None


WHEEL = f"signalcraft_deploy-{__version__}-py3-none-any.whl"


@pytest.mark.parametrize(
    ("direct_url", "spec"),
    [
        (None, f"signalcraft-deploy=={__version__}"),  # from a package index
        ({"url": f"file:///tmp/dist/{WHEEL}", "archive_info": {}}, None),
        (
            {"url": f"https://files.example.org/{WHEEL}", "archive_info": {}},
            f"signalcraft-deploy @ https://files.example.org/{WHEEL}",
        ),
        ({"url": "file:///home/me/sd", "dir_info": {"editable": True}}, None),
        (
            {
                "url": "https://github.com/org/signalcraft-deploy.git",
                "vcs_info": {"vcs": "git", "commit_id": "c" * 40},
            },
            f"signalcraft-deploy @ git+https://github.com/org/signalcraft-deploy.git@{'c' * 40}",
        ),
        (
            {
                "url": "https://bot:s3cret@github.com/org/sd.git",
                "vcs_info": {"vcs": "git", "commit_id": "c" * 40},
            },
            None,
        ),
        (
            {
                "url": "ssh://git@github.com/org/sd.git",
                "vcs_info": {"vcs": "git", "commit_id": "c" * 40},
            },
            f"signalcraft-deploy @ git+ssh://git@github.com/org/sd.git@{'c' * 40}",
        ),
        ({"url": "file:///home/me/sd", "vcs_info": {"vcs": "git", "commit_id": "c" * 40}}, None),
    ],
)
def test_the_workflow_installs_this_version_from_where_ci_can_reach_it(
    monkeypatch: pytest.MonkeyPatch, direct_url, spec
) -> None:
    monkeypatch.setattr(
        init_module.importlib.metadata, "distribution", lambda name: FakeDist(direct_url)
    )
    install = install_spec()
    assert install.spec == spec
    assert "s3cret" not in install.note


def test_a_copy_run_from_its_checkout_is_built_into_a_wheel_by_vendor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        init_module.importlib.metadata, "distribution", lambda name: FakeDist(None, installer=None)
    )
    install = (
        install_spec()
    )  # a checkout's build metadata (egg-info) is not an install from an index
    assert (install.spec, install.build) == (None, str(REPO))


def github_step(workflow: str, name: str) -> dict:
    from ruamel.yaml import YAML

    steps = YAML(typ="safe").load(workflow)["jobs"]["deploy"]["steps"]
    return next(step for step in steps if step.get("name") == name)


def run_step(step: dict, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A workflow step's `run:` in bash as GitHub runs it (`bash -e`), with RUNNER_TEMP and
    GITHUB_ENV."""
    (tmp_path / "runner").mkdir(exist_ok=True)
    base = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(tmp_path / "runner"),
        "GITHUB_ENV": str(tmp_path / "github_env"),
    }
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_copy_ci_cannot_reach_makes_the_install_step_fail_naming_vendor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        init_module.importlib.metadata,
        "distribution",
        lambda name: FakeDist({"url": f"file:///tmp/dist/{WHEEL}", "archive_info": {}}),
    )
    _, notes = init_app(tmp_path)
    assert any(
        "the workflow cannot install signalcraft-deploy: this copy was installed from the wheel"
        f" file /tmp/dist/{WHEEL}"
        in note
        and "init --vendor" in note
        for note in notes
    )
    done = run_step(
        github_step((tmp_path / WORKFLOW).read_text(), "Install signalcraft-deploy"), tmp_path
    )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"signalcraft-deploy was installed from the wheel file /tmp/dist/{WHEEL}, which CI"
        " cannot reach: run `signalcraft-deploy init --vendor` and commit .github/wheels/, or"
        " install the tool from git or a package index and run init again\n"
    )


def test_vendor_commits_the_wheel_replaces_an_older_one_and_the_workflow_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / WHEEL).write_bytes(b"PK the wheel")
    monkeypatch.setattr(
        init_module.importlib.metadata,
        "distribution",
        lambda name: FakeDist({"url": (dist / WHEEL).as_uri(), "archive_info": {}}),
    )
    app = tmp_path / "app"
    app.mkdir()
    subprocess.run(["git", "init", "-q", str(app)], check=True)
    init_app(app)  # without --vendor first: the install step that fails
    (app / ".github/wheels").mkdir(parents=True)
    (app / ".github/wheels/signalcraft_deploy-0.3.0-py3-none-any.whl").write_bytes(b"PK old")
    (app / ".gitignore").write_text("*.whl\n")
    outcomes, notes = init_app(app, vendor=True)
    words = {o.path: o.word for o in outcomes}
    assert words[".github/wheels/signalcraft_deploy-0.3.0-py3-none-any.whl"] == "removed"
    assert words[f".github/wheels/{WHEEL}"] == "wrote" and words[WORKFLOW] == "updated"
    assert sorted(p.name for p in (app / ".github/wheels").iterdir()) == [WHEEL]
    assert (app / ".github/wheels" / WHEEL).read_bytes() == b"PK the wheel"
    step = github_step((app / WORKFLOW).read_text(), "Install signalcraft-deploy")
    assert step["run"] == f"pip install ./.github/wheels/{WHEEL}"
    assert f"`git add -f .github/wheels/{WHEEL}`" in " ".join(
        notes
    )  # *.whl is ignored, and the workflow needs it
    again, _ = init_app(app, vendor=True)
    assert all(o.word == "unchanged" for o in again)


def test_vendor_keeps_the_user_s_own_workflow_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(init_module.importlib.metadata, "distribution", lambda name: FakeDist(None))
    init_app(tmp_path)
    workflow = tmp_path / WORKFLOW
    workflow.write_text(workflow.read_text().replace("timeout-minutes: 30", "timeout-minutes: 45"))
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / WHEEL).write_bytes(b"PK")
    monkeypatch.setattr(
        init_module.importlib.metadata,
        "distribution",
        lambda name: FakeDist({"url": (tmp_path / "dist" / WHEEL).as_uri(), "archive_info": {}}),
    )
    init_app(tmp_path, vendor=True)
    assert (
        "timeout-minutes: 45" in workflow.read_text()
        and f"pip install ./.github/wheels/{WHEEL}" in workflow.read_text()
    )


def test_vendor_is_not_needed_for_a_copy_from_an_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(init_module.importlib.metadata, "distribution", lambda name: FakeDist(None))
    outcomes, notes = init_app(tmp_path, vendor=True)
    assert not (tmp_path / ".github/wheels").exists()
    assert (
        "--vendor: not needed, the workflow installs signalcraft-deploy from the package index"
        in " ".join(notes)
    )


@pytest.mark.parametrize("secret", ["", "DATABASE_URL=postgres://app:pw@db/app\nTOKEN='a b'"])
def test_the_app_env_step_writes_the_secret_to_a_private_file_named_by_app_env_file(
    tmp_path: Path, secret: str
) -> None:
    init_app(tmp_path)
    step = github_step(
        (tmp_path / WORKFLOW).read_text(), "Write the app's .env from the APP_ENV secret"
    )
    assert step["env"] == {"APP_ENV": "${{ secrets.APP_ENV }}"}
    done = run_step(step, tmp_path, APP_ENV=secret)
    assert done.returncode == 0, done.stderr
    written_file = tmp_path / "runner/app.env"
    if not secret:  # skipped: the live release's .env is carried over
        assert not written_file.exists() and not (tmp_path / "github_env").exists()
        assert "no APP_ENV secret" in done.stdout
        return
    assert (
        written_file.read_text() == secret + "\n" and (written_file.stat().st_mode & 0o777) == 0o600
    )
    assert (tmp_path / "github_env").read_text() == f"APP_ENV_FILE={written_file}\n"
    assert "pw" not in done.stdout + done.stderr
    from dotenv import dotenv_values

    assert dotenv_values(written_file) == {
        "DATABASE_URL": "postgres://app:pw@db/app",
        "TOKEN": "a b",
    }


def test_the_written_files_are_ruff_clean(tmp_path: Path) -> None:
    init_app(tmp_path)
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this Python")
    done = subprocess.run(
        [str(ruff), "check", "--no-cache", "--isolated", "fabfile.py", "tasks.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


APP_TASK = '''
from invoke import task


@task
def seed(c):
    """Load the demo data."""
    print("seeded")


ns.add_task(seed)
'''


@pytest.mark.parametrize("program", ["invoke", "fab"])
def test_the_collection_lists_and_runs_the_app_s_own_task_added_as_the_comment_shows(
    tmp_path: Path, program: str
) -> None:
    write_app(tmp_path, FACTORY)
    init_app(tmp_path)
    entry = tmp_path / ("tasks.py" if program == "invoke" else "fabfile.py")
    entry.write_text(entry.read_text() + APP_TASK)
    env = {
        **{k: v for k, v in os.environ.items() if k not in (*KEY_NAMES, "ENV_FILE")},
        "PYTHONPATH": str(REPO),
    }
    binary = str(Path(sys.executable).with_name(program))
    listing = subprocess.run(
        [binary, "--list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    assert (
        "  seed " in listing.stdout
        and "  deploy " in listing.stdout
        and "  freeze " in listing.stdout
    )
    ran = subprocess.run(
        [binary, "seed"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (ran.returncode, ran.stdout) == (0, "seeded\n"), ran.stderr
    shown = subprocess.run(
        [binary, "settings"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        f"{tmp_path / SETTINGS_FILE}:" in shown.stdout
    )  # the settings come from deploy.env, without --env-file


def test_task_flags() -> None:
    names = {arg.names[0]: arg for arg in init.get_arguments()}
    assert set(names) == {"force", "templates", "dir", "vendor", "environments"}
    assert all(arg.help for arg in names.values())
    assert init.__doc__.splitlines()[0].startswith("Make this app's repository deployable")


@pytest.mark.parametrize(
    "value", ["nginx -t", "it's", 'a"b', "plain", "x#y", "back\\slash", "a b 'c' \"d\""]
)
def test_a_value_written_into_the_settings_file_reads_back_as_it_was(
    tmp_path: Path, value: str
) -> None:
    from dotenv import dotenv_values

    (tmp_path / "f.env").write_text(set_key("# NGINX_TEST_CMD=\n", "NGINX_TEST_CMD", value))
    assert dotenv_values(tmp_path / "f.env") == {"NGINX_TEST_CMD": value}


# --- init reads the app
# -------------------------------------------------------------------------------------------


def written(root: Path) -> dict[str, tuple[str, str]]:
    """{key: (value, the comment line right above it)} of deploy.env's active lines."""
    lines = (root / SETTINGS_FILE).read_text().splitlines()
    return {
        line.split("=", 1)[0]: (line.split("=", 1)[1], lines[i - 1])
        for i, line in enumerate(lines)
        if line and not line.startswith("#")
    }


@pytest.mark.parametrize("name", APPS)
def test_no_written_value_is_the_example_s_default_unless_it_was_found_in_the_app(
    tmp_path: Path, name: str
) -> None:
    write_app(tmp_path / name, APPS[name]) if APPS[name] else None
    init_app(tmp_path / name)
    defaults = {k.name: k.default for k in KEYS}
    host_keys = {
        "GUNICORN_BIND",
        "NODE_PORT",
        "NGINX_LISTEN",
        "SERVER_NAME",
    }  # the host's, not the app's
    for key, (value, comment) in written(tmp_path / name).items():
        if key in host_keys:
            continue
        assert comment.startswith(("# found: ", "# nothing found: ")), (key, comment)
        assert comment.startswith("# found: ") or value == "", (key, value, comment)
        if value and value == defaults.get(key):
            assert comment.startswith("# found: "), (key, value)
    assert set(written(tmp_path / name)) - host_keys == {
        "APP_NAME",
        "DEPLOY_ROOT",
        "WSGI_APP",
        "NODE_SCRIPT",
        "ROUTES",
        "MOUNTS",
        "HEALTH_PY",
        "HEALTH_NODE",
    } | ({"PY_ROUTES"} if name == "nothing" else set())


def values(root: Path) -> dict[str, str]:
    return {key: value for key, (value, _) in written(root).items()}


def test_a_module_level_flask_app_on_slash_with_its_own_health_route(tmp_path: Path) -> None:
    write_app(tmp_path / "firstday", FIRSTDAY)
    init_app(tmp_path / "firstday")
    got = written(tmp_path / "firstday")
    assert got["WSGI_APP"] == ("app:app", "# found: app.py:27 `app = Flask(...)`")
    assert got["NODE_SCRIPT"] == ("index.js", "# found: package.json scripts.start (node index.js)")
    assert got["HEALTH_PY"][0] == "/healthz" and "app.py:" in got["HEALTH_PY"][1]
    assert values(tmp_path / "firstday")["APP_NAME"] == "firstday"
    assert values(tmp_path / "firstday")["DEPLOY_ROOT"] == "/home/ubuntu/firstday"
    assert (
        got["ROUTES"][0] == "/=python,/node=nodejs" and "/node is a placeholder" in got["ROUTES"][1]
    )
    assert got["HEALTH_NODE"][0] == "/node"
    assert (
        got["MOUNTS"][0] == "/node"
    )  # code answering no prefix of its own is written for '/': mounted


def test_a_factory_in_a_package_with_a_blueprint_under_a_prefix(tmp_path: Path) -> None:
    write_app(tmp_path / "My Shop_2", FACTORY)
    init_app(tmp_path / "My Shop_2")
    got = values(tmp_path / "My Shop_2")
    assert (got["APP_NAME"], got["WSGI_APP"], got["NODE_SCRIPT"]) == (
        "my-shop-2",
        "shop:create_app()",
        "web/server.js",
    )
    assert (
        got["HEALTH_PY"] == "/api/ping"
    )  # register_blueprint's prefix wins over the Blueprint's own
    assert got["ROUTES"] == "/admin=python,/api=python,/=nodejs"
    assert got["HEALTH_NODE"] == "/"


def test_express_prefixes_go_to_node_and_venvs_and_node_modules_are_not_read(
    tmp_path: Path,
) -> None:
    write_app(tmp_path / "site", EXPRESS)
    _, notes = init_app(tmp_path / "site")
    got = written(tmp_path / "site")
    assert got["WSGI_APP"][0] == "wsgi:application"
    assert got["NODE_SCRIPT"][0] == "chat/index.js"
    assert got["HEALTH_PY"][0] == "/status"
    assert got["ROUTES"][0] == "/=python,/chat=nodejs" and "chat/index.js:3" in got["ROUTES"][1]
    assert got["HEALTH_NODE"][0] == "/chat"
    assert (
        got["MOUNTS"][0] == ""
    )  # app.use('/chat', ...) answers /chat itself: the path goes to it as sent
    assert (
        "the app has no .venv/ or venv/ to import it with" in notes[1]
    )  # its .venv has no bin/python


def test_nothing_found_leaves_each_key_empty_with_a_comment_and_settings_refuse_it(
    tmp_path: Path,
) -> None:
    write_app(tmp_path, NOTHING)
    init_app(tmp_path)
    got = written(tmp_path)
    for key in ("WSGI_APP", "NODE_SCRIPT", "ROUTES", "HEALTH_PY"):
        assert got[key][0] == "" and got[key][1].startswith("# nothing found: "), key
    assert "no .py file" in got["WSGI_APP"][1] and "no package.json" in got["NODE_SCRIPT"][1]
    with pytest.raises(SettingsError, match=r"WSGI_APP \(.*deploy.env:\d+\): found ''"):
        load_settings(env_file=SETTINGS_FILE, environ={}, cwd=str(tmp_path))
    with pytest.raises(
        SettingsError, match=r"PY_ROUTES \(.*deploy.env:\d+\): found ''"
    ):  # not the example's routes
        load_settings(
            env_file=SETTINGS_FILE, environ={}, cwd=str(tmp_path), overrides={"WSGI_APP": "a:b"}
        )


FAKE_APP = """
class Rule:
    def __init__(self, rule, methods, endpoint):
        self.rule, self.methods, self.endpoint = rule, set(methods), endpoint


class Map:
    def iter_rules(self):
        rules = [Rule("/static/<path:filename>", ["GET", "HEAD", "OPTIONS"], "static")]
        rules += [Rule(f"/reports/{n}", ["GET", "HEAD"], f"r{n}") for n in range(2)]  # a loop: no decorator to read
        return rules + [Rule("/", ["GET"], "index"), Rule("/livez", ["GET"], "live")]


class Middleware:
    def __init__(self, app):
        self.app = app


class App:
    url_map = Map()


def Flask(inner):
    return Middleware(inner)


print("loading the app")  # what an app prints on import is not the route list
app = Flask(App())
"""


def fake_venv(root: Path) -> None:
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/python").symlink_to(sys.executable)


def test_routes_come_from_the_app_s_own_venv_when_it_has_one_and_init_says_it_ran_the_app(
    tmp_path: Path,
) -> None:
    write_app(tmp_path, {"app.py": FAKE_APP})
    fake_venv(tmp_path)
    found, notes = init_module.read_app(tmp_path)
    assert found["HEALTH_PY"] == init_module.Found(
        "/livez", "endpoint live, Flask's routes from the url_map of app:app in .venv"
    )
    assert found["ROUTES"].value == "/=python,/node=nodejs"
    assert any(
        "init imported app:app with .venv/bin/python to read Flask's routes: that ran the app's own"
        " code on this machine" in note
        for note in notes
    )


def test_the_app_runs_with_a_bare_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_app(
        tmp_path,
        {
            "app.py": (
                "import os\nassert 'SECRET_FOR_TEST' not in os.environ, 'a secret reached the"
                " app'\nassert not any(k.startswith('FLASK') for k in os.environ)\n" + FAKE_APP
            )
        },
    )
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cret")
    monkeypatch.setenv("FLASK_ENV", "development")
    routes, how = init_module.url_map_routes(Path(sys.executable), tmp_path, "app:app")
    assert routes is not None, how
    assert [r.rule for r in routes] == [
        "/static/<path:filename>",
        "/reports/0",
        "/reports/1",
        "/",
        "/livez",
    ]
    assert not (
        tmp_path / "__pycache__"
    ).exists()  # the import leaves nothing behind in the app's folder
    assert routes[0].methods == frozenset({"GET"})


def test_an_app_that_fails_to_import_is_read_from_its_source_and_the_note_says_why(
    tmp_path: Path,
) -> None:
    write_app(
        tmp_path,
        {
            "app.py": (
                "from flask import Flask\nimport os\napp = Flask(__name__)\n"
                "DB = os.environ['DATABASE_URL']\n\n\n@app.get('/api/health')\ndef h():\n    pass\n"
            )
        },
    )
    fake_venv(tmp_path)
    found, notes = init_module.read_app(tmp_path)
    assert found["HEALTH_PY"].value == "/api/health"
    assert any(
        "Flask's routes were read from the source instead: .venv/bin/python could not load"
        " app:app: " in n
        for n in notes
    )
    assert any("ModuleNotFoundError" in n or "KeyError" in n for n in notes)


def test_an_app_that_hangs_on_import_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_app(tmp_path, {"app.py": "import time\ntime.sleep(60)\n"})
    monkeypatch.setattr(init_module, "URL_MAP_TIMEOUT", 1)
    routes, how = init_module.url_map_routes(Path(sys.executable), tmp_path, "app:app")
    assert routes is None and how.endswith("took over 1 s")


def _running(pid: int) -> bool:
    """Whether `pid` still runs, after the few moments a SIGKILL sent to it takes to end it (10 s at
    most)."""
    for _ in range(100):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except OSError:
            return False
        time.sleep(0.1)
    return True


def test_what_the_app_starts_while_it_loads_does_not_outlive_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app that starts a process while it is imported (a scheduler, a dev server, a worker): the
    # process kept the output pipe open, so init waited out the whole time limit, read no routes,
    # and left it running.
    write_app(
        tmp_path,
        {
            "app.py": (
                "import subprocess, sys\n"
                "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
                "open('child.pid', 'w').write(str(child.pid))\n"
                "class Rule:\n    rule, methods, endpoint = '/healthz', {'GET'}, 'health'\n"
                "class Map:\n    def iter_rules(self):\n        return [Rule()]\n"
                "class App:\n    url_map = Map()\napp = App()\n"
            )
        },
    )
    monkeypatch.setattr(init_module, "URL_MAP_TIMEOUT", 5)
    try:
        routes, how = init_module.url_map_routes(Path(sys.executable), tmp_path, "app:app")
        pid = int((tmp_path / "child.pid").read_text())
        assert routes is not None and [r.rule for r in routes] == ["/healthz"], how
        assert not _running(pid)
    finally:
        if (tmp_path / "child.pid").exists() and _running(
            int((tmp_path / "child.pid").read_text())
        ):
            os.kill(int((tmp_path / "child.pid").read_text()), 9)


def test_a_second_init_does_not_run_the_app_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_app(tmp_path, FIRSTDAY)
    init_app(tmp_path)
    monkeypatch.setattr(init_module, "read_app", lambda root: pytest.fail("read again"))
    assert all(o.word == "unchanged" for o in init_app(tmp_path)[0])


@pytest.mark.parametrize("name", ["firstday", "factory", "express"])
def test_what_init_found_is_taken_by_the_settings_as_it_is(tmp_path: Path, name: str) -> None:
    write_app(tmp_path / name, APPS[name])
    init_app(tmp_path / name)
    s = load_settings(env_file=SETTINGS_FILE, environ={}, cwd=str(tmp_path / name))
    for key, value in values(tmp_path / name).items():
        assert s.origins[key].startswith(str(tmp_path / name / SETTINGS_FILE)), key
        assert (getattr(s, key.lower()) is not None) is (value != ""), (
            key
        )  # an empty line: the key unset


def test_vendor_that_cannot_build_says_so_without_the_url_s_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "https://bot:s3cret@127.0.0.1:9/org/sd.git"
    monkeypatch.setattr(
        init_module.importlib.metadata,
        "distribution",
        lambda name: FakeDist({"url": url, "vcs_info": {"vcs": "git", "commit_id": "c" * 40}}),
    )
    with pytest.raises(Exit) as refused:
        init_app(tmp_path, vendor=True)
    assert refused.value.code == 1 and "s3cret" not in str(refused.value.message)
    assert str(refused.value.message).startswith(
        "--vendor: pip could not build a wheel of signalcraft-deploy (installed "
        "from git at https://127.0.0.1:9/org/sd.git"
    )
    assert not (tmp_path / WORKFLOW).exists()  # nothing written


def test_socket_io_under_a_prefix_gets_a_note_on_its_client_s_path(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        {**EXPRESS, "package.json": '{"main": "chat", "dependencies": {"socket.io": "^4"}}'},
    )
    _, notes = init_module.read_app(tmp_path)
    assert "give the client path: '/chat/socket.io' (the server keeps /socket.io" in " ".join(notes)


def test_init_says_a_socket_io_app_runs_one_process_and_writes_wait_ready_when_the_app_sends_it(
    tmp_path: Path,
) -> None:
    write_app(
        tmp_path,
        {
            **EXPRESS,
            "package.json": '{"main": "chat", "dependencies": {"socket.io": "^4"}}',
            "chat/index.js": EXPRESS["chat/index.js"]
            + "server.listen(3000, () => process.send('ready'));\n",
        },
    )
    found, notes = init_module.read_app(tmp_path)
    assert "package.json depends on socket.io" in " ".join(notes)
    assert "NODE_INSTANCES=1" in " ".join(notes)
    assert found["NODE_WAIT_READY"].value == "true"
    text = init_module.settings_text(found)
    assert "\nNODE_WAIT_READY=true\n" in text
    assert "# found: chat/index.js:5 sends process.send('ready')" in text


# A repository read by init (from its source: nothing of it runs) whose Flask rule and file name
# hold line breaks that, written as they are, would be deploy.env lines of their own: settings the
# user never chose.
HOSTILE = {
    "app.py": (
        "from flask import Flask\napp = Flask(__name__)\n\n\n@app.get('/')\ndef index():\n   "
        " return 'hi'\n\n\n@app.get('/x\\nALLOW_PUBLIC_BIND=true\\n/healthz')\ndef health():\n   "
        " return 'ok'\n\n\n@app.get('/a#b/\\x1b[2Jc')\ndef other():\n    return 'x'\n"
    ),
    "package.json": '{"main": "index.js"}',
    "index.js": "",
    "x\nGUNICORN_BIND=0.0.0.0:8000\n\x1b[2J.js": "app.use('/chat', router)\n",
}


def test_nothing_an_app_s_source_holds_becomes_a_settings_line_of_its_own(tmp_path: Path) -> None:
    from dotenv import dotenv_values

    write_app(tmp_path / "app", HOSTILE)
    _, notes = init_app(tmp_path / "app")
    text = (tmp_path / "app" / SETTINGS_FILE).read_text()
    assert not re.search(r"^(ALLOW_PUBLIC_BIND|GUNICORN_BIND=0\.0\.0\.0)", text, re.M)
    assert "\x1b" not in text and not any(
        "\x1b" in note for note in notes
    )  # no terminal escapes shown either
    read = dotenv_values(tmp_path / "app" / SETTINGS_FILE)
    assert read.get("ALLOW_PUBLIC_BIND") is None and read["GUNICORN_BIND"] == "127.0.0.1:8001"
    assert (
        read["HEALTH_PY"] == "" and "\n" not in read["ROUTES"]
    )  # what settings would refuse is not written
    s = load_settings(
        env_file=SETTINGS_FILE, environ={}, cwd=str(tmp_path / "app"), overrides={"HEALTH_PY": "/"}
    )
    assert s.routes == (("/", "python"), ("/chat", "nodejs"))


def test_a_venv_the_repository_commits_is_not_run(tmp_path: Path) -> None:
    # A clone of someone's repository holding .venv/ of its own: its bin/python (a script, or a real
    # Python with a .pth file beside) is the repository's program, not a venv the user made. init
    # reads such an app from its source (no code of it runs); a deploy refuses the committed venv
    # anyway.
    root = write_app(
        tmp_path / "app",
        {
            **FIRSTDAY,
            ".venv/pyvenv.cfg": "home = /usr/bin\n",
            ".venv/bin/python": f'#!/bin/sh\ntouch {tmp_path}/ran\nexec {sys.executable} "$@"\n',
        },
    )
    (root / ".venv/bin/python").chmod(0o755)
    for argv in (["init", "-q"], ["add", "-f", ".venv"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True, capture_output=True)
    _, notes = init_app(root)
    assert not (tmp_path / "ran").exists()
    assert any(
        "the repository commits .venv/" in n and "read from the source" in n for n in notes
    ), notes
    assert not any("no .venv/ or venv/" in n for n in notes), notes


CELERY_APP = """from celery import Celery

celery = Celery("shop", broker="redis://localhost")
celery.conf.beat_schedule = {"tick": {"task": "shop.tick", "schedule": 1.0}}
"""


def test_init_suggests_procfile_lines_for_celery_rq_and_node_queues_and_writes_no_procfile(
    tmp_path: Path,
) -> None:
    write_app(
        tmp_path,
        {
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
            "shop/tasks.py": CELERY_APP,
            "jobs.py": "from rq import Queue\n",
            "package.json": json.dumps({"dependencies": {"bullmq": "5"}}),
        },
    )
    _, notes = init_module.read_app(tmp_path)
    suggested = next(n for n in notes if "found workers or schedulers" in n)
    assert (
        "`worker: celery -A shop.tasks:celery worker` (a Celery app in shop/tasks.py)" in suggested
    )
    assert "`beat: celery -A shop.tasks:celery beat --schedule shared/celerybeat-schedule`" in (
        suggested
    )
    assert "`worker: rq worker --url $REDIS_URL` (RQ imported in jobs.py" in suggested
    assert "(package.json depends on bullmq)" in suggested
    assert not (tmp_path / "Procfile").exists()


def test_init_says_what_an_existing_procfile_runs_or_why_a_deploy_would_refuse_it(
    tmp_path: Path,
) -> None:
    write_app(tmp_path, {"app.py": "from flask import Flask\napp = Flask(__name__)\n"})
    (tmp_path / "Procfile").write_text(
        "web: gunicorn app:app\nworker: rq worker\nclock: node c.js\n"
    )
    _, notes = init_module.read_app(tmp_path)
    assert (
        "Procfile: the deploy runs worker (python), clock (nodejs, singleton) under PM2"
        in "".join(notes)
    )
    assert not any("found workers or schedulers" in n for n in notes)
    (tmp_path / "Procfile").write_text("release: flask db upgrade\n")
    _, notes = init_module.read_app(tmp_path)
    assert any(
        n.startswith("Procfile: a deploy would refuse it:") and "BEFORE_SWITCH" in n for n in notes
    )


def test_an_app_without_workers_gets_no_procfile_note(tmp_path: Path) -> None:
    write_app(tmp_path, {"app.py": "from flask import Flask\napp = Flask(__name__)\n"})
    _, notes = init_module.read_app(tmp_path)
    assert not any("Procfile" in n for n in notes)
