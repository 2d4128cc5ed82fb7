"""A release is what git holds: names read with -z, entries that collide with the tool's own paths
refused by name, and files copied from the live release checked against their blob ids
(remote/copy_live.py).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from signalcraft_deploy.core import release_paths, source
from signalcraft_deploy.core.settings import SettingsError
from signalcraft_deploy.core.source import count_status, make_tarball, parse_ls_tree, read_source
from signalcraft_deploy.steps import upload

ODD_NAMES = [
    "café.txt",
    "a b.txt",
    'say "hi".txt',
    "it's.txt",
    "new\nline.txt",
    "tab\there.txt",
    "dir é/ünï.txt",
]
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=GIT_ENV
    ).stdout


def committed(repo: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    for name, target in (links or {}).items():
        os.symlink(target, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "x")
    return repo


# ----------------------------------------------------------------------------- -z everywhere


def test_ls_tree_z_output_is_read_as_git_stores_the_names() -> None:
    blob = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    text = (
        "".join(f"100644 blob {blob}\t{n}\x00" for n in ODD_NAMES)
        + f"160000 commit {blob}\tsub\x00120000 blob {blob}\tlink\x00"
    )
    files = parse_ls_tree(text)
    assert set(files) == {*ODD_NAMES, "link"}  # a submodule is not a file of the release
    assert files["new\nline.txt"] == ("100644", blob) and files["link"] == ("120000", blob)


def test_status_z_counts_a_rename_once() -> None:
    assert count_status(" M a.py\x00R  new name.py\x00old name.py\x00?? café.txt\x00") == 3
    assert count_status("") == 0


def test_read_source_and_the_tarball_keep_every_name_byte_for_byte(tmp_path: Path) -> None:
    files = {n: f"{n}\n".encode() for n in ODD_NAMES}
    repo = committed(tmp_path / "repo", files)
    (repo / "café.txt").write_text("dirty")
    (repo / "untracked\nname").write_text("?")
    tree = read_source(str(repo))
    assert set(tree.blobs) == set(ODD_NAMES) and tree.dirty == 2
    assert tree.blobs["café.txt"] == git(repo, "rev-parse", "HEAD:café.txt").strip()
    out = tmp_path / "code.tar"
    make_tarball(str(repo), tree, str(out), ["new\nline.txt", "café.txt"])
    with tarfile.open(out) as tar:
        # type: ignore[union-attr]
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == {"new\nline.txt": b"new\nline.txt\n", "café.txt": "café.txt\n".encode()}


# ----------------------------------------------------------------------------- collisions


def test_entries_at_the_tools_own_paths_are_refused_by_name() -> None:
    assert release_paths.collisions({"app.py": "100644", ".signalcraft": "120000"}) == [
        ".signalcraft (a symlink): .signalcraft/ is the tool's own folder in each release"
        f" (manifest.json, hooks.json); {release_paths.FIX}"
    ]
    assert (
        ".signalcraft (a folder)"
        in release_paths.collisions({".signalcraft/manifest.json": "100644"})[0]
    )
    found = release_paths.collisions(
        {"gunicorn.conf.py": "120000", "REVISION/x": "100644", ".env": "120000"}
    )
    assert [line.split(":")[0] for line in found] == [
        "gunicorn.conf.py (a symlink)",
        "REVISION (a folder)",
        ".env (a symlink)",
    ]
    found = release_paths.collisions(
        {"data": "120000", "conf": "100644"}, ("data/uploads/", "conf/x.ini", "instance/")
    )
    assert [line.split(":")[0] for line in found] == ["data (a symlink)", "conf (a file)"]
    assert "SHARED_PATHS has data/uploads/" in found[0]
    assert (
        "not a UTF-8 name"
        in release_paths.collisions({b"caf\xe9".decode("utf-8", "surrogateescape"): "100644"})[0]
    )


def test_what_the_tool_replaces_on_purpose_is_not_refused() -> None:
    # the user's own ecosystem.config.js / gunicorn.conf.py / REVISION are replaced by the rendered
    # ones, a committed .env is the release's .env without APP_ENV_FILE, a committed node_modules/
    # is kept, logs is a link made over it
    ok = {
        "ecosystem.config.js": "100644",
        "gunicorn.conf.py": "100644",
        "REVISION": "100644",
        ".env": "100644",
        "node_modules/x/index.js": "100644",
        "logs": "120000",
        "instance": "120000",
        "signalcraft/x": "100644",
    }
    assert release_paths.collisions(ok, ("instance/",)) == []


def test_check_shipment_stops_before_the_host_with_every_collision(load) -> None:
    tree = source.SourceTree(
        sha="a" * 40,
        tree="b" * 40,
        blobs={"app.py": "1", "requirements.txt": "2", ".signalcraft": "3"},
        dirty=0,
        subdir="",
        modes={"app.py": "100644", "requirements.txt": "100644", ".signalcraft": "120000"},
    )
    with pytest.raises(
        SettingsError, match=r"(?s)nothing was changed on the host.*\.signalcraft \(a symlink\)"
    ):
        upload.check_shipment(load(), tree, "SOURCE_DIR /src")


# ----------------------------------------------------------------------------- the hash check's
# plan


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def test_the_tools_own_files_are_sent_not_copied_and_edited_files_are_sent_again() -> None:
    d = source.Delta(
        same=["REVISION", "app.py", "ecosystem.config.js", "static/a.css"], changed=["server.js"]
    )
    moved = source.resend(d, [p for p in d.same if release_paths.written_by_tool(p)])
    assert moved.same == ["app.py", "static/a.css"] and moved.changed == [
        "REVISION",
        "ecosystem.config.js",
        "server.js",
    ]
    assert source.resend(moved, ["app.py", "not-copied.txt"]).changed == [
        "REVISION",
        "app.py",
        "ecosystem.config.js",
        "server.js",
    ]
    assert source.resend(moved, []) is moved


def test_copy_records_and_the_programs_verdict(load) -> None:
    tree = source.SourceTree(
        sha="a" * 40,
        tree="b" * 40,
        blobs={"new\nline": "1" * 40, "run.sh": "2" * 40},
        dirty=0,
        subdir="",
        modes={"new\nline": "100644", "run.sh": "100755"},
    )
    shipment = upload.Shipment(
        tree=tree, requirements="", package_lock=None, app_env=None, source_dir="/src"
    )
    records = upload.copy_records(shipment, ["new\nline", "run.sh"])
    assert records == f"100644\x00{'1' * 40}\x00new\nline\x00100755\x00{'2' * 40}\x00run.sh\x00"

    class Result:
        def __init__(self, exited: int, stdout: str):
            self.exited, self.stdout = exited, stdout

    assert upload.edited_files(
        Result(3, json.dumps({"edited": ["app.py", "new\nline"]}) + "\n")
    ) == ["app.py", "new\nline"]
    assert (
        upload.edited_files(Result(1, json.dumps({"edited": ["app.py"]}))) is None
    )  # any other failure: not an edit
    assert upload.edited_files(Result(3, "Traceback ...")) is None
    assert (
        upload.edited_warning("r1", ["app.py", "new\nline"])
        == "the live release r1 had been edited on the host: app.py, 'new\\nline'; sent fresh"
        " from git"
    )


def test_the_assembly_copies_what_git_holds_and_names_what_it_does_not(
    load, tmp_path: Path
) -> None:
    """remote/copy_live.py as the assembly runs it: the files that hash to their blob ids are copied
    (modes from git, symlinks as links); an edited, missing, retyped or symlinked-folder file is
    named and not copied.
    """
    root = tmp_path / "root"
    live = root / "releases/r1"
    files = {
        "app.py": b"print(1)\n",
        "run.sh": b"#!/bin/sh\n",
        "café.txt": b"caf\xc3\xa9\n",
        "new\nline": b"x",
        "edited.py": b"ok\n",
        "gone.txt": b"g",
        "sub/a.txt": b"a",
        "swapped/b.txt": b"b",
    }
    for name, data in files.items():
        (live / name).parent.mkdir(parents=True, exist_ok=True)
        (live / name).write_bytes(data)
    os.symlink("app.py", live / "link")
    ids = {name: blob_id(data) for name, data in files.items()} | {"link": blob_id(b"app.py")}
    (live / "edited.py").write_bytes(b"ok\nimport evil\n")
    (live / "gone.txt").unlink()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_bytes(b"b")
    (live / "swapped/b.txt").unlink()
    (live / "swapped").rmdir()
    os.symlink(
        outside, live / "swapped"
    )  # the same bytes, but through a folder that is not the release's
    modes = {n: "100644" for n in ids} | {"run.sh": "100755", "link": "120000"}
    tree = source.SourceTree(
        sha="a" * 40, tree="b" * 40, blobs=ids, dirty=0, subdir="", modes=modes
    )
    shipment = upload.Shipment(
        tree=tree, requirements="", package_lock=None, app_env=None, source_dir="/src"
    )
    s = replace(
        load({"DEPLOY_ROOT": str(root), "PYTHON": "python3"}), app_user=getpass.getuser()
    )  # no account of the apps' here
    (root / ".deploy/incoming").mkdir(parents=True)
    (root / "shared/logs").mkdir(parents=True)
    subprocess.run(
        ["tar", "-cf", str(root / ".deploy/incoming/r2.extras.tar"), "-T", "/dev/null"], check=True
    )
    script = upload.assemble_script(s, "r2", [upload.copy_command(s, str(live))], str(live))
    done = subprocess.run(
        ["bash", "-c", script],
        input=upload.copy_records(shipment, sorted(ids)).encode(),
        capture_output=True,
    )
    assert done.returncode == upload.EDITED, done.stderr
    assert sorted(json.loads(done.stdout)["edited"]) == ["edited.py", "gone.txt", "swapped/b.txt"]
    new = root / "releases/r2.tmp"
    assert (
        not (new / "edited.py").exists() and not (root / "releases/r2").exists()
    )  # stopped before the rename
    for name in ("app.py", "run.sh", "café.txt", "new\nline", "sub/a.txt"):
        assert (new / name).read_bytes() == files[name]
    assert (
        oct((new / "run.sh").stat().st_mode & 0o777) == "0o755"
        and oct((new / "app.py").stat().st_mode & 0o777) == "0o644"
    )
    assert os.readlink(new / "link") == "app.py"
    clean = [n for n in sorted(ids) if n not in ("edited.py", "gone.txt", "swapped/b.txt")]
    done = subprocess.run(
        ["bash", "-c", script],
        input=upload.copy_records(shipment, clean).encode(),
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "releases/r2/café.txt").read_bytes() == files["café.txt"]


def test_ship_on_this_machine_sends_edited_files_fresh_once_with_one_warning(
    load, tmp_path: Path
) -> None:
    """`ship` itself, with a local Context for the host: the first release is sent whole (its .env
    given with the deploy), then a host-side edit of the live release's app.py is not carried into
    the next release.
    """
    from types import SimpleNamespace

    from invoke import Context

    from signalcraft_deploy.core.facts import HostFacts

    repo = committed(
        tmp_path / "repo",
        {
            "app.py": b"def create_app(): ...\n",
            "requirements.txt": b"gunicorn\n",
            "server.js": b"//\n",
            "café.txt": b"caf\xc3\xa9\n",
            "new\nline": b"n\n",
        },
    )
    env = tmp_path / "app.env"
    env.write_text("SECRET=1\n")
    root = tmp_path / "root"
    s = load(
        {
            "DEPLOY_ROOT": str(root),
            "SOURCE_DIR": str(repo),
            "APP_ENV_FILE": str(env),
            "PYTHON": "python3",
            "WSGI_APP": "app:create_app()",
        }
    )
    s = replace(
        s, app_user=getpass.getuser()
    )  # this machine's user runs the apps here: no account of their own

    def shipped(facts: HostFacts, warn=None) -> tuple[str, Path]:
        shipment = upload.local_shipment(s)
        manifest, configs = upload.shipment_manifest(s, shipment)
        detail = upload.ship(
            Context(),
            s,
            shipment,
            SimpleNamespace(manifest=manifest, configs=configs),
            facts,
            warn=warn,
        )
        return detail, root / "releases" / manifest.release

    detail, first = shipped(HostFacts())
    assert "all 5 files sent" in detail and (first / ".env").read_text() == "SECRET=1\n"
    assert (first / "new\nline").read_bytes() == b"n\n" and (
        first / "café.txt"
    ).read_bytes() == b"caf\xc3\xa9\n"
    with open(first / "app.py", "a") as fh:
        fh.write("import planted\n")
    (repo / "notes.txt").write_text("unrelated\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "notes")
    warnings: list[str] = []
    facts = HostFacts(
        current_release=first.name,
        manifest={"tree": git(repo, "rev-parse", "HEAD~1^{tree}").strip()},
    )
    detail, second = shipped(facts, warnings.append)
    assert warnings == [
        f"the live release {first.name} had been edited on the host: app.py; sent fresh from git"
    ]
    assert detail.endswith(f"2 changed file(s) sent, 4 copied from {first.name}"), detail
    assert (second / "app.py").read_bytes() == b"def create_app(): ...\n" and (
        second / ".env"
    ).read_text() == "SECRET=1\n"
    assert (second / "new\nline").read_bytes() == b"n\n" and (
        second / ".signalcraft/manifest.json"
    ).exists()
    assert not list((root / ".deploy/incoming").iterdir())
