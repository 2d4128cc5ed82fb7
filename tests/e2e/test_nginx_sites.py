"""A reload is believed only once Nginx serves the new site, and a takeover keeps what the user's
site had.

On the shared sandbox host, under bounded loopback load, each test with its own names and ports
(7200-7299):
- a takeover of a site that listens on 127.0.0.1:<port> (a wildcard NGINX_LISTEN is refused up
  front);
- a takeover of a site with an HTTPS server (certificate made here with openssl, a client that
  trusts it);
- a reload made to fail after `nginx -t` passes (the new listen port held by another process);
- certificates: a mismatched pair refused before anything changes, 7 days left makes `status` warn,
  certbot's hook;
- an existing site file this tool did not write is refused; nginx.conf is refused. Every test leaves
  Nginx passing `nginx -t` and taking reloads (checked: the running Nginx answers the id of the site
  files on disk after a reload).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from bench.loadgen import Load
from signalcraft_deploy import remote
from signalcraft_deploy.core.render import site_id
from tests.e2e.conftest import (
    EXAMPLE,
    AppRepo,
    Profile,
    clean_host,
    e2e_load,
    fab,
    get,
    legacy_venv,
    pm2_apps,
    sh,
    start_legacy_host,
)

OLD = Path(
    "/home/ubuntu/legacy-app"
)  # the 'before' app: a venv with Flask, run bare as `python app.py`
CERTS = Path("/etc/ssl/sites-test")
NAME = "sites.test"


def settings_without(p: Profile, *keys: str) -> Profile:
    """The profile's settings less `keys`, as a user who leaves them unset would pass them."""
    return Profile(
        p.app,
        p.root,
        p.bind,
        p.node,
        p.listen,
        defaults=True,
        extra={k: v for k, v in p.settings().items() if k not in keys},
    )


def site_path(p: Profile) -> Path:
    return Path(f"/etc/nginx/sites-available/{p.app}")


def running_id(listen: str, host: str | None = None) -> str:
    """What the running Nginx answers on /.signalcraft-deploy-site at `listen` (host:port)."""
    conn = http.client.HTTPConnection(*listen.rsplit(":", 1), timeout=5)
    try:
        conn.request("GET", "/.signalcraft-deploy-site", headers={"Host": host} if host else {})
        return conn.getresponse().read().decode().strip()
    except OSError as err:
        return f"error: {err}"
    finally:
        conn.close()


def reload_takes(listen: str, p: Profile) -> None:
    """Nginx passes `nginx -t` and a reload takes: the master in /run/nginx.pid has new workers and
    logged no [emerg] (remote/reload_nginx.py, run as the tool runs it), and, while the profile's
    site is on disk, the running Nginx answers that file's id."""
    assert sh("nginx -t", check=False).returncode == 0, sh("nginx -t", check=False).stderr
    spec = json.dumps({"cmd": "nginx -s reload", "wait": 10, "marker": None})
    done = subprocess.run(
        ["python3", "-", spec],
        input=remote.program("reload_nginx"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["ok"], done.stdout + done.stderr
    if site_path(p).exists():
        assert running_id(listen) == site_id(site_path(p).read_text())


def keep_output(
    name: str, result: subprocess.CompletedProcess[str], load: Load | None = None
) -> None:
    """What the command printed (and the load's count), kept in /tmp/nginx-sites-e2e/ for a person
    to read."""
    folder = Path("/tmp/nginx-sites-e2e")
    folder.mkdir(exist_ok=True)
    counted = f"\nload: {load.result().summary()}\n" if load else ""
    (folder / f"{name}.txt").write_text(result.stdout + result.stderr + counted)


def my_bare_pids() -> list[int]:
    out = sh("pgrep -u ubuntu -f 'python app.py'", check=False).stdout
    return [
        int(pid)
        for pid in out.split()
        if os.path.exists(f"/proc/{pid}") and os.readlink(f"/proc/{pid}/cwd") == str(OLD)
    ]


@pytest.fixture(scope="module")
def old_venv(sandbox):
    """The 'before' app with its venv (Flask), made once for this module's takeovers and removed
    after."""
    sh(f"rm -rf {OLD} && cp -r {EXAMPLE} {OLD} && rm -f {OLD}/REVISION && chown -R ubuntu: {OLD}")
    legacy_venv(f"{OLD}/venv")
    yield OLD
    for pid in my_bare_pids():
        sh(f"kill {pid}", check=False)
    sh(f"rm -rf {OLD}", check=False)


def before_state(p: Profile, site_text: str) -> int:
    """Flask bare on GUNICORN_BIND, Node.js under PM2 (fork mode), the hand-made site; returns the
    bare pid."""
    for pid in my_bare_pids():
        sh(f"kill {pid}", check=False)
    start_legacy_host(p, OLD, site_path(p), site_text)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not my_bare_pids():
        time.sleep(0.1)
    return my_bare_pids()[0]


def wait_answers(
    url: str, app: str, seconds: float = 20, context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = https_get(url, context)[1] if context else get(url)[2]
        if body.get("app") == app:
            return
        time.sleep(0.2)


def plain_status(url: str) -> int:
    """The status of a plain-HTTP GET, redirects not followed."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/" + url.split("//", 1)[1].split("/", 1)[1])
        return conn.getresponse().status
    finally:
        conn.close()


def https_get(url: str, context: ssl.SSLContext | None) -> tuple[int, dict]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    conn = http.client.HTTPSConnection(host, int(port), timeout=5, context=context)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, json.loads(body) if body.startswith("{") else {"body": body}
    except OSError as err:
        return 0, {"error": str(err)}
    finally:
        conn.close()


def cleanup(p: Profile) -> None:
    for pid in my_bare_pids():
        sh(f"kill {pid}", check=False)
    clean_host(p)
    sh(f"rm -f /etc/nginx/sites-available/{p.app}.locations {OLD}/legacy.log", check=False)
    sh("nginx -t && nginx -s reload", check=False)


# --- a takeover of a site on 127.0.0.1:<port>
# ---------------------------------------------------------------------

LO = Profile("loopback", "/home/ubuntu/loopback", 7201, 7211, 7221)
LO_SITE = f"""server {{
    listen 127.0.0.1:{LO.listen};
    server_name _;
    location ~ ^/(api/ai|api/iot|api/lightweight-analyze|api/flask) {{
        proxy_pass http://127.0.0.1:{LO.bind};
    }}
    location / {{
        proxy_pass http://127.0.0.1:{LO.node};
    }}
}}
"""


def test_takeover_of_a_loopback_listen_keeps_it_and_the_reload_takes(sandbox, old_venv, tmp_path):
    cleanup(LO)
    try:
        bare = before_state(LO, LO_SITE)
        repo = AppRepo(tmp_path / "app")
        # A wildcard listen over the address Nginx holds cannot be applied by a reload: refused,
        # host untouched.
        refused = fab(sandbox, LO, repo)
        keep_output("loopback-takeover-refused", refused)
        assert refused.returncode != 0
        assert "Linux refuses a wildcard bind" in refused.stdout + refused.stderr
        assert f"NGINX_LISTEN=127.0.0.1:{LO.listen}" in refused.stdout + refused.stderr
        assert site_path(LO).read_text() == LO_SITE and my_bare_pids() == [bare]
        assert not Path(LO.root, "releases").exists()

        # Left unset, NGINX_LISTEN comes from the old site's own listen line; --dry-run shows the
        # old site's diff.
        unset = settings_without(LO, "NGINX_LISTEN")
        dry = fab(sandbox, unset, repo, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert f"kept from the old site: NGINX_LISTEN=127.0.0.1:{LO.listen}" in dry.stdout
        assert (
            f"--- a{site_path(LO)}" in dry.stdout
            and f"-    listen 127.0.0.1:{LO.listen};" in dry.stdout
        )
        assert f"+    listen 127.0.0.1:{LO.listen} default_server;" in dry.stdout
        assert site_path(LO).read_text() == LO_SITE and my_bare_pids() == [bare]
        with e2e_load(
            [LO.url("/api/ai/load"), LO.url("/")], threads=3, max_requests=50_000, max_seconds=180
        ) as load:
            time.sleep(0.5)
            result = fab(sandbox, unset, repo)
            time.sleep(0.5)
        keep_output("loopback-takeover", result, load)
        assert result.returncode == 0, result.stdout + result.stderr
        counts = load.result()
        assert counts.total > 100 and counts.failed == 0, (counts.samples, result.stdout)
        assert f"NGINX_LISTEN=127.0.0.1:{LO.listen}" in result.stdout  # "kept from the old site"
        site = site_path(LO).read_text()
        assert f"listen 127.0.0.1:{LO.listen} default_server;" in site
        assert running_id(f"127.0.0.1:{LO.listen}") == site_id(
            site
        )  # the running Nginx serves the new site
        release = Path(LO.root, "current").resolve().name
        status, headers, body = get(LO.url("/api/ai/x"))
        assert (status, body.get("app"), headers.get("X-Release")) == (200, "flask", release)
        assert my_bare_pids() == []

        # A later change of the site reloads, and that reload takes too (the old site's listen is
        # kept on the host).
        later = Profile(
            unset.app,
            unset.root,
            unset.bind,
            unset.node,
            unset.listen,
            defaults=True,
            extra={**unset.extra, "CLIENT_MAX_BODY_SIZE": "5m"},
        )
        again = fab(sandbox, later, repo)
        assert again.returncode == 0, again.stdout + again.stderr
        site = site_path(LO).read_text()
        assert (
            "client_max_body_size 5m;" in site
            and f"listen 127.0.0.1:{LO.listen} default_server;" in site
        )
        assert re.search(r"reload nginx\s+[0-9.]+s\s+Nginx serves the new site", again.stdout), (
            again.stdout
        )
        assert running_id(f"127.0.0.1:{LO.listen}") == site_id(site)
        check = fab(sandbox, later, None, task="nginx-check")
        assert check.returncode == 0, check.stdout + check.stderr
        reload_takes(f"127.0.0.1:{LO.listen}", LO)
    finally:
        cleanup(LO)
        reload_takes("127.0.0.1:7299", LO)


# --- a takeover of a site with an HTTPS server
# -------------------------------------------------------------------

TL = Profile("tls", "/home/ubuntu/tls", 7203, 7213, 7223)
TLS_PORT = 7243


def make_cert(name: str, days: int = 30) -> tuple[Path, Path]:
    CERTS.mkdir(mode=0o700, exist_ok=True)
    cert, key = CERTS / f"{name}.pem", CERTS / f"{name}.key"
    sh(
        f"openssl req -x509 -newkey rsa:2048 -nodes -keyout {key} -out {cert} -days {days} -subj"
        f" /CN={NAME} -addext subjectAltName=DNS:{NAME},IP:127.0.0.1"
    )
    return cert, key


def tl_site(cert: Path, key: Path) -> str:
    apps = f"""    location ~ ^/(api/ai|api/iot|api/lightweight-analyze|api/flask) {{
        proxy_pass http://127.0.0.1:{TL.bind};
    }}
    location = /kept-extra {{
        default_type text/plain;
        return 200 "kept\\n";
    }}
    location / {{
        proxy_pass http://127.0.0.1:{TL.node};
    }}
"""
    return (
        f"server {{\n    listen 127.0.0.1:{TL.listen};\n    server_name {NAME};\n{apps}}}\n"
        f"server {{\n    listen 127.0.0.1:{TLS_PORT} ssl;\n    server_name {NAME};\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n{apps}}}\n"
    )


def fresh_nginx_from_disk(
    tmp: Path, p: Profile, http_port: int, tls_port: int
) -> subprocess.CompletedProcess[str]:
    """A second Nginx master started from the site files as they are on disk (what a restart would
    load), on ports of our own: the shared Nginx is not restarted."""
    site = site_path(p).read_text()
    extras = Path(f"/etc/nginx/sites-available/{p.app}.locations")
    (tmp / "extras.locations").write_text(extras.read_text() if extras.exists() else "")
    site = (
        site.replace(f"127.0.0.1:{p.listen}", f"127.0.0.1:{http_port}")
        .replace(f"127.0.0.1:{TLS_PORT}", f"127.0.0.1:{tls_port}")
        .replace(f"include {extras}*;", f"include {tmp}/extras.locations;")
    )
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(
        f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\nhttp {{\n    access_log"
        " off;\n"
        + "".join(
            f"    {k}_temp_path {tmp}/{k};\n"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {tmp}/site.conf;\n}}\n"
    )
    return sh(f"nginx -p {tmp} -e {tmp}/error.log -c {tmp}/nginx.conf", check=False)


def test_takeover_of_an_https_site_keeps_https_through_a_fresh_start(sandbox, old_venv, tmp_path):
    cleanup(TL)
    private = tmp_path / "fresh"
    private.mkdir()
    try:
        cert, key = make_cert("tl")
        trust = ssl.create_default_context(cafile=str(cert))
        before_state(TL, tl_site(cert, key))
        https = f"https://127.0.0.1:{TLS_PORT}"
        wait_answers(f"{https}/api/ai/x", "flask", context=trust)
        repo = AppRepo(tmp_path / "app")
        unset = settings_without(TL, "NGINX_LISTEN", "SERVER_NAME")
        urls = [TL.url("/api/ai/load"), TL.url("/"), f"{https}/api/ai/load", f"{https}/"]
        with e2e_load(
            urls, threads=3, max_requests=50_000, max_seconds=180, cafile=str(cert)
        ) as load:
            time.sleep(0.5)
            result = fab(sandbox, unset, repo)
            time.sleep(0.5)
        keep_output("https-takeover", result, load)
        assert result.returncode == 0, result.stdout + result.stderr
        counts = load.result()
        assert counts.total > 100 and counts.failed == 0, (counts.samples, result.stdout)
        release = Path(TL.root, "current").resolve().name
        for url, app in ((f"{https}/api/ai/x", "flask"), (f"{https}/", "nodejs")):
            status, body = https_get(url, trust)
            assert (status, body.get("app"), body.get("release")) == (200, app, release), body
        assert https_get(f"{https}/kept-extra", trust) == (
            200,
            {"body": "kept\n"},
        )  # the extra location, kept
        site = site_path(TL).read_text()
        assert f"ssl_certificate {cert};" in site and f"listen 127.0.0.1:{TLS_PORT} ssl;" in site
        assert (
            "return 301" not in site
        )  # the old site served plain HTTP too: TLS_REDIRECT=false was kept

        # What a full restart would load: a fresh Nginx master from the files on disk serves HTTPS
        # too.
        started = fresh_nginx_from_disk(private, TL, 7233, 7253)
        assert started.returncode == 0, started.stderr
        fresh_trust = ssl.create_default_context(cafile=str(cert))
        for url, app in (
            ("https://127.0.0.1:7253/api/ai/x", "flask"),
            ("https://127.0.0.1:7253/", "nodejs"),
        ):
            wait_answers(url, app, 5, fresh_trust)
            status, body = https_get(url, fresh_trust)
            assert (status, body.get("app"), body.get("release")) == (200, app, release), body
        # With that second Nginx master running, a reload of the shared one watches only its own
        # workers.
        later = Profile(
            unset.app,
            unset.root,
            unset.bind,
            unset.node,
            unset.listen,
            defaults=True,
            extra={**unset.extra, "CLIENT_MAX_BODY_SIZE": "5m"},
        )
        again = fab(sandbox, later, repo)
        assert again.returncode == 0, again.stdout + again.stderr
        took = re.search(r"reload nginx\s+([0-9.]+)s", again.stdout)
        assert took and float(took.group(1)) < 2, again.stdout
        status = fab(sandbox, later, None, task="status")
        assert (
            status.returncode == 0 and "TLS" in status.stdout and "WARNING" not in status.stdout
        ), status.stdout
    finally:
        if (private / "nginx.pid").exists():
            sh(f"kill -QUIT {(private / 'nginx.pid').read_text().strip()}", check=False)
        cleanup(TL)
        sh(f"rm -f {CERTS}/tl.pem {CERTS}/tl.key; rmdir {CERTS} 2>/dev/null", check=False)
        reload_takes("127.0.0.1:7299", TL)


# --- a reload that fails after nginx -t passes
# -----------------------------------------------------------------

RF = Profile("refused", "/home/ubuntu/refused", 7205, 7215, 7225)


def test_a_reload_that_does_not_take_fails_the_deploy_and_stops_nothing(sandbox, app_repo):
    loopback = {"NGINX_LISTEN": f"127.0.0.1:{RF.listen}"}
    first = Profile(RF.app, RF.root, RF.bind, RF.node, RF.listen, extra=loopback)
    clean_host(RF)
    holder = socket.socket()
    try:
        assert fab(sandbox, first, app_repo).returncode == 0
        site_before = site_path(RF).read_text()
        apps_before = pm2_apps(RF.app)
        # 7226 is bound by another process but not listening: ss does not list it, `nginx -t`
        # passes, the bind fails.
        holder.bind(("127.0.0.1", 7226))
        wider = Profile(
            RF.app,
            RF.root,
            RF.bind,
            RF.node,
            RF.listen,
            extra={"NGINX_LISTEN": f"127.0.0.1:{RF.listen},127.0.0.1:7226"},
        )
        with e2e_load(
            [RF.url("/api/ai/load"), RF.url("/")], threads=3, max_requests=50_000, max_seconds=120
        ) as load:
            time.sleep(0.5)
            result = fab(sandbox, wider, app_repo)
            time.sleep(0.5)
        keep_output("reload-fails", result, load)
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        assert (
            "Nginx's reload did not take" in out
            and "bind() to 127.0.0.1:7226 failed (98: Address already in use)" in out
        )
        counts = load.result()
        assert counts.total > 100 and counts.failed == 0, (counts.samples, out)
        assert pm2_apps(RF.app) == apps_before  # the same processes, nothing stopped or restarted
        assert site_path(RF).read_text() == site_before
        assert running_id(f"127.0.0.1:{RF.listen}") == site_id(
            site_before
        )  # Nginx serves the previous site
        holder.close()
        reload_takes(f"127.0.0.1:{RF.listen}", RF)
        # Once the port is free the same deploy goes through.
        ok = fab(sandbox, wider, app_repo)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert running_id("127.0.0.1:7226") == site_id(site_path(RF).read_text())
    finally:
        holder.close()
        clean_host(RF)
        reload_takes("127.0.0.1:7299", RF)


# --- certificates, and files that are not ours
# ----------------------------------------------------------------

CK = Profile("certbot", "/home/ubuntu/certbot", 7207, 7217, 7227)
LE = Path("/etc/letsencrypt")


def made_dirs(path: Path) -> list[Path]:
    """Create `path` and its missing parents; return those this call created (to remove only
    them)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing


def test_certificates_are_checked_before_anything_changes_and_status_warns(sandbox, app_repo):
    """certbot's layout is faked under /etc/letsencrypt with names of our own (live/sites.test, the
    hook signalcraft-certbot); only what this test created is removed."""
    clean_host(CK)
    live = LE / "live" / NAME
    hook = LE / "renewal-hooks/deploy/signalcraft-certbot"
    if live.exists() or hook.exists():
        pytest.skip(f"{live} or {hook} exists: not ours to write over")
    created = made_dirs(hook.parent)
    try:
        cert, key = make_cert("ck", days=7)
        _, other_key = make_cert("ck-other")
        tls = {
            "TLS_CERT": str(cert),
            "TLS_KEY": str(other_key),
            "TLS_LISTEN": "127.0.0.1:7247",
            "SERVER_NAME": NAME,
            "NGINX_LISTEN": f"127.0.0.1:{CK.listen}",
        }
        mismatched = fab(
            sandbox, Profile(CK.app, CK.root, CK.bind, CK.node, CK.listen, extra=tls), app_repo
        )
        assert mismatched.returncode != 0
        assert "does not match TLS_CERT" in mismatched.stdout + mismatched.stderr
        assert (
            not site_path(CK).exists()
            and not Path(CK.root, "releases").exists()
            and not pm2_apps(CK.app)
        )

        # certbot's layout: the deploy installs its renewal hook; 7 days left makes `status` warn.
        created += made_dirs(live)
        sh(
            f"cp {cert} {live}/fullchain.pem && cp {key} {live}/privkey.pem && chmod 600"
            f" {live}/privkey.pem"
        )
        good = Profile(
            CK.app,
            CK.root,
            CK.bind,
            CK.node,
            CK.listen,
            extra={**tls, "TLS_CERT": f"{live}/fullchain.pem", "TLS_KEY": f"{live}/privkey.pem"},
        )
        deployed = fab(sandbox, good, app_repo)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert hook.read_text().endswith("nginx -t && nginx -s reload\n") and os.access(
            hook, os.X_OK
        )
        assert (
            plain_status(f"http://127.0.0.1:{CK.listen}/api/ai/x") == 301
        )  # plain HTTP redirects to HTTPS (TLS_REDIRECT on by default)
        assert (
            https_get(
                "https://127.0.0.1:7247/api/ai/x", ssl.create_default_context(cafile=str(cert))
            )[0]
            == 200
        )
        # Maintenance mode on this TLS_REDIRECT site (its reload is proven on the plain-HTTP
        # listener, whose server redirects), then off: a few seconds, no deploy of its own.
        trusted = ssl.create_default_context(cafile=str(cert))
        on = fab(sandbox, good, None, "--switch", "on", task="maintenance")
        assert on.returncode == 0 and "maintenance mode ON" in on.stdout, on.stdout + on.stderr
        assert https_get("https://127.0.0.1:7247/api/ai/x", trusted)[0] == 503
        assert https_get("https://127.0.0.1:7247/api/flask/health", trusted)[0] == 200
        off = fab(sandbox, good, None, "--switch", "off", task="maintenance")
        assert off.returncode == 0 and "maintenance mode OFF" in off.stdout, off.stdout + off.stderr
        assert https_get("https://127.0.0.1:7247/api/ai/x", trusted)[0] == 200
        shown = fab(sandbox, good, None, task="status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert re.search(
            r"WARNING\s+the certificate expires in [67](\.\d)? days \(under 14\)", shown.stdout
        ), shown.stdout
        digest = hashlib.sha256(hook.read_bytes()).hexdigest()
        again = fab(
            sandbox,
            Profile(
                CK.app,
                CK.root,
                CK.bind,
                CK.node,
                CK.listen,
                extra={**good.extra, "CLIENT_MAX_BODY_SIZE": "2m"},
            ),
            app_repo,
        )
        assert (
            again.returncode == 0 and "certbot hook" in again.stdout and "in place" in again.stdout
        ), again.stdout
        assert hashlib.sha256(hook.read_bytes()).hexdigest() == digest
    finally:
        clean_host(CK)
        sh(f"rm -f {hook} {live}/fullchain.pem {live}/privkey.pem", check=False)
        for folder in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        sh(
            f"rm -f {CERTS}/ck.pem {CERTS}/ck.key {CERTS}/ck-other.pem {CERTS}/ck-other.key; rmdir"
            f" {CERTS} 2>/dev/null",
            check=False,
        )
        reload_takes("127.0.0.1:7299", CK)


def test_a_site_file_not_ours_and_nginx_conf_are_refused(sandbox, app_repo):
    clean_host(CK)
    hand_made = f"server {{\n    listen 127.0.0.1:{CK.listen};\n    return 200 'mine';\n}}\n"
    try:
        site_path(CK).write_text(hand_made)
        refused = fab(sandbox, CK, app_repo)
        assert refused.returncode != 0
        assert "was not written by signalcraft-deploy" in refused.stdout + refused.stderr
        assert site_path(CK).read_text() == hand_made and not Path(CK.root, "releases").exists()

        main = Path("/etc/nginx/nginx.conf").read_bytes()
        bad = fab(
            sandbox,
            Profile(
                CK.app,
                CK.root,
                CK.bind,
                CK.node,
                CK.listen,
                extra={"NGINX_SITE": "/etc/nginx/nginx.conf"},
            ),
            app_repo,
        )
        assert bad.returncode == 2 and "not Nginx's main configuration" in bad.stdout + bad.stderr
        assert Path("/etc/nginx/nginx.conf").read_bytes() == main
    finally:
        clean_host(CK)
        reload_takes("127.0.0.1:7299", CK)
