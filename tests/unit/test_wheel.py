"""The wheel pip builds from this repository holds the whole tool: every module of the package,
the remote programs, and the top-level `templates/` as the package's `templates/` folder, which
the installed tool renders from (`init --vendor` and a git-URL install both build this wheel)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("signalcraft_deploy-*.whl")
    return built


def repository_files() -> set[str]:
    package = {
        str(p.relative_to(REPO))
        for p in (REPO / "signalcraft_deploy").rglob("*")
        if p.suffix in {".py", ".js", ".sh"} and "__pycache__" not in p.parts
    }
    templates = {
        "signalcraft_deploy/" + str(p.relative_to(REPO)) for p in (REPO / "templates").rglob("*.j2")
    }
    return package | templates


def test_the_wheel_holds_every_module_program_and_template(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert repository_files() - names == set()
    assert "signalcraft_deploy/templates/init/fabfile.py.j2" in names


def test_the_installed_tool_renders_from_the_templates_in_its_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from signalcraft_deploy.core.render import BUNDLED_TEMPLATES as t;"
            "print(t, sorted(p.name for p in t.glob('*.j2')))",
            str(site),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    folder, _, listed = shown.partition(" ")
    assert Path(folder) == site / "signalcraft_deploy" / "templates"
    assert "'gunicorn.conf.py.j2'" in listed and "'ecosystem.config.js.j2'" in listed


def test_a_checkout_renders_from_its_top_level_templates() -> None:
    from signalcraft_deploy.core.render import BUNDLED_TEMPLATES

    assert BUNDLED_TEMPLATES == REPO / "templates"
    assert not (REPO / "signalcraft_deploy" / "templates").exists()
