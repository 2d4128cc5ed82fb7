"""README.md and docs/ tell the truth about the code, and every command they show is run by a test.

The facts are read from the code, so a rename there fails here and names the page to fix: the
step lists (steps/), the tasks (the collection), the settings table (the key declarations), the
package's modules, its version, the masking rule. Every relative link and every repository path a
page names exists, and no page points outside the repository (a plan, DESIGN.md, an issue number).

Commands: a page shows a command as a `$ ` line in a ```console block (a command inside a sentence
counts too). Each test module that runs documented commands keeps them in a module-level
`DOCUMENTED` tuple and runs exactly those lines; CI runs the `run:` lines of its workflow. A shown
command that nothing runs, or a registered one no page shows, fails here.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

import pytest

from signalcraft_deploy import __version__, ns
from signalcraft_deploy.core.settings import KEY_NAMES, readme_table
from signalcraft_deploy.remote.masking import MIN_LENGTH
from signalcraft_deploy.steps.deploy import DEPLOY_STEPS
from signalcraft_deploy.steps.remove import PURGE_STEPS, REMOVE_STEPS
from signalcraft_deploy.tasks.init import WHEELS_DIR

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
# The pages held to the code; docs/design/ holds design notes, each written against the commit it
# names, and is only linked.
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
PACKAGE = REPO / "signalcraft_deploy"
# The tests that run documented commands, each with its DOCUMENTED tuple.
RUNNERS = (
    REPO / "tests/unit/test_docs_commands.py",
    REPO / "tests/e2e/test_docs_commands.py",
    REPO / "tests/e2e/test_readme_demo.py",
    REPO / "tests/e2e/test_console.py",
    REPO / "tests/e2e/test_maintenance.py",
)
# Workflows whose `run:` lines a test runs: CI itself, and the one `init` writes (tests/e2e/
# test_adoption.py runs its steps from a clean clone).
WORKFLOWS = (
    REPO / ".github/workflows/tests.yml",
    REPO / "templates/init/auto-deploy.yml.j2",
)
# The steps a deploy takes before DEPLOY_STEPS (tasks open the connection, read, decide).
FIRST_STEPS = ("connect", "read host", "plan")

# Every file a name of the code may come from: the package, the tests and the scripts around them.
CODE = "".join(
    p.read_text(errors="replace")
    for folder in ("signalcraft_deploy", "tests", ".github", ".ci", "bench")
    for p in (REPO / folder).rglob("*")
    if p.is_file() and p.suffix not in (".md", ".pyc", ".whl")
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# A span that starts like one of these is a command a reader may copy: it must be a shown command.
COMMAND_START = re.compile(
    r"^(sudo bash |bash |fab |invoke |signalcraft-deploy |pip |python3? -m |\. |tests/\S+ )"
)
OUTSIDE = re.compile(r"DESIGN\.md|\bthe plan's\b|\bissues? #?\d+|\S#\d+\b", re.I)


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return FENCE.sub("", text(page))


def shown_commands(page: Path) -> list[str]:
    commands = []
    for lang, body in FENCE.findall(text(page)):
        lines = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
        assert lang == "console" or not lines, f"{page.name}: a ```{lang} block holds $ lines"
        assert lang not in ("sh", "bash", "shell"), (
            f"{page.name}: commands go in ```console blocks as `$ ` lines"
        )
        commands += lines
    return commands


def inline_commands(page: Path) -> list[str]:
    """The commands written inside sentences."""
    return [span for span in INLINE.findall(prose(page)) if COMMAND_START.match(span)]


def all_shown() -> set[str]:
    return {c for page in PAGES for c in shown_commands(page) + inline_commands(page)}


def documented_in(module: Path) -> tuple[str, ...]:
    """A runner module's DOCUMENTED tuple, read without importing it (e2e modules need a host): its
    items are strings, or names of module-level strings."""
    strings: dict[str, str] = {}
    for node in ast.parse(module.read_text()).body:
        if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Name):
            continue
        name = node.targets[0].id
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            strings[name] = node.value.value
        elif name == "DOCUMENTED" and isinstance(node.value, ast.Tuple):
            return tuple(
                strings[item.id] if isinstance(item, ast.Name) else ast.literal_eval(item)
                for item in node.value.elts
            )
    raise AssertionError(f"{module.relative_to(REPO)} has no DOCUMENTED tuple")


def workflow_commands() -> set[str]:
    return {
        line.split("run:", 1)[1].strip()
        for workflow in WORKFLOWS
        for line in workflow.read_text().splitlines()
        if line.strip().startswith("run:") and line.split("run:", 1)[1].strip() != "|"
    }


def run_by_tests() -> set[str]:
    return workflow_commands().union(*(documented_in(m) for m in RUNNERS))


def section(page: Path, heading: str) -> str:
    body = text(page)
    start = body.index(f"\n{heading}\n")
    end = body.find("\n## ", start + 1)
    return body[start : end if end != -1 else len(body)]


# --- commands


def test_every_shown_command_is_run_by_a_test():
    # A command inside a sentence too: show it in a console block, or write a flag on its own.
    missing = sorted(all_shown() - run_by_tests())
    assert missing == [], "shown but run by no test (see docs/development.md)"


def test_every_registered_command_is_shown_on_a_page():
    for module in RUNNERS:
        stale = sorted(set(documented_in(module)) - all_shown())
        assert stale == [], f"{module.relative_to(REPO)} runs commands no page shows"


# --- facts from the code


def test_the_readme_is_a_front_door():
    # The manual lives in docs/: the README says what the tool is, how to try it and where to read on.
    assert len(text(REPO / "README.md").splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_upper_case_name_is_a_setting_or_a_name_the_code_uses(page: Path):
    # A renamed or removed setting (or hook variable, workflow secret) leaves its old name here.
    for name in set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])(?:=[^`]*)?`", text(page))):
        known = name in KEY_NAMES or name in CODE
        assert known, f"{page.name}: `{name}` is no setting, and no code names it"


def arguments_of(task: Any) -> list[Any]:
    """A task's flags. invoke's get_arguments pops each flag's help off the task, so a second call
    (another test's, or `fab --help`) would find none: ask a copy."""
    twin = copy.copy(task)
    twin.help = dict(task.help)
    return list(twin.get_arguments())


def test_the_settings_table_is_the_declarations():
    # Row for row: each key's default and meaning as declared, in the declared order, nothing else.
    # `invoke settings --defaults --markdown` prints the table to paste (docs/development.md).
    page = text(DOCS / "settings.md")
    start = page.index("| key | default | meaning |")
    end = page.find("\n\n", start)
    assert page[start : end if end != -1 else None].rstrip("\n") == readme_table()


def test_the_task_table_has_one_line_per_task():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", section(REPO / "README.md", "## Tasks"), re.M)
    assert sorted(rows) == sorted(ns.task_names)


def test_every_flag_in_the_task_table_is_one_the_task_takes():
    for name, row in re.findall(
        r"^\| `([a-z0-9-]+)` \|(.*)$", section(REPO / "README.md", "## Tasks"), re.M
    ):
        takes = {n for arg in arguments_of(ns.tasks[name]) for n in arg.names}
        for flag in re.findall(r"--([a-z][a-z-]*)", row):
            assert flag in takes, f"README.md: {name} takes no --{flag}"


def test_every_task_but_init_takes_env_file_and_set_as_the_readme_says():
    assert "Every task but `init` takes `--env-file` and `--set KEY=VALUE`." in " ".join(
        text(REPO / "README.md").split()
    )
    for name in ns.task_names:
        takes = {n for arg in arguments_of(ns.tasks[name]) for n in arg.names}
        assert ({"env-file", "set"} <= takes) == (name != "init"), name


def test_the_deploy_steps_shown_are_the_code_s():
    shown = re.findall(r"^- `([^`]+)`:", section(DOCS / "deploy.md", "## The steps"), re.M)
    assert shown == [*FIRST_STEPS, *(s.name for s in DEPLOY_STEPS)]
    source = "".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    for name in FIRST_STEPS:  # reported by the task before the runner starts
        assert re.search(rf'[sS]tep\(\s*"{name}"', source), name


def test_the_remove_steps_shown_are_the_code_s():
    line = re.search(r"in these steps: (.*?)\. ", " ".join(text(DOCS / "operations.md").split()))
    assert line, "operations.md: the sentence listing remove's steps"
    assert re.findall(r"`([^`]+)`", line.group(1)) == [s.name for s in REMOVE_STEPS + PURGE_STEPS]


def summary(module: Path) -> str:
    """The first paragraph of a module's docstring, on one line: a list item ready to paste."""
    doc = ast.get_docstring(ast.parse(module.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def test_where_things_are_names_every_module_and_only_those():
    listed = set(
        re.findall(
            r"^- `(signalcraft_deploy/[\w/]+\.py)`",
            section(DOCS / "development.md", "## Where things are"),
            re.M,
        )
    )
    modules = {str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    missing = [f"- `{m}`: {summary(REPO / m)}" for m in sorted(modules - listed)]
    assert missing == [], "add to docs/development.md (or move):\n" + "\n".join(missing)
    assert sorted(listed - modules) == [], "listed in docs/development.md but not in the package"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_version_shown_is_the_package_s(page: Path):
    for found in re.findall(r"signalcraft[_-]deploy[- ](\d+\.\d+\.\d+)", text(page)):
        assert found == __version__, (
            f"{page.name}: {found} (signalcraft_deploy/__init__.py: {__version__})"
        )


def test_the_wheel_the_readme_installs_is_the_one_it_builds():
    shown = shown_commands(REPO / "README.md")
    assert "pip wheel --no-deps -w dist ." in shown
    assert f"pip install dist/signalcraft_deploy-{__version__}-py3-none-any.whl" in shown


def test_the_masking_rule_shown_is_the_code_s():
    assert f"of {MIN_LENGTH} characters or more" in text(DOCS / "security.md")


# --- nothing outside the repository


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_exists(page: Path):
    for target in re.findall(r"\]\(([^)\s]+)\)", text(page)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: {target}"


# Paths `init` writes in the app's repository (not this one's).
APP_PATHS = {f"{WHEELS_DIR}/"}
REPO_PATH = re.compile(
    r"^(?:signalcraft_deploy|tests|docs|examples|bench|tasks|\.github|\.ci)/[\w./-]*$"
    r"|^(?:README|CHANGELOG)\.md$|^(?:pyproject\.toml|requirements\.txt|fabfile\.py)$"
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_named_exists(page: Path):
    for span in INLINE.findall(text(page)):
        if REPO_PATH.match(span) and span not in APP_PATHS:
            assert (REPO / span).exists(), f"{page.name}: `{span}`"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_refers_to_what_is_not_in_the_repository(page: Path):
    assert OUTSIDE.findall(text(page)) == [], page.name
