"""Source: the app's code as a git commit, read locally (SOURCE=upload).

Hash, don't copy: a commit's tree id and per-file blob ids say what changed between releases
without reading the files; the tarball is made only when the host needs a new release.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from signalcraft_deploy.core.render import digest
from signalcraft_deploy.core.settings import SettingsError

NODE_SUFFIXES = (".js", ".mjs", ".cjs", ".json", ".node", ".ts")


@dataclass(frozen=True)
class SourceTree:
    sha: str
    tree: str
    blobs: dict[str, str]  # path (relative to the app dir) -> blob id
    dirty: int  # uncommitted changes left out of the release
    subdir: str  # the app's folder inside the repository ('' at the top)
    modes: dict[str, str] = field(default_factory=dict)  # path -> git file mode (100644, 100755, 120000)

    def has(self, path: str) -> bool:
        return path in self.blobs

    @property
    def python_digest(self) -> str:
        return digest(*(f"{p}={b}" for p, b in sorted(self.blobs.items()) if not p.endswith(NODE_SUFFIXES)))

    @property
    def node_digest(self) -> str:
        return digest(*(f"{p}={b}" for p, b in sorted(self.blobs.items()) if p.endswith(NODE_SUFFIXES)))


def _git(source_dir: str, *args: str) -> str:
    result = subprocess.run(["git", "-C", source_dir, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SettingsError(f"SOURCE_DIR {source_dir}: git {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def read_source(source_dir: str) -> SourceTree:
    """Describe the git HEAD of the app folder (which may be a folder inside a larger repository)."""
    if not Path(source_dir).is_dir():
        raise SettingsError(f"SOURCE_DIR ({source_dir}): no such directory; expected the app's folder.")
    probe = subprocess.run(["git", "-C", source_dir, "rev-parse", "--show-prefix"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SettingsError(f"SOURCE_DIR ({source_dir}): not inside a git checkout; deploy ships a commit, so "
                            "run `git init && git add -A && git commit` there (or set SOURCE=git).")
    subdir = probe.stdout.strip()
    head = subprocess.run(["git", "-C", source_dir, "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        raise SettingsError(f"SOURCE_DIR ({source_dir}): the repository has no commit yet; commit the app first.")
    sha = head.stdout.strip()
    tree = _git(source_dir, "rev-parse", f"HEAD:{subdir}" if subdir else "HEAD^{tree}").strip()
    files = parse_ls_tree(_git(source_dir, "ls-tree", "-r", "--full-tree", tree))
    dirty = len([line for line in _git(source_dir, "status", "--porcelain", "--", ".").splitlines() if line.strip()])
    return SourceTree(sha=sha, tree=tree, blobs={p: b for p, (_, b) in files.items()}, dirty=dirty, subdir=subdir,
                      modes={p: m for p, (m, _) in files.items()})


def parse_ls_tree(text: str) -> dict[str, tuple[str, str]]:
    """`git ls-tree -r` output -> {path: (mode, blob id)}, files only."""
    files = {}
    for line in text.splitlines():
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            files[path] = (parts[0], parts[2])
    return files


def file_ids(tree: SourceTree) -> dict[str, tuple[str, str]]:
    return {p: (tree.modes.get(p, ""), b) for p, b in tree.blobs.items()}


def tree_files(source_dir: str, tree_id: str) -> dict[str, tuple[str, str]] | None:
    """The files of another tree (a release already on the host), if this repository has it."""
    known = subprocess.run(["git", "-C", source_dir, "cat-file", "-e", f"{tree_id}^{{tree}}"], capture_output=True)
    if known.returncode != 0:
        return None
    return parse_ls_tree(_git(source_dir, "ls-tree", "-r", "--full-tree", tree_id))


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


def read_blob(source_dir: str, tree: SourceTree, path: str) -> str | None:
    blob = tree.blobs.get(path)
    return _git(source_dir, "cat-file", "blob", blob) if blob else None


def make_tarball(source_dir: str, tree: SourceTree, out_path: str, paths: list[str] | None = None) -> None:
    """`git archive` of the app folder at HEAD (or of some of its files): exactly the commit, nothing uncommitted."""
    top = _git(source_dir, "rev-parse", "--show-toplevel").strip()  # git archive refuses some subfolders as cwd
    literal = [f":(literal){p}" for p in paths] if paths is not None else []
    _git(top, "archive", "--format=tar", "-o", out_path, tree.tree, *(["--", *literal] if paths is not None else []))
