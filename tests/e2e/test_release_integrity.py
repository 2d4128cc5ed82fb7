"""A release is what git holds, on the sandbox host: a file edited on the host in the live release
is not carried into the next one, a repository entry at the tool's own paths is refused with the
host untouched, and names git stores (non-ASCII, quotes, a newline) deploy byte for byte, by upload
and by SOURCE=git.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import AppRepo, Profile, clean_host, fab, get, sh

P = Profile("oddnames", "/home/ubuntu/oddnames", 7941, 7951, 7961)
GP = Profile("gitodd", "/home/ubuntu/gitodd", 7943, 7953, 7963)
ODD = {
    "café.txt": "café ☕\n".encode(),
    "new\nline.txt": b"a name with a newline\n",
    'say "hi" it\'s.txt': b"quotes\n",
    "dir é/ünï b.txt": b"\x00\x01binary\xff",
}


def ok(result) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def with_odd_names(repo: AppRepo) -> None:
    for name, data in ODD.items():
        (repo.path / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / name).write_bytes(data)
    repo.git("add", "-A")
    repo.git("commit", "-qm", "files with names git stores as they are")


def current(p: Profile) -> Path:
    return Path(p.root, "current").resolve()


def assert_odd_names_on_host(release: Path) -> None:
    for name, data in ODD.items():
        assert (release / name).read_bytes() == data, name


@pytest.fixture(scope="module")
def app(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("oddnames") / "app")
    with_odd_names(repo)
    clean_host(P)
    ok(fab(sandbox, P, repo))
    yield repo
    clean_host(P)


def test_odd_names_deploy_byte_for_byte_sent_whole_and_copied_from_the_live_release(sandbox, app):
    first = current(P)
    assert_odd_names_on_host(first)  # the first release: one archive of the whole tree
    app.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    out = ok(fab(sandbox, P, app))
    assert "1 changed file(s) sent" in out, out
    assert current(P) != first
    assert_odd_names_on_host(
        current(P)
    )  # copied from the live release, each checked against its blob id
    assert get(P.url("/api/ai/x"))[2]["version"] == "2"


def test_a_host_side_edit_of_the_live_release_is_not_carried_into_the_next(sandbox, app, tmp_path):
    live = current(P)
    with open(live / "app.py", "a") as fh:
        fh.write("EDITED_ON_THE_HOST = True\n")
    (app.path / "notes.txt").write_text("an unrelated change\n")
    app.git("add", "notes.txt")
    app.git("commit", "-qm", "notes")
    env_file = tmp_path / "app.env"
    env_file.write_text("SECRET_KEY=given\n")
    result = fab(
        sandbox,
        Profile(P.app, P.root, P.bind, P.node, P.listen, extra={"APP_ENV_FILE": str(env_file)}),
        app,
    )
    out = ok(result)
    warning = (
        f"the live release {live.name} had been edited on the host: app.py; sent fresh from git"
    )
    lines = [line for line in result.stderr.splitlines() if "edited on the host" in line]
    assert len(lines) == 1 and warning in lines[0], out  # one warning line, naming the file
    new = current(P)
    assert new != live
    assert (new / "app.py").read_text() == app.git("show", "HEAD:app.py")
    assert (
        "EDITED_ON_THE_HOST" in (live / "app.py").read_text()
    )  # the old release is evidence, left as it was
    assert (new / "notes.txt").read_text() == "an unrelated change\n"
    assert (
        (new / ".env").read_text() == "SECRET_KEY=given\n"
    )  # the release's .env, given with the deploy, survives the resend
    assert_odd_names_on_host(new)
    status, _, body = get(P.url("/api/ai/x"))
    assert status == 200 and body["release"] == new.name


def host_state(p: Profile) -> tuple:
    root = Path(p.root)
    incoming = root / ".deploy/incoming"
    return (
        os.readlink(root / "current"),
        sorted(os.listdir(root / "releases")),
        sorted(os.listdir(incoming)) if incoming.exists() else [],
        (current(p) / ".signalcraft/manifest.json").read_bytes(),
    )


def test_a_repository_symlink_at_the_tools_own_folder_is_refused_with_the_host_untouched(
    sandbox, app, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), app.path / ".signalcraft")
    app.git("add", ".signalcraft")
    app.git("commit", "-qm", "a symlink where the tool keeps its manifest")
    before = host_state(P)
    try:
        result = fab(sandbox, P, app)
        assert result.returncode == 2, result.stdout + result.stderr
        assert (
            ".signalcraft (a symlink): .signalcraft/ is the tool's own folder in each release"
            in result.stderr
        )
        assert (
            "nothing was changed on the host" in result.stderr
            and "git mv / git rm" in result.stderr
        )
        assert "Traceback" not in result.stderr
        assert host_state(P) == before and not list(outside.iterdir())
    finally:
        app.git("rm", "-q", ".signalcraft")
        app.git("commit", "-qm", "no .signalcraft")


def test_odd_names_deploy_byte_for_byte_with_source_git(sandbox, tmp_path):
    origin = Path("/home/ubuntu/gitodd-origin.git")
    sh(f"rm -rf {origin}")
    repo = AppRepo(tmp_path / "src")
    with_odd_names(repo)
    sh(f"git clone -q --bare {repo.path} {origin} && chown -R ubuntu: {origin}")
    gp = Profile(
        GP.app,
        GP.root,
        GP.bind,
        GP.node,
        GP.listen,
        extra={"SOURCE": "git", "REPO_URL": str(origin), "REF": "main"},
    )
    clean_host(gp)
    try:
        ok(fab(sandbox, gp, None))
        assert_odd_names_on_host(current(gp))
        assert get(gp.url("/api/ai/x"))[0] == 200
    finally:
        clean_host(gp)
        sh(f"rm -rf {origin}")
