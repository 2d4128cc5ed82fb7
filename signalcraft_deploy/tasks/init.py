"""`init`: make an app's repository deployable from its own checkout.

Writes fabfile.py and tasks.py (the tool's collection, room for the app's own tasks), deploy.env
(every setting with its default and meaning, made from `core/settings.py` KEYS, the ones a first
deploy needs first), .github/workflows/auto-deploy.yml (the one-line deploy) and an ignore line
for `render-configs`' output. The files are templates in `templates/init/`.

A file that is there already is never replaced without `--force`, which shows the diff first; a
second `init` changes nothing. `--templates` copies the bundled templates into deploy-templates/
for customising and points TEMPLATES_DIR at them.

Why deploy.env and not .env: an app's `.env` is its own (the example's Flask app loads it, and it
holds the app's secrets, so it is git-ignored); the tool refuses keys it does not know, and the
deploy workflow runs from a checkout, which has no git-ignored file. deploy.env holds no secret
and is committed; fabfile.py and tasks.py point ENV_FILE at it.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from signalcraft_deploy import __version__, remote
from signalcraft_deploy.core import procfile
from signalcraft_deploy.core.discover import (
    SKIPPED_DIRS,
    Found,
    Route,
    RoutesRead,
    find_workers,
    find_wsgi,
    findings,
    routes_from_source,
    routes_from_url_map,
)
from signalcraft_deploy.core.local_files import write_atomically
from signalcraft_deploy.core.render import BUNDLED_TEMPLATES, TEMPLATES
from signalcraft_deploy.core.settings import (
    ENVIRONMENT_NAME,
    KEY_NAMES,
    KEYS,
    Invalid,
    Key,
    environment_file,
)
from signalcraft_deploy.core.source import session_bound_package

SETTINGS_FILE = "deploy.env"
WORKFLOW = ".github/workflows/auto-deploy.yml"
ROLLBACK_WORKFLOW = ".github/workflows/rollback.yml"
# `init --vendor`'s wheel of the tool: the tool's own files (.github/), reloading no app
WHEELS_DIR = ".github/wheels"
TEMPLATES_COPY = "deploy-templates"  # not templates/: a Flask app's own Jinja templates live there
# What no commit of the app should hold: installed packages (the deploy builds its own), venvs,
# bytecode, and render-configs' local output.
IGNORES = ("node_modules/", ".venv/", "venv/", "__pycache__/", "/rendered/")
INIT_TEMPLATES = BUNDLED_TEMPLATES / "init"

# What a first deploy needs to get right for the app and the host; the rest can wait at its default.
FIRST_DEPLOY = (
    "APP_NAME",
    "DEPLOY_ROOT",
    "WSGI_APP",
    "NODE_SCRIPT",
    "ROUTES",
    "MOUNTS",
    "HEALTH_PY",
    "HEALTH_NODE",
    "GUNICORN_BIND",
    "NODE_PORT",
    "NGINX_LISTEN",
    "SERVER_NAME",
)

SETTINGS_HEADER = """\
# signalcraft-deploy's settings for this app, one KEY=VALUE a line (written by `signalcraft-deploy init`).
# fabfile.py and tasks.py read this file (ENV_FILE or --env-file names another); environment variables and
# --set KEY=VALUE win over it. `invoke settings` shows every value in effect and where it came from.
# Commit it: the deploy workflow runs from a checkout. No secrets here: the app's own go in a git-ignored
# file named by APP_ENV_FILE, a REPO_URL holding a token in an environment variable (a CI secret).
#
# Unlike .env, which is the app's own (git-ignored, and read by the app), this file is the deploy's.
"""


# --- What init writes: pure
# -------------------------------------------------------------------------------------


def env_value(text: str | None) -> str:
    """A value as a dotenv line holds it: single-quoted (literal) when it has spaces, '#' or quotes;
    double-quoted with escapes when it holds a single quote itself."""
    if text is None:
        return ""
    if "'" in text:
        return json.dumps(text)
    return f"'{text}'" if re.search(r"[\s#\"\\]", text) else text


def _key_lines(key: Key, active: bool) -> list[str]:
    notes = " (unset by default)" if key.default is None else ""
    notes += "; secret: better in an environment variable" if key.secret else ""
    line = f"{key.name}={env_value(key.default)}"
    return [f"# {key.help}{notes}", line if active else f"# {line}", ""]


def one_line(text: str) -> str:
    """`text` as one line of printable characters: the app's file names and rules may hold line breaks (a line of
    deploy.env of their own) or terminal escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def accepted(key: Key, found: Found) -> Found:
    """`found`, or nothing found when its value is not one the key takes: a value settings would refuse on the first
    deploy is not written (nor one that reads back as another, such as a line break)."""
    if not found.value:
        return Found(found.value, one_line(found.how))
    try:
        key.parse(found.value, Path("."))
    except Invalid as err:
        return Found(
            None,
            one_line(
                f"{found.how}; what was found ({found.value!r}) is not {err.expected}: set it"
            ),
        )
    return Found(found.value, one_line(found.how))


def _found_lines(key: Key, found: Found) -> list[str]:
    """A key init read from the app: its meaning, how it was found (or that nothing was), and the
    value or nothing."""
    how = f"# found: {found.how}" if found.value is not None else f"# nothing found: {found.how}"
    return [f"# {key.help}", how, f"{key.name}={env_value(found.value)}", ""]


def settings_text(found: Mapping[str, Found] | None = None) -> str:
    """deploy.env: every key of KEYS with its meaning; the ones a first deploy needs set, the rest commented.

    `found`: what init read from the app, written with how it was found; without it, each key's
    default.
    """
    found = found or {}
    lines = [
        SETTINGS_HEADER,
        "# --- A first deploy needs these: check each one against your app and your host. ---",
        "",
    ]
    for name in FIRST_DEPLOY:
        key = next(k for k in KEYS if k.name == name)
        lines += _found_lines(key, found[name]) if name in found else _key_lines(key, active=True)
    if "ROUTES" in found and found["ROUTES"].value is None:
        # An empty ROUTES means PY_ROUTES' default, the bundled example's routes; an empty PY_ROUTES
        # is refused.
        lines += [
            (
                "# nothing found: PY_ROUTES is left empty too, so the bundled example's routes do"
                " not apply: set ROUTES"
            ),
            "PY_ROUTES=",
            "",
        ]
    lines += ["# --- The rest, each at its default: uncomment a line to change it. ---", ""]
    for key in KEYS:
        if key.name in found and key.name not in FIRST_DEPLOY:
            lines += _found_lines(key, found[key.name])  # found in the app beyond the first keys
        elif key.name not in FIRST_DEPLOY and not (
            key.name == "PY_ROUTES" and "ROUTES" in found and found["ROUTES"].value is None
        ):
            lines += _key_lines(key, active=False)
    return "\n".join(lines).rstrip("\n") + "\n"


def set_key(text: str, key: str, value: str) -> str:
    """`text` (a settings file) with `key` set to `value`: its line replaced, its commented line
    taken, or one appended."""
    assert key in KEY_NAMES
    line = f"{key}={env_value(value)}"
    for pattern in (rf"^[ \t]*(export[ \t]+)?{key}[ \t]*=.*$", rf"^#[ \t]*{key}=.*$"):
        if re.search(pattern, text, flags=re.M):
            return re.sub(pattern, lambda _: line, text, count=1, flags=re.M)
    return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


@dataclass(frozen=True)
class Install:
    """Where the workflow gets the tool from: what it pip-installs (None: nothing CI can reach, see `init --vendor`),
    a note saying where that is, and what `--vendor` copies (a wheel file) or builds a wheel from (a
    folder or a requirement)."""

    spec: str | None
    note: str
    wheel: Path | None = None
    build: str | None = None


def install_spec() -> Install:
    """Where this copy of the tool came from (PEP 610's direct_url.json), and so what the workflow
    installs.

    A git URL CI can fetch: the same URL and commit (never credentials). A wheel file, a folder
    (editable or not), a checkout the tool runs from: nothing CI can reach; `init --vendor` writes a
    wheel of it to commit. No direct_url.json: installed from a package index, so the same version
    from it."""
    try:
        dist = importlib.metadata.distribution("signalcraft-deploy")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is None or not dist.read_text(
        "INSTALLER"
    ):  # no install, or a build's metadata in the checkout
        checkout = Path(__file__).resolve().parents[2]
        built = str(checkout) if (checkout / "pyproject.toml").exists() else None
        return Install(None, f"from the checkout {checkout}, which CI cannot reach", build=built)
    raw = dist.read_text("direct_url.json")
    if not raw:
        return Install(
            f"signalcraft-deploy=={__version__}",
            "from the package index, the version on the machine that ran init",
        )
    info = json.loads(raw)
    vcs, url = info.get("vcs_info") or {}, str(info.get("url", ""))
    public, commit = _public_url(url), str(vcs.get("commit_id", ""))
    if vcs.get("vcs") == "git" and public and re.fullmatch(r"[0-9a-f]{40}", commit):
        return Install(
            f"signalcraft-deploy @ git+{public}@{commit}",
            f"from {public} at {commit[:12]}, as on the machine that ran init",
        )
    if vcs:
        return Install(
            None,
            f"from git at {_shown_url(url)}, which CI cannot fetch (a local path, or credentials"
            " in it)",
            build=f"signalcraft-deploy @ git+{url}@{commit}" if commit else None,
        )
    parts = urlsplit(url)
    path = Path(unquote(parts.path))
    if "archive_info" in info and parts.scheme == "https" and public and path.name.endswith(".whl"):
        return Install(
            f"signalcraft-deploy @ {public}", f"from {public}, as on the machine that ran init"
        )
    if "archive_info" in info and parts.scheme == "file" and path.name.endswith(".whl"):
        return Install(None, f"from the wheel file {path}, which CI cannot reach", wheel=path)
    if "dir_info" in info and parts.scheme == "file":
        editable = " (editable)" if (info.get("dir_info") or {}).get("editable") else ""
        return Install(
            None, f"from the folder {path}{editable}, which CI cannot reach", build=str(path)
        )
    return Install(None, f"from {_shown_url(url)}, which CI cannot reach")


def _shown_url(url: str) -> str:
    """A URL without its password or token, for messages."""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl() if parts.password or parts.username else url


def _public_url(url: str) -> str:
    """A git URL CI can fetch, with no password or token in it; '' for a local path or anything
    odd."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "ssh") or not parts.hostname or parts.password:
        return ""
    user = f"{parts.username}@" if parts.scheme == "ssh" and parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    public = f"{parts.scheme}://{user}{parts.hostname}{port}{parts.path}"
    return public if re.fullmatch(r"[A-Za-z0-9._~:/@%+-]+", public) else ""


def _render(template: str, **values: Any) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(INIT_TEMPLATES)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        autoescape=False,
    )
    return env.get_template(template + ".j2").render(settings_file=SETTINGS_FILE, **values)


def workflow_jobs(environments: tuple[str, ...]) -> list[dict[str, str]]:
    """The deploy workflow's jobs: one (production, no --environment), or one per environment, each
    after the one before."""
    if not environments:
        return [{"id": "deploy", "title": "Deploy", "name": "production", "needs": "", "flag": ""}]
    ids = [f"deploy-{name}" for name in environments]
    return [
        {
            "id": ids[i],
            "title": f"Deploy {name}",
            "name": name,
            "needs": ids[i - 1] if i else "",
            "flag": f" --environment {name}",
        }
        for i, name in enumerate(environments)
    ]


def check_environments(text: str | None) -> tuple[str, ...]:
    """`--environments staging,production`: the names, in order, each once and valid."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    bad = [n for n in names if not ENVIRONMENT_NAME.fullmatch(n)]
    if bad:
        raise Exit(
            f"--environments: {bad[0]!r} is not an environment name; expected lower-case letters,"
            " digits, '-' and '_', starting with a letter, such as staging,production.",
            code=2,
        )
    return names


def environment_text(name: str) -> str:
    """An environment's settings file: what it is, and the keys two environments on one host need
    their own of (commented)."""
    return _render("environment.env", environment=name)


def rollback_workflow_text(install: Install, environments: tuple[str, ...]) -> str:
    return _render(
        "rollback.yml",
        names=list(environments or ("production",)),
        flag=' --environment "$ENVIRONMENT"' if environments else "",
        workflow=WORKFLOW,
        **_install_values(install),
    )


def _install_values(install: Install) -> dict[str, str]:
    refusal = (
        ""
        if install.spec
        else (
            f"signalcraft-deploy was installed {install.note}: run `signalcraft-deploy init "
            f"--vendor` and commit {WHEELS_DIR}/, or install the tool from git or a package "
            "index and run init again"
        ).replace("\n", " ")
    )
    return {
        "install": shlex.quote(install.spec) if install.spec else "",
        "refusal": shlex.quote(refusal),
        "install_note": install.note,
    }


def workflow_text(install: Install, environments: tuple[str, ...] = ()) -> str:
    """The deploy workflow; its install step fails, saying why and what to do, when CI cannot reach
    the tool."""
    return _render(
        "auto-deploy.yml",
        jobs=workflow_jobs(environments),
        environments=list(environments),
        **_install_values(install),
    )


_INSTALL_STEP = re.compile(r"^      # The deploy tool and its own dependencies.*?\n\n", re.M | re.S)


def with_install_step(old: str, new: str) -> str:
    """The workflow `old` with the install step of `new` (unchanged if `old` has none as init writes
    it)."""
    step = _INSTALL_STEP.search(new)
    return _INSTALL_STEP.sub(lambda _: step.group(0), old) if step else old  # every job's


def planned_files(
    templates: bool,
    found: Mapping[str, Found] | None = None,
    install: Install | None = None,
    environments: tuple[str, ...] = (),
) -> dict[str, str]:
    """Every file init writes, by path relative to the app's folder, and its text (the ignore lines
    aside)."""
    install = install or install_spec()
    files = {
        "fabfile.py": _render("fabfile.py"),
        "tasks.py": _render("tasks.py"),
        SETTINGS_FILE: settings_text(found),
        **{
            environment_file(Path(SETTINGS_FILE), n).name: environment_text(n) for n in environments
        },
        WORKFLOW: workflow_text(install, environments),
        ROLLBACK_WORKFLOW: rollback_workflow_text(install, environments),
    }
    if templates:
        files[SETTINGS_FILE] = set_key(files[SETTINGS_FILE], "TEMPLATES_DIR", TEMPLATES_COPY)
        for name in TEMPLATES:
            files[f"{TEMPLATES_COPY}/{name}"] = (BUNDLED_TEMPLATES / name).read_text()
    return files


def with_ignore_lines(text: str) -> str:
    """The .gitignore with IGNORES in it (each added once; unchanged if every one is there)."""
    have = {line.strip().strip("/") for line in text.splitlines()}
    missing = [line for line in IGNORES if line.strip("/") not in have]
    if not missing:
        return text
    block = (
        "# installed packages, venvs, bytecode, render-configs' output: never part of a release\n"
        + "\n".join(missing)
    )
    return text + ("" if not text or text.endswith("\n") else "\n") + block + "\n"


def diff(old: str, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )


# --- Writing them
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    path: str
    word: str  # wrote, unchanged, kept, replaced, updated, removed
    diff: str = ""

    @property
    def changed(self) -> bool:
        return self.word in ("wrote", "replaced", "updated", "removed")


def place(root: Path, path: str, new: str, force: bool, edit: bool = False) -> Outcome:
    """Write one file: new, unchanged, kept (it differs; no --force) or replaced. `edit`: a change init
    may make to a file that is there (a line added or set), shown as a diff."""
    target = root / path
    old = target.read_text(encoding="utf-8") if target.exists() else None
    if old == new:
        return Outcome(path, "unchanged")
    if old is not None and not (force or edit):
        return Outcome(path, "kept")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, new)
    if old is None:
        return Outcome(path, "wrote")
    return Outcome(path, "updated" if edit else "replaced", diff(old, new, path))


_ACTIVE_TEMPLATES_DIR = re.compile(
    r"^[ \t]*(export[ \t]+)?TEMPLATES_DIR[ \t]*=[ \t]*(?P<value>\S.*)$", re.M
)


def new_install_steps(root: Path, files: dict[str, str]) -> list[str]:
    """--vendor: the workflows there keep the user's changes, with the new install step; the paths
    edited so."""
    edited = []
    for path in (WORKFLOW, ROLLBACK_WORKFLOW):
        if (root / path).exists():
            files[path] = with_install_step((root / path).read_text(encoding="utf-8"), files[path])
            edited.append(path)
    return edited


def init_app(
    root: Path,
    force: bool = False,
    templates: bool = False,
    vendor: bool = False,
    environments: tuple[str, ...] = (),
) -> tuple[list[Outcome], list[str]]:
    """Write every file into the app's folder `root`: what happened to each, and notes for the user (first what
    was read from the app, when deploy.env is written)."""
    settings_path = root / SETTINGS_FILE
    found, notes = read_app(root) if force or not settings_path.exists() else ({}, [])
    install = install_spec()
    vendored: list[Outcome] = []
    if vendor:
        install, vendored = vendor_wheel(root, install, notes)
    elif install.spec is None:
        notes.append(
            "the workflow cannot install signalcraft-deploy: this copy was installed"
            f" {install.note}. Its install step fails saying so; `signalcraft-deploy init --vendor`"
            f" writes a wheel of the tool into {WHEELS_DIR}/ (commit it) for it (or install the tool from git"
            " or a package index and run init again)."
        )
    files, edits = planned_files(templates, found, install, environments), {".gitignore"}
    if vendor and not force:
        edits.update(new_install_steps(root, files))
    if (
        settings_path.exists() and not force
    ):  # the user's own by now: not read again, not compared with defaults
        files[SETTINGS_FILE] = settings_path.read_text(encoding="utf-8")
    if templates and settings_path.exists() and not force:
        # The settings the user has are kept: only TEMPLATES_DIR is set, unless they set it already.
        current = settings_path.read_text(encoding="utf-8")
        theirs = _ACTIVE_TEMPLATES_DIR.search(current)
        files[SETTINGS_FILE] = (
            current if theirs else set_key(current, "TEMPLATES_DIR", TEMPLATES_COPY)
        )
        edits.add(SETTINGS_FILE)
        if theirs and theirs["value"].strip().strip("'\"") != TEMPLATES_COPY:
            notes.append(
                f"{SETTINGS_FILE} sets TEMPLATES_DIR={theirs['value'].strip()} already: the copies"
                f" in {TEMPLATES_COPY}/ are used once it names them."
            )
    if not _in_git_checkout(root):
        notes.append(
            f"{root} is not in a git checkout, and a deploy ships a commit: `git init && git add -A"
            " && git commit -m 'The app'` (.gitignore keeps venvs and node_modules/ out)."
        )
    ignore = root / ".gitignore"
    files[".gitignore"] = with_ignore_lines(
        ignore.read_text(encoding="utf-8") if ignore.exists() else ""
    )
    return [
        *vendored,
        *(place(root, path, text, force, edit=path in edits) for path, text in files.items()),
    ], notes


# --- --vendor: a wheel of the tool in the app's repository, for the workflow
# ----------------------------------------


def vendor_wheel(root: Path, install: Install, notes: list[str]) -> tuple[Install, list[Outcome]]:
    """Copy (or build) a wheel of this tool into WHEELS_DIR, replacing older ones: the workflow
    installs that file."""
    if install.spec and not (install.wheel or install.build):
        notes.append(
            f"--vendor: not needed, the workflow installs signalcraft-deploy {install.note}."
        )
        return install, []
    if install.wheel and install.wheel.is_file():
        name, data = install.wheel.name, install.wheel.read_bytes()
    elif install.build:
        name, data = _build_wheel(install.build, install.note)
    else:
        raise Exit(
            f"--vendor: signalcraft-deploy was installed {install.note}, and that wheel or folder"
            " is not there to vendor; reinstall the tool and run `init --vendor` again.",
            code=1,
        )
    folder = root / WHEELS_DIR
    outcomes = [
        Outcome(f"{WHEELS_DIR}/{old.name}", "removed")
        for old in sorted(folder.glob("signalcraft_deploy-*.whl"))
        if old.name != name
    ]
    for outcome in outcomes:
        (root / outcome.path).unlink()
    target = folder / name
    if target.is_file() and target.read_bytes() == data:
        outcomes.append(Outcome(f"{WHEELS_DIR}/{name}", "unchanged"))
    else:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{name}.tmp")
        temporary.write_bytes(data)
        temporary.replace(target)
        outcomes.append(Outcome(f"{WHEELS_DIR}/{name}", "wrote"))
    ignored = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "-q", f"{WHEELS_DIR}/{name}"], capture_output=True
    )
    if ignored.returncode == 0:
        notes.append(
            f"{WHEELS_DIR}/{name} is git-ignored, and the workflow needs it committed: "
            f"`git add -f {WHEELS_DIR}/{name}` (or add `!{WHEELS_DIR}/` to .gitignore)."
        )
    spec = f"./{WHEELS_DIR}/{name}"
    return (
        Install(
            spec,
            f"from the wheel `init --vendor` committed ({install.note.split(',')[0]} on the machine"
            " that ran init)",
        ),
        outcomes,
    )


def _build_wheel(source: str, shown: str) -> tuple[str, bytes]:
    """A wheel of the tool built by pip from `source` (a folder or a requirement, shown as `shown`: a URL may hold
    a token): its file name and bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
        )  # the same source, the same wheel
        wheels = sorted(Path(out).glob("signalcraft_deploy-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            said = (done.stderr.strip().splitlines() or ["no wheel made"])[-1]
            raise Exit(
                f"--vendor: pip could not build a wheel of signalcraft-deploy (installed {shown}):"
                f" {said}",
                code=1,
            )
        return wheels[0].name, wheels[0].read_bytes()


# --- Reading the app: its files, and its routes from its own venv
# -------------------------------------------------

_READ_SUFFIXES = (".py", ".js", ".mjs", ".cjs", ".ts")
_MOST_FILES = 5000  # a folder holding more is read that far (the note says so)
URL_MAP_TIMEOUT = 20  # seconds the app may take to import in its venv
_SOURCE_MISSES = (
    "Routes added in loops or by extensions are missed: with the app's venv in place, `init"
    " --force` reads them."
)


def app_files(root: Path) -> tuple[list[str], dict[str, str], bool]:
    """The app's own file paths (no venv, node_modules, .git), the texts of its code and package.json, and whether
    the walk stopped at _MOST_FILES."""
    paths: list[str] = []
    texts: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_DIRS and not (Path(folder, d, "pyvenv.cfg")).exists()
        )
        for name in sorted(names):
            path = Path(folder, name).relative_to(root).as_posix()
            paths.append(path)
            if (name.endswith(_READ_SUFFIXES) or path == "package.json") and Path(
                folder, name
            ).stat().st_size < 1_000_000:
                texts[path] = Path(folder, name).read_text(encoding="utf-8", errors="replace")
            if len(paths) >= _MOST_FILES:
                return paths, texts, True
    return paths, texts, False


def app_venv_python(root: Path) -> Path | None:
    """The app's own venv Python: .venv/ or venv/ in its folder (never this tool's)."""
    for name in (".venv", "venv"):
        python = root / name / "bin" / "python"
        if python.exists() and Path(os.path.realpath(root / name)) != Path(
            os.path.realpath(sys.prefix)
        ):
            return python
    return None


def _run_alone(
    argv: list[str], program: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the app's Python in a process group of its own, at most URL_MAP_TIMEOUT s; then every process of the group
    is killed. Its output goes to files, not pipes: a process the app starts while it loads (a
    scheduler, a server) keeps a pipe open after the import ends, and init would wait out the limit,
    then leave it running.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            proc.communicate(program.encode(), timeout=URL_MAP_TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            argv,
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def url_map_routes(python: Path, root: Path, wsgi_app: str) -> tuple[list[Route] | None, str]:
    """The app's url_map as its venv's Python imports it (cwd the app's folder, a bare environment: no secrets,
    no FLASK_* or settings; at most URL_MAP_TIMEOUT s), or None and why not."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(root)),
        "LANG": "C.UTF-8",
    }
    venv = python.parent.parent.name
    try:
        done = _run_alone(
            [str(python), "-I", "-B", "-", wsgi_app], remote.program("url_map"), root, env
        )
    except subprocess.TimeoutExpired:
        return None, f"importing {wsgi_app} with {venv}/bin/python took over {URL_MAP_TIMEOUT} s"
    except OSError as err:
        return None, f"{venv}/bin/python could not run ({err.strerror})"
    if done.returncode != 0:
        said = one_line((done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])
        return None, f"{venv}/bin/python could not load {wsgi_app}: {said}"
    try:
        return (
            routes_from_url_map(
                done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            ),
            f"the url_map of {wsgi_app} in {venv}",
        )
    except ValueError:
        return None, f"{venv}/bin/python printed no route list for {wsgi_app}"


def read_app(root: Path) -> tuple[dict[str, Found], list[str]]:
    """What init writes from the app (core/discover.py), and notes: what was read, how, and that the
    app's code ran."""
    paths, texts, cut = app_files(root)
    notes = (
        [f"{root} holds over {_MOST_FILES} files: init read the first {_MOST_FILES}."]
        if cut
        else []
    )
    wsgi = find_wsgi({p: t for p, t in texts.items() if p.endswith(".py")})
    python = app_venv_python(root)
    committed = python is not None and _committed(root, python.parent.parent.name)
    if python and committed:
        notes.append(
            f"the repository commits {python.parent.parent.name}/: its bin/python is the"
            " repository's program, not a venv you made, so init did not run it: Flask's routes"
            " were read from the source (a deploy refuses a committed venv; make your own,"
            f" git-ignored, for init to read the url_map). {_SOURCE_MISSES}"
        )
        python = None
    read = RoutesRead(routes_from_source(texts), "the source")
    if python and wsgi.value:
        routes, how = url_map_routes(python, root, wsgi.value)
        notes.append(
            f"init imported {wsgi.value} with {python.relative_to(root)} to read Flask's routes:"
            f" that ran the app's own code on this machine (in {root}, without secrets or settings,"
            f" at most {URL_MAP_TIMEOUT} s)."
        )
        if routes is not None:
            read = RoutesRead(routes, how)
        else:
            notes.append(
                f"Flask's routes were read from the source instead: {how}. {_SOURCE_MISSES}"
            )
    elif not python and not committed:
        notes.append(
            "Flask's routes were read from the source: the app has no .venv/ or venv/ to import it"
            f" with. {_SOURCE_MISSES}"
        )
    keys = {k.name: k for k in KEYS}
    found = {
        name: accepted(keys[name], f)
        for name, f in findings(root.resolve().name, paths, texts, read).items()
    }
    notes += _socket_io_notes(found, texts.get("package.json"))
    return found, [*_found_notes(found), *notes, *_process_notes(root, texts)]


def _socket_io_notes(found: Mapping[str, Found], package_json: str | None) -> list[str]:
    """What a socket.io app needs: one process (a deploy's default for it), and its client's path
    under a prefix."""
    notes = []
    bound = session_bound_package(package_json)
    if bound:
        notes.append(
            f"package.json depends on {bound}: each client's session must stay on one Node.js"
            " process, so a deploy runs NODE_INSTANCES=1 (the default for it; more is refused:"
            " NODE_SESSION_BOUND says how to run several)."
        )
    node_prefix = found["HEALTH_NODE"].value
    if node_prefix and node_prefix != "/" and bound == "socket.io":
        notes.append(
            f"Node.js is under {node_prefix}, and Socket.IO's client asks /socket.io by default:"
            f" give the client path: '{node_prefix}/socket.io' (the server keeps /socket.io: Nginx"
            f" passes the path without {node_prefix})."
        )
    return notes


def _process_notes(root: Path, texts: Mapping[str, str]) -> list[str]:
    """What the app's Procfile declares (processes the deploy runs beside the web apps), or the
    lines its source suggests for one; init never writes a Procfile."""
    path = root / procfile.PROCFILE
    if path.is_file():
        try:
            declared, _ = procfile.processes(path.read_text(encoding="utf-8", errors="replace"), {})
        except procfile.ProcfileError as err:
            return [f"{procfile.PROCFILE}: a deploy would refuse it: {err}"]
        listed = ", ".join(
            f"{p.name} ({p.app}{', singleton' if p.singleton else ''})" for p in declared
        )
        return [
            f"{procfile.PROCFILE}: the deploy runs {listed or 'no process of it'} under PM2 beside"
            " the web apps (docs/deploy.md, Processes)"
        ]
    suggested = find_workers(texts)
    if not suggested:
        return []
    lines = "\n".join(f"  {one_line(s)}" for s in suggested)
    return [
        f"found workers or schedulers the app may run; a {procfile.PROCFILE} at its top with lines"
        f" such as these runs them under PM2 (init writes none; docs/deploy.md, Processes):\n{lines}"
    ]


def _found_notes(found: Mapping[str, Found]) -> list[str]:
    width = max(len(key) for key in found)
    lines = [
        f"  {key:<{width}} = {f.value if f.value is not None else '(nothing found)'}    # {f.how}"
        for key, f in found.items()
    ]
    return [
        "read from the app, written into "
        + SETTINGS_FILE
        + " (check each line):\n"
        + "\n".join(lines)
    ]


def _committed(root: Path, folder: str) -> bool:
    """Whether git tracks a file under `folder` of the app (a venv the repository brought, not one
    made here)."""
    found = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--", folder], capture_output=True, text=True
    )
    return found.returncode == 0 and bool(found.stdout.strip())


def _in_git_checkout(root: Path) -> bool:
    probe = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "true"


def report(outcomes: list[Outcome], notes: list[str]) -> str:
    lines = []
    for o in outcomes:
        if o.diff:
            lines.append(o.diff.rstrip("\n"))
        note = (
            "  (differs from what init writes: `init --force` shows the diff and replaces it)"
            if o.word == "kept"
            else ""
        )
        lines.append(f"{o.word:<10}{o.path}{note}")
    written, kept = sum(o.changed for o in outcomes), sum(o.word == "kept" for o in outcomes)
    lines.append(
        (f"{written} file(s) written." if written else "Nothing written.")
        + (f" {kept} file(s) kept as they are." if kept else "")
    )
    lines += [f"Note: {note}" for note in notes]
    if any(o.path == SETTINGS_FILE and o.word == "wrote" for o in outcomes):
        lines.append(
            f"Next: check the first block of {SETTINGS_FILE}, run `invoke freeze`, commit, "
            "then `fab -H ubuntu@<host> setup` once per host and `fab -H ubuntu@<host> deploy`."
        )
    return "\n".join(lines)


@task(
    help={
        "force": (
            "replace files that are there and differ from what init writes (the diff is shown)"
        ),
        "templates": (
            f"also copy the bundled templates into {TEMPLATES_COPY}/ for customising, and point"
            " TEMPLATES_DIR at them"
        ),
        "dir": "the app's folder (default: the current one)",
        "vendor": (
            f"commit a wheel of this signalcraft-deploy into {WHEELS_DIR}/ for the workflow to"
            " install (for a copy installed from a wheel file or a folder, which CI cannot reach)"
        ),
        "environments": (
            "comma-separated, e.g. staging,production: a settings file for each (deploy.NAME.env)"
            " and a workflow where a push deploys the first and each next one waits for the one"
            " before (and an approval)"
        ),
    }
)
def init(
    c: Context,
    force: bool = False,
    templates: bool = False,
    dir: str | None = None,
    vendor: bool = False,
    environments: str | None = None,
) -> None:
    """Make this app's repository deployable: fabfile.py, tasks.py, deploy.env, the deploy workflow, an ignore line."""
    root = Path(dir or os.getcwd())
    if not root.is_dir():
        raise Exit(
            f"--dir {root}: no such folder; expected the app's folder (its git checkout).", code=2
        )
    names = check_environments(environments)
    print(report(*init_app(root, force, templates, vendor, names)))


ns = Collection(init)
