"""The paths the tool writes inside a release, and the repository entries that would collide with
them.

A release is the commit's files plus a few of the tool's own (steps/upload.py's assembly,
`extras_tar`): `.signalcraft/` (manifest.json, hooks.json, site.json), `REVISION`, the rendered
`gunicorn.conf.py` and `ecosystem.config.js`/`.cjs`, `.env`, and the links `logs` and SHARED_PATHS
(and `node_modules`, by `install`).

What stays as it is today, on purpose: a regular file of the repository named like a rendered file
or REVISION is replaced by the tool's (the release runs the configs the tool renders), and a
committed `.env` is the release's .env unless APP_ENV_FILE gives one (a committed `node_modules/` or
venv is refused: steps/upload.py). Links the tool makes (`logs`, `node_modules`, SHARED_PATHS)
replace a symlink without following it.

What is refused, by name, before the host is touched: anything that would make the tool write
outside the release or into the repository's own files: a `.signalcraft` entry of any kind; a
symlink or a folder where the tool writes a file; a symlink or a file on the way to a shared path
(its parent folders); a name that is not UTF-8.
"""

from __future__ import annotations

from signalcraft_deploy.core.render import ECOSYSTEM, ECOSYSTEM_CJS, GUNICORN_CONF

TOOL_DIR = ".signalcraft"  # manifest.json, hooks.json, site.json
TOOL_FILES = (
    GUNICORN_CONF,
    ECOSYSTEM,
    ECOSYSTEM_CJS,
    "REVISION",
    ".env",
)  # written as files into each release
SYMLINK = "120000"
FIX = "rename or remove it in the repository (git mv / git rm) and commit"


def written_by_tool(path: str) -> bool:
    """Whether the tool writes `path` in a release (so the live release's copy is not the
    repository's)."""
    return path in TOOL_FILES or path == TOOL_DIR or path.startswith(TOOL_DIR + "/")


def collisions(modes: dict[str, str], shared_paths: tuple[str, ...] = ()) -> list[str]:
    """One line per repository entry that collides with a path the tool writes in a release.

    `modes` is {path: git mode} of the commit's files (folders are implied by the paths)."""
    folders = {"/".join(p.split("/")[:i]) for p in modes for i in range(1, p.count("/") + 1)}
    found = [
        f"{shown(p)}: not a UTF-8 name; the tool writes names as UTF-8; {FIX}"
        for p in sorted(modes)
        if not _utf8(p)
    ]
    tool = sorted(p for p in set(modes) | folders if p == TOOL_DIR or p.startswith(TOOL_DIR + "/"))
    if tool:
        found.append(
            f"{shown(tool[0])}{_kind(tool[0], modes)}: {TOOL_DIR}/ is the tool's own folder in each"
            f" release (manifest.json, hooks.json); {FIX}"
        )
    for name in TOOL_FILES:
        if modes.get(name) == SYMLINK:
            found.append(
                f"{name} (a symlink): the tool writes its own {name} there, and would write through"
                f" the link; {FIX}"
            )
        elif name in folders:
            found.append(f"{name} (a folder): the tool writes its own {name} file there; {FIX}")
    for shared in shared_paths:
        parts = shared.rstrip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in modes:
                what = "a symlink" if modes[parent] == SYMLINK else "a file"
                found.append(
                    f"{parent} ({what}): SHARED_PATHS has {shared}, so the tool makes a link inside"
                    f" the folder {parent}/, which would not be the release's own; {FIX}, or change"
                    " SHARED_PATHS"
                )
    return found


def _kind(path: str, modes: dict[str, str]) -> str:
    if modes.get(path) == SYMLINK:
        return " (a symlink)"
    return " (a file)" if path in modes else " (a folder)"


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """A path as a message may show it: as it is, or as escaped bytes when it holds a newline or is
    not UTF-8."""
    return (
        path
        if _utf8(path) and path.isprintable()
        else repr(path.encode("utf-8", "surrogateescape"))[1:]
    )
