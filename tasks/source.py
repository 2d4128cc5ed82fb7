"""Source: the app's code as a git commit, read locally (SOURCE=upload).

Hash, don't copy: a commit's tree id and per-file blob ids say what changed between releases
without reading the files; the tarball is made only when the host needs a new release.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tasks.render import digest
from tasks.settings import SettingsError

NODE_SUFFIXES = (".js", ".mjs", ".cjs", ".json", ".node", ".ts")


@dataclass(frozen=True)
class SourceTree:
    sha: str
    tree: str
    blobs: dict[str, str]  # path (relative to the app dir) -> blob id
    dirty: int  # uncommitted changes left out of the release
    subdir: str  # the app's folder inside the repository ('' at the top)

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
    blobs: dict[str, str] = {}
    for line in _git(source_dir, "ls-tree", "-r", "--full-tree", tree).splitlines():
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            blobs[path] = parts[2]
    dirty = len([line for line in _git(source_dir, "status", "--porcelain", "--", ".").splitlines() if line.strip()])
    return SourceTree(sha=sha, tree=tree, blobs=blobs, dirty=dirty, subdir=subdir)


def read_blob(source_dir: str, tree: SourceTree, path: str) -> str | None:
    blob = tree.blobs.get(path)
    return _git(source_dir, "cat-file", "blob", blob) if blob else None


def make_tarball(source_dir: str, tree: SourceTree, out_path: str) -> None:
    """`git archive` of the app folder at HEAD: exactly the commit, nothing uncommitted."""
    top = _git(source_dir, "rev-parse", "--show-toplevel").strip()  # git archive refuses some subfolders as cwd
    _git(top, "archive", "--format=tar", "-o", out_path, tree.tree)
