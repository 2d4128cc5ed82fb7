"""`init`: the files it writes into an app's repository, that it never overwrites without --force (and then
shows the diff), that a second run changes nothing, and that what it writes works: the settings file is the
declarations' defaults, the fabfile/tasks.py expose the collection and take the app's own tasks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Context

from signalcraft_deploy import __version__
from signalcraft_deploy.core.render import BUNDLED_TEMPLATES, TEMPLATES
from signalcraft_deploy.core.settings import KEY_NAMES, KEYS, load_settings
from signalcraft_deploy.tasks import init as init_module
from signalcraft_deploy.tasks.init import (
    FIRST_DEPLOY,
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
FILES = ["fabfile.py", "tasks.py", SETTINGS_FILE, WORKFLOW, ".gitignore"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_it_writes_every_file_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    outcomes, _ = init_app(tmp_path)
    assert [(o.path, o.word) for o in outcomes] == [(path, "wrote") for path in FILES]
    before = snapshot(tmp_path)
    again, _ = init_app(tmp_path)
    assert [o.word for o in again] == ["unchanged"] * len(FILES)
    assert snapshot(tmp_path) == before


def test_a_file_that_differs_is_kept_without_force_and_replaced_with_a_diff_with_it(tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fabfile.py").write_text("# my own fabfile\n")
    init(Context(), dir=str(tmp_path))
    out = capsys.readouterr().out
    assert "kept      fabfile.py  (differs from what init writes: `init --force` shows the diff and replaces it)" in out
    assert (tmp_path / "fabfile.py").read_text() == "# my own fabfile\n"
    init(Context(), dir=str(tmp_path), force=True)
    out = capsys.readouterr().out
    assert "--- a/fabfile.py\n+++ b/fabfile.py\n" in out and "-# my own fabfile\n" in out
    assert "replaced  fabfile.py" in out
    assert "from signalcraft_deploy import ns" in (tmp_path / "fabfile.py").read_text()


def test_the_ignore_line_is_added_to_an_existing_gitignore_once(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text(".venv/\n.env")
    init_app(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == ".venv/\n.env\n# render-configs' local output\n/rendered/\n"
    init_app(tmp_path)
    assert (tmp_path / ".gitignore").read_text().count("/rendered/") == 1


def test_the_settings_file_holds_every_key_first_the_ones_a_first_deploy_needs() -> None:
    text = settings_text()
    for key in KEYS:
        assert f"# {key.help}" in text, key.name
        assert f"\n{key.name}=" in text or f"\n# {key.name}=" in text, key.name
    active = [line.split("=")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert active == list(FIRST_DEPLOY) and set(FIRST_DEPLOY) <= set(KEY_NAMES)
    assert text.index("A first deploy needs these") < text.index("# --- The rest")


def test_the_settings_file_gives_the_defaults_as_it_is_and_with_every_line_uncommented(tmp_path: Path) -> None:
    defaults = load_settings(environ={}, cwd=str(tmp_path)).public()
    (tmp_path / "deploy.env").write_text(settings_text())
    assert load_settings(env_file="deploy.env", environ={}, cwd=str(tmp_path)).public() == defaults
    uncommented = re.sub(r"^# ([A-Z][A-Z0-9_]*=)", r"\1", settings_text(), flags=re.M)
    (tmp_path / "all.env").write_text(uncommented)
    s = load_settings(env_file="all.env", environ={}, cwd=str(tmp_path))
    assert s.public() == defaults
    assert {k for k, where in s.origins.items() if where.startswith(str(tmp_path / "all.env"))} == set(KEY_NAMES)


def test_templates_copies_the_bundled_templates_and_points_templates_dir_at_them(tmp_path: Path) -> None:
    init_app(tmp_path)
    settings = tmp_path / SETTINGS_FILE
    settings.write_text(settings.read_text().replace("APP_NAME=signalcraft", "APP_NAME=shop"))  # the user's own value
    outcomes, _ = init_app(tmp_path, templates=True)
    words = {o.path: o.word for o in outcomes}
    assert words[SETTINGS_FILE] == "updated" and "+TEMPLATES_DIR=deploy-templates" in next(o.diff for o in outcomes
                                                                                              if o.path == SETTINGS_FILE)
    for name in TEMPLATES:
        assert (tmp_path / TEMPLATES_COPY / name).read_text() == (BUNDLED_TEMPLATES / name).read_text()
    s = load_settings(env_file=SETTINGS_FILE, environ={}, cwd=str(tmp_path))
    assert (s.templates_dir, s.app_name) == (str(tmp_path / TEMPLATES_COPY), "shop")
    again, _ = init_app(tmp_path, templates=True)
    assert all(o.word == "unchanged" for o in again)


def test_templates_leaves_a_templates_dir_the_user_set(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("TEMPLATES_DIR=mine\n")
    outcomes, notes = init_app(tmp_path, templates=True)
    assert (tmp_path / SETTINGS_FILE).read_text() == "TEMPLATES_DIR=mine\n"
    assert f"{SETTINGS_FILE} sets TEMPLATES_DIR=mine already: the copies in {TEMPLATES_COPY}/ are used once it names them." in notes


def test_outside_a_git_checkout_it_says_a_deploy_ships_a_commit(tmp_path: Path) -> None:
    _, notes = init_app(tmp_path)
    assert any("is not in a git checkout" in note and "git init" in note for note in notes)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert init_app(tmp_path)[1] == []


def test_set_key_takes_the_line_the_commented_line_or_appends() -> None:
    assert set_key("A=1\nTEMPLATES_DIR=x\n", "TEMPLATES_DIR", "y") == "A=1\nTEMPLATES_DIR=y\n"
    assert set_key("# TEMPLATES_DIR=\nB=2\n", "TEMPLATES_DIR", "y") == "TEMPLATES_DIR=y\nB=2\n"
    assert set_key("B=2", "TEMPLATES_DIR", "y") == "B=2\nTEMPLATES_DIR=y\n"


def test_the_workflow_deploys_in_one_line_with_the_host_key_from_secrets(tmp_path: Path) -> None:
    init_app(tmp_path)
    text = (tmp_path / WORKFLOW).read_text()
    assert '        run: fab -H "ubuntu@$EC2_HOST" deploy\n' in text
    assert "EC2_KNOWN_HOSTS: ${{ secrets.EC2_KNOWN_HOSTS }}" in text and "> ~/.ssh/known_hosts" in text
    assert "EC2_SSH_KEY: ${{ secrets.EC2_SSH_KEY }}" in text
    assert "  cancel-in-progress: false\n" in text
    assert f"run: pip install signalcraft-deploy=={__version__}\n" in text
    assert "requirements.txt\n" not in text.split("run: pip install", 1)[1].split("\n", 1)[0]


def test_the_workflow_passes_github_s_schema(tmp_path: Path) -> None:
    init_app(tmp_path)
    checker = Path(sys.executable).with_name("check-jsonschema")
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed next to this Python")
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", str(tmp_path / WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


class FakeDist:
    def __init__(self, direct_url: dict | None):
        self.direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        return json.dumps(self.direct_url) if self.direct_url is not None else None


@pytest.mark.parametrize(("direct_url", "spec"), [
    (None, f"signalcraft-deploy=={__version__}"),
    ({"url": "file:///tmp/dist/signalcraft_deploy-0.4.0-py3-none-any.whl", "archive_info": {}}, f"signalcraft-deploy=={__version__}"),
    ({"url": "https://github.com/org/signalcraft-deploy.git", "vcs_info": {"vcs": "git", "commit_id": "c" * 40}},
     f"signalcraft-deploy @ git+https://github.com/org/signalcraft-deploy.git@{'c' * 40}"),
    ({"url": "https://bot:s3cret@github.com/org/sd.git", "vcs_info": {"vcs": "git", "commit_id": "c" * 40}},
     f"signalcraft-deploy=={__version__}"),
    ({"url": "ssh://git@github.com/org/sd.git", "vcs_info": {"vcs": "git", "commit_id": "c" * 40}},
     f"signalcraft-deploy @ git+ssh://git@github.com/org/sd.git@{'c' * 40}"),
    ({"url": "file:///home/me/sd", "vcs_info": {"vcs": "git", "commit_id": "c" * 40}}, f"signalcraft-deploy=={__version__}"),
])
def test_the_workflow_installs_this_version_from_where_ci_can_reach_it(monkeypatch: pytest.MonkeyPatch, direct_url, spec) -> None:
    monkeypatch.setattr(init_module.importlib.metadata, "distribution", lambda name: FakeDist(direct_url))
    assert install_spec()[0] == spec


def test_the_written_files_are_ruff_clean(tmp_path: Path) -> None:
    init_app(tmp_path)
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this Python")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--isolated", "fabfile.py", "tasks.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
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
def test_the_collection_lists_and_runs_the_app_s_own_task_added_as_the_comment_shows(tmp_path: Path, program: str) -> None:
    init_app(tmp_path)
    entry = tmp_path / ("tasks.py" if program == "invoke" else "fabfile.py")
    entry.write_text(entry.read_text() + APP_TASK)
    env = {**{k: v for k, v in os.environ.items() if k not in (*KEY_NAMES, "ENV_FILE")}, "PYTHONPATH": str(REPO)}
    binary = str(Path(sys.executable).with_name(program))
    listing = subprocess.run([binary, "--list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "  seed " in listing.stdout and "  deploy " in listing.stdout and "  freeze " in listing.stdout
    ran = subprocess.run([binary, "seed"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "seeded\n"), ran.stderr
    shown = subprocess.run([binary, "settings"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert f"{tmp_path / SETTINGS_FILE}:" in shown.stdout  # the settings come from deploy.env, without --env-file


def test_task_flags() -> None:
    names = {arg.names[0]: arg for arg in init.get_arguments()}
    assert set(names) == {"force", "templates", "dir"}
    assert all(arg.help for arg in names.values())
    assert init.__doc__.splitlines()[0].startswith("Make this app's repository deployable")


@pytest.mark.parametrize("value", ["nginx -t", "it's", 'a"b', "plain", "x#y", "back\\slash", "a b 'c' \"d\""])
def test_a_value_written_into_the_settings_file_reads_back_as_it_was(tmp_path: Path, value: str) -> None:
    from dotenv import dotenv_values

    (tmp_path / "f.env").write_text(set_key("# NGINX_TEST_CMD=\n", "NGINX_TEST_CMD", value))
    assert dotenv_values(tmp_path / "f.env") == {"NGINX_TEST_CMD": value}
