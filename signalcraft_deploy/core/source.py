"""Source: the app's code as a git commit, read locally (SOURCE=upload).

Hash, don't copy: a commit's tree id and per-file blob ids say what changed between releases
without reading the files; the tarball is made only when the host needs a new release.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.render import DEFAULT_NODE_SCRIPT, digest
from signalcraft_deploy.core.settings import Settings, SettingsError

# Files that certainly belong to one app. Every other file may be read by either (a template, a JSON
# file, a static asset, an entry point without a suffix such as bin/www), so by default it reaches
# both.
PYTHON_ONLY = ("requirements.txt", "*.py")
NODE_ONLY = ("package.json", "package-lock.json", "npm-shrinkwrap.json", "node_modules/")
# JavaScript and TypeScript are Node.js's as *.py is Python's, except where Flask serves or renders
# files from its own release (an un-HUPed Gunicorn would keep serving the old static/app.js).
NODE_CODE = ("*.js", "*.mjs", "*.cjs", "*.ts")
FLASK_SERVED = ("static/", "templates/")
# The tool's own files, read by the deploy and never by an app (a leading '/': at the top of the
# app's folder). A change to them reloads nothing by itself; one that changes a rendered config
# reloads through the configs' digests. rendered/: only the files `render-configs` writes there
# (tasks/configs.py rendered_files); an app's own rendered/ (pages it pre-renders and serves) is the
# app's.
RENDERED = ("gunicorn.conf.py", "ecosystem.config.js", "ecosystem.config.cjs", "nginx-site.conf")
TOOL_OWN = (
    "/deploy.env",
    "/deploy.*.env",
    "/.github/",
    *(f"/rendered/{name}" for name in RENDERED),
)
# The tool's collection when it is one (`init` writes both; an app's own tasks.py, Celery's say, is
# its code).
COLLECTION_FILES = ("fabfile.py", "tasks.py")
COLLECTION_MARK = "signalcraft_deploy"


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` stay inside one folder, `**` spans folders, a trailing
    `/` means everything below that folder, and a pattern without `/` matches the name in any folder
    (as in .gitignore; a leading `/` anchors it at the top)."""
    folder = pattern.endswith("/")
    body = pattern.rstrip("/")
    anchored = "/" in body
    body = body.lstrip("/")
    out = ""
    i = 0
    while i < len(body):
        if body.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif body.startswith("**", i):
            out, i = out + ".*", i + 2
        elif body[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif body[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(body[i]), i + 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(prefix + out + ("/.*" if folder else "(?:/.*)?"))


def matches(path: str, globs: tuple[str, ...] | list[str]) -> bool:
    return any(glob_regex(g).fullmatch(path) for g in globs)


def readers(
    path: str,
    py_files: tuple[str, ...] | None = None,
    node_files: tuple[str, ...] | None = None,
    tool: tuple[str, ...] = TOOL_OWN,
) -> set[App]:
    """The apps a change to `path` reaches: both, one of them, or none (the tool's
    own files, `tool`).

    A file certainly one app's own reaches that app alone (JavaScript and TypeScript outside static/
    and templates/ are Node.js's, unless PY_FILES names them too). Any other file reaches both,
    unless PY_FILES / NODE_FILES (the files each app reads) are set: then an app is reached by the
    files matching its globs (and by its own files)."""
    if matches(path, tool):
        return set()
    if matches(path, PYTHON_ONLY):
        return {App.PYTHON}
    if matches(path, NODE_ONLY):
        return {App.NODEJS}
    if matches(path, NODE_CODE) and not matches(path, FLASK_SERVED):
        return (
            {App.NODEJS, App.PYTHON}
            if py_files is not None and matches(path, py_files)
            else {App.NODEJS}
        )
    found: set[App] = set()
    if py_files is None or matches(path, py_files):
        found.add(App.PYTHON)
    if node_files is None or matches(path, node_files):
        found.add(App.NODEJS)
    return found


def tool_collection(read: Callable[[str], str | None]) -> tuple[str, ...]:
    """The top-level fabfile.py/tasks.py that are the tool's collection: the ones importing
    signalcraft_deploy."""
    return tuple(name for name in COLLECTION_FILES if COLLECTION_MARK in (read(name) or ""))


def tool_files(s: Settings) -> tuple[str, ...]:
    """TOOL_OWN, and the settings files and TEMPLATES_DIR when they lie inside the app's folder
    (SOURCE_DIR). A settings file named .env stays the apps' too: by convention they load it
    (python-dotenv, Node's --env-file).
    """
    extra = []
    own = ((s.settings_file, False), (s.environment_file, False), (s.templates_dir, True))
    for local, folder in own:
        if not local or (not folder and os.path.basename(local) == ".env"):
            continue
        inside = os.path.relpath(os.path.abspath(local), os.path.abspath(s.source_dir))
        if inside != "." and not inside.startswith(".." + os.sep) and inside != "..":
            extra.append("/" + inside.replace(os.sep, "/") + ("/" if folder else ""))
    return TOOL_OWN + tuple("/" + name for name in s.tool_collection) + tuple(extra)


def app_digest(
    blobs: dict[str, str],
    app: App,
    py_files: tuple[str, ...] | None = None,
    node_files: tuple[str, ...] | None = None,
    tool: tuple[str, ...] = TOOL_OWN,
) -> str:
    """One digest of the files `app` reads: it changes when any of them does (rule 2:
    PY_FILES/NODE_FILES aware)."""
    return digest(
        "files-v2",
        *(
            f"{p}={b}"
            for p, b in sorted(blobs.items())
            if app in readers(p, py_files, node_files, tool)
        ),
    )


def committed_environments(paths: list[str] | set[str] | dict[str, str]) -> list[str]:
    """The folders of a commit that the host builds itself: each outermost `node_modules/` folder,
    and each folder holding a `pyvenv.cfg` (a virtual environment; "." for the app's folder itself).
    A committed node_modules wins over the one `npm ci` built (Node resolves the release's own
    first), and the release would differ from its commit.
    """
    found: set[str] = set()
    for path in paths:
        parts = path.split("/")
        if "node_modules" in parts[:-1]:
            found.add("/".join(parts[: parts.index("node_modules") + 1]))
        elif parts[-1] == "pyvenv.cfg":
            found.add("/".join(parts[:-1]) or ".")
    return sorted(f for f in found if not any(f.startswith(o + "/") for o in found if o != "."))


@dataclass(frozen=True)
class SourceTree:
    sha: str
    tree: str
    blobs: dict[str, str]  # path (relative to the app dir) -> blob id
    dirty: int  # uncommitted changes left out of the release
    subdir: str  # the app's folder inside the repository ('' at the top)
    modes: dict[str, str] = field(
        default_factory=dict
    )  # path -> git file mode (100644, 100755, 120000)

    def has(self, path: str) -> bool:
        return path in self.blobs

    def digest_for(self, s: Settings, app: App) -> str:
        return app_digest(self.blobs, app, s.py_files, s.node_files, tool_files(s))


def changed_paths(new: dict[str, str], old: dict[str, str] | None) -> list[str] | None:
    """Paths added, removed or changed between two {path: blob} maps; None when the old one is not
    known."""
    if old is None:
        return None
    return sorted(p for p in set(new) | set(old) if new.get(p) != old.get(p))


def _git(source_dir: str, *args: str) -> str:
    # surrogateescape: a name that is not UTF-8 survives the round trip, to be refused by name
    # (release_paths)
    result = subprocess.run(
        ["git", "-C", source_dir, *args],
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",
    )
    if result.returncode != 0:
        raise SettingsError(
            f"SOURCE_DIR {source_dir}: git {' '.join(args)} failed:"
            f" {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def read_source(source_dir: str) -> SourceTree:
    """Describe the git HEAD of the app folder (which may be a folder inside a larger
    repository)."""
    if not Path(source_dir).is_dir():
        raise SettingsError(
            f"SOURCE_DIR ({source_dir}): no such directory; expected the app's folder."
        )
    probe = subprocess.run(
        ["git", "-C", source_dir, "rev-parse", "--show-prefix"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise SettingsError(
            f"SOURCE_DIR ({source_dir}): not inside a git checkout; deploy ships a commit, so "
            "run `git init && git add -A && git commit` there (or set SOURCE=git)."
        )
    subdir = probe.stdout.strip()
    head = subprocess.run(
        ["git", "-C", source_dir, "rev-parse", "--verify", "-q", "HEAD"],
        capture_output=True,
        text=True,
    )
    if head.returncode != 0:
        raise SettingsError(
            f"SOURCE_DIR ({source_dir}): the repository has no commit yet; commit the app first."
        )
    sha = head.stdout.strip()
    tree = _git(source_dir, "rev-parse", f"HEAD:{subdir}" if subdir else "HEAD^{tree}").strip()
    files = parse_ls_tree(_git(source_dir, "ls-tree", "-r", "-z", "--full-tree", tree))
    dirty = count_status(_git(source_dir, "status", "--porcelain", "-z", "--", "."))
    return SourceTree(
        sha=sha,
        tree=tree,
        blobs={p: b for p, (_, b) in files.items()},
        dirty=dirty,
        subdir=subdir,
        modes={p: m for p, (m, _) in files.items()},
    )


def parse_ls_tree(text: str) -> dict[str, tuple[str, str]]:
    """`git ls-tree -r -z` output -> {path: (mode, blob id)}, files only. With -z a name is as git
    stores it (no quoting of non-ASCII, quotes or a newline); each record ends with NUL."""
    files = {}
    for record in text.split("\0"):
        meta, tab, path = record.partition("\t")
        parts = meta.split()
        if tab and len(parts) == 3 and parts[1] == "blob":
            files[path] = (parts[0], parts[2])
    return files


def count_status(text: str) -> int:
    """The number of changed paths in `git status --porcelain -z` output (a rename's record is
    followed by its old name, which is not counted again)."""
    count, records = 0, iter(text.split("\0"))
    for record in records:
        if not record.strip():
            continue
        count += 1
        if "R" in record[:2] or "C" in record[:2]:
            next(records, None)
    return count


def file_ids(tree: SourceTree) -> dict[str, tuple[str, str]]:
    return {p: (tree.modes.get(p, ""), b) for p, b in tree.blobs.items()}


def tree_files(source_dir: str, tree_id: str) -> dict[str, tuple[str, str]] | None:
    """The files of another tree (a release already on the host), if this repository has it."""
    known = subprocess.run(
        ["git", "-C", source_dir, "cat-file", "-e", f"{tree_id}^{{tree}}"], capture_output=True
    )
    if known.returncode != 0:
        return None
    return parse_ls_tree(_git(source_dir, "ls-tree", "-r", "-z", "--full-tree", tree_id))


@dataclass(frozen=True)
class Delta:
    """What a release shares with the one on the host: copy `same` there, send `changed`."""

    same: list[str]
    changed: list[str]


MAX_DELTA_FILES = 500  # beyond this, one archive of the whole tree is simpler than a path list


def delta(new: dict[str, tuple[str, str]], old: dict[str, tuple[str, str]] | None) -> Delta | None:
    """Files to copy from the previous release and files to send, or None to send everything."""
    if not old:
        return None
    changed = sorted(p for p, ident in new.items() if old.get(p) != ident)
    if len(changed) > MAX_DELTA_FILES:
        return None
    return Delta(same=sorted(p for p in new if p not in changed), changed=changed)


def resend(d: Delta, paths: list[str]) -> Delta:
    """The delta with `paths` sent rather than copied (the live release's copies are not git's)."""
    moved = set(paths) & set(d.same)
    if not moved:
        return d
    return Delta(same=[p for p in d.same if p not in moved], changed=sorted([*d.changed, *moved]))


def read_blob(source_dir: str, tree: SourceTree, path: str) -> str | None:
    blob = tree.blobs.get(path)
    return _git(source_dir, "cat-file", "blob", blob) if blob else None


def make_tarball(
    source_dir: str, tree: SourceTree, out_path: str, paths: list[str] | None = None
) -> None:
    """`git archive` of the app folder at HEAD (or of some of its files): exactly the commit,
    nothing uncommitted."""
    top = _git(
        source_dir, "rev-parse", "--show-toplevel"
    ).strip()  # git archive refuses some subfolders as cwd
    literal = [f":(literal){p}" for p in paths] if paths is not None else []
    _git(
        top,
        "archive",
        "--format=tar",
        "-o",
        out_path,
        tree.tree,
        *(["--", *literal] if paths is not None else []),
    )


_START_RE = re.compile(r"^\s*node\s+(?:--?[A-Za-z0-9-]+(?:=\S+)?\s+)*(\S+)\s*$")


@dataclass(frozen=True)
class NodePackage:
    """What package.json says about how to run the app."""

    script: str | None  # its entry point: `main`, or the file of a `start` script `node <file>`
    esm: bool  # "type": "module": .js files are ES modules, so PM2's file must be .cjs
    why: str  # where the entry point came from, for messages


def _clean(path: str) -> str:
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path


def node_package(text: str | None, has: Any = None) -> NodePackage:
    """Read package.json (None: there is none). `has(path)` says whether the release holds a file;
    `main` naming a folder or a file without its suffix is resolved the way Node does (x -> x.js,
    x/index.js).
    """
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    esm = data.get("type") == "module"
    has = has or (lambda path: True)
    start = (
        (data.get("scripts") or {}).get("start") if isinstance(data.get("scripts"), dict) else None
    )
    if isinstance(start, str) and (match := _START_RE.match(start)):
        for candidate in _candidates(_clean(match.group(1))):
            if has(candidate):
                return NodePackage(candidate, esm, f"package.json scripts.start ({start.strip()})")
    main = data.get("main")
    if isinstance(main, str) and main.strip():
        for candidate in _candidates(_clean(main)):
            if has(candidate):
                return NodePackage(candidate, esm, f"package.json main ({main.strip()})")
    return NodePackage(None, esm, "")


def _candidates(path: str) -> list[str]:
    path = path.rstrip("/")
    return [path, f"{path}.js", f"{path}.mjs", f"{path}.cjs", f"{path}/index.js"] if path else []


@dataclass(frozen=True)
class NodeEntry:
    """The file PM2 runs for the Node.js app, and where that came from."""

    script: str
    esm: bool  # package.json has "type": "module"
    why: str  # "NODE_SCRIPT", "package.json main (index.js)", ... or "default"
    present: bool  # whether the app holds that file


def resolve_node_entry(
    package_json: str | None, has: Callable[[str], bool], node_script: str | None = None
) -> NodeEntry:
    """The one rule for the Node.js entry point, for the deploy (`has` = the commit's tree), a local
    render-configs and init (`has` = the working tree): NODE_SCRIPT when set, else package.json's
    (its start script `node <file>`, else `main`, resolved as Node does), else server.js."""
    pkg = node_package(package_json, has)
    if node_script:
        return NodeEntry(node_script, pkg.esm, "NODE_SCRIPT", has(node_script))
    if pkg.script:
        return NodeEntry(pkg.script, pkg.esm, pkg.why, True)
    return NodeEntry(DEFAULT_NODE_SCRIPT, pkg.esm, "default", has(DEFAULT_NODE_SCRIPT))


def node_entry_of(
    s: Settings, package_json: str | None, has: Callable[[str], bool], where: str
) -> NodeEntry:
    """The entry point the app at `where` runs; a clear error naming NODE_SCRIPT when it holds
    none."""
    entry = resolve_node_entry(package_json, has, s.node_script)
    if entry.present:
        return entry
    origin = s.origins.get("NODE_SCRIPT", "default")
    if s.node_script:
        raise SettingsError(
            f"NODE_SCRIPT ({origin}): {entry.script} is not in {where}; "
            "set NODE_SCRIPT to the Node.js entry point."
        )
    raise SettingsError(
        f"NODE_SCRIPT ({origin}): no Node.js entry point in {where}: package.json "
        f"names none that exists (main, or a start script 'node <file>') and {DEFAULT_NODE_SCRIPT} "
        "is not there; set NODE_SCRIPT to the entry point."
    )


def with_node_entry(s: Settings, entry: NodeEntry) -> Settings:
    """The settings running `entry` (package.json's when NODE_SCRIPT is unset), its origin saying
    why."""
    if s.node_script == entry.script:
        return s
    return replace(s, node_script=entry.script, origins={**s.origins, "NODE_SCRIPT": entry.why})


# Packages whose clients keep a session on one server process: socket.io's polling transport sends
# each request of a session anew ("Session ID unknown" from another process), and its broadcasts
# reach the clients of the sending process only, unless an adapter shares them.
SESSION_BOUND_PACKAGES = ("socket.io",)


def session_bound_package(package_json: str | None) -> str | None:
    """The session-bound package package.json depends on (dependencies), if any."""
    try:
        data = json.loads(package_json) if package_json else {}
    except ValueError:
        return None
    deps = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(deps, dict):
        return None
    return next((name for name in SESSION_BOUND_PACKAGES if name in deps), None)


def session_bound_why(s: Settings, package_json: str | None) -> str | None:
    """Why the Node.js app is session-bound (NODE_SESSION_BOUND, or auto and a package found), or
    None when it is not."""
    if s.node_session_bound == "yes":
        return f"NODE_SESSION_BOUND=yes ({s.origins.get('NODE_SESSION_BOUND', 'default')})"
    if s.node_session_bound == "auto" and (name := session_bound_package(package_json)):
        return f"package.json depends on {name}"
    return None


def with_session_bound(s: Settings, package_json: str | None) -> Settings:
    """A session-bound app runs one Node.js process by default; NODE_INSTANCES set above 1 for it is
    refused, naming the fix (SettingsError)."""
    why = session_bound_why(s, package_json)
    if why is None:
        return s
    origin = s.origins.get("NODE_INSTANCES", "default")
    if origin == "default":
        return replace(
            s, node_instances=1, origins={**s.origins, "NODE_INSTANCES": f"1 process: {why}"}
        )
    if s.node_instances == 1:
        return s
    raise SettingsError(
        f"NODE_INSTANCES={s.node_instances} ({origin}) with a session-bound Node.js app ({why}):"
        " with several processes socket.io's polling clients fail (400 'Session ID unknown': each"
        " request of a session must reach the process that opened it) and a broadcast reaches only"
        " the clients of the process that sends it. Set NODE_INSTANCES=1; or, to run several"
        " processes, connect every client with transports: ['websocket'] and share broadcasts"
        " with an adapter (@socket.io/redis-adapter), then set NODE_SESSION_BOUND=no. Nothing was"
        " changed on the host."
    )
