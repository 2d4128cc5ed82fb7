"""Runs ON THE HOST inside the release assembly (steps/upload.py `assemble_script`) as the deploy
user: `PYTHON -I -S -c TEXT LIVE NEW`, its stdin the files to copy (NUL-separated: mode, blob id,
path; repeated).

Standard library only. Copies each file of the live release LIVE into the new release NEW, and only
after checking it is what git holds: its content (a symlink: its target) hashed the way git does
(`git hash-object`: sha1 of b"blob <size>\\0" + data) equals the blob id, and it is still a file of
that kind. The mode comes from git (0755 or 0644), whatever the live copy has. A file that differs,
is missing or is reached through a symlinked folder is not copied: its path is printed, and the
program exits with EDITED so that the tool sends those files fresh from git. Nothing is hashed twice
and nothing extra is read: each file is read once, as a copy would read it.
"""

import hashlib
import json
import os
import stat
import sys

EDITED = 3
SYMLINK, EXECUTABLE = "120000", "100755"


def git_blob_id(data):
    """The id git gives a blob of these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def records(raw):
    """(mode, blob id, path as bytes) from the NUL-separated stdin."""
    fields = raw.split(b"\0")
    for i in range(0, len(fields) - 2, 3):
        yield fields[i].decode(), fields[i + 1].decode(), fields[i + 2]


class Live:
    """The live release, read only through its own folders (a folder replaced by a symlink is an
    edit)."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.folders = {}

    def inside(self, path):
        folder = os.path.dirname(path)
        if folder not in self.folders:
            real = os.path.realpath(os.path.join(self.root, folder))
            self.folders[folder] = real == os.path.join(self.root, folder).rstrip(b"/")
        return self.folders[folder]

    def read(self, mode, path):
        """The file's bytes (a symlink's target), or None when it is not what git holds in kind."""
        if not self.inside(path):
            return None
        full = os.path.join(self.root, path)
        st = os.lstat(full)
        if mode == SYMLINK:
            return os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(full, "rb") as fh:
            return fh.read()


def put(new, mode, path, data):
    """Write one checked file into the new release."""
    full = os.path.join(new, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    if mode == SYMLINK:
        os.symlink(data, full)
        return
    fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        os.fchmod(fh.fileno(), 0o755 if mode == EXECUTABLE else 0o644)


def copy_checked(live, new, items):
    """Copy the files that are what git holds; return the paths of the others."""
    edited = []
    for mode, blob, path in items:
        try:
            data = live.read(mode, path)
        except OSError:
            data = None
        if data is None or git_blob_id(data) != blob:
            edited.append(path.decode("utf-8", "surrogateescape"))
            continue
        put(new, mode, path, data)
    return edited


def main(argv):
    live, new = Live(os.fsencode(argv[1])), os.fsencode(argv[2])
    edited = copy_checked(live, new, records(sys.stdin.buffer.read()))
    if edited:
        print(json.dumps({"edited": edited}))
        return EDITED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
