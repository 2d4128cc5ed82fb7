"""Verified reloads, listen addresses, HTTPS, keeping what a user's site had, writing only what is
ours.

The reload program and the TLS check run for real here: against a private Nginx master started in a
scratch prefix (its own pid file, error log and loopback port), and against certificates made with
`openssl`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from signalcraft_deploy import remote
from signalcraft_deploy.core import oldsite
from signalcraft_deploy.core.facts import HostFacts, Listener
from signalcraft_deploy.core.plan import PlanError, _check_listen, make_plan
from signalcraft_deploy.core.render import (
    certbot_hook_path,
    render_certbot_hook,
    render_nginx_site,
    site_id,
    written_by_us,
)
from signalcraft_deploy.core.settings import Listen, SettingsError
from signalcraft_deploy.host import nginx as nginx_ops
from tests.unit.conftest import mock_host

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
OPENSSL = shutil.which("openssl")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_cert(
    folder: Path,
    name: str,
    days: int = 30,
    cn: str = "sites.test",
    san: str = "DNS:sites.test,IP:127.0.0.1",
) -> tuple[Path, Path]:
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(days),
            "-subj",
            f"/CN={cn}",
            "-addext",
            f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


# --- settings
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("80", (Listen(None, 80),)),
        ("127.0.0.1:8080", (Listen("127.0.0.1", 8080),)),
        ("[::1]:8080", (Listen("::1", 8080),)),
        ("0.0.0.0:80", (Listen(None, 80),)),
        ("*:80", (Listen(None, 80),)),
        (
            "127.0.0.1:8080, [::1]:8080,127.0.0.1:8080",
            (Listen("127.0.0.1", 8080), Listen("::1", 8080)),
        ),
    ],
)
def test_nginx_listen_takes_ports_addresses_and_lists(
    load, text: str, want: tuple[Listen, ...]
) -> None:
    s = load({"NGINX_LISTEN": text})
    assert s.nginx_listen == want
    assert s.nginx_port == want[0].port


@pytest.mark.parametrize(
    "text",
    ["localhost:80", "127.0.0.1", "[::1]", "1.2.3.999:80", "80;", "80 ssl", "0", "127.0.0.1:70000"],
)
def test_nginx_listen_refuses_what_is_not_an_address(load, text: str) -> None:
    with pytest.raises(SettingsError, match="NGINX_LISTEN"):
        load({"NGINX_LISTEN": text})


def test_listen_urls_reach_the_listener_from_the_host() -> None:
    assert [
        Listen(None, 80).local,
        Listen("::", 80).local,
        Listen("::1", 81).local,
        Listen("10.0.0.5", 80).local,
    ] == ["127.0.0.1:80", "[::1]:80", "[::1]:81", "10.0.0.5:80"]


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        ("/etc/nginx/nginx.conf", "not Nginx's main configuration"),
        (
            "/etc/nginx/snippets/x.conf",
            "a file of a plain name under /etc/nginx/ in Nginx's site folders",
        ),
        (
            "/home/deploy/app/site.conf",
            "a file of a plain name under /etc/nginx/ in Nginx's site folders",
        ),
        ("/etc/nginx/conf.d/x", "conf.d/<name>.conf"),
        ("/etc/nginx/sites-enabled/x", "sites-available/<name> or"),
    ],
)
def test_nginx_site_must_be_a_site_file_never_nginx_conf(load, site: str, expected: str) -> None:
    with pytest.raises(SettingsError, match="NGINX_SITE") as err:
        load({"NGINX_SITE": site})
    assert expected in str(err.value)


def test_tls_needs_both_files_and_its_ports_are_checked(load) -> None:
    with pytest.raises(SettingsError, match="TLS_KEY"):
        load({"TLS_CERT": "/etc/ssl/x.pem"})
    with pytest.raises(SettingsError, match="TLS_LISTEN.*port 3000"):
        load({"TLS_CERT": "/etc/ssl/x.pem", "TLS_KEY": "/etc/ssl/x.key", "TLS_LISTEN": "3000"})
    s = load(
        {"TLS_CERT": "/etc/ssl/x.pem", "TLS_KEY": "/etc/ssl/x.key", "TLS_LISTEN": "127.0.0.1:8443"}
    )
    assert s.tls and s.nginx_url == "https://127.0.0.1:8443"
    assert (
        load({"TLS_LISTEN": "3000"}).nginx_url == "http://127.0.0.1:80"
    )  # TLS off: TLS_LISTEN does not count


# --- the rendered site
# ---------------------------------------------------------------------------------------------


def test_site_answers_its_own_id_and_carries_the_header(load) -> None:
    s = load()
    site = render_nginx_site(s)
    assert written_by_us(site) and site_id(site) and len(site_id(site) or "") == 16
    assert site_id(render_nginx_site(s, python_address="127.0.0.1:8002")) != site_id(site)
    assert site_id(render_nginx_site(s)) == site_id(site)  # the same text, the same id
    assert (
        not written_by_us("server { listen 80; }\n") and site_id("server { listen 80; }\n") is None
    )


def test_a_site_template_in_templates_dir_is_refused_by_its_key(load, tmp_path: Path) -> None:
    """Root renders the site from its own shape: a user's template for it would be text root writes
    into Nginx."""
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "nginx-site.conf.j2").write_text("server { listen 80; }\n")
    with pytest.raises(SettingsError, match="TEMPLATES_DIR.*without nginx-site.conf.j2"):
        load({"TEMPLATES_DIR": str(tmp_path / "tpl")})


@pytest.mark.parametrize(
    "path", ["/home/deploy/x.pem", "engine:pkcs11:id", "/tmp/x.key", "/etc/ssl/../../home/x.key"]
)
def test_tls_files_outside_roots_folders_are_refused_by_their_key(load, path: str) -> None:
    for key in ("TLS_CERT", "TLS_KEY"):
        pair = {"TLS_CERT": "/etc/ssl/x.pem", "TLS_KEY": "/etc/ssl/x.key", key: path}
        with pytest.raises(SettingsError, match=key):
            load(pair)


@pytest.fixture
def ssl_folder() -> Iterator[Path]:
    """A folder of this test's own under /etc/ssl (TLS files must be in root's folders), removed
    after."""
    if not os.access("/etc/ssl", os.W_OK):
        pytest.skip("needs to write under /etc/ssl (root)")
    folder = Path(tempfile.mkdtemp(prefix="signalcraft-unit-", dir="/etc/ssl"))
    yield folder
    shutil.rmtree(folder)


def test_tls_site_passes_nginx_t_with_a_real_certificate(
    load, nginx_tester, ssl_folder: Path
) -> None:
    cert, key = make_cert(ssl_folder, "site")
    s = load(
        {
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
            "NGINX_LISTEN": "127.0.0.1:18080,[::1]:18080",
            "TLS_LISTEN": "127.0.0.1:18443",
            "SERVER_NAME": "sites.test",
            "CLIENT_MAX_BODY_SIZE": "10m",
        }
    )
    site = render_nginx_site(s)
    result = nginx_tester.check(site)
    assert result.ok, result.output
    assert "listen 127.0.0.1:18443 ssl;" in site and "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert (
        "return 301 https://$host:18443$request_uri;" in site
        and "client_max_body_size 10m;" in site
    )
    no_redirect = render_nginx_site(
        load({"TLS_CERT": str(cert), "TLS_KEY": str(key), "TLS_REDIRECT": "false"})
    )
    assert (
        "return 301" not in no_redirect and no_redirect.count("proxy_pass http://signalcraft_") == 4
    )
    assert nginx_tester.check(no_redirect).ok


def test_certbot_hook_only_for_certbot_certificates(load) -> None:
    s = load(
        {
            "TLS_CERT": "/etc/letsencrypt/live/shop.example.com/fullchain.pem",
            "TLS_KEY": "/etc/letsencrypt/live/shop.example.com/privkey.pem",
            "APP_NAME": "shop",
        }
    )
    assert certbot_hook_path(s) == "/etc/letsencrypt/renewal-hooks/deploy/signalcraft-shop"
    hook = render_certbot_hook(s)
    assert hook.startswith("#!/bin/sh\n# Rendered by signalcraft-deploy.") and hook.endswith(
        "nginx -t && nginx -s reload\n"
    )
    assert subprocess.run(["sh", "-n"], input=hook, text=True).returncode == 0
    assert (
        certbot_hook_path(load({"TLS_CERT": "/etc/ssl/x.pem", "TLS_KEY": "/etc/ssl/x.key"})) is None
    )


# --- the plan: listen changes a reload cannot make, files that are not ours
# ------------------------------------


def nginx_holding(*addresses: str) -> HostFacts:
    listeners = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        listeners.append(Listener(host.strip("[]"), int(port), (10,), ("nginx",)))
    return HostFacts(listeners=listeners)


@pytest.mark.parametrize(
    ("listen", "held", "refused"),
    [
        ("7221", ["127.0.0.1:7221"], True),  # the measured trap
        ("[::]:7221", ["[::1]:7221"], True),
        ("7221", ["[::1]:7221"], False),  # another family: no clash
        ("7221", ["127.0.0.1:7221", "0.0.0.0:7221"], False),  # Nginx holds the wildcard already
        ("127.0.0.1:7221", ["127.0.0.1:7221"], False),
        ("7221", [], False),
    ],
)
def test_a_wildcard_listen_over_an_address_nginx_holds_is_refused(
    load, listen: str, held: list[str], refused: bool
) -> None:
    s = load({"NGINX_LISTEN": listen})
    if refused:
        with pytest.raises(PlanError, match="Linux refuses a wildcard bind") as err:
            _check_listen(s, nginx_holding(*held))
        assert "NGINX_LISTEN=" in str(err.value)
    else:
        _check_listen(s, nginx_holding(*held))


def test_a_port_held_by_another_program_is_refused(load) -> None:
    facts = HostFacts(listeners=[Listener("127.0.0.1", 8443, (77,), ("python3",))])
    with pytest.raises(PlanError, match="TLS_LISTEN 127.0.0.1:8443 is held by pid 77"):
        _check_listen(
            load(
                {
                    "TLS_CERT": "/etc/ssl/x.pem",
                    "TLS_KEY": "/etc/ssl/x.key",
                    "TLS_LISTEN": "127.0.0.1:8443",
                }
            ),
            facts,
        )


def test_a_site_file_we_did_not_write_is_refused_unless_taken_over(tmp_path: Path) -> None:
    from tests.unit.test_plan import OLD, SHA2, Source, live_host, manifest_for

    hand_made = "server {\n    listen 80;\n}\n"
    s, m, configs = manifest_for(tmp_path, Source(sha=SHA2))
    with pytest.raises(PlanError, match="was not written by signalcraft-deploy"):
        make_plan(s, m, configs, live_host(tmp_path, OLD, site_text=hand_made))
    ours = live_host(
        tmp_path, OLD
    )  # the same host with our own (older) site file: planned as usual
    assert make_plan(s, m, configs, ours).action("nginx").how == "none"


# --- the old site at a takeover
# ------------------------------------------------------------------------------------

OLD_SITE = """\
server {
    listen 127.0.0.1:7221;
    server_name shop.example.com www.shop.example.com;
    client_max_body_size 20m;
    location ~ ^/(api/ai|api/iot|api/lightweight-analyze|api/flask) {
        proxy_pass http://127.0.0.1:8001;
    }
    location /static/ {
        alias /var/www/static/;
    }
    location / {
        proxy_pass http://127.0.0.1:3000;
    }
    gzip on;
}
server {
    listen 127.0.0.1:8443 ssl; # managed by Certbot
    server_name shop.example.com www.shop.example.com;
    ssl_certificate /etc/letsencrypt/live/shop.example.com/fullchain.pem; # managed by Certbot
    ssl_certificate_key /etc/letsencrypt/live/shop.example.com/privkey.pem; # managed by Certbot
    include /etc/letsencrypt/options-ssl-nginx.conf; # managed by Certbot
    ssl_dhparam /etc/letsencrypt/ssl-dhparams.pem; # managed by Certbot
    location / {
        proxy_pass http://127.0.0.1:3000;
    }
}
"""


def test_old_site_settings_extras_and_what_would_be_dropped(load) -> None:
    old = oldsite.read(load(), OLD_SITE)
    assert old.settings == {
        "NGINX_LISTEN": "127.0.0.1:7221",
        "TLS_LISTEN": "127.0.0.1:8443",
        "SERVER_NAME": "shop.example.com www.shop.example.com",
        "CLIENT_MAX_BODY_SIZE": "20m",
        "TLS_CERT": "/etc/letsencrypt/live/shop.example.com/fullchain.pem",
        "TLS_KEY": "/etc/letsencrypt/live/shop.example.com/privkey.pem",
        "TLS_REDIRECT": "false",
    }
    assert [e["args"] for e in old.extras] == [["/static/"]]
    assert old.extras_text() is not None and written_by_us(old.extras_text())
    assert (
        len(old.dropped) == 1
        and "gzip on" in old.dropped[0]
        and "no place for it" in old.dropped[0]
    )


def test_certbots_redirect_server_is_tls_redirect(load) -> None:
    redirect = """\
server {
    if ($host = shop.example.com) {
        return 301 https://$host$request_uri;
    } # managed by Certbot
    listen 80;
    server_name shop.example.com;
    return 404; # managed by Certbot
}
"""
    old = oldsite.read(
        load(),
        OLD_SITE.split("server {\n    listen 127.0.0.1:8443")[0].replace("    gzip on;\n", "")
        + "server {\n    listen 127.0.0.1:8443"
        + OLD_SITE.split("listen 127.0.0.1:8443")[1]
        + redirect,
    )
    assert (
        old.settings["TLS_REDIRECT"] == "true"
        and old.settings["NGINX_LISTEN"] == "127.0.0.1:7221,80"
    )
    assert old.dropped == []


def test_the_old_sites_values_are_defaults_a_set_key_wins(load) -> None:
    s = load({"SERVER_NAME": "mine.example.com"})
    adopted = oldsite.apply(
        s, {"NGINX_LISTEN": "127.0.0.1:7221", "SERVER_NAME": "shop.example.com"}, "the old site"
    )
    assert (
        adopted.nginx_listen == (Listen("127.0.0.1", 7221),)
        and adopted.origins["NGINX_LISTEN"] == "the old site"
    )
    assert adopted.server_name == "mine.example.com"


def test_the_rendered_extras_pass_nginx_t_included_by_the_site(
    load, nginx_tester, tmp_path: Path
) -> None:
    extras = oldsite.read(load(), OLD_SITE).extras_text()
    s = load({"NGINX_SITE": "/etc/nginx/sites-available/x"})
    site = render_nginx_site(s).replace(
        f"include {s.nginx_extras[:-1]}[s];", f"include {tmp_path}/x.location[s];"
    )
    (tmp_path / "x.locations").write_text(extras or "")
    assert nginx_tester.check(site).ok


# --- remote/reload_nginx.py against a private Nginx master
# -----------------------------------------------------


class PrivateNginx:
    """An Nginx master of our own in a scratch prefix, on a free loopback port."""

    def __init__(self, prefix: Path):
        self.prefix = prefix
        self.port = free_port()
        self.conf = prefix / "nginx.conf"
        self.site = prefix / "site.conf"

    def write(self, listen: str, site_id_value: str) -> None:
        marker = f'location = /.signalcraft-deploy-site {{ return 200 "{site_id_value}\\n"; }}'
        self.site.write_text(f"server {{\n    listen {listen};\n    {marker}\n}}\n")
        p = self.prefix
        self.conf.write_text(
            f"pid {p}/nginx.pid;\nerror_log {p}/error.log;\nworker_processes 2;\nevents {{}}\nhttp"
            " {\n    access_log off;\n"
            + "".join(
                f"    {k}_temp_path {p}/{k};\n"
                for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"    include {self.site};\n}}\n"
        )

    def cmd(self, *args: str) -> list[str]:
        assert NGINX
        return [
            NGINX,
            "-p",
            str(self.prefix),
            "-e",
            str(self.prefix / "error.log"),
            "-c",
            str(self.conf),
            *args,
        ]

    def reload(self, expect: str | None, wait: int = 5) -> tuple[int, dict]:
        marker = (
            {
                "url": f"http://127.0.0.1:{self.port}/.signalcraft-deploy-site",
                "host": None,
                "expect": expect,
            }
            if expect
            else None
        )
        spec = {
            "cmd": " ".join(self.cmd("-s", "reload")),
            "wait": wait,
            "marker": marker,
            "conf": str(self.conf),
        }
        done = subprocess.run(
            [sys.executable, "-I", "-", json.dumps(spec)],
            input=remote.program("reload_nginx"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        pid_file = self.prefix / "nginx.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGQUIT)


@pytest.fixture
def private_nginx(tmp_path: Path):
    if NGINX is None:
        pytest.skip("nginx is not installed")
    n = PrivateNginx(tmp_path)
    n.write(f"127.0.0.1:{n.port}", "aaaaaaaaaaaaaaaa")
    started = subprocess.run(n.cmd(), capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        pytest.skip(f"cannot start a private nginx here: {started.stderr.strip()}")
    try:
        yield n
    finally:
        n.stop()


def test_reload_that_takes_is_proven_by_new_workers_and_the_marker(
    private_nginx: PrivateNginx,
) -> None:
    n = private_nginx
    n.write(f"127.0.0.1:{n.port}", "bbbbbbbbbbbbbbbb")
    started = time.monotonic()
    code, verdict = n.reload("bbbbbbbbbbbbbbbb")
    assert (code, verdict["ok"], verdict["why"]) == (0, True, "")
    assert len(verdict["new"]) == 2 and verdict["master"] == int(
        (n.prefix / "nginx.pid").read_text()
    )
    assert (
        time.monotonic() - started < 3
    )  # the host's other Nginx master and its workers are not waited for


def test_a_reload_does_not_wait_for_old_workers_holding_connections_and_counts_them(
    private_nginx: PrivateNginx,
) -> None:
    """The issue's trap W1: old workers that hold a WebSocket (here: a request its upstream never
    answers) kept each reload waiting its whole 10 s; now the reload is proven without them."""
    n = private_nginx
    silent = socket.socket()  # accepts (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    upstream = f"proxy_pass http://127.0.0.1:{silent.getsockname()[1]};"
    n.write(f"127.0.0.1:{n.port}", "bbbbbbbbbbbbbbbb")
    n.site.write_text(n.site.read_text().replace("\n}", f"\n    location / {{ {upstream} }}\n}}"))
    assert n.reload("bbbbbbbbbbbbbbbb")[0] == 0
    held = [socket.create_connection(("127.0.0.1", n.port)) for _ in range(2)]
    for client in held:
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    try:
        n.write(f"127.0.0.1:{n.port}", "cccccccccccccccc")
        started = time.monotonic()
        code, verdict = n.reload("cccccccccccccccc", wait=10)
        assert (code, verdict["why"]) == (0, "")
        assert time.monotonic() - started < 3
        assert verdict["draining"] >= 1 and verdict["held"] == 2
    finally:
        for client in held:
            client.close()
        silent.close()


def test_reload_whose_marker_is_not_answered_fails(private_nginx: PrivateNginx) -> None:
    code, verdict = private_nginx.reload("cccccccccccccccc", wait=1)
    assert code == 65 and "not the new site's id cccccccccccccccc" in verdict["why"]


def test_reload_that_cannot_bind_fails_quoting_nginx(private_nginx: PrivateNginx) -> None:
    """The measured trap: `listen PORT` (every address) over `listen 127.0.0.1:PORT` the master
    holds."""
    n = private_nginx
    n.write(str(n.port), "dddddddddddddddd")
    assert (
        subprocess.run(n.cmd("-t"), capture_output=True, timeout=30).returncode == 0
    )  # nginx -t passes
    started = time.monotonic()
    code, verdict = n.reload("dddddddddddddddd")
    assert code == 65 and not verdict["ok"]
    assert f"bind() to 0.0.0.0:{n.port} failed (98: Address already in use)" in verdict["why"]
    assert (
        time.monotonic() - started < 4
    )  # the [emerg] ends the wait once the master gives up (its bind retries: 2 s)
    # Nginx still serves the old configuration; putting it back makes reloads take again.
    n.write(f"127.0.0.1:{n.port}", "aaaaaaaaaaaaaaaa")
    assert n.reload("aaaaaaaaaaaaaaaa")[0] == 0


def test_reload_without_a_master_says_so(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/none.pid;\nevents {{}}\n")
    spec = {"cmd": "true", "wait": 1, "marker": None, "conf": str(conf)}
    done = subprocess.run(
        [sys.executable, "-I", "-", json.dumps(spec)],
        input=remote.program("reload_nginx"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 66 and "no running Nginx master" in json.loads(done.stdout)["why"]


# --- remote/tls_check.py
# -----------------------------------------------------------------------------------------


def tls_check(cert: Path, key: Path, names: list[str]) -> dict:
    spec = {"cert": str(cert), "key": str(key), "names": names}
    done = subprocess.run(
        [sys.executable, "-I", "-", json.dumps(spec)],
        input=remote.program("tls_check"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def test_tls_check_passes_a_matching_pair_that_covers_the_name(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "good", days=30)
    verdict = tls_check(cert, key, ["sites.test"])
    assert verdict["problems"] == [] and 29 < verdict["days_left"] <= 30
    assert "sites.test" in verdict["names"] and "127.0.0.1" in verdict["names"]


def test_tls_check_names_each_problem(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path, "one")
    _, other_key = make_cert(tmp_path, "two")
    verdict = tls_check(cert, other_key, ["shop.example.com"])
    assert any("does not match TLS_CERT" in p for p in verdict["problems"])
    assert any("does not cover SERVER_NAME shop.example.com" in p for p in verdict["problems"])
    missing = tls_check(tmp_path / "nope.pem", other_key, [])
    assert any("TLS_CERT" in p and "cannot be read" in p for p in missing["problems"])


def test_tls_check_wildcards_cover_one_label(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "wild", cn="example.com", san="DNS:*.example.com")
    assert tls_check(cert, key, ["shop.example.com"])["problems"] == []
    assert tls_check(cert, key, ["a.b.example.com"])["problems"] != []


# --- host/nginx.reload_nginx: a reload that did not take is a failure quoting Nginx
# ---------------------------


def test_reload_nginx_raises_with_nginxs_reason_and_the_fix(load) -> None:
    import re as re_

    from invoke import Result
    from invoke.exceptions import Exit

    from signalcraft_deploy.host.nginx import reload_nginx

    why = "[emerg] 22416#22416: bind() to 0.0.0.0:7221 failed (98: Address already in use)"
    c = mock_host(
        run={
            re_.compile(".*nginx -s reload"): Result(
                stdout=json.dumps({"ok": False, "why": why}) + "\n", exited=65
            )
        },
        repeat=True,
    )
    s = load()
    with pytest.raises(Exit) as err:
        reload_nginx(c, s, render_nginx_site(s))
    message = str(err.value.message)
    assert "Nginx's reload did not take" in message and why in message and "NGINX_LISTEN" in message
    ok = mock_host(
        run={
            re_.compile(".*nginx -s reload"): Result(
                stdout='{"ok": true, "why": "", "master": 7, "seconds": 0.1}\n'
            )
        },
        repeat=True,
    )
    assert reload_nginx(ok, s)["master"] == 7


def test_the_marker_is_asked_on_the_first_listener_with_the_sites_name(load) -> None:
    from signalcraft_deploy.host.nginx import marker_spec

    s = load(
        {
            "NGINX_LISTEN": "127.0.0.1:8080,[::1]:8080",
            "SERVER_NAME": "shop.example.com www.example.com",
        }
    )
    site = render_nginx_site(s)
    assert marker_spec(s, site) == {
        "url": "http://127.0.0.1:8080/.signalcraft-deploy-site",
        "host": "shop.example.com",
        "expect": site_id(site),
    }
    assert marker_spec(s, "server { listen 80; }\n") is None  # a site not ours: no id to ask for


def test_old_workers_still_draining_are_counted_with_the_time_since_the_reload(load) -> None:
    ps = (
        "  120 nginx: master process /usr/sbin/nginx\n"
        "   40 nginx: worker process is shutting down\n"
        "   41 nginx: worker process is shutting down\n"
        "   12 nginx: worker process\n"
        "   13 nginx: worker process\n"
    )
    assert nginx_ops.old_workers(ps) == (2, 12)
    assert nginx_ops.old_workers("    5 nginx: worker process\n") == (0, 5)
    note = nginx_ops.draining_note(load(), {"draining": 2, "held": 5})
    assert note == (
        "; 2 old worker(s) still hold 5 connection(s) (Nginx closes what is left 300s after the"
        " reload (NGINX_DRAIN_SECONDS))"
    )
    assert nginx_ops.draining_note(load(), {"draining": 0, "held": 0}) == ""
    assert "no bound" in nginx_ops.draining_note(
        load({"NGINX_DRAIN_SECONDS": "0"}), {"draining": 1, "held": 1}
    )
