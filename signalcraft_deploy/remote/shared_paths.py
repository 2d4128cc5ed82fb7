"""Runs ON THE HOST as the deploy user: makes the app's SHARED_PATHS in shared/ and gives them to
the apps' own account.

`PYTHON -I -S -c TEXT make SHARED GROUP LIVE NEW PATH...` (inside the release assembly,
steps/upload.py) and `... adopt SHARED GROUP` (when the apps move to their own account,
steps/deploy.py).

shared/ is the apps' to write (group GROUP, setgid 2770), so anything in it may be a link, a FIFO or
a hard link the app planted to make the deploy user act elsewhere. Nothing here follows one: every
folder is opened from the one above it with O_NOFOLLOW, every change is made on an open handle
(fchown, fchmod), and only entries the deploy user owns and that have no other name are given. A
path whose folders are not plain folders is refused.

- `make`: for each PATH ("name" a file, "name/" a folder) not yet in shared/: the live release's own
  copy is moved there (and linked back, so the live app keeps it), else the new release's is copied,
  else a folder is made; what it puts there is given to GROUP. A PATH already there is left as it
  is: it is the app's.
- `adopt`: gives everything of the deploy user's under shared/ to GROUP (data written while the apps
  ran as the deploy user), once, when they move. With GROUP "" (the apps run as the deploy user)
  nothing is given, and modes are the deploy user's own. Standard library only.
"""

import errno
import os
import stat
import sys

FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
GIVEN_FOLDER, REFUSED = 0o2770, 4


class Refused(Exception):
    pass


def group_id(group):
    if not group:
        return None
    import grp

    return grp.getgrnam(group).gr_gid


def give(fd, st, gid):
    """Give one open entry of the deploy user's to the apps' group: folders setgid 2770, files
    group-writable."""
    if gid is None or st.st_uid != os.getuid():
        return
    if stat.S_ISDIR(st.st_mode):
        os.fchown(fd, -1, gid)
        os.fchmod(fd, GIVEN_FOLDER)
    elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        os.fchown(fd, -1, gid)
        os.fchmod(
            fd, (stat.S_IMODE(st.st_mode) & 0o777) | 0o060
        )  # never a set-id bit back (fchown cleared them)


def open_entry(name, parent):
    """An entry of a folder, opened without following a link (None for a link, a FIFO, a socket or a
    device)."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None, None
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return None, None
    try:
        fd = os.open(
            name,
            (FOLDER if stat.S_ISDIR(st.st_mode) else os.O_RDONLY | os.O_NOFOLLOW) | os.O_NONBLOCK,
            dir_fd=parent,
        )
    except OSError:
        return None, None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or stat.S_IFMT(
        opened.st_mode
    ) != stat.S_IFMT(st.st_mode):
        os.close(fd)  # replaced between the two looks
        return None, None
    return fd, opened


def give_tree(fd, st, gid):
    """Give a folder (open) and what the deploy user owns under it, never through a link."""
    give(fd, st, gid)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return
    for name in os.listdir(fd):
        child, child_st = open_entry(name, fd)
        if child is None:
            continue
        try:
            give_tree(child, child_st, gid)
        finally:
            os.close(child)


def folder_of(shared, parts, gid):
    """The open folder shared/<parts...>, each made (and given) if missing; refused if one is not a
    plain folder."""
    fd = os.open(shared, FOLDER)
    for i, part in enumerate(parts):
        try:
            os.mkdir(part, 0o755 if gid is None else 0o770, dir_fd=fd)
            made = True
        except FileExistsError:
            made = False
        try:
            child = os.open(part, FOLDER, dir_fd=fd)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused(
                    f"shared/{'/'.join(parts[: i + 1])} is not a folder (a link, or a file)"
                ) from None
            raise
        os.close(fd)
        fd = child
        if made:
            give(fd, os.fstat(fd), gid)
    return fd


def copy_into(src, name, parent, gid):
    """Copy `src` (a path in the new release, the deploy user's own) to `name` in the open folder
    `parent`."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), name, dir_fd=parent)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, FOLDER, dir_fd=parent)
        try:
            for child in os.listdir(src):
                copy_into(os.path.join(src, child), child, fd, gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            give(fd, os.fstat(fd), gid)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent
        )
        try:
            with open(src, "rb") as fh:
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    os.write(fd, chunk)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            give(fd, os.fstat(fd), gid)
        finally:
            os.close(fd)


def live_folder(live, parts):
    """The open folder LIVE/<parts...> of the live release (the deploy user's own), or None when one
    of them is not a plain folder: a link there may lead into shared/, which the app writes, so
    nothing is moved through it.
    """
    try:
        fd = os.open(live, FOLDER)
    except OSError:
        return None
    for part in parts:
        try:
            child = os.open(part, FOLDER, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = child
    return fd


def move_live(live, parts, parent, name, held, gid):
    """Move the live release's own copy of a path into shared/ (through handles of both folders) and
    link it back, so the live app keeps it; False when the live release has none of its own
    (missing, a link, or under a link).
    """
    source = live_folder(live, parts[:-1]) if live else None
    if source is None:
        return False
    try:
        try:
            st = os.stat(name, dir_fd=source, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            return False
        os.rename(name, name, src_dir_fd=source, dst_dir_fd=parent)
        os.symlink(held, name, dir_fd=source)
    finally:
        os.close(source)
    fd, st = open_entry(name, parent)
    if fd is not None:
        try:
            give_tree(fd, st, gid)
        finally:
            os.close(fd)
    return True


def make(shared, gid, live, new, path):
    folder = path.endswith("/")
    parts = path.rstrip("/").split("/")
    parent = folder_of(shared, parts[:-1], gid)
    name, held = parts[-1], os.path.join(shared, path.rstrip("/"))
    try:
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
            return  # already there: the app's
        except FileNotFoundError:
            pass
        here = os.path.join(new, path.rstrip("/")) if new else ""
        if move_live(live, parts, parent, name, held, gid):
            return
        if here and os.path.lexists(here) and not os.path.islink(here):
            copy_into(here, name, parent, gid)
        elif folder:
            os.mkdir(name, 0o755 if gid is None else 0o770, dir_fd=parent)
            fd = os.open(name, FOLDER, dir_fd=parent)
            try:
                give(fd, os.fstat(fd), gid)
            finally:
                os.close(fd)
    finally:
        os.close(parent)


def main(argv):
    verb, shared, gid = argv[1], argv[2], group_id(argv[3])
    try:
        if verb == "make":
            live, new = argv[4], argv[5]
            for path in argv[6:]:
                make(shared, gid, live, new, path)
        elif verb == "adopt":
            fd = os.open(shared, FOLDER)
            try:
                give_tree(fd, os.fstat(fd), gid)
            finally:
                os.close(fd)
        else:
            raise Refused(f"unknown verb {verb!r}")
    except Refused as err:
        print(
            f"SHARED_PATHS: {err}; the deploy does not follow links in shared/. Remove it (it may"
            " have been planted by the app) and deploy again.",
            file=sys.stderr,
        )
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
