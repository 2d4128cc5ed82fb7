"""Deploy for real to the sandbox host, and look at what a user sees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_USER,
    REPO,
    AppRepo,
    Profile,
    clean_host,
    fab,
    get,
    host_wheels,
    pm2_apps,
    sh,
)

DEFAULTS = Profile("signalcraft", "/home/ubuntu/signalcraft", 8001, 3000, 80, defaults=True)
ROUTES = ["api/ai", "api/iot", "api/lightweight-analyze", "api/flask"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> AppRepo:
    return AppRepo(tmp_path_factory.mktemp("deploy") / "app")


def current_release(p: Profile) -> str:
    return Path(p.root, "current").resolve().name


def host_listing(p: Profile) -> str:
    """Every file under the deploy root and the Nginx tree with its mtime and sha256 (minus .deploy:
    lock, audit)."""
    listing = sh(
        f"find {p.root} /etc/nginx -path {p.root}/.deploy -prune -o -printf '%p %T@ %l\\n' | sort"
    ).stdout
    hashes = sh(
        f"find {p.root} /etc/nginx -path {p.root}/.deploy -prune -o -type f -print0 | sort -z |"
        " xargs -0 sha256sum"
    ).stdout
    return listing + hashes


def test_first_deploy_on_an_empty_host(sandbox, repo):
    clean_host(DEFAULTS)
    # A first deploy whose trial fails says that nothing serves (there is no live release), and
    # nothing does; the venv it built is the next deploy's.
    failed = fab(sandbox, DEFAULTS, repo, "--set", "WSGI_APP=app:no_such_app")
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0, out
    assert "nothing was switched and nothing served before, and nothing serves now" in out, out
    assert "live release keeps serving" not in out, out
    assert not Path(DEFAULTS.root, "current").exists()
    assert not {"signalcraft-python", "signalcraft-nodejs"} & set(pm2_apps("signalcraft")), (
        pm2_apps("signalcraft")
    )
    result = fab(sandbox, DEFAULTS, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    apps = pm2_apps("signalcraft")
    assert [p["status"] for p in apps["signalcraft-python"]] == ["online"]
    assert [p["status"] for p in apps["signalcraft-nodejs"]] == ["online", "online"]
    for route in ROUTES:
        status, headers, body = get(DEFAULTS.url(f"/{route}/anything"))
        assert (status, body["app"]) == (200, "flask"), route
    status, _, body = get(DEFAULTS.url("/"))
    assert (status, body["app"]) == (200, "nodejs")
    assert sh("nginx -t", check=False).returncode == 0
    # The summary names the URLs and shows both apps' PM2 state.
    assert "Deployed" in result.stdout and "/api/ai" in result.stdout
    # pm2 save holds both: a reboot-like kill + resurrect brings both back.
    sh("sudo -u ubuntu -H pm2 kill")
    sh("sudo -u ubuntu -H pm2 resurrect")
    apps = pm2_apps("signalcraft")
    assert sorted(apps) == ["signalcraft-nodejs", "signalcraft-python"]
    status, _, body = get(DEFAULTS.url("/api/flask/health"))
    assert status == 200


def test_a_new_commit_is_what_answers(sandbox, repo):
    before = current_release(DEFAULTS)
    sha = repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    result = fab(sandbox, DEFAULTS, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    after = current_release(DEFAULTS)
    assert after != before and after.endswith(sha[:12])
    status, headers, body = get(DEFAULTS.url("/api/ai/x"))
    assert (status, body["version"], headers["X-Release"]) == (200, "2", after)


def release_matches_commit(p: Profile, repo: AppRepo) -> None:
    """The live release holds exactly the commit's files, byte for byte, with their modes."""
    root = Path(p.root, "current").resolve()
    tracked = repo.git("ls-files", "-s").splitlines()
    for line in tracked:
        meta, _, path = line.partition("\t")
        mode = meta.split()[0]
        shipped = root / path
        assert shipped.read_bytes() == (repo.path / path).read_bytes(), path
        assert bool(shipped.stat().st_mode & 0o111) == (mode == "100755"), path
    assert len(tracked) > 3


def test_only_changed_files_are_sent(sandbox, repo):
    """Hash, don't copy: a one-file change sends that file and copies the rest on the host; a
    settings-only change sends no code at all. Either way the release is exactly the commit."""
    (repo.path / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (repo.path / "tool.sh").chmod(0o755)
    repo.git("add", "tool.sh")
    repo.git("commit", "-qm", "an executable file")
    first = fab(sandbox, DEFAULTS, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 changed file(s) sent" in first.stdout, first.stdout
    release_matches_commit(DEFAULTS, repo)
    repo.edit("app.py", 'VERSION = "2"', 'VERSION = "2"  # one line changed', "a comment")
    second = fab(sandbox, DEFAULTS, repo)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 changed file(s) sent" in second.stdout, second.stdout
    release_matches_commit(DEFAULTS, repo)
    assert get(DEFAULTS.url("/api/ai/x"))[1]["X-Release"] == current_release(DEFAULTS)
    third = fab(sandbox, DEFAULTS, repo, "--set", "GUNICORN_TIMEOUT=119")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "0 changed file(s) sent" in third.stdout, third.stdout
    release_matches_commit(DEFAULTS, repo)
    repo.git("rm", "-q", "tool.sh")
    repo.git("commit", "-qm", "no tool")
    fourth = fab(sandbox, DEFAULTS, repo)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert not Path(
        DEFAULTS.root, "current", "tool.sh"
    ).exists()  # a file deleted in git is not carried over
    release_matches_commit(DEFAULTS, repo)


def test_the_same_commit_again_changes_nothing(sandbox, repo):
    pids = pm2_apps("signalcraft")
    listing = host_listing(DEFAULTS)
    result = fab(sandbox, DEFAULTS, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing to deploy" in result.stdout
    assert pm2_apps("signalcraft") == pids  # same pids, same restart counts
    assert host_listing(DEFAULTS) == listing  # no file written or touched


def test_dry_run_changes_nothing_and_shows_the_plan(sandbox, repo):
    repo.edit("app.py", 'VERSION = "2"', 'VERSION = "3"', "v3")
    pids = pm2_apps("signalcraft")
    listing = host_listing(DEFAULTS)
    result = fab(sandbox, DEFAULTS, repo, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sendSignal SIGHUP" in result.stdout and "Dry run: nothing was changed." in result.stdout
    assert pm2_apps("signalcraft") == pids
    assert host_listing(DEFAULTS) == listing


def test_every_port_name_path_and_route_changed(sandbox, tmp_path):
    repo = AppRepo(tmp_path / "alt")
    (repo.path / "web").mkdir()
    (repo.path / "server.js").rename(repo.path / "web" / "main.js")
    (repo.path / "app.py").rename(repo.path / "service.py")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "move things")
    alt = Profile(
        "alt-app",
        "/home/ubuntu/apps/alt",
        8401,
        3401,
        8084,
        extra={
            "PY_ROUTES": "v2/ml,hooks",
            "HEALTH_PY": "/v2/ml/health",
            "HEALTH_NODE": "/status",
            "WSGI_APP": "service:create_app()",
            "NODE_SCRIPT": "web/main.js",
            "NODE_INSTANCES": "3",
            "GUNICORN_HANDOVER_BIND": "127.0.0.1:8409",
            "GUNICORN_WORKERS": "2",
            "KEEP_RELEASES": "3",
        },
    )
    clean_host(alt)
    try:
        result = fab(sandbox, alt, repo)
        assert result.returncode == 0, result.stdout + result.stderr
        apps = pm2_apps("alt-app")
        assert len(apps["alt-app-nodejs"]) == 3 and apps["alt-app-python"][0]["status"] == "online"
        assert get(alt.url("/v2/ml/predict"))[2]["app"] == "flask"
        assert get(alt.url("/hooks"))[2]["app"] == "flask"
        assert get(alt.url("/api/ai/x"))[2]["app"] == "nodejs"  # not a Python route any more
        assert sh("ss -ltnH 'sport = :8401'").stdout.strip()
        assert Path("/etc/nginx/sites-enabled/alt-app").exists()
    finally:
        clean_host(alt)


def test_invoke_deploys_to_this_machine(tmp_path):
    repo = AppRepo(tmp_path / "local")
    local = Profile("local-app", "/srv/signalcraft-local", 8501, 3501, 8085)
    clean_host(local, user="root")
    try:
        # `invoke deploy` run on the host itself (its network: no package index), from wheels made
        # beforehand.
        host_wheels((repo.path / "requirements.txt").read_text())
        cmd = ["invoke", "deploy", "--source-dir", str(repo.path)]
        for key, value in local.settings().items():
            cmd += ["--set", f"{key}={value}"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(REPO))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "this machine" in result.stdout
        assert get(local.url("/api/iot/x"))[2]["app"] == "flask"
        assert get(local.url("/"))[2]["app"] == "nodejs"
        apps = pm2_apps("local-app")  # root deploys; the apps run as their own account, in its PM2
        assert sorted(apps) == ["local-app-nodejs", "local-app-python"]
        pids = " ".join(str(p["pid"]) for procs in apps.values() for p in procs)
        assert set(sh(f"ps -o user= -p {pids}").stdout.split()) == {APP_USER}
    finally:
        clean_host(local, user="root")


def test_freeze_then_check(tmp_path):
    repo = AppRepo(tmp_path / "freeze")
    venv = repo.path / ".venv"
    wheels = host_wheels(
        (repo.path / "requirements.txt").read_text()
    )  # the app's own venv, from this run's wheels
    subprocess.run(
        [
            "bash",
            "-c",
            (
                f"python3 -m venv {venv} && {venv}/bin/pip install -q --disable-pip-version-check "
                f"--no-index --find-links {wheels} -r {repo.path}/requirements.txt"
            ),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    invoke = ["invoke", "freeze", "--source-dir", str(repo.path), "--venv", str(venv)]
    first = subprocess.run(invoke, capture_output=True, text=True, cwd=str(REPO))
    assert first.returncode == 0, first.stdout + first.stderr
    check = subprocess.run(invoke + ["--check"], capture_output=True, text=True, cwd=str(REPO))
    assert check.returncode == 0, check.stdout + check.stderr
    req = repo.path / "requirements.txt"
    req.write_text(req.read_text().replace("Flask==3.1.3", "Flask==3.0.0"))
    stale = subprocess.run(invoke + ["--check"], capture_output=True, text=True, cwd=str(REPO))
    assert stale.returncode == 1
    assert (
        "-Flask==3.0.0" in stale.stdout + stale.stderr
        and "+Flask==3.1.3" in stale.stdout + stale.stderr
    )


def test_source_git_the_host_fetches_the_ref(sandbox, tmp_path):
    """SOURCE=git: the host clones REPO_URL and deploys REF; a new commit on that branch is what
    answers next."""
    origin = Path("/home/ubuntu/gitsrc-e2e")
    sh(f"rm -rf {origin}")
    repo = AppRepo(tmp_path / "src")
    sh(f"git clone -q --bare {repo.path} {origin} && chown -R ubuntu: {origin}")
    gp = Profile(
        "gitsrc",
        "/home/ubuntu/gitsrc",
        8461,
        3461,
        8097,
        extra={"SOURCE": "git", "REPO_URL": str(origin), "REF": "main", "KEEP_RELEASES": "2"},
    )
    clean_host(gp)
    try:
        first = fab(sandbox, gp, None)
        assert first.returncode == 0, first.stdout + first.stderr
        assert get(gp.url("/api/ai/x"))[2]["version"] == "1"
        for version in ("2", "3", "4"):
            repo.edit(
                "app.py", f'VERSION = "{int(version) - 1}"', f'VERSION = "{version}"', f"v{version}"
            )
            sh(
                f"cd {repo.path} && chown -R root: {origin} && git push -q {origin} main && chown"
                f" -R ubuntu: {origin}"
            )
            result = fab(sandbox, gp, None)
            assert result.returncode == 0, result.stdout + result.stderr
            assert get(gp.url("/api/ai/x"))[2]["version"] == version
        # KEEP_RELEASES=2: old releases are pruned, but never the current one, the previous one,
        # or one a live process still runs from (Node.js did not change, so it runs from the first).
        releases = sorted(p.name for p in Path(gp.root, "releases").iterdir())
        live_cwds = {
            Path(f"/proc/{pid}/cwd").resolve().name
            for pid in [p["pid"] for procs in pm2_apps("gitsrc").values() for p in procs]
        }
        assert current_release(gp) in releases
        assert set(releases) <= {current_release(gp)} | live_cwds | set(releases[-2:])
        assert len(releases) < 4
    finally:
        clean_host(gp)
        sh(f"rm -rf {origin}")
