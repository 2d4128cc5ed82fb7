"""Freeze: pin the app's requirements.txt to the versions in its local virtual environment.

Unlike `pip freeze > requirements.txt`, this keeps the file's comments and order, pins only
what the file names (plus Gunicorn, which the host needs to serve the app), leaves options,
`-e`/URL/path lines and continued lines alone, prints the diff and writes atomically.
`--check` exits 1 with the diff when the file is out of date (for CI); `--all` writes the
full `pip freeze` listing instead, keeping the file's leading comment block.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field

from invoke import Collection, task
from invoke.context import Context
from invoke.exceptions import Exit

from signalcraft_deploy.core.local_files import write_atomically
from signalcraft_deploy.core.settings import Settings, SettingsError, settings_from_task

# Oldest version of each ensured package that the deployment supports. Gunicorn 20.1 is the
# first to accept WSGI_APP as "module:factory()".
MINIMUM_VERSIONS: dict[str, tuple[int, ...]] = {"gunicorn": (20, 1)}

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_SPEC = r"(?:===|==|!=|~=|>=|<=|>|<)\s*[A-Za-z0-9.*+!_-]+"
_SPECS = rf"\(?\s*{_SPEC}(?:\s*,\s*{_SPEC})*(?:\s*\))?"
# One requirement that names a package: name, extras, version specifiers, environment marker.
_REQ_RE = re.compile(
    rf"^(?P<lead>\s*)(?P<name>{_NAME})(?P<extras>\s*\[[^\]]*\])?"
    rf"(?P<spec>\s*{_SPECS})?(?P<marker>\s*;.*?)?(?P<trail>\s*)$"
)
_DIRECT_RE = re.compile(
    rf"^\s*(?P<name>{_NAME})\s*(?:\[[^\]]*\])?\s*@"
)  # name @ url: pinned by URL
_COMMENT_RE = re.compile(r"(^|\s+)#.*$")  # as pip reads it: '#' at the start or after whitespace
_OPTIONS_RE = re.compile(r"\s--?[A-Za-z]")  # per-requirement options such as --hash=...
_ARCHIVE_SUFFIXES = (
    ".whl",
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
)


class FreezeError(ValueError):
    """The environment cannot give a correct requirements.txt; the message says why and what to
    run."""


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name: 'Flask_SQLAlchemy' -> 'flask-sqlalchemy'."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class PinPlan:
    """The rewritten file and what happened to each named package."""

    text: str
    checked: int = 0  # requirement lines compared against the environment
    pinned: list[str] = field(default_factory=list)  # names whose line changed
    added: list[str] = field(default_factory=list)  # 'gunicorn==x.y.z' lines appended
    not_installed: list[str] = field(
        default_factory=list
    )  # named but absent from the environment: left as is
    left_as_is: list[str] = field(
        default_factory=list
    )  # named on a continued line or with --hash options


@dataclass(frozen=True)
class _Line:
    # 'req' (rewritable), 'named' (names a package, left as is), 'direct' (name @ url), 'other'
    kind: str
    name: str | None = None
    match: re.Match[str] | None = None


def _split_comment(line: str) -> tuple[str, str]:
    m = _COMMENT_RE.search(line)
    return (line[: m.start()], line[m.start() :]) if m else (line, "")


def _classify(logical: str) -> _Line:
    body, _ = _split_comment(logical)
    stripped = body.strip()
    if not stripped or stripped.startswith("-"):
        return _Line("other")  # blank, comment, -r/-c/-e/--index-url and other options
    direct = _DIRECT_RE.match(body)
    if direct:
        return _Line("direct", direct["name"])
    m = _REQ_RE.match(body)
    if m and not m["name"].lower().endswith(_ARCHIVE_SUFFIXES):
        return _Line("req", m["name"], m)
    options = _OPTIONS_RE.search(body)
    if options:
        head = _REQ_RE.match(body[: options.start()])
        if head and not head["name"].lower().endswith(_ARCHIVE_SUFFIXES):
            return _Line("named", head["name"])
    return _Line("other")  # URL, path, archive or something this tool does not understand


def _continues(line: str) -> bool:
    """pip joins a line ending in a backslash with the next one, unless it is a comment line."""
    return line.endswith("\\") and not re.match(r"\s*#", line)


def _split_ending(physical: str) -> tuple[str, str]:
    content = physical.rstrip("\r\n")
    return content, physical[len(content) :]


def _release(version: str) -> tuple[int, ...] | None:
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in m.group(1).split(".")) if m else None


def check_ensured(
    installed: dict[str, str], ensure: tuple[str, ...] = ("gunicorn",), venv: str = ".venv"
) -> None:
    """Raise FreezeError unless each ensured package is installed at a supported version."""
    versions = {canonical_name(k): v for k, v in installed.items()}
    for name in ensure:
        key = canonical_name(name)
        minimum = MINIMUM_VERSIONS.get(key)
        spec = f"{name}>={'.'.join(map(str, minimum))}" if minimum else name
        if key not in versions:
            raise FreezeError(
                f"{name} is not installed in {venv}: run {venv}/bin/pip install '{spec}'"
            )
        if minimum:
            release = _release(versions[key])
            if release is None or release < minimum:
                raise FreezeError(
                    f'{name} {versions[key]} in {venv} is too old: WSGI_APP = "module:factory()"'
                    f" needs {spec}; "
                    f"run {venv}/bin/pip install --upgrade '{spec}'"
                )


def plan_pins(
    text: str,
    installed: dict[str, str],
    ensure: tuple[str, ...] = ("gunicorn",),
    *,
    venv: str = ".venv",
) -> PinPlan:
    """Pin each package line of `text` to its installed version and append the ensured packages.

    Pure. `venv` is only used in error messages. Raises FreezeError if an ensured package is
    missing or too old.
    """
    versions = {canonical_name(k): v for k, v in installed.items()}
    check_ensured(versions, ensure, venv)
    plan = PinPlan(text="")
    named: set[str] = set()  # canonical names the file already names, on any kind of line
    out: list[str] = []
    physical = text.splitlines(keepends=True)
    i = 0
    while i < len(physical):
        if _continues(_split_ending(physical[i])[0]):
            group = _continued_group(physical, i)
            _note_continued(group, named, plan)
            out.extend(group)
            i += len(group)
        else:
            out.append(_pin_line(physical[i], versions, named, plan))
            i += 1
    _append_ensured(
        out, text, [name for name in ensure if canonical_name(name) not in named], versions, plan
    )
    plan.text = "".join(out)
    return plan


def _continued_group(physical: list[str], i: int) -> list[str]:
    """The physical lines pip joins into one, starting at `physical[i]` (which ends in a
    backslash)."""
    group = [physical[i]]
    while _continues(_split_ending(group[-1])[0]) and i + len(group) < len(physical):
        group.append(physical[i + len(group)])
    return group


def _note_continued(group: list[str], named: set[str], plan: PinPlan) -> None:
    """A continued line is kept as it is: note the package it names, if any."""
    logical = " ".join(_split_ending(p)[0].removesuffix("\\") for p in group)
    line = _classify(logical)
    if line.name:
        named.add(canonical_name(line.name))
        if line.kind != "direct":
            plan.left_as_is.append(line.name)


def _pin_line(physical: str, versions: dict[str, str], named: set[str], plan: PinPlan) -> str:
    """One physical line, pinned to the installed version if it is a rewritable requirement."""
    content, ending = _split_ending(physical)
    line = _classify(content)
    if line.name:
        named.add(canonical_name(line.name))
    if line.kind == "named":
        plan.left_as_is.append(line.name or "")
    if line.kind != "req" or line.match is None:
        return content + ending
    m = line.match
    version = versions.get(canonical_name(m["name"]))
    if version is None:
        plan.not_installed.append(m["name"])
        return content + ending
    plan.checked += 1
    _, comment = _split_comment(content)
    new = f"{m['lead']}{m['name']}{m['extras'] or ''}=={version}{m['marker'] or ''}{m['trail']}{comment}"
    if new != content:
        plan.pinned.append(m["name"])
    return new + ending


def _append_ensured(
    out: list[str], text: str, missing: list[str], versions: dict[str, str], plan: PinPlan
) -> None:
    """Append a pin for each ensured package the file does not name, in the file's line endings."""
    if not missing:
        return
    newline = "\r\n" if "\r\n" in text else "\n"
    ends_with_newline = text == "" or text.endswith(("\n", "\r"))
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += newline
    if out and _continues(_split_ending(out[-1])[0]):
        out.append(newline)  # an empty line ends a dangling continuation
    added = [f"{name}=={versions[canonical_name(name)]}" for name in missing]
    plan.added = added
    plan.checked += len(added)
    out.append(newline.join(added) + (newline if ends_with_newline else ""))


def pin_requirements(
    text: str,
    installed: dict[str, str],
    ensure: tuple[str, ...] = ("gunicorn",),
    *,
    venv: str = ".venv",
) -> str:
    """`text` with each named package pinned to its installed version and `ensure` appended if
    absent."""
    return plan_pins(text, installed, ensure, venv=venv).text


def not_installed(text: str, installed: dict[str, str]) -> list[str]:
    """Names of the packages `text` names on rewritable lines that are not in `installed` (as spelt
    in the file)."""
    return plan_pins(text, installed, ensure=()).not_installed


def leading_comment_block(text: str) -> str:
    """The comment and blank lines at the top of a requirements file."""
    lines = text.splitlines(keepends=True)
    end = 0
    while end < len(lines) and (not lines[end].strip() or lines[end].lstrip().startswith("#")):
        end += 1
    block = "".join(lines[:end])
    if block and not block.endswith(("\n", "\r")):
        block += "\n"
    return block


def _venv_python(c: Context, venv: str, args: str, what: str) -> str:
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        problem = "is broken (its Python is gone)" if os.path.islink(python) else "is missing"
        raise Exit(
            f"no virtual environment at {venv} ({python} {problem}): create it with `python3 -m"
            f" venv {venv} && {venv}/bin/pip install -r requirements.txt gunicorn`, or set"
            " LOCAL_VENV",
            code=1,
        )
    result = c.run(
        f"{shlex.quote(python)} -m pip {args} --disable-pip-version-check",
        hide=True,
        warn=True,
        in_stream=False,
    )
    if result is None or result.failed:
        stderr = (result.stderr if result is not None else "").strip()
        if "No module named pip" in stderr:
            raise Exit(
                f"pip is not installed in {venv}: run `{python} -m ensurepip --upgrade`, then try"
                " again",
                code=1,
            )
        detail = (
            stderr.splitlines()[-1] if stderr else f"exit code {getattr(result, 'exited', '?')}"
        )
        raise Exit(f"could not {what} from {venv} (`pip {args}` failed: {detail})", code=1)
    return result.stdout


def read_installed(c: Context, venv: str) -> dict[str, str]:
    """{canonical name: version} of the packages installed in the virtual environment `venv`."""
    stdout = _venv_python(c, venv, "list --format=json", "list the installed packages")
    try:
        packages = json.loads(stdout)
        return {canonical_name(p["name"]): str(p["version"]) for p in packages}
    except (ValueError, TypeError, KeyError) as err:
        raise Exit(
            f"could not read `pip list` output from {venv} ({err}): expected a JSON list of"
            " name/version objects",
            code=1,
        ) from err


def full_freeze_listing(c: Context, venv: str) -> str:
    """`pip freeze` of the virtual environment `venv`, for `--all`."""
    return _venv_python(c, venv, "freeze", "freeze the installed packages")


def unified_diff(old: str, new: str, path: str = "requirements.txt") -> str:
    """A git-style unified diff of `old` -> `new`, labelled a/<path> and b/<path>."""
    out: list[str] = []
    for line in difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    ):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@task(
    help={
        "source-dir": "the app's directory holding requirements.txt (default: SOURCE_DIR)",
        "venv": (
            "the app's local virtual environment (default: LOCAL_VENV, else $VIRTUAL_ENV unless it"
            " is this tool's, else SOURCE_DIR/.venv)"
        ),
        "check": (
            "change nothing; exit 1 and print the diff if requirements.txt is out of date (for CI)"
        ),
        "all": (
            "write the full `pip freeze` listing instead, keeping the file's leading comment block"
        ),
        "env-file": "settings file to read (default: ENV_FILE, else ./.env)",
        "set": "override a setting, KEY=VALUE (repeatable)",
        "environment": "read deploy.NAME.env over the settings file (default $SIGNALCRAFT_ENV)",
    },
    iterable=["set_"],
)
def freeze(
    c: Context,
    source_dir: str | None = None,
    venv: str | None = None,
    check: bool = False,
    all_: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Pin requirements.txt to the versions in the app's local virtual environment (adds gunicorn).

    Keeps the file's comments and order and pins only what it names, plus Gunicorn; prints the
    diff and writes atomically. `--check` changes nothing and exits 1 when the file is out of date.
    """
    try:
        s = settings_from_task(
            env_file, set_, {"SOURCE_DIR": source_dir, "LOCAL_VENV": venv}, environment
        )
    except SettingsError as err:
        raise Exit(str(err), code=2) from err
    venv_path, origin = _choose_venv(s)
    path, old = _read_requirements(s)
    print(f"versions from {venv_path} ({origin})")
    installed = read_installed(c, venv_path)
    try:
        result = (
            _freeze_listing(c, old, installed, venv_path)
            if all_
            else _pinned(old, installed, venv_path)
        )
    except FreezeError as err:
        raise Exit(str(err), code=1) from err
    _finish(path, old, result, check)


@dataclass(frozen=True)
class _Result:
    """What freeze would write, and what it says about it."""

    new: str
    count: int  # pins checked, or packages listed with --all
    summary: str  # printed after writing


def _is_own_environment(venv: str) -> bool:
    """Whether `venv` is the environment this tool runs from (an activated venv holding
    signalcraft-deploy)."""
    return os.path.realpath(venv) == os.path.realpath(sys.prefix)


def _choose_venv(s: Settings) -> tuple[str, str]:
    """The app's local venv to read versions from, and where that choice came from.

    LOCAL_VENV, else an activated $VIRTUAL_ENV, else SOURCE_DIR/.venv. The venv this tool runs from
    comes last: when it is activated to run `invoke`, the app's own SOURCE_DIR/.venv is the one to
    pin from.
    """
    env_venv = os.environ.get("VIRTUAL_ENV")
    app_venv = os.path.join(s.source_dir, ".venv")
    if s.local_venv:
        return s.local_venv, "LOCAL_VENV"
    if env_venv and not _is_own_environment(env_venv):
        return env_venv, "$VIRTUAL_ENV"
    if env_venv and not os.path.exists(os.path.join(app_venv, "bin", "python")):
        return env_venv, "$VIRTUAL_ENV, the tool's own: SOURCE_DIR has no .venv"
    return app_venv, "SOURCE_DIR/.venv"


def _read_requirements(s: Settings) -> tuple[str, str]:
    """The path of the app's requirements.txt and its text, exactly as it is (line endings kept)."""
    path = os.path.join(s.source_dir, "requirements.txt")
    if not os.path.isfile(path):
        raise Exit(
            f"{path} does not exist: create it (one package per line, e.g. `flask`), or point"
            " --source-dir / SOURCE_DIR at the app",
            code=1,
        )
    with open(path, encoding="utf-8", newline="") as handle:
        return path, handle.read()


def _freeze_listing(c: Context, old: str, installed: dict[str, str], venv_path: str) -> _Result:
    """--all: the full `pip freeze` listing under the file's leading comment block."""
    if "signalcraft-deploy" in installed:
        raise FreezeError(
            f"{venv_path} holds signalcraft-deploy itself: --all would write its dependencies"
            " (fabric, invoke, paramiko, ...) into requirements.txt, which the host installs. Give"
            " the app a venv of its own (LOCAL_VENV, or SOURCE_DIR/.venv), or freeze without"
            " --all."
        )
    check_ensured(installed, venv=venv_path)
    listing = full_freeze_listing(c, venv_path)
    new = leading_comment_block(old) + listing
    if old and not old.endswith(("\n", "\r")):
        new = new.rstrip("\r\n")
    count = sum(
        1 for line in listing.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    return _Result(new, count, f"wrote the full pip freeze listing ({_plural(count, 'package')})")


def _pinned(old: str, installed: dict[str, str], venv_path: str) -> _Result:
    """The file's own lines pinned (warning about what could not be), plus Gunicorn if absent."""
    plan = plan_pins(old, installed, venv=venv_path)
    parts = [f"pinned {_plural(len(plan.pinned), 'package')}"] if plan.pinned else []
    parts += [f"added {added}" for added in plan.added]
    if plan.not_installed:
        print(
            f"warning: not installed in {venv_path}, left as is in requirements.txt:"
            f" {', '.join(plan.not_installed)}",
            file=sys.stderr,
        )
    if plan.left_as_is:
        print(
            f"warning: continued lines or --hash options, not pinned: {', '.join(plan.left_as_is)}",
            file=sys.stderr,
        )
    return _Result(plan.text, plan.checked, ", ".join(parts))


def _finish(path: str, old: str, result: _Result, check: bool) -> None:
    """Say the file is up to date, or print the diff and write it (with --check: exit 1 instead)."""
    if result.new == old:
        print(f"requirements.txt is up to date ({_plural(result.count, 'pin')} checked)")
        return
    print(unified_diff(old, result.new, "requirements.txt"), end="")
    if check:
        raise Exit("requirements.txt is out of date: run `invoke freeze`", code=1)
    write_atomically(path, result.new)
    print(result.summary)


ns = Collection(freeze)
