"""The commands README.md and docs/ show that act on this machine only, run as shown.

Each runs with bash in a git copy of the example app (or in this checkout, where the page says so),
with this checkout's package on PYTHONPATH and a `signalcraft-deploy` on PATH that runs it (the
checkout is not installed). tests/unit/test_docs.py holds DOCUMENTED to the pages; the commands that
act on a host are tests/e2e/test_docs_commands.py's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_deploy import __version__, ns
from signalcraft_deploy.core.settings import readme_table

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "signalcraft"

INIT = "signalcraft-deploy init"
LIST = "fab --list"
SETTINGS = "invoke settings"
TABLE = "invoke settings --defaults --markdown"
RENDER = "invoke render-configs"
VERSION = "signalcraft-deploy --version"
UNIT_MODULE = "python -m pytest -q -p no:cacheprovider tests/unit/test_render.py"
ENVIRONMENTS = "signalcraft-deploy init --environments staging,production"
STAGING_SETTINGS = "invoke settings --environment staging"
DOCUMENTED = (
    INIT,
    LIST,
    SETTINGS,
    TABLE,
    RENDER,
    VERSION,
    UNIT_MODULE,
    ENVIRONMENTS,
    STAGING_SETTINGS,
)


def run(command: str, cwd: Path, bin_dir: Path) -> str:
    assert command in DOCUMENTED
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ENV_FILE", "VIRTUAL_ENV") and not k.startswith(("APP_", "NODE_", "NGINX_"))
    }
    env |= {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`signalcraft-deploy` as a console script would run it, from this checkout."""
    folder = tmp_path_factory.mktemp("bin")
    script = folder / "signalcraft-deploy"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m signalcraft_deploy "$@"\n')
    script.chmod(0o755)
    return folder


def example_copy(path: Path) -> Path:
    """A git copy of the example app."""
    shutil.copytree(
        EXAMPLE,
        path,
        ignore=shutil.ignore_patterns(".venv", "node_modules", "__pycache__", "rendered"),
    )
    for git in ("git init -q -b main", "git add -A", "git commit -qm app"):
        subprocess.run(
            git.split(),
            cwd=path,
            check=True,
            capture_output=True,
            env=os.environ
            | {
                "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t",
            },
        )
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path) -> Path:
    """A git copy of the example app after `signalcraft-deploy init`, as the README has it."""
    path = example_copy(tmp_path_factory.mktemp("docs") / "your-app")
    out = run(INIT, path, bin_dir)
    assert "wrote     deploy.env" in out and (path / "fabfile.py").is_file(), out
    return path


def test_init_with_environments_and_settings_of_one(
    tmp_path_factory: pytest.TempPathFactory, bin_dir: Path
):
    path = example_copy(tmp_path_factory.mktemp("staged") / "your-app")
    out = run(ENVIRONMENTS, path, bin_dir)
    assert "wrote     deploy.staging.env" in out and "wrote     deploy.production.env" in out, out
    assert "wrote     .github/workflows/rollback.yml" in out, out
    with open(path / "deploy.staging.env", "a", encoding="utf-8") as staging:
        staging.write("NODE_PORT=3100\n")
    out = run(STAGING_SETTINGS, path, bin_dir)
    assert f"environment staging: {path}/deploy.staging.env over {path}/deploy.env" in out, out
    row = next(line for line in out.splitlines() if line.startswith("NODE_PORT "))
    assert row.split()[1:] == ["3100", f"{path}/deploy.staging.env:13"], row


def test_fab_list_in_the_app_lists_every_task(app: Path, bin_dir: Path):
    listed = run(LIST, app, bin_dir)
    assert all(f"\n  {name} " in listed for name in ns.task_names), listed


def test_invoke_settings_says_where_each_value_comes_from(app: Path, bin_dir: Path):
    out = run(SETTINGS, app, bin_dir)
    assert "APP_NAME" in out and "deploy.env" in out, out


@pytest.mark.parametrize("where", ["app", "checkout"])
def test_the_settings_table_printed_is_the_one_docs_settings_shows(
    where: str, app: Path, bin_dir: Path
):
    out = run(TABLE, app if where == "app" else REPO, bin_dir)
    assert out.strip() == readme_table()


def test_render_configs_writes_the_rendered_files_into_the_app_s_folder(app: Path, bin_dir: Path):
    run(RENDER, app, bin_dir)
    assert "bind = ['127.0.0.1:8001']" in (app / "rendered/gunicorn.conf.py").read_text()
    assert (app / "rendered/ecosystem.config.js").is_file()


def test_the_version_is_the_package_s(app: Path, bin_dir: Path):
    assert run(VERSION, app, bin_dir).splitlines()[0] == f"signalcraft-deploy {__version__}"


def test_one_unit_test_module_runs_from_the_checkout(bin_dir: Path):
    assert " passed" in run(UNIT_MODULE, REPO, bin_dir)


def test_render_configs_renders_the_working_tree_s_procfile_processes(app: Path, bin_dir: Path):
    (app / "Procfile").write_text(
        "web: gunicorn app:app\nworker: rq worker\nclock: python clock.py\n"
    )
    out = run(RENDER, app, bin_dir)
    ecosystem = (app / "rendered/ecosystem.config.js").read_text()
    assert '-worker",' in ecosystem and '-clock",' in ecosystem
    assert '"--", "rq", "worker"]' in ecosystem and '"--", "python", "clock.py"]' in ecosystem
    assert "web:" in out  # the note that the tool serves web itself
