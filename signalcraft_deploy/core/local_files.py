"""Files on this machine that tasks rewrite: `freeze`'s requirements.txt, `init`'s deploy.env."""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path` with `text` in one step: temp file in the same directory, fsync, same mode,
    os.replace."""
    target = os.path.realpath(path)  # a symlinked requirements.txt keeps its link
    directory = os.path.dirname(target) or "."
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; best effort (not every filesystem allows it)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
