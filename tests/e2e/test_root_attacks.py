"""A deploy user holding only the sudoers drop-in tries to get root, or another tenant's site,
through the helper.

Two deploy users of the sandbox host, `atkone` (the attacker) and `atktwo` (another tenant), are set
up by the host's admin (ubuntu, full sudo) with `fab setup --user NAME`: neither ever has more sudo
than the drop-in. Each test runs what an attacker would, as `atkone` (`sudo -n
/usr/local/sbin/signalcraft-root VERB ARGS`), and asserts on the host: root wrote nothing the caller
chose, nothing of another user's changed or showed, and `sudo -n true` still fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from signalcraft_deploy.remote.nginx_site import upstream_for
from tests.e2e.conftest import ROOT_STATE, Profile, fab, forget_root_records, sh

HELPER = "/usr/local/sbin/signalcraft-root"
ATTACKER, TENANT = "atkone", "atktwo"
MARKERS = Path(
    "/tmp/signalcraft-attack-markers"
)  # anything root ran of the attacker's would leave a file here
VICTIM_SITE = "/etc/nginx/sites-available/atk-victim"
OWN_SITE = "/etc/nginx/sites-available/atk-own"
WATCHED = (
    "/etc/sudoers.d",
    "/etc/cron.d",
    "/etc/nginx",
    "/usr/local/sbin",
    "/usr/local/lib/signalcraft-deploy",
    "/root/.ssh",
    "/etc/systemd/system",
    "/etc/logrotate.d",
)
SETUP = Profile("atk", "/home/atkone/app", 7961, 7971, 7975)
# Each tenant's apps run as an account of its own (one account serves one deploy user: setup refuses
# to share one).
APPS_OF = {"atkone": "atkone-apps", "atktwo": "atktwo-apps"}


def state(user: str) -> str:
    return f"/home/{user}/app/.deploy"


def description(site: str, listen: str, python: str, node: str, **over: object) -> str:
    desc = {
        "site": site,
        "upstream": upstream_for(site),
        "listen": [listen],
        "tls_listen": ["443"],
        "server_name": f"{Path(site).name}.test",
        "routes": ["api"],
        "python": python,
        "node": node,
        "body_size": "",
        "tls": None,
    }
    return json.dumps({**desc, **over})


def helper(
    user: str, *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`sudo -n HELPER ARGS` as `user` (its own environment added with `env`), stdin given."""
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())]
    return subprocess.run(
        ["sudo", "-u", user, "-H", *prefix, "sudo", "-n", HELPER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def as_user(user: str, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sudo", "-u", user, "-H", "sh", "-c", cmd], capture_output=True, text=True, timeout=60
    )


def snapshot() -> dict[str, str]:
    """Every file under the folders root keeps (what, owner, mode, content digest), to prove nothing
    of them changed."""
    out = {}
    for top in WATCHED:
        for folder, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in [*dirs, *names]:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                digest = (
                    hashlib.sha256(Path(path).read_bytes()).hexdigest()
                    if os.path.isfile(path) and not os.path.islink(path)
                    else os.readlink(path)
                    if os.path.islink(path)
                    else "dir"
                )
                out[path] = f"{info.st_uid}:{oct(info.st_mode)}:{digest}"
    return out


def still_no_root(user: str = ATTACKER) -> None:
    assert as_user(user, "sudo -n true").returncode != 0
    rules = [
        line.strip()
        for line in as_user(user, "sudo -n -l").stdout.splitlines()
        if "NOPASSWD" in line
    ]
    # the root helper as root, and the app helper as the apps' accounts: nothing else
    assert rules == ["(root) NOPASSWD: /usr/local/sbin/signalcraft-root"] or (
        rules[0] == "(root) NOPASSWD: /usr/local/sbin/signalcraft-root"
        and len(rules) == 2
        and rules[1].endswith(") NOPASSWD: /usr/local/sbin/signalcraft-app")
        and "ALL" not in rules[1]
    ), rules
    assert not any(MARKERS.iterdir()), sorted(p.name for p in MARKERS.iterdir())


def refused(done: subprocess.CompletedProcess[str], says: str = "") -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("signalcraft-root: refused: ") and says in done.stderr, (
        done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def make_user(name: str) -> None:
    sh(
        f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}; usermod -p"
        f" '*' {name}"
    )
    sh(f"sudo -u {name} mkdir -p /home/{name}/app/.deploy /home/{name}/bin")


def forget(user: str) -> None:
    """Remove the user's site (atkone's is OWN_SITE, atktwo's VICTIM_SITE) and root's records of
    it."""
    site = OWN_SITE if user == ATTACKER else VICTIM_SITE
    sh(f"pkill -9 -u {user}", check=False)
    sh(
        f"rm -f {site} {site}.signalcraft-prev {site}.locations"
        f" /etc/nginx/sites-enabled/{Path(site).name}",
        check=False,
    )
    forget_root_records(user, f"/home/{user}/app", site)


@pytest.fixture(scope="module")
def tenants(sandbox) -> Iterator[None]:
    """atkone and atktwo, each set up by the admin with only the drop-in; root's records of this
    module cleared after."""
    MARKERS.mkdir(mode=0o1777, exist_ok=True)
    MARKERS.chmod(0o1777)
    for user in (ATTACKER, TENANT):
        make_user(user)
        done = fab(
            sandbox.as_user("admin"),
            replace(SETUP, extra={"APP_USER": APPS_OF[user]}),
            None,
            "--user",
            user,
            task="setup",
        )
        assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield
    finally:
        for user in (ATTACKER, TENANT):
            forget(user)
            sh(
                f"rm -f /etc/sudoers.d/signalcraft-{user} /etc/systemd/system/pm2-{user}.service"
                f" /etc/systemd/system/multi-user.target.wants/pm2-{user}.service"
                f" /etc/logrotate.d/pm2-{user}; userdel -r {user}; pkill -9 -u {APPS_OF[user]};"
                f" userdel -r {APPS_OF[user]}; rm -f"
                f" /etc/systemd/system/pm2-{APPS_OF[user]}.service"
                f" /etc/logrotate.d/pm2-{APPS_OF[user]}"
                f" /etc/systemd/system/multi-user.target.wants/pm2-{APPS_OF[user]}.service",
                check=False,
            )
        shutil.rmtree(MARKERS, ignore_errors=True)
        sh("nginx -t && nginx -s reload", check=False)
        assert sh("visudo -cq", check=False).returncode == 0


@pytest.fixture
def victim(tenants) -> Iterator[bytes]:
    """atktwo's site, installed through the helper as a deploy does; its bytes."""
    forget(TENANT)
    done = helper(
        TENANT,
        "site-install",
        state(TENANT),
        "backup",
        "guard",
        "nginx -t",
        stdin=description(VICTIM_SITE, "127.0.0.1:7981", "127.0.0.1:7982", "127.0.0.1:7983"),
    )
    assert done.returncode == 0, done.stderr
    yield Path(VICTIM_SITE).read_bytes()
    forget(TENANT)


@pytest.fixture
def clean_attacker(tenants) -> Iterator[None]:
    forget(ATTACKER)
    sh(
        f"rm -rf /home/{ATTACKER}/app && sudo -u {ATTACKER} mkdir -p /home/{ATTACKER}/app/.deploy",
        check=False,
    )
    yield
    forget(ATTACKER)


# ----------------------------------------------------------------------------- 1. links and folders
# swapped


def test_a_state_folder_that_is_a_link_into_roots_folders_is_never_written_through(clean_attacker):
    """The old helper wrote takeover records into <DEPLOY_ROOT>/.deploy/takeover: swapped for a link
    to /etc/sudoers.d while it ran, root wrote the caller's text there. Root now never opens the
    caller's folder at all.
    """
    home = Path(f"/home/{ATTACKER}/app")
    sh(f"rm -rf {home}/.deploy && sudo -u {ATTACKER} ln -s /etc/sudoers.d {home}/.deploy")
    sleeper = subprocess.Popen(["sudo", "-u", ATTACKER, "sleep", "60"])
    time.sleep(0.3)
    pid = sh(f"pgrep -u {ATTACKER} -x sleep").stdout.split()[0]
    before = snapshot()
    try:
        # A swapper flips the folder between a link to root's folders and a real folder while root
        # works (and no longer: its thousands of processes would only take the CPU from other
        # tests).
        stop = home / "stop-swapping"
        swapper = subprocess.Popen(
            [
                "sudo",
                "-u",
                ATTACKER,
                "sh",
                "-c",
                (
                    f"for i in $(seq 3000); do [ -e {stop} ] && exit; rm -rf {home}/.deploy; mkdir"
                    f" {home}/.deploy; mkdir -p {home}/.deploy/takeover; rm -rf {home}/.deploy; ln"
                    f" -s /etc/sudoers.d {home}/.deploy; done"
                ),
            ]
        )
        for _ in range(3):
            helper(ATTACKER, "takeover-record", state(ATTACKER), pid, OWN_SITE)
            helper(
                ATTACKER,
                "site-install",
                state(ATTACKER),
                "backup",
                "guard",
                "nginx -t",
                stdin=description(OWN_SITE, "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986"),
            )
            helper(ATTACKER, "extras-write", state(ATTACKER), OWN_SITE, "-", "nginx -t")
            helper(ATTACKER, "takeover-restore", state(ATTACKER), OWN_SITE, "nginx -t")
        sh(f"sudo -u {ATTACKER} touch {stop}")
        assert swapper.wait(60) == 0  # it ran all the while: it stopped only when told to
    finally:
        sleeper.kill()
    after = snapshot()
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    # Root's own records and the attacker's own site are what it may write; nothing else, nothing in
    # sudoers.d.
    allowed = (str(ROOT_STATE), OWN_SITE, f"/etc/nginx/sites-enabled/{Path(OWN_SITE).name}")
    assert not [p for p in changed if not p.startswith(allowed)], sorted(changed)
    assert sorted(os.listdir("/etc/sudoers.d")) == sorted(
        p.rsplit("/", 1)[1] for p in before if p.startswith("/etc/sudoers.d/")
    )
    still_no_root()


def test_fifos_in_the_callers_folders_never_block_or_feed_root(clean_attacker):
    """The old helper read the parked default site's target from the caller's folder (a FIFO there
    could answer one thing to the check and another to the read). Root reads nothing of the caller's
    folder now: every verb that takes that folder returns at once."""
    deploy = Path(state(ATTACKER))
    for name in ("nginx-default-site.link", "site-defaults.json"):
        as_user(ATTACKER, f"mkfifo {deploy}/{name}")
    as_user(
        ATTACKER,
        f"mkdir -p {deploy}/takeover && mkfifo {deploy}/takeover/legacy.json"
        f" {deploy}/takeover/nginx-site",
    )
    for args in (
        ["site-restore", state(ATTACKER), OWN_SITE, "nginx -t"],
        ["takeover-restore", state(ATTACKER), OWN_SITE, "nginx -t"],
        ["extras-write", state(ATTACKER), OWN_SITE, "3", "nginx -t"],
    ):
        started = time.monotonic()
        done = helper(ATTACKER, *args, timeout=20)
        assert done.returncode == 2 and time.monotonic() - started < 10, done.stderr
    # Paths root reads by name (a site, a certificate) are in root's folders: a FIFO or device
    # elsewhere is refused.
    refused(
        helper(ATTACKER, "site-read", f"{deploy}/nginx-default-site.link"),
        "site must be a plain file name",
    )
    refused(
        helper(
            ATTACKER,
            "tls-check",
            json.dumps({"cert": "/dev/zero", "key": "/dev/zero", "names": []}),
        ),
        "must be under",
    )
    refused(
        helper(
            ATTACKER,
            "tls-check",
            json.dumps({"cert": f"{deploy}/site-defaults.json", "key": "/etc/ssl/x", "names": []}),
        ),
        "must be under",
    )
    still_no_root()


# ----------------------------------------------------------------------------- 2. Nginx text: none
# reaches root


@pytest.fixture
def engine(clean_attacker) -> str:
    """A shared object of the attacker's whose constructor leaves a marker: loaded by root, it would
    show."""
    source = Path(f"/home/{ATTACKER}/engine.c")
    source.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void hit(void) "
        f'{{ FILE *f = fopen("{MARKERS}/engine-loaded", "w"); if (f) fclose(f); }}\n'
    )
    sh(f"chown {ATTACKER}: {source}")
    made = as_user(ATTACKER, f"cc -shared -fPIC -o /home/{ATTACKER}/x.so {source}")
    if made.returncode != 0:
        pytest.skip(f"no C compiler for the engine: {made.stderr.strip()[:200]}")
    return f"/home/{ATTACKER}/x.so"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("server_name", "a#b; error_log /etc/cron.d/atk-pwn"),
        ("server_name", "atk.test; include /home/atkone/evil.conf"),
        ("routes", ["api) { } error_log /etc/cron.d/atk-pwn; location ~ (x"]),
        ("routes", ["api#", "x; access_log /etc/cron.d/atk-pwn"]),
        ("listen", ["127.0.0.1:7987 ssl; error_log /etc/cron.d/atk-pwn"]),
        ("body_size", "1m; access_log /etc/cron.d/atk-pwn"),
        ("body_size", "$request_uri"),
        ("upstream", "x_python { server 1.2.3.4:80; } error_log /etc/cron.d/atk-pwn; upstream y"),
        ("python", "127.0.0.1:7985 backup; } error_log /etc/cron.d/atk-pwn; upstream z {"),
        ("node", "unix:/home/atkone/sock"),
        ("site", "/etc/nginx/sites-available/../../cron.d/atk-pwn"),
        ("site", "/etc/nginx/sites-available//atk-own"),
        ("site", "/etc/nginx/nginx.conf"),
        ("extra", "include /home/atkone/evil.conf;"),
    ],
)
def test_no_text_the_caller_sends_reaches_nginx(clean_attacker, field, value):
    before = snapshot()
    desc = json.loads(description(OWN_SITE, "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986"))
    desc[field] = value
    refused(
        helper(
            ATTACKER,
            "site-install",
            state(ATTACKER),
            "backup",
            "guard",
            "nginx -t",
            stdin=json.dumps(desc),
        )
    )
    assert snapshot() == before and not Path("/etc/cron.d/atk-pwn").exists()
    still_no_root()


@pytest.mark.parametrize(
    "key", ["engine:{so}:id", "{so}", "/etc/ssl/../..{so}", "data:-----BEGIN", "$document_root/k"]
)
def test_a_key_that_would_make_roots_nginx_load_the_callers_code_is_refused(engine, key):
    before = snapshot()
    tls = {
        "cert": "/etc/ssl/certs/ssl-cert-snakeoil.pem",
        "key": key.format(so=engine),
        "redirect": False,
    }
    desc = description(OWN_SITE, "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986", tls=tls)
    refused(
        helper(ATTACKER, "site-install", state(ATTACKER), "backup", "guard", "nginx -t", stdin=desc)
    )
    refused(
        helper(
            ATTACKER, "tls-check", json.dumps({"cert": tls["cert"], "key": tls["key"], "names": []})
        )
    )
    assert snapshot() == before and not (MARKERS / "engine-loaded").exists()
    still_no_root()


# ----------------------------------------------------------------------------- 3. programs of the
# caller's choice


def test_no_program_or_environment_of_the_callers_choice_runs_as_root(clean_attacker):
    """Fake nginx, ss, openssl and python3 first on the caller's PATH, and Python's and the loader's
    variables pointing at the caller's code: root runs none of it (sudo resets the environment; the
    helper clears it and fixes PATH).
    """
    bin_dir, py_dir = Path(f"/home/{ATTACKER}/bin"), Path(f"/home/{ATTACKER}/py")
    py_dir.mkdir(exist_ok=True)
    for name in ("nginx", "ss", "openssl", "python3", "sh", "systemctl"):
        (bin_dir / name).write_text(f"#!/bin/sh\ntouch {MARKERS}/ran-{name}\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    (py_dir / "sitecustomize.py").write_text(f"open('{MARKERS}/python-site', 'w').close()\n")
    (py_dir / "json.py").write_text(f"open('{MARKERS}/python-json', 'w').close()\n")
    sh(f"chown -R {ATTACKER}: {bin_dir} {py_dir}")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(py_dir),
        "PYTHONSTARTUP": str(py_dir / "json.py"),
        "PYTHONHOME": str(py_dir),
        "PYTHONINSPECT": "1",
        "LD_PRELOAD": f"/home/{ATTACKER}/x.so",
    }
    for args in (
        ["probe"],
        ["nginx-test", "nginx -t"],
        ["listeners", "22"],
        ["nginx-dump"],
        ["version"],
        [
            "tls-check",
            json.dumps({"cert": "/etc/ssl/none.pem", "key": "/etc/ssl/none.key", "names": []}),
        ],
        ["nginx-reload", json.dumps({"cmd": "nginx -s reload", "wait": 1, "marker": None})],
    ):
        helper(ATTACKER, *args, env=env, timeout=60)
    # The old verbs that named a PM2 program (takeover-record, takeover-restore) take none now.
    refused(
        helper(
            ATTACKER,
            "takeover-record",
            "1234",
            f"/home/{ATTACKER}/app/.deploy/takeover",
            str(bin_dir / "sh"),
            "x-nodejs",
            OWN_SITE,
            "2",
            "t",
        ),
        "takes 3 argument(s)",
    )
    refused(
        helper(ATTACKER, "nginx-test", f"{bin_dir}/nginx -t"), "the test command is not accepted"
    )
    still_no_root()


def test_pm2_boot_starts_nothing_but_a_unit_of_the_callers_own_apps_account(clean_attacker):
    """pm2-boot as atkone: another deploy user, root, itself, `nobody` or a name that is no account
    are not its apps' accounts in root's record: refused, nothing run. Its own apps' account (setup
    recorded APP_USER for it): on this host without systemd, nothing to start."""
    before = snapshot()
    for name in (TENANT, "root", ATTACKER, "nobody", "nosuchaccount"):
        refused(helper(ATTACKER, "pm2-boot", name), f"{name} is not one of your apps' accounts")
    refused(helper(ATTACKER, "pm2-boot", "../signalcraft"), "an account name is not accepted")
    refused(
        helper(ATTACKER, "pm2-boot", "signalcraft"), "signalcraft is not one of your apps' accounts"
    )  # ubuntu's
    refused(
        helper(ATTACKER, "pm2-boot", APPS_OF[TENANT]),
        f"{APPS_OF[TENANT]} is not one of your apps' accounts",
    )
    own = helper(ATTACKER, "pm2-boot", APPS_OF[ATTACKER])
    assert (own.returncode, own.stdout) == (0, "no-systemd\n"), own.stdout + own.stderr
    assert snapshot() == before
    still_no_root()


# ----------------------------------------------------------------------------- 4. another tenant's
# files


def test_another_users_site_can_be_neither_changed_removed_nor_read(victim, clean_attacker):
    sleeper = subprocess.Popen(["sudo", "-u", ATTACKER, "sleep", "60"])
    time.sleep(0.3)
    pid = sh(f"pgrep -u {ATTACKER} -x sleep").stdout.split()[0]
    before = snapshot()
    mine = description(VICTIM_SITE, "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986")
    try:
        for who in (
            state(ATTACKER),
            state(TENANT),
        ):  # its own deploy root, or the victim's very name of one
            refused(
                helper(ATTACKER, "site-install", who, "backup", "guard", "nginx -t", stdin=mine),
                "another user",
            )
            refused(
                helper(
                    ATTACKER, "site-install", who, "replace", "takeover", "nginx -t", stdin=mine
                ),
                "another user",
            )
            refused(helper(ATTACKER, "site-restore", who, VICTIM_SITE, "nginx -t"), "another user")
            refused(
                helper(ATTACKER, "extras-write", who, VICTIM_SITE, "-", "nginx -t"), "another user"
            )
            refused(helper(ATTACKER, "takeover-record", who, pid, VICTIM_SITE), "another user")
            refused(
                helper(ATTACKER, "takeover-restore", who, VICTIM_SITE, "nginx -t"), "another user"
            )
            refused(
                helper(ATTACKER, "site-remove", who, VICTIM_SITE, "atk-victim", "nginx -t"),
                "another user",
            )
        refused(helper(ATTACKER, "site-read", VICTIM_SITE), "another user")
        # Its own site file, serving the victim's name, or named so that the victim's site would
        # include its blocks:
        for name in ("atk-victim.test", "atk-victim.*"):
            refused(
                helper(
                    ATTACKER,
                    "site-install",
                    state(ATTACKER),
                    "backup",
                    "guard",
                    "nginx -t",
                    stdin=description(
                        OWN_SITE,
                        "127.0.0.1:7984",
                        "127.0.0.1:7985",
                        "127.0.0.1:7986",
                        server_name=name,
                    ),
                ),
                "another user's site",
            )
        # Its own site on the victim's port at another address (Nginx would give it every request to
        # that address), or listening where the victim's site sends its requests:
        for listen, says in (
            ("127.0.0.2:7981", "port 7981 is served by another user's site"),
            ("[::1]:7981", "port 7981 is served by another user's site"),
            ("127.0.0.1:7982", "where another user's site sends its requests"),
        ):
            refused(
                helper(
                    ATTACKER,
                    "site-install",
                    state(ATTACKER),
                    "backup",
                    "guard",
                    "nginx -t",
                    stdin=description(OWN_SITE, listen, "127.0.0.1:7985", "127.0.0.1:7986"),
                ),
                says,
            )
        assert (
            helper(
                ATTACKER,
                "site-install",
                state(ATTACKER),
                "backup",
                "guard",
                "nginx -t",
                stdin=description(
                    VICTIM_SITE + ".conf", "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986"
                ),
            ).returncode
            == 0
        )
        assert (
            helper(
                ATTACKER, "site-restore", state(ATTACKER), VICTIM_SITE + ".conf", "nginx -t"
            ).returncode
            == 0
        )
        refused(
            helper(
                ATTACKER,
                "certbot-hook",
                "atk-victim",
                "/etc/letsencrypt/live/x/fullchain.pem",
                VICTIM_SITE,
                "nginx -t",
                "nginx -s reload",
            ),
            "another user",
        )
    finally:
        sleeper.kill()
    assert snapshot() == before and Path(VICTIM_SITE).read_bytes() == victim
    dump = helper(ATTACKER, "nginx-dump")
    assert "# (not yours to read: not shown)" in dump.stdout and "127.0.0.1:7981" not in dump.stdout
    assert "127.0.0.1:7981" in helper(TENANT, "nginx-dump").stdout  # its owner sees it
    assert oct(os.stat(VICTIM_SITE).st_mode & 0o777) == "0o640"  # nor by `cat`
    assert as_user(ATTACKER, f"cat {VICTIM_SITE}").returncode != 0
    still_no_root()


def test_two_apps_on_one_host_keep_their_own_sites(victim, clean_attacker):
    """What a tenant may do with its own site still works beside another's: install, change,
    restore."""
    own = description(OWN_SITE, "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986")
    assert (
        helper(
            ATTACKER, "site-install", state(ATTACKER), "backup", "guard", "nginx -t", stdin=own
        ).returncode
        == 0
    )
    changed = description(
        OWN_SITE, "127.0.0.1:7984", "127.0.0.1:7985", "127.0.0.1:7986", body_size="2m"
    )
    assert (
        helper(
            ATTACKER, "site-install", state(ATTACKER), "backup", "guard", "nginx -t", stdin=changed
        ).returncode
        == 0
    )
    assert helper(ATTACKER, "site-read", OWN_SITE).stdout.count("client_max_body_size 2m;") == 1
    assert helper(ATTACKER, "site-restore", state(ATTACKER), OWN_SITE, "nginx -t").returncode == 0
    assert "client_max_body_size" not in helper(ATTACKER, "site-read", OWN_SITE).stdout
    assert Path(VICTIM_SITE).read_bytes() == victim
    still_no_root()


# ----------------------------------------------------------------------------- 5. the read verbs


def test_the_read_verbs_show_a_caller_only_what_is_its_own(tenants, clean_attacker):
    server = subprocess.Popen(
        [
            "sudo",
            "-u",
            TENANT,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "7991",
            "--directory",
            "/tmp",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ":7991" not in sh("ss -ltnH", check=False).stdout:
            time.sleep(0.1)
        shown = helper(ATTACKER, "listeners", "7991")
        assert shown.returncode == 0 and ":7991" in shown.stdout
        commands = shown.stdout.split("@@signalcraft:commands", 1)[1]
        assert (
            "http.server" not in commands and "/tmp" not in commands
        )  # another user's command line: never
        assert (
            ":22 " not in shown.stdout.split("@@signalcraft:commands")[0]
        )  # only the ports asked for
    finally:
        server.kill()
    for path in (
        "/etc/shadow",
        "/root/.ssh/id_ed25519",
        "/etc/ssl/private/../../shadow",
        f"/home/{TENANT}/x.pem",
    ):
        refused(helper(ATTACKER, "tls-check", json.dumps({"cert": path, "key": path, "names": []})))
    still_no_root()
