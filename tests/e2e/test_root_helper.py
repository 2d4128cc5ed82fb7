"""Root runs only the tool's own helper. A deploy user of its own (`helperonly`) is set up by `fab
setup` while it still has full sudo; then its NOPASSWD ALL line is removed, so only the drop-in
`setup` wrote is left (`helperonly ALL=(root) NOPASSWD: /usr/local/sbin/signalcraft-root`). With
that alone: a first deploy, a change, a rollback, a TLS site. The helper refuses what it was not
made for. (A takeover and its rollback with only the drop-in: test_takeover.py, whose deploy user
`ubuntu` holds only the drop-in, as every e2e deploy user does.)

ubuntu's own sudoers line is never touched: other tests share that user.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    AppRepo,
    Profile,
    add_deploy_user,
    fab,
    forget_root_records,
    get,
    kill_user,
    sh,
)

U = "helperonly"
HOME = f"/home/{U}"
HELPER = "/usr/local/sbin/signalcraft-root"
FULL_SUDO = f"/etc/sudoers.d/90-{U}"
DROP_IN = f"/etc/sudoers.d/signalcraft-{U}"
RH = Profile(
    "helped", f"{HOME}/app", 7661, 7671, 7681, extra={"APP_USER": "helpedapps"}
)  # an account of its own
TK = Profile("helpertk", f"{HOME}/tk", 7663, 7673, 7683)
OLD = Path(f"{HOME}/tk-old")
TK_SITE = Path(f"/etc/nginx/sites-available/{TK.app}")
SETUP_FILES = (
    f"/etc/systemd/system/pm2-{U}.service",
    f"/etc/systemd/system/multi-user.target.wants/pm2-{U}.service",
    f"/etc/logrotate.d/pm2-{U}",
)


def as_user(cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return sh(f"sudo -u {U} -H sh -c {quote(cmd)}", check=check)


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def clean() -> None:
    kill_user(U)
    sites = " ".join(
        f"/etc/nginx/sites-enabled/{p.app} /etc/nginx/sites-available/{p.app}*" for p in (RH, TK)
    )
    sh(
        f"rm -rf {HOME}/.pm2 {RH.root} {TK.root} {OLD} {sites} " + " ".join(SETUP_FILES),
        check=False,
    )
    for p in (RH, TK):
        forget_root_records(U, p.root, f"/etc/nginx/sites-available/{p.app}")
    sh("nginx -t && nginx -s reload", check=False)


@pytest.fixture(scope="module")
def helper_only(sandbox):
    """helperonly, set up by the sandbox's admin (ubuntu, full sudo) with `fab setup --user
    helperonly`: helperonly never has more sudo than the drop-in."""
    sb = add_deploy_user(sandbox, U, FULL_SUDO)
    os.remove(FULL_SUDO)  # add_deploy_user grants full sudo; this deploy user never needs it
    clean()
    try:
        done = fab(sandbox.as_user("admin"), RH, None, "--user", U, task="setup")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "sudoers" in done.stdout and oct(os.stat(DROP_IN).st_mode)[-3:] == "440", done.stdout
        again = fab(sandbox.as_user("admin"), RH, None, "--user", U, "--dry-run", task="setup")
        assert "Nothing to change: the host is set up." in again.stdout, again.stdout
        yield sb
    finally:
        clean()
        sh(f"rm -f {FULL_SUDO} {DROP_IN}; userdel -r {U}", check=False)
        assert sh("visudo -cq", check=False).returncode == 0


def test_only_the_helper_is_allowed(helper_only):
    listed = as_user("sudo -n -l").stdout
    rules = listed.split("may run the following commands", 1)[1].splitlines()[1:]
    assert [r.strip() for r in rules if r.strip()] == [
        f"(root) NOPASSWD: {HELPER}",
        f"({RH.extra['APP_USER']}) NOPASSWD: /usr/local/sbin/signalcraft-app",
    ], listed
    assert as_user("sudo -n true").returncode != 0
    assert as_user("sudo -n sh -c id").returncode != 0
    st = os.stat(HELPER)
    assert (st.st_uid, oct(st.st_mode)[-3:]) == (0, "755")
    assert Path(HELPER).read_text().startswith("#!/usr/bin/python3 -IS\n")
    for folder, _, names in os.walk("/usr/local/lib/signalcraft-deploy"):
        for path in [folder, *(f"{folder}/{n}" for n in names)]:
            st = os.lstat(path)
            assert st.st_uid == 0 and not st.st_mode & 0o022, path


def test_a_first_deploy_a_change_and_a_rollback_need_only_the_helper(helper_only, tmp_path):
    repo = AppRepo(tmp_path / "app")
    first = fab(helper_only, RH, repo)
    assert first.returncode == 0, first.stdout + first.stderr
    v1 = Path(RH.root, "current").resolve().name
    status, headers, body = get(RH.url("/api/ai/x"))
    assert (status, body.get("app"), headers.get("X-Release")) == (200, "flask", v1), first.stdout
    assert Path(f"/etc/nginx/sites-available/{RH.app}").stat().st_uid == 0

    sha = repo.edit("app.py", 'VERSION = "1"', 'VERSION = "2"', "v2")
    second = fab(helper_only, RH, repo)
    assert second.returncode == 0, second.stdout + second.stderr
    v2 = Path(RH.root, "current").resolve().name
    assert v2 != v1 and v2.endswith(sha[:12])
    status, headers, body = get(RH.url("/api/ai/x"))
    assert (status, body.get("version"), headers.get("X-Release")) == (200, "2", v2)

    status_task = fab(helper_only, RH, None, task="status")
    assert status_task.returncode == 0, status_task.stdout + status_task.stderr
    check = fab(helper_only, RH, None, task="nginx-check")
    assert check.returncode == 0, check.stdout + check.stderr

    back = fab(helper_only, RH, None, task="rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert Path(RH.root, "current").resolve().name == v1
    status, headers, body = get(RH.url("/api/ai/x"))
    assert (status, body.get("version"), headers.get("X-Release")) == (200, "1", v1)


def test_an_outdated_helper_with_only_the_drop_in_stops_before_anything_and_names_setup(
    helper_only, tmp_path
):
    """The installed helper made to differ from this version's (restored after; every e2e run holds
    the sandbox lock)."""
    repo = AppRepo(tmp_path / "app")
    repo.edit("app.py", 'VERSION = "1"', 'VERSION = "3"', "v3")
    before = (
        Path(RH.root, "current").resolve().name,
        sorted(os.listdir(f"{RH.root}/releases")),
        Path(f"/etc/nginx/sites-available/{RH.app}").read_bytes(),
    )
    original = Path(HELPER).read_bytes()
    try:
        Path(HELPER).write_bytes(original + b"# an older version\n")
        result = fab(helper_only, RH, repo)
    finally:
        Path(HELPER).write_bytes(original)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out, out
    assert (
        f"The root helper {HELPER}" in out
        and "fab -H " in out
        and " setup`" in out
        and "Nothing was changed" in out
    ), out
    assert (
        Path(RH.root, "current").resolve().name,
        sorted(os.listdir(f"{RH.root}/releases")),
        Path(f"/etc/nginx/sites-available/{RH.app}").read_bytes(),
    ) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ("site-read /etc/shadow", "site must be a plain file name in /etc/nginx/sites-available"),
        (
            f"site-install {HOME}/app/.deploy backup guard 'nginx -t'",
            "the site description is not JSON",
        ),
        ("site-read /etc/nginx/sites-available/../../shadow", "site must be a normalised path"),
        (
            f"extras-write {HOME}/app/.deploy /etc/nginx/conf.d/../../cron.d/{U}.conf 3 'nginx -t'",
            "site must be a normalised path",
        ),
        ("frobnicate /etc/passwd", "unknown verb 'frobnicate'"),
        (f"nginx-test 'cp /etc/shadow /tmp/{U}-shadow'", "the test command is not accepted"),
        (
            f"takeover-record {HOME}/app/.deploy 1 /etc/nginx/sites-available/{U}",
            "the pid must be a whole number from 2",
        ),
        (
            f"site-restore {HOME}/app/.deploy /etc/nginx/sites-available/{U}-none 'nginx -t'",
            "was not installed by this helper",
        ),
    ],
)
def test_the_helper_refuses_what_it_was_not_made_for(helper_only, args, says):
    done = as_user(f"sudo -n {HELPER} {args} < /dev/null")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("signalcraft-root: refused: ") and says in done.stderr, (
        done.stderr
    )
    assert not Path(f"/tmp/{U}-site").exists() and not Path(f"/tmp/{U}-shadow").exists()


def test_a_tls_site_needs_only_the_helper(helper_only, tmp_path):
    """HTTPS with a certificate of the admin's in /etc/ssl (root's, as certificates are): checked,
    served, redirected."""
    certs = Path(f"/etc/ssl/{U}")
    certs.mkdir(mode=0o700, exist_ok=True)
    cert, key = certs / "site.pem", certs / "site.key"
    sh(
        f"openssl req -x509 -newkey rsa:2048 -nodes -keyout {key} -out {cert} -days 30 -subj"
        " /CN=helper.test -addext subjectAltName=DNS:helper.test,IP:127.0.0.1"
    )
    tls = Profile(
        RH.app,
        RH.root,
        RH.bind,
        RH.node,
        RH.listen,
        extra={
            **RH.extra,
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
            "TLS_LISTEN": "127.0.0.1:7691",
            "SERVER_NAME": "helper.test",
        },
    )
    try:
        done = fab(helper_only, tls, AppRepo(tmp_path / "app"))
        assert done.returncode == 0, done.stdout + done.stderr
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", 7691, timeout=5, context=context)
        conn.request("GET", "/api/ai/x", headers={"Host": "helper.test"})
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["app"] == "flask"
        plain = http.client.HTTPConnection("127.0.0.1", RH.listen, timeout=5)
        plain.request("GET", "/api/ai/x", headers={"Host": "helper.test"})
        assert plain.getresponse().status == 301
        back = fab(
            helper_only, RH, AppRepo(tmp_path / "again")
        )  # TLS off again: plain HTTP serves the apps
        assert back.returncode == 0, back.stdout + back.stderr
        assert get(RH.url("/api/ai/x"))[0] == 200
    finally:
        shutil.rmtree(certs, ignore_errors=True)
