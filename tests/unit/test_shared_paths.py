"""remote/shared_paths.py, run for real on temporary folders: what the deploy user makes and gives
in shared/, and the links, FIFOs and hard links an app may plant there to make it act elsewhere
(nothing outside changes).
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_deploy.remote import program

GROUP = "daemon"  # any group but the test's own: the apps' account's group stands in


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", program("shared_paths"), *args],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


def look(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    shared.mkdir()
    outside.mkdir(mode=0o700)
    (outside / "authorized_keys").write_text("ssh-ed25519 AAAA deploy\n")
    os.chmod(outside / "authorized_keys", 0o600)
    return {
        "shared": shared,
        "outside": outside,
        "live": tmp_path / "live",
        "new": tmp_path / "new",
    }


def outside_untouched(t: dict[str, Path]) -> None:
    gid = os.getgid()
    assert look(t["outside"]) == (gid, 0o700)
    assert look(t["outside"] / "authorized_keys") == (gid, 0o600)
    assert sorted(os.listdir(t["outside"])) == ["authorized_keys"]


def test_a_new_folder_is_made_and_given_to_the_apps_group(tree: dict[str, Path]) -> None:
    done = run("make", str(tree["shared"]), GROUP, "", "", "logs/", "data/uploads/")
    assert done.returncode == 0, done.stderr
    gid = grp.getgrnam(GROUP).gr_gid
    for folder in ("logs", "data", "data/uploads"):
        assert look(tree["shared"] / folder) == (gid, 0o2770)


def test_the_live_releases_data_moves_into_shared_is_linked_back_and_given(
    tree: dict[str, Path],
) -> None:
    (tree["live"] / "instance").mkdir(parents=True)
    (tree["live"] / "instance/app.sqlite").write_text("rows")
    (tree["new"] / "instance").mkdir(parents=True)
    (tree["new"] / "instance/app.sqlite").write_text("shipped, not wanted")
    done = run("make", str(tree["shared"]), GROUP, str(tree["live"]), str(tree["new"]), "instance/")
    assert done.returncode == 0, done.stderr
    held = tree["shared"] / "instance"
    assert (held / "app.sqlite").read_text() == "rows"
    assert os.readlink(tree["live"] / "instance") == str(held)
    gid = grp.getgrnam(GROUP).gr_gid
    assert look(held) == (gid, 0o2770) and look(held / "app.sqlite")[0] == gid
    assert look(held / "app.sqlite")[1] & 0o060 == 0o060


def test_what_the_release_ships_is_copied_the_first_time_only(tree: dict[str, Path]) -> None:
    (tree["new"] / "conf").mkdir(parents=True)
    (tree["new"] / "conf/settings.ini").write_text("shipped")
    assert run("make", str(tree["shared"]), GROUP, "", str(tree["new"]), "conf/").returncode == 0
    (tree["shared"] / "conf/settings.ini").write_text("the app's own now")
    assert run("make", str(tree["shared"]), GROUP, "", str(tree["new"]), "conf/").returncode == 0
    assert (tree["shared"] / "conf/settings.ini").read_text() == "the app's own now"


def test_a_link_the_app_planted_for_a_folder_on_the_way_is_refused_and_nothing_outside_changes(
    tree,
) -> None:
    os.symlink(tree["outside"], tree["shared"] / "data")
    done = run("make", str(tree["shared"]), GROUP, "", "", "data/uploads/")
    assert done.returncode == 4
    assert "shared/data is not a folder" in done.stderr and "planted" in done.stderr
    outside_untouched(tree)


def test_a_link_the_app_planted_in_place_of_logs_is_left_alone(tree: dict[str, Path]) -> None:
    os.symlink(tree["outside"], tree["shared"] / "logs")
    assert run("make", str(tree["shared"]), GROUP, "", "", "logs/").returncode == 0
    outside_untouched(tree)


def test_adopt_gives_the_deploy_users_entries_and_nothing_an_app_could_have_planted(
    tree: dict[str, Path],
) -> None:
    shared = tree["shared"]
    (shared / "db").mkdir()
    (shared / "db/app.sqlite").write_text("rows")
    os.chmod(shared / "db/app.sqlite", 0o644)
    os.symlink(tree["outside"], shared / "to-outside")
    os.symlink(tree["outside"] / "authorized_keys", shared / "db/keys")
    os.link(
        tree["outside"] / "authorized_keys", shared / "hardlinked"
    )  # a second name: never given
    os.mkfifo(shared / "fifo")  # opened without blocking, and left alone
    done = run("adopt", str(shared), GROUP)
    assert done.returncode == 0, done.stderr
    gid = grp.getgrnam(GROUP).gr_gid
    assert look(shared) == (gid, 0o2770) and look(shared / "db") == (gid, 0o2770)
    assert look(shared / "db/app.sqlite") == (gid, 0o664)
    assert look(shared / "fifo")[0] == os.getgid()
    outside_untouched(tree)


def test_with_no_group_nothing_is_given_the_apps_run_as_the_deploy_user(
    tree: dict[str, Path],
) -> None:
    assert run("make", str(tree["shared"]), "", "", "", "logs/").returncode == 0
    assert look(tree["shared"] / "logs") == (os.getgid(), 0o755)
