"""A host whose apps run as the deploy user (APP_USER=ubuntu, as every host before APP_USER did)
moves them to their own account on its next deploy with the default APP_USER: a broken commit leaves
them where they ran, a good one moves them under load without a failed request, and a rollback
across the move runs the older release as the apps' account. (test_adoption moves a host deployed by
the previous version of the tool itself.)"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_USER,
    AppRepo,
    Profile,
    clean_host,
    e2e_load,
    fab,
    get,
    pm2_jlist,
    sh,
)

MV = Profile("mover", "/home/ubuntu/mover", 7761, 7771, 7781, extra={"SHARED_PATHS": "data/"})
URLS = [MV.url("/api/ai/x"), MV.url("/")]


@pytest.fixture(scope="module")
def moving(sandbox, tmp_path_factory: pytest.TempPathFactory):
    """The app's repository, and its profiles with the apps as the deploy user and (the default) as
    their own."""
    clean_host(MV, app_user="ubuntu")
    clean_host(MV)
    base = tmp_path_factory.mktemp("mover")
    (base / "app.env").write_text("SECRET_KEY=moved\n")
    mv = replace(MV, extra={**MV.extra, "APP_ENV_FILE": str(base / "app.env")})
    yield AppRepo(base / "app"), mv, replace(mv, extra={**mv.extra, "APP_USER": "ubuntu"})
    clean_host(MV, app_user="ubuntu")
    clean_host(MV)


def ours(user: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for item in pm2_jlist(user):
        if item["name"].startswith(f"{MV.app}-"):
            found.setdefault(item["name"], []).append(item["pid"])
    return found


def users_of(pids: list[int]) -> set[str]:
    return set(sh(f"ps -o user= -p {','.join(map(str, pids))}").stdout.split())


def serving() -> tuple[str, str]:
    """The release each app answers from, through Nginx."""
    status, headers, body = get(URLS[0])
    assert status == 200, (status, body)
    node_status, _, node_body = get(URLS[1])
    assert node_status == 200, (node_status, node_body)
    return headers["X-Release"], node_body["release"]


def test_the_apps_move_from_the_deploy_user_to_their_own_account_and_back_through_a_rollback(
    sandbox, moving
) -> None:
    repo, mv, as_deploy_user = moving
    first = fab(sandbox, as_deploy_user, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    old_release = Path(MV.root, "current").resolve().name
    assert sorted(ours("ubuntu")) == [f"{MV.app}-nodejs", f"{MV.app}-python"] and not ours(APP_USER)
    assert users_of([pid for pids in ours("ubuntu").values() for pid in pids]) == {"ubuntu"}
    # What the app wrote while it ran as the deploy user: its account must be able to write it after
    # the move.
    sh(
        f"sudo -u ubuntu sh -c 'echo rows > {MV.root}/shared/data/app.db && chmod 0644"
        f" {MV.root}/shared/data/app.db'"
    )

    # A commit whose Flask app cannot start: nothing moves, the deploy user's processes keep
    # serving.
    pids = ours("ubuntu")
    broken = repo.edit(
        "app.py", "import os", "import os\nraise RuntimeError('broken on purpose')", "broken"
    )
    refused = fab(sandbox, mv, repo)
    assert refused.returncode != 0 and "broken on purpose" in refused.stdout + refused.stderr, (
        refused.stdout
    )
    assert ours("ubuntu") == pids and not ours(APP_USER).get(f"{MV.app}-python")
    assert serving() == (old_release, old_release)
    assert broken

    repo.git("revert", "--no-edit", "HEAD")
    repo.edit("app.py", 'VERSION = "', 'VERSION = "9', "a new version, deployed by the move")
    with e2e_load(URLS, threads=3, max_requests=50_000, max_seconds=240) as load:
        moved = fab(sandbox, mv, repo)
    counts = load.result()
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert counts.total > 50 and counts.failed == 0, (counts.samples, moved.stdout)
    assert (
        "python: new-master, nodejs: handover" in moved.stdout
    )  # a new master and new Node.js processes, as the apps' account
    new_release = Path(MV.root, "current").resolve().name
    assert serving() == (new_release, new_release) and new_release != old_release
    apps = ours(APP_USER)
    assert sorted(apps) == [f"{MV.app}-nodejs", f"{MV.app}-python"] and not ours("ubuntu")
    assert users_of([pid for pids in apps.values() for pid in pids]) == {APP_USER}
    dump = json.loads(sh("cat ~ubuntu/.pm2/dump.pm2").stdout or "[]")
    assert not [
        app for app in dump if app["name"].startswith(f"{MV.app}-")
    ]  # a boot does not start them twice
    assert (
        stat.S_IMODE(os.stat("/home/ubuntu/.pm2").st_mode) == 0o700
    )  # its dump holds the apps' environment
    # The data the deploy user's app wrote is the apps' account's to write now; each release's .env
    # is its to read.
    sh(f"sudo -u {APP_USER} sh -c 'echo more >> {MV.root}/shared/data/app.db'")
    envs = list(Path(MV.root, "releases").glob("*/.env"))
    assert len(envs) == 3  # the first release, the broken one, the moved one
    for env in envs:
        assert (env.stat().st_gid, stat.S_IMODE(env.stat().st_mode)) == (
            int(sh(f"id -g {APP_USER}").stdout),
            0o640,
        )

    with e2e_load(URLS, threads=3, max_requests=50_000, max_seconds=240) as load:
        back = fab(sandbox, mv, None, task="rollback")
    counts = load.result()
    assert back.returncode == 0, back.stdout + back.stderr
    assert counts.total > 50 and counts.failed == 0, (counts.samples, back.stdout)
    # Flask runs the older release again; Node.js's code is the same in both, so it was left running
    # (and serving).
    assert serving()[0] == old_release
    apps = ours(APP_USER)
    assert users_of([pid for pids in apps.values() for pid in pids]) == {APP_USER} and not ours(
        "ubuntu"
    )


CLOSED = Profile("closedhome", "/home/ubuntu/closedhome", 7763, 7773, 7783)


def test_a_deploy_root_in_a_closed_home_is_reached_through_an_acl_the_deploy_user_sets(
    sandbox, tmp_path
) -> None:
    """Ubuntu makes homes 0750 (Debian, these hosts' system, 0755): the apps' account could not
    reach a DEPLOY_ROOT inside one. The deploy (as the deploy user, not root) lets it through
    ~ubuntu and no further: an ACL entry u:APP_USER:--x; the account then runs the apps but still
    cannot list the home or read ~/.ssh."""
    clean_host(CLOSED)
    sh("chmod 0750 /home/ubuntu && setfacl -x u:signalcraft /home/ubuntu 2>/dev/null; true")
    try:
        assert (
            sh(f"runuser -u {APP_USER} -- test -x /home/ubuntu", check=False).returncode != 0
        )  # closed to it now
        done = fab(sandbox, CLOSED, AppRepo(tmp_path / "app"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "app user" in done.stdout and f"way to DEPLOY_ROOT open to {APP_USER}" in done.stdout
        assert f"user:{APP_USER}:--x" in sh("getfacl -p /home/ubuntu").stdout
        assert get(CLOSED.url("/api/ai/x"))[0] == 200 and get(CLOSED.url("/"))[0] == 200
        assert sh(f"runuser -u {APP_USER} -- ls /home/ubuntu", check=False).returncode != 0
        assert (
            sh(
                f"runuser -u {APP_USER} -- cat /home/ubuntu/.ssh/authorized_keys", check=False
            ).returncode
            != 0
        )
        assert (
            sh("stat -c %a /home/ubuntu").stdout.strip() == "750"
        )  # its mode is the user's, untouched
    finally:
        clean_host(CLOSED)
        sh(
            "setfacl -x u:signalcraft /home/ubuntu 2>/dev/null; chmod 0755 /home/ubuntu",
            check=False,
        )
