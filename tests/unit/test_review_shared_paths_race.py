"""Review proof (au-review): remote/shared_paths.py `make` checks and renames the live release's
copy BY PATH (`there` = LIVE/<path>), after opening shared/ by handle. When a folder above <path> in
the live release is a link into shared/ (SHARED_PATHS was `data/` and is now `data/x/y`: the live
release's `data` is the link the last deploy made), that path runs through shared/, which the app
writes: the app swaps shared/data for a link to a folder of the deploy user's between `folder_of`
(by handle, passes) and the path checks, and the deploy user moves its own file (`<anywhere>/x/y`)
into shared/, gives it to the apps' group, and leaves a link to it in its place.

The swap is made deterministic here by doing it right after `folder_of` returns (what an app
watching shared/data with inotify does on the IN_OPEN of the folder)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from signalcraft_deploy.remote import program


def load():
    spec = importlib.util.spec_from_loader("shared_paths_under_test", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(program("shared_paths"), "shared_paths.py", "exec"), mod.__dict__)
    return mod


def test_a_swap_after_folder_of_makes_the_deploy_user_move_its_own_file_into_shared(
    tmp_path: Path,
) -> None:
    sp = load()
    shared, live, outside = (
        tmp_path / "root" / "shared",
        tmp_path / "root" / "releases" / "1",
        tmp_path / "home",
    )
    (shared / "data" / "x").mkdir(parents=True)  # shared/data from the days of SHARED_PATHS=data/
    live.mkdir(parents=True)
    os.symlink(shared / "data", live / "data")  # the live release's link the last deploy made
    (outside / "x").mkdir(
        parents=True, mode=0o700
    )  # a folder of the deploy user's the app cannot read
    (outside / "x" / "y").write_text("deploy user's secret\n")
    os.chmod(outside / "x" / "y", 0o600)

    real_folder_of = sp.folder_of

    def folder_of_then_app_swaps(*args):
        fd = real_folder_of(*args)
        # the app (shared/ is its group's, 2770): shared/data becomes a link to the deploy user's
        # folder
        os.rename(shared / "data", shared / "data.real")
        os.symlink(outside, shared / "data")
        return fd

    sp.folder_of = folder_of_then_app_swaps
    sp.make(str(shared), os.getgid(), str(live), "", "data/x/y")

    moved = shared / "data.real" / "x" / "y"
    assert not (outside / "x" / "y").is_symlink() and not moved.exists(), (
        f"the deploy user's {outside}/x/y was moved into shared/ ({moved}: {moved.read_text()!r},"
        f" mode {oct(os.stat(moved).st_mode)}) and replaced by a link to"
        f" {os.readlink(outside / 'x' / 'y')}"
    )


def test_give_puts_back_the_setuid_bit_that_fchown_cleared(tmp_path: Path) -> None:
    """give(): fchown(-1, gid) clears S_ISUID/S_ISGID of a regular file, then fchmod(S_IMODE(old) |
    0o060) sets them again: a set-user-id file of the deploy user's in shared/ (one the app planted
    while it still ran as the deploy user) comes out of `adopt` set-user-id AND in the apps' group,
    group-writable."""
    import grp
    import stat
    import subprocess
    import sys

    shared = tmp_path / "shared"
    shared.mkdir()
    f = shared / "tool"
    f.write_text("#!/bin/sh\n")
    os.chmod(f, 0o4755)
    group = next(
        g.gr_name
        for g in grp.getgrall()
        if g.gr_gid != os.getgid() and (os.getuid() == 0 or g.gr_gid in os.getgroups())
    )
    subprocess.run(
        [sys.executable, "-I", "-S", "-c", program("shared_paths"), "adopt", str(shared), group],
        check=True,
    )
    mode = stat.S_IMODE(os.stat(f).st_mode)
    assert not mode & 0o6000, oct(mode)
