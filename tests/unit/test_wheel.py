"""The wheel is the library: built from this checkout, installed in a fresh venv outside it, it
finds its templates and remote programs, lists its tasks, and answers as `signalcraft-deploy`.

Needs the package index (the build backend and the dependencies are installed from it); skipped,
saying so, when the index cannot be reached. About a minute, most of it pip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from signalcraft_deploy import __version__
from signalcraft_deploy.core import render
from signalcraft_deploy.core.settings import load_settings

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "signalcraft_deploy"
# What the wheel must carry besides modules: the same globs as pyproject.toml's package-data.
DATA_GLOBS = ("templates/*.j2", "templates/init/*.j2", "remote/*.py", "remote/*.js", "remote/*.sh")
# Left out of the copy the wheel is built from: a stale build/ would leak deleted files into it.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "node_modules",
                                    ".sandbox", "rendered", ".pytest_cache", ".ruff_cache")

# Run by the venv's Python from an empty folder: what the installed package sees.
PROBE = r"""
import json, os, sys
from importlib.metadata import version
from pathlib import Path

import signalcraft_deploy
from signalcraft_deploy.collection import ns
from signalcraft_deploy.core import render
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy import remote
from signalcraft_deploy.host import facts

package = Path(signalcraft_deploy.__file__).parent
s = load_settings(environ={}, cwd=os.getcwd())
print(json.dumps({
    "file": signalcraft_deploy.__file__,
    "sys_path": sys.path,
    "version": signalcraft_deploy.__version__,
    "dist_version": version("signalcraft-deploy"),
    "tasks": sorted(ns.task_names),
    "templates_dir": str(render.BUNDLED_TEMPLATES),
    "data": sorted(str(p.relative_to(package)) for g in sys.argv[1:] for p in package.glob(g)),
    "gunicorn_conf": render.render_gunicorn_conf(s),
    "ecosystem": render.render_ecosystem(s, render.venv_dir(s, "")),
    "nginx_site": render.render_nginx_site(s),
    "pm2_rpc_js": len(facts.PM2_RPC_JS),
    "probe_py": len(remote.program("probe")),
}))
"""


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH or VIRTUAL_ENV from this run: the installed venv must stand on its own.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _pip(python: str | Path, args: list[str | Path], cwd: Path) -> str:
    """pip's output; a skip if pip failed because the package index cannot be reached, a failure otherwise."""
    result = _run([python, "-m", "pip", *args, "--disable-pip-version-check"], cwd)
    if result.returncode != 0:
        # Asked only after a failure: a range nothing satisfies fails the test, an index that cannot be reached skips it.
        index = _run([python, "-m", "pip", "index", "versions", "fabric", "--disable-pip-version-check"], cwd, timeout=120)
        if index.returncode != 0:
            said = (index.stderr.strip().splitlines() or [f"exit code {index.returncode}"])[-1]
            pytest.skip(f"package index unreachable: `pip {args[0]}` failed, and `pip index versions fabric` said: {said}")
    return _check(result)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (outside the repository) with the wheel built from this checkout installed."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO)
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    _pip(sys.executable, ["wheel", "--no-deps", "-q", "-w", root / "dist", "."], source)
    wheels = list((root / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"signalcraft_deploy-{__version__}-py3-none-any.whl"]
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    _pip(env_dir / "bin" / "python", ["install", "-q", wheels[0]], root)  # the dependencies from the index
    return env_dir


@pytest.fixture(scope="module")
def probe(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    empty = tmp_path_factory.mktemp("empty")  # no .env, no fabfile.py: the defaults
    return json.loads(_check(_run([installed / "bin" / "python", "-c", PROBE, *DATA_GLOBS], empty)))


def test_the_installed_package_is_imported_not_the_checkout(probe: dict, installed: Path) -> None:
    assert Path(probe["file"]).resolve().is_relative_to(installed.resolve())
    assert not any(p and Path(p).resolve() == REPO for p in probe["sys_path"])


def test_the_distribution_version_is_the_package_version(probe: dict) -> None:
    assert probe["version"] == probe["dist_version"] == __version__


def test_the_collection_has_the_tasks(probe: dict) -> None:
    assert {"deploy", "freeze", "rollback", "status"} <= set(probe["tasks"])


def test_every_template_and_remote_program_is_installed(probe: dict, installed: Path) -> None:
    in_checkout = sorted(str(p.relative_to(PACKAGE)) for g in DATA_GLOBS for p in PACKAGE.glob(g))
    assert probe["data"] == in_checkout
    assert Path(probe["templates_dir"]).resolve().is_relative_to(installed.resolve())
    assert probe["pm2_rpc_js"] > 0 and probe["probe_py"] > 0


def test_the_installed_templates_render_as_the_checkout_s(probe: dict, tmp_path: Path) -> None:
    s = load_settings(environ={}, cwd=str(tmp_path))
    assert probe["gunicorn_conf"] == render.render_gunicorn_conf(s)
    assert probe["ecosystem"] == render.render_ecosystem(s, render.venv_dir(s, ""))
    assert probe["nginx_site"] == render.render_nginx_site(s)
    assert "bind = ['127.0.0.1:8001']" in probe["gunicorn_conf"]


def test_the_console_script_prints_the_version(installed: Path, tmp_path: Path) -> None:
    out = _check(_run([installed / "bin" / "signalcraft-deploy", "--version"], tmp_path))
    assert out.splitlines()[0] == f"signalcraft-deploy {__version__}"


def test_the_console_script_lists_the_tasks_without_a_fabfile(installed: Path, tmp_path: Path) -> None:
    out = _check(_run([installed / "bin" / "signalcraft-deploy", "--list"], tmp_path))
    assert "  deploy " in out and "  rollback " in out


def test_fab_finds_the_collection_from_a_one_line_fabfile(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "fabfile.py").write_text("from signalcraft_deploy import ns  # noqa: F401\n")
    out = _check(_run([installed / "bin" / "fab", "--list"], tmp_path))
    assert "  deploy " in out
