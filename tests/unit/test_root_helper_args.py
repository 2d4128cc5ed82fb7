"""The root helper (remote/root_helper.py) refuses every argument it was not made for, before
anything runs; it writes only in root's folders from what it rendered or kept itself, and a site
belongs to the user and deploy root that installed it. The client side (host/root.py) installs it
when it may and stops with one clear message when it may not.

The verbs run here as functions, with the helper's folders (STATE, the site folders, LIB, ...) moved
into tmp_path and `nginx -t` replaced by a verdict the test sets.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import crossplane
import pytest
from invoke import Result
from invoke.exceptions import Exit

from signalcraft_deploy.core import settings as settings_mod
from signalcraft_deploy.core.facts import HelperState
from signalcraft_deploy.core.render import SITE_HEADER, certbot_hook_path, render_certbot_hook
from signalcraft_deploy.host import facts, root
from signalcraft_deploy.remote import nginx_site, program, source
from signalcraft_deploy.remote import root_helper as rh
from tests.unit.conftest import mock_host

SITE = "/etc/nginx/sites-available/shop"
RUN_CHILD = rh.run_child  # the real one (Host replaces it)
TEST_PASSES = rh.test_passes
A = (
    os.getuid()
)  # the user that installs first (its own processes are the ones a takeover may touch)
B = 65534  # another deploy user (nobody)
X, Y = (
    "/srv/shop/.deploy",
    "/srv/other/.deploy",
)  # two deploy roots: names only, root never opens them


# ----------------------------------------------------------------------------- argument checks
# (pure)


@pytest.mark.parametrize(
    "value",
    [
        "/tmp/shop",
        "/etc/shadow",
        "/etc/nginx/nginx.conf",
        "/etc/nginx/sites-available/../../shadow",
        "/etc/nginx/sites-available/./shop",
        "etc/nginx/sites-available/shop",
        "/etc/nginx/sites-available/sub/shop",
        "/etc/nginx/sites-available/",
        "/etc/nginx/sites-available/default",
        "/etc/nginx/sites-available/shop name",
        "/etc/nginx/sites-available/.hidden",
        "/etc/nginx/conf.d/x\n",
        "/etc/nginx/sites-enabled/shop",
        "/etc/nginx/conf.d/shop",
        "/etc/nginx/conf.d/shop.locations",
        "/etc/nginx/sites-available/shop.locations",
        "/etc/nginx/sites-available/shop.signalcraft-prev",
    ],
)
def test_a_site_path_outside_the_site_folders_or_not_plain_is_refused(value: str) -> None:
    with pytest.raises(rh.Refused):
        rh.a_site(value)


@pytest.mark.parametrize(
    "value", ["/etc/nginx/sites-available//shop", "/etc/nginx/conf.d//shop.conf"]
)
def test_a_site_path_with_a_doubled_slash_is_refused(value: str) -> None:
    with pytest.raises(rh.Refused):
        rh.a_site(value)


@pytest.mark.parametrize(
    "value", [SITE, "/etc/nginx/conf.d/shop.conf", "/etc/nginx/sites-available/shop.example.com"]
)
def test_our_site_files_are_accepted(value: str) -> None:
    assert rh.a_site(value) == value


def test_the_link_and_extras_of_a_site_are_its_own() -> None:
    assert rh.link_of(SITE) == "/etc/nginx/sites-enabled/shop"
    assert rh.link_of("/etc/nginx/conf.d/shop.conf") == ""  # conf.d: Nginx includes it itself
    assert nginx_site.extras_path(SITE) == SITE + ".locations"
    assert (
        nginx_site.extras_path("/etc/nginx/conf.d/shop.conf")
        == "/etc/nginx/conf.d/shop.conf.locations"
    )


@pytest.mark.parametrize("value", ["/srv/shop/.deploy", "/home/deploy/app/.deploy"])
def test_a_state_name_is_a_deploy_roots_dot_deploy(value: str) -> None:
    assert rh.state_name(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "srv/shop/.deploy",
        "/srv/shop",
        "/srv/shop/.deploy/",
        "/srv/../shop/.deploy",
        "/srv//shop/.deploy",
        "/srv/shop/./.deploy",
        "/srv/sh op/.deploy",
        "/srv/$x/.deploy",
        "/srv/shop/.deploy\n",
        "/srv/shop/.deployx",
        "/.deploy/x",
    ],
)
def test_other_state_names_are_refused(value: str) -> None:
    with pytest.raises(rh.Refused):
        rh.state_name(value)


@pytest.mark.parametrize(
    "value",
    [
        "cp /etc/shadow /tmp/x",
        "nginx -t; id",
        "nginx -t && id",
        "sh -c id",
        "nginx -s stop",
        "nginx  -t",
        "/tmp/nginx -t",
        "nginx -c /tmp/evil.conf -t",
        "nginx -t -g 'user root;'",
        "nginx -T",
        "./nginx -t",
        "nginx -t\n",
        " nginx -t",
    ],
)
def test_commands_that_are_not_the_fixed_nginx_ones_are_refused(value: str) -> None:
    with pytest.raises(rh.Refused):
        rh.command(value, rh.TEST_RE, "the test command")
    with pytest.raises(rh.Refused):
        rh.command(value, rh.RELOAD_RE, "the reload command")


def test_the_fixed_commands_become_argv_without_a_shell() -> None:
    assert rh.command("/usr/sbin/nginx -t -q", rh.TEST_RE, "t") == ["/usr/sbin/nginx", "-t", "-q"]
    assert rh.command("systemctl reload nginx", rh.RELOAD_RE, "r") == [
        "systemctl",
        "reload",
        "nginx",
    ]
    # the same fixed lists as the settings that name them
    assert (
        rh.TEST_RE.pattern == settings_mod._NGINX_TEST_RE
        and rh.RELOAD_RE.pattern == settings_mod._NGINX_RELOAD_RE
    )


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2", True),
        ("4194304", True),
        ("0", False),
        ("1", False),
        ("-5", False),
        ("1e3", False),
        ("", False),
        ("99999999999", False),
        (" 5", False),
    ],
)
def test_pids_are_whole_numbers_never_0_or_1(value: str, ok: bool) -> None:
    if ok:
        assert rh.integer(value, "the pid", 2, 2**22) == int(value)
    else:
        with pytest.raises(rh.Refused):
            rh.integer(value, "the pid", 2, 2**22)


def test_line_numbers() -> None:
    assert rh.line_numbers("-") == [] and rh.line_numbers("3,12") == [3, 12]
    for bad in ("", "0", "3,", "3;4", "a", "3 4", "-1"):
        with pytest.raises(rh.Refused):
            rh.line_numbers(bad)


def test_the_reload_spec_is_checked_field_by_field() -> None:
    good = {
        "cmd": "nginx -s reload",
        "wait": 10,
        "marker": {
            "url": "http://127.0.0.1:8080/.signalcraft-deploy-site",
            "host": "shop.example.com",
            "expect": "0123456789abcdef",
        },
    }
    assert json.loads(rh.reload_spec(json.dumps(good))) == good
    assert json.loads(rh.reload_spec(json.dumps({**good, "marker": None})))["marker"] is None
    bad = [
        {**good, "cmd": "kill -9 1"},
        {**good, "wait": "10; id"},
        {**good, "conf": "/tmp/x.conf"},
        {**good, "marker": {**good["marker"], "url": "http://evil.example/x"}},
        {**good, "marker": {**good["marker"], "host": "a b"}},
        {**good, "marker": {**good["marker"], "expect": "x"}},
    ]
    for spec in bad:
        with pytest.raises(rh.Refused):
            rh.reload_spec(json.dumps(spec))
    for text in ("not json", "[]", '"x"'):
        with pytest.raises(rh.Refused):
            rh.reload_spec(text)


def test_the_tls_spec_is_checked() -> None:
    spec = {
        "cert": "/etc/letsencrypt/live/shop/fullchain.pem",
        "key": "/etc/letsencrypt/live/shop/privkey.pem",
        "names": ["shop.example.com"],
    }
    assert json.loads(rh.tls_spec(json.dumps(spec))) == spec
    for bad in (
        {**spec, "cert": "relative.pem"},
        {**spec, "key": "/etc/../shadow"},
        {**spec, "names": ["a b"]},
        {"cert": "/x"},
        {**spec, "key": "/home/deploy/key.pem"},
        {**spec, "cert": "engine:pkcs11:x"},
        {**spec, "names": "a"},
        {**spec, "extra": 1},
    ):
        with pytest.raises(rh.Refused):
            rh.tls_spec(json.dumps(bad))


def test_the_certbot_hook_is_the_one_the_tool_renders(load) -> None:
    s = load(
        {
            "TLS_CERT": "/etc/letsencrypt/live/shop/fullchain.pem",
            "TLS_KEY": "/etc/letsencrypt/live/shop/privkey.pem",
            "NGINX_RELOAD_CMD": "systemctl reload nginx",
        }
    )
    path, text = rh.certbot_hook(
        s.app_name, s.tls_cert, s.nginx_site, s.nginx_test_cmd, s.nginx_reload_cmd
    )
    assert (path, text) == (certbot_hook_path(s), render_certbot_hook(s))
    for args in (
        ("../x", s.tls_cert),
        (s.app_name, "/etc/ssl/private/x.pem"),
        (s.app_name, s.tls_cert + "\nid"),
    ):
        with pytest.raises(rh.Refused):
            rh.certbot_hook(*args, s.nginx_site, s.nginx_test_cmd, s.nginx_reload_cmd)
    with pytest.raises(rh.Refused):
        rh.certbot_hook(
            s.app_name, s.tls_cert, "/etc/cron.d/x", s.nginx_test_cmd, s.nginx_reload_cmd
        )
    with pytest.raises(rh.Refused):
        rh.certbot_hook(s.app_name, s.tls_cert, s.nginx_site, "nginx -t; id", s.nginx_reload_cmd)


def test_the_helpers_constants_are_the_tools() -> None:
    assert rh.HEADER == SITE_HEADER == nginx_site.SITE_HEADER and rh.MARK == facts.MARK
    assert rh.HELPER == root.HELPER and rh.LIB == root.LIB
    assert source("root_helper.py").splitlines()[0] == "#!/usr/bin/python3 -IS"


# ----------------------------------------------------------------------------- main: one line, exit
# 2


def test_main_refuses_an_unknown_verb_with_one_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert rh.main(["chmod", "777", "/etc"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("signalcraft-root: refused: unknown verb 'chmod'") and err.count("\n") == 1
    )
    assert rh.main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["nginx-test"],
        ["nginx-test", "nginx -t", "extra"],
        ["site-read"],
        ["site-install", X, "backup", "guard"],
        ["version", "x"],
        ["probe", "x"],
        ["takeover-record", X, "5"],
        ["extras-write", X, SITE, "1"],
        ["extras-write", X, SITE, "1", "nginx -t", "x"],
        ["site-restore", X, SITE],
        ["takeover-restore", X, SITE],
        ["site-remove", X, SITE, "nginx -t"],
    ],
)
def test_main_refuses_a_wrong_argument_count(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert rh.main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"signalcraft-root: refused: {argv[0]} takes [0-9] argument\(s\), got [0-9]\n", err
    ), err


@pytest.mark.parametrize(
    "argv",
    [
        ["site-read", SITE + "\nid"],
        ["site-read", SITE + "\0"],
        ["site-restore", X + "\n", SITE, "nginx -t"],
        ["nginx-test", "nginx -t\n"],
        ["listeners", "80\n"],
    ],
)
def test_main_refuses_a_newline_or_nul_in_an_argument(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert rh.main(argv) == 2
    err = capsys.readouterr().err
    assert "an argument holds a newline or NUL" in err and err.count("\n") == 1


def test_main_refuses_before_reading_and_when_not_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(rh.os, "geteuid", lambda: 0)
    assert rh.main(["site-read", "/etc/shadow"]) == 2  # refused before anything is read
    err = capsys.readouterr().err
    assert "site must be a plain file name in" in err and err.count("\n") == 1
    monkeypatch.setattr(rh.os, "geteuid", lambda: 1000)
    assert rh.main(["version"]) == 2
    assert "must run as root" in capsys.readouterr().err
    assert rh.main(["help"]) == 0 and "usage: signalcraft-root" in capsys.readouterr().out


def test_caller_uid_is_sudo_uid_only_when_running_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rh.os, "getuid", lambda: 0)
    assert rh.caller_uid({"SUDO_UID": "1001"}) == 1001
    assert rh.caller_uid({}) == 0
    assert rh.caller_uid({"SUDO_UID": "abc"}) == 0
    assert rh.caller_uid({"SUDO_UID": "-1"}) == 0
    monkeypatch.setattr(
        rh.os, "getuid", lambda: 1000
    )  # not root: a SUDO_UID the caller set itself counts for nothing
    assert rh.caller_uid({"SUDO_UID": "0"}) == 1000
    assert rh.caller_uid({"SUDO_UID": "65534"}) == 1000


def test_the_helper_as_installed_runs_alone(tmp_path: Path) -> None:
    """The installed text (nginx_site inlined) runs under `python3 -I -S` with nothing of this
    package on its path."""
    text = root.files()[root.HELPER][0]
    assert "from signalcraft_deploy" not in text and "import signalcraft_deploy" not in text
    assert nginx_site.__doc__ and source("nginx_site.py").rstrip() in text
    (tmp_path / "helper").write_text(text)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "helper"), "help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 0 and "site-install" in done.stdout, done.stderr
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "helper"), "rm", "-rf", "/"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 2 and done.stderr.startswith(
        "signalcraft-root: refused: unknown verb 'rm'"
    )


# ----------------------------------------------------------------------------- read_regular


def test_read_regular_reads_a_regular_file_and_none_when_absent(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    assert rh.read_regular(str(tmp_path / "f")) == b"x"
    assert rh.read_regular(str(tmp_path / "absent")) is None


def test_read_regular_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("root's secret")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(rh.Refused, match="cannot be read as a plain file"):
        rh.read_regular(str(tmp_path / "link"))


def test_read_regular_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")

    def blocked(*_: Any) -> None:
        raise AssertionError("read_regular blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(5)
    try:
        with pytest.raises(rh.Refused, match="not a regular file"):
            rh.read_regular(str(tmp_path / "fifo"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_read_regular_refuses_a_device() -> None:
    with pytest.raises(rh.Refused, match="not a regular file"):
        rh.read_regular("/dev/null")
    with pytest.raises(rh.Refused):
        rh.read_regular("/dev/zero")


def test_read_regular_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(rh.Refused):
        rh.read_regular(str(tmp_path))


# ----------------------------------------------------------------------------- the verbs, on a host
# in tmp_path


class Host:
    """The helper's folders in tmp_path; `nginx -t` is `self.test_ok`; every other program run is
    recorded."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.mp = monkeypatch
        nginx = tmp_path / "etc" / "nginx"
        self.available, self.enabled, self.confd = (
            nginx / "sites-available",
            nginx / "sites-enabled",
            nginx / "conf.d",
        )
        for folder in (self.available, self.enabled, self.confd):
            folder.mkdir(parents=True)
        self.state = tmp_path / "state"
        self.lib = tmp_path / "lib"
        for (
            name,
            text,
        ) in root.crossplane_files().items():  # root's copy of the parser, as `install` puts it
            (self.lib / name).parent.mkdir(parents=True, exist_ok=True)
            (self.lib / name).write_text(text)
        self.default_link = self.enabled / "default"
        self.site = str(self.available / "shop")
        for name, value in {
            "AVAILABLE": str(self.available),
            "ENABLED": str(self.enabled),
            "DEFAULT_LINK": str(self.default_link),
            "STATE": str(self.state),
            "LIB": str(self.lib),
            "HOOK_DIR": str(tmp_path / "hooks"),
            "CALLER_UID": A,
        }.items():
            monkeypatch.setattr(rh, name, value)
        monkeypatch.setattr(nginx_site, "SITE_FOLDERS", (str(self.available), str(self.confd)))
        self.maintenance = nginx / "signalcraft-deploy-maintenance"
        monkeypatch.setattr(nginx_site, "MAINTENANCE_DIR", str(self.maintenance))
        self.test_ok = True
        self.tests: list[list[str]] = []
        monkeypatch.setattr(rh, "test_passes", self._test)
        self.ran: list[list[str]] = []
        self.dump = ""
        # what `ss -ltnpH` shows: pid -> the addresses it listens on (this test's process serves
        # FOREIGN's upstream)
        self.listening: dict[int, set[str]] = {os.getpid(): {"127.0.0.1:8001"}}
        self.ss_more: list[
            str
        ] = []  # more lines of `ss -ltnpH`, as written (another program's sockets)
        monkeypatch.setattr(rh, "run_child", self._run)
        monkeypatch.setattr(sys, "path", list(sys.path))  # crossplane() puts LIB first
        monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
        if os.geteuid() != 0:  # the checks that root's folders are root's: as this user, its own
            self._as_own_user()

    def _as_own_user(self) -> None:
        def state_folder(*parts: str) -> str:
            path = os.path.join(rh.STATE, *parts)
            os.makedirs(path, mode=0o700, exist_ok=True)
            return path

        self.mp.setattr(rh, "state_folder", state_folder)
        self.mp.setattr(rh, "lib", lambda name: os.path.join(rh.LIB, name))

    def _test(self, test: list[str]) -> tuple[bool, str]:
        self.tests.append(test)
        return self.test_ok, self.test_said

    test_said = "nginx: [emerg] the test failed"

    def _run(self, argv: list[str], capture: bool = False) -> Any:
        self.ran.append(argv)
        if argv == ["ss", "-ltnpH"]:
            lines = [
                f'LISTEN 0      511    {local}    0.0.0.0:*    users:(("server",pid={pid},fd=7))'
                for pid, addresses in self.listening.items()
                for local in sorted(addresses)
            ] + self.ss_more
            return subprocess.CompletedProcess(argv, 0, stdout="\n".join(lines) + "\n", stderr="")
        if capture:
            return subprocess.CompletedProcess(argv, 0, stdout=self.dump, stderr="")
        return 0

    def stdin(self, data: bytes | str) -> None:
        """What the caller pipes in (the helper reads stdin as bytes)."""
        raw = data.encode() if isinstance(data, str) else data
        self.mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))

    def as_user(self, uid: int) -> None:
        self.mp.setattr(rh, "CALLER_UID", uid)

    def desc(self, **changes: Any) -> dict[str, Any]:
        site = changes.get("site", self.site)
        return {
            "site": site,
            "upstream": nginx_site.upstream_for(site),
            "listen": ["80"],
            "tls_listen": ["443"],
            "server_name": "_",
            "routes": ["api"],
            "python": "127.0.0.1:8001",
            "node": "127.0.0.1:3000",
            "body_size": "",
            "tls": None,
            **changes,
        }

    def install(
        self, state: str = X, backup: str = "backup", mode: str = "guard", **changes: Any
    ) -> int:
        self.stdin(json.dumps(self.desc(**changes)))
        return rh.v_site_install([state, backup, mode, "nginx -t"])

    def claim(self, site: str | None = None) -> dict[str, Any] | None:
        return rh.claim_of(site or self.site)

    def stock_default(
        self,
        text: str = (
            "server {\n\tlisten 80 default_server;\n\tlisten [::]:80 default_server;\n"
            "\troot /var/www/html;\n}\n"
        ),
    ) -> Path:
        target = self.available / "default"
        target.write_text(text)
        self.default_link.symlink_to(target)
        return target

    def files(self) -> dict[str, str]:
        """Every file and link of the site folders and STATE (what a refused verb must not
        change)."""
        out = {}
        for top in (self.available.parent, self.state):
            for path in sorted(top.rglob("*")):
                out[str(path)] = (
                    os.readlink(path)
                    if path.is_symlink()
                    else path.read_text()
                    if path.is_file()
                    else "/"
                )
        return out


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(tmp_path, monkeypatch)


def test_an_install_renders_the_site_itself_enables_it_and_claims_it(host: Host) -> None:
    assert host.install(server_name="shop.example.com") == 0
    text = Path(host.site).read_text()
    assert text == nginx_site.render(host.desc(server_name="shop.example.com"))
    assert os.readlink(host.enabled / "shop") == host.site
    assert host.claim() == {
        "user": rh.pwd.getpwuid(A).pw_name,
        "uid": A,
        "state": X,
        "site": host.site,
        "names": ["shop.example.com"],
        "tls": [],
        "listens": [["*", "80"]],
        "upstream_ports": ["3000", "8001"],
    }
    assert host.tests == [["nginx", "-t"]]
    claim_file = Path(rh.claim_path(host.site))
    assert (
        claim_file.parent.parent == host.state and stat.S_IMODE(claim_file.stat().st_mode) == 0o600
    )
    assert stat.S_IMODE(host.state.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "body",
    [
        '{"site": "/etc/shadow"}',
        "server { listen 80; }",
        "[]",
        '{"site": "%s", "access_log": "/etc/cron.d/x"}',
    ],
)
def test_an_install_from_anything_but_a_checked_description_is_refused_before_anything_changes(
    host: Host, body: str
) -> None:
    before = host.files()
    host.stdin(body.replace("%s", host.site))
    with pytest.raises(rh.Refused, match="the site description"):
        rh.v_site_install([X, "backup", "guard", "nginx -t"])
    assert host.files() == before and host.tests == []


def test_a_file_the_tool_did_not_write_is_left_alone(host: Host) -> None:
    Path(host.site).write_text("server { listen 80; }\n")
    assert host.install() == 66
    assert (
        Path(host.site).read_text() == "server { listen 80; }\n"
        and host.claim() is None
        and host.tests == []
    )
    with pytest.raises(rh.Refused, match="needs takeover-record first"):
        host.install(mode="takeover")


# ----------------------------------------------------------------------------- claims


def other_callers(host: Host) -> list[tuple[int, str]]:
    return [(B, X), (B, Y), (A, Y)]


def test_a_claimed_site_is_refused_to_another_user_or_deploy_root_by_every_verb_that_changes_it(
    host: Host,
) -> None:
    host.stock_default()
    assert host.install() == 0
    assert not host.default_link.exists()  # parked by this install
    before = host.files()
    for uid, state in other_callers(host):
        host.as_user(uid)
        calls = {
            "site-install": lambda state=state: host.install(state=state, routes=["evil"]),
            "site-install takeover": lambda state=state: host.install(state=state, mode="takeover"),
            "site-restore": lambda state=state: rh.v_site_restore([state, host.site, "nginx -t"]),
            "extras-write": lambda state=state: rh.v_extras_write(
                [state, host.site, "-", "nginx -t"]
            ),
            "takeover-record": lambda state=state: rh.v_takeover_record(
                [state, str(os.getpid()), host.site]
            ),
            "takeover-restore": lambda state=state: rh.v_takeover_restore(
                [state, host.site, "nginx -t"]
            ),
        }
        for verb, call in calls.items():
            with pytest.raises(rh.Refused, match="belongs to another user or deploy root"):
                call()
            assert host.files() == before, (uid, state, verb)
    assert host.tests == [["nginx", "-t"]] and host.ran == [
        ["ss", "-ltnpH"]
    ]  # the install's look at the ports only
    host.as_user(A)  # the owner may: restoring its first deploy unparks the stock site
    assert rh.v_site_restore([X, host.site, "nginx -t"]) == 0 and host.default_link.is_symlink()


def test_an_unclaimed_site_is_not_restored_or_unparked_for_anyone(host: Host) -> None:
    Path(host.site).write_text(SITE_HEADER + " an older install, before claims\n")
    with pytest.raises(rh.Refused, match="was not installed by this helper"):
        rh.v_site_restore([X, host.site, "nginx -t"])
    assert Path(host.site).exists() and host.ran == []


def test_the_read_verbs_hide_another_users_site(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.install() == 0
    unclaimed = host.available / "plain"
    unclaimed.write_text("server { listen 8081; }\n")
    capsys.readouterr()
    host.as_user(B)
    with pytest.raises(rh.Refused, match="belongs to another user"):
        rh.v_site_read([host.site])
    assert (
        rh.v_site_read([str(unclaimed)]) == 0
        and capsys.readouterr().out == "server { listen 8081; }\n"
    )
    with pytest.raises(rh.Refused, match="belongs to another user"):  # nor a certbot hook for it
        rh.v_certbot_hook(
            [
                "shop",
                "/etc/letsencrypt/live/shop/fullchain.pem",
                host.site,
                "nginx -t",
                "nginx -s reload",
            ]
        )
    secret = Path(host.site).read_text().splitlines()[1]  # `upstream shop_python {`
    host.dump = "\n".join(
        [
            "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok",
            "# configuration file /etc/nginx/nginx.conf:",
            "http { include /etc/nginx/sites-enabled/*; }",
            "",
            f"# configuration file {host.enabled}/shop:",
            *Path(host.site).read_text().splitlines(),
            f"# configuration file {host.site}.locations:",
            "location /private-a { return 200; }",
            f"# configuration file {unclaimed}:",
            "server { listen 8081; }",
            "",
        ]
    )
    assert rh.v_nginx_dump([]) == 0
    seen = capsys.readouterr().out
    assert host.ran == [
        ["ss", "-ltnpH"],
        ["nginx", "-T"],
    ]  # the install's look at the ports, then the dump
    assert secret not in seen and "/private-a" not in seen and "signalcraft-deploy-site" not in seen
    assert f"# configuration file {host.enabled}/shop:\n# (not yours to read: not shown)" in seen
    assert (
        "http { include /etc/nginx/sites-enabled/*; }" in seen and "server { listen 8081; }" in seen
    )
    host.as_user(A)  # its owner sees it all
    assert (
        rh.v_site_read([host.site]) == 0 and capsys.readouterr().out == Path(host.site).read_text()
    )
    rh.v_nginx_dump([])
    assert secret in capsys.readouterr().out


def test_a_failed_test_puts_everything_back_and_drops_a_new_claim(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    target = host.stock_default()
    before = host.files()
    host.test_ok = False
    assert host.install() == 65
    assert "the test failed" in capsys.readouterr().err
    assert host.files() == {
        **before,
        str(host.state / "sites"): "/",
    }  # only root's (empty) records folder is new
    assert (
        not Path(host.site).exists()
        and not os.path.lexists(host.enabled / "shop")
        and host.claim() is None
    )
    assert os.readlink(host.default_link) == str(target) and rh.parked() is None
    # a second deploy whose test fails: the first one's site is back, still its owner's
    host.test_ok = True
    assert host.install() == 0
    first = Path(host.site).read_text()
    host.test_ok = False
    assert host.install(routes=["api", "v2"]) == 65
    assert Path(host.site).read_text() == first and host.claim()["state"] == X
    assert os.readlink(host.enabled / "shop") == host.site


def test_a_failed_test_keeps_the_backup_of_the_deploy_before(host: Host) -> None:
    assert host.install(routes=["v1"]) == 0
    assert host.install(routes=["v2"]) == 0
    backup = Path(host.site + ".signalcraft-prev").read_text()
    assert "v1" in backup
    host.test_ok = False
    assert host.install(routes=["v3"]) == 65
    assert Path(host.site + ".signalcraft-prev").read_text() == backup


def test_a_site_installed_by_one_user_is_still_free_for_others_in_other_names(host: Host) -> None:
    assert host.install() == 0
    host.as_user(B)
    other = str(host.available / "blog")
    assert host.install(state=Y, site=other, listen=["8080"], server_name="blog.example.com") == 0
    assert rh.claim_of(other)["uid"] == B and host.claim()["uid"] == A


# ----------------------------------------------------------------------------- parking the stock
# default site


def test_the_stock_default_is_parked_in_state_when_ours_is_the_default_server_on_its_port(
    host: Host, tmp_path: Path
) -> None:
    target = host.stock_default()
    callers = tmp_path / "srv" / "shop" / ".deploy"
    callers.mkdir(parents=True)
    assert host.install(state=str(callers)) == 0
    assert not os.path.lexists(host.default_link) and target.exists()
    assert rh.parked() == {"target": str(target), "site": host.site}
    assert (host.state / rh.PARKED).is_file() and list(
        callers.iterdir()
    ) == []  # never in the caller's folder
    assert stat.S_IMODE((host.state / rh.PARKED).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("stock", "changes"),
    [
        (
            "server {\n listen 80 default_server;\n}\n",
            {"server_name": "shop.example.com"},
        ),  # ours is not the default server
        (
            "server {\n listen 80 default_server;\n}\n",
            {"listen": ["8080", "80"]},
        ),  # only our first port counts
        ("server {\n listen 80;\n}\n", {}),  # the stock site is not the default server
        ("server {\n listen 8080 default_server;\n}\n", {}),
        ("server {\n listen 180 default_server;\n}\n", {}),
        ("server {\n listen 127.0.0.1:8080 default_server;\n}\n", {}),
        (
            "server {\n listen 80 default_server;\n}\n",
            {"site": "CONFD"},
        ),  # a conf.d site never parks
    ],
)
def test_the_stock_default_is_not_parked_otherwise(
    host: Host, stock: str, changes: dict[str, Any]
) -> None:
    host.stock_default(stock)
    if changes.get("site") == "CONFD":
        changes = {"site": str(host.confd / "shop.conf")}
    assert host.install(**changes) == 0
    assert host.default_link.is_symlink() and rh.parked() is None


def test_a_default_link_outside_sites_available_is_neither_read_nor_parked(
    host: Host, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("server {\n listen 80 default_server;\n}\n")
    host.default_link.symlink_to(elsewhere)
    assert host.install() == 0
    assert os.readlink(host.default_link) == str(elsewhere) and rh.parked() is None


def test_a_second_site_does_not_park_again_nor_unpark_the_firsts(host: Host) -> None:
    target = host.stock_default()
    assert host.install() == 0
    other = str(host.available / "blog")
    assert host.install(site=other, listen=["80"], server_name="blog.example.com") == 0
    assert rh.parked() == {"target": str(target), "site": host.site}
    assert (
        rh.v_site_restore([X, other, "nginx -t"]) == 0
    )  # not the one that parked it: nothing unparked
    assert not os.path.lexists(host.default_link) and rh.parked() is not None


def test_a_commented_out_listen_does_not_make_the_stock_site_the_default_server(host: Host) -> None:
    host.stock_default(
        "server {\n\tlisten 8080 default_server;\n\t# listen 80 default_server;\n}\n"
    )
    assert host.install() == 0
    assert host.default_link.is_symlink() and rh.parked() is None


def test_site_restore_after_a_first_deploy_removes_ours_and_unparks_the_default(host: Host) -> None:
    target = host.stock_default()
    assert host.install() == 0
    assert rh.v_site_restore([X, host.site, "nginx -t"]) == 0
    assert not os.path.lexists(host.site) and not os.path.lexists(host.enabled / "shop")
    assert (
        os.readlink(host.default_link) == str(target)
        and rh.parked() is None
        and host.claim() is None
    )
    assert host.tests == [["nginx", "-t"]] * 2  # the install's test, then the restore's
    assert host.ran == [
        ["ss", "-ltnpH"]
    ]  # the install's look at the ports: a removal checks nothing


def test_site_restore_after_a_second_deploy_puts_the_previous_site_back(host: Host) -> None:
    assert host.install(routes=["v1"]) == 0
    first = Path(host.site).read_text()
    assert host.install(routes=["v2"]) == 0
    assert Path(host.site).read_text() != first
    assert rh.v_site_restore([X, host.site, "nginx -t"]) == 0
    assert Path(host.site).read_text() == first and host.claim()["uid"] == A


# ----------------------------------------------------------------------------- takeover


FOREIGN = """server {
    listen 80;
    location /static/ {
        alias /srv/static/;
    }
    location = /robots.txt {
        return 200 "User-agent: *\\n";
    }
    root /var/www;
    location /nested {
        location /nested/inner {
            return 204;
        }
    }
    location /app {
        proxy_pass http://127.0.0.1:8001;
    }
}
"""


def test_takeover_record_refuses_a_process_of_another_user(host: Host) -> None:
    Path(host.site).write_text(FOREIGN)
    host.as_user(B)
    mine = os.getpid()  # a process of this test's user (root's when run as root), not nobody's
    assert os.stat(f"/proc/{mine}").st_uid != B and os.stat("/proc/1").st_uid != B
    with pytest.raises(rh.Refused, match=f"pid {mine} is not a process of nobody"):
        rh.v_takeover_record([X, str(mine), host.site])
    with pytest.raises(
        rh.Refused, match="the pid must be a whole number from 2"
    ):  # pid 1 (init, root's) is no argument
        rh.v_takeover_record([X, "1", host.site])
    assert (
        rh.main(["takeover-record", X, "0", host.site]) == 2
    )  # nor 0, nor 1: never a pid argument
    assert (
        not (host.state / "takeover").exists()
        or list((host.state / "takeover").rglob("*.json")) == []
    )
    with pytest.raises(rh.Refused, match="needs takeover-record first"):
        host.install(mode="takeover")
    assert Path(host.site).read_text() == FOREIGN


def test_takeover_record_refuses_a_pid_that_does_not_exist(host: Host) -> None:
    pid = next(p for p in range(2**22, 2, -1) if not os.path.exists(f"/proc/{p}"))
    with pytest.raises(rh.Refused, match="no process"):
        rh.v_takeover_record([X, str(pid), host.site])


def test_takeover_record_keeps_the_first_record(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    folder = Path(rh.takeover_folder(X))
    assert folder.parent.parent == host.state and (folder / "nginx-site").read_text() == FOREIGN
    meta = json.loads((folder / "meta.json").read_text())
    assert (
        meta["site"] == host.site
        and meta["uid"] == A
        and meta["state"] == X
        and meta["site_existed"] is True
    )
    Path(host.site).write_text(
        "server { listen 80; location / { alias /etc/; } }\n"
    )  # changed since
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert (folder / "nginx-site").read_text() == FOREIGN
    assert capsys.readouterr().out == "recorded\nrecorded\n"
    # another deploy root of the same user has its own record
    assert rh.takeover_folder(Y) != rh.takeover_folder(X)


def test_extras_write_keeps_only_location_blocks_of_roots_copy(host: Host) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    # what the caller could change after the record does not count: root reads its own copy
    Path(host.site).write_text(FOREIGN.replace("/srv/static/", "/etc/"))
    assert rh.v_extras_write([X, host.site, "3,6", "nginx -t"]) == 0
    extras = Path(nginx_site.extras_path(host.site)).read_text()
    assert extras.startswith(SITE_HEADER + " Location blocks kept")
    body = extras.split("\n", 1)[1]
    copy_path = Path(rh.takeover_folder(X), "nginx-site")
    parsed = crossplane.parse(
        str(copy_path), single=True, comments=False, check_ctx=False, check_args=False
    )
    blocks = [
        d
        for d in parsed["config"][0]["parsed"][0]["block"]
        if d["directive"] == "location" and d["line"] in (3, 6)
    ]
    assert (
        body == crossplane.build(blocks, indent=4, tabs=False) + "\n"
    )  # crossplane-built, from root's copy
    check = host.lib.parent / "check.conf"
    check.write_text(body)
    again = crossplane.parse(
        str(check), single=True, comments=False, check_ctx=False, check_args=False
    )["config"][0]["parsed"]
    assert [(d["directive"], d["args"]) for d in again] == [
        ("location", ["/static/"]),
        ("location", ["=", "/robots.txt"]),
    ]
    assert "/etc/" not in body and "alias /srv/static/;" in body
    assert rh.v_extras_write([X, host.site, "-", "nginx -t"]) == 0  # none: the header alone
    header, rest = Path(nginx_site.extras_path(host.site)).read_text().split("\n", 1)
    assert header.startswith(SITE_HEADER) and rest.strip() == ""


@pytest.mark.parametrize("lines", ["2", "4", "9", "3,4", "11", "99", "1"])
def test_extras_write_refuses_a_line_that_does_not_start_a_location_of_the_server(
    host: Host, lines: str
) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    with pytest.raises(rh.Refused, match="starts a location block"):
        rh.v_extras_write([X, host.site, lines, "nginx -t"])
    assert not os.path.lexists(nginx_site.extras_path(host.site))


def test_extras_write_needs_a_record_and_never_writes_over_a_file_not_ours(host: Host) -> None:
    Path(host.site).write_text(FOREIGN)
    with pytest.raises(rh.Refused, match="no takeover"):
        rh.v_extras_write([X, host.site, "3", "nginx -t"])
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    with pytest.raises(rh.Refused, match="no takeover"):  # the record is this deploy root's
        rh.v_extras_write([Y, host.site, "3", "nginx -t"])
    Path(nginx_site.extras_path(host.site)).write_text("location /admin { }\n")
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 66
    assert Path(nginx_site.extras_path(host.site)).read_text() == "location /admin { }\n"


def test_a_takeover_installs_over_the_recorded_site_and_takeover_restore_puts_it_back(
    host: Host,
) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover", server_name="shop.example.com") == 0
    assert Path(host.site).read_text().startswith(SITE_HEADER) and host.claim()["uid"] == A
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 0
    assert rh.v_takeover_restore([X, host.site, "nginx -t"]) == 0
    assert Path(host.site).read_text() == FOREIGN and host.claim() is None
    assert (
        not os.path.lexists(nginx_site.extras_path(host.site))
        and not Path(rh.takeover_folder(X)).exists()
    )
    assert host.tests == [["nginx", "-t"]] * 3  # install, extras, restore
    assert host.ran and all(
        argv == ["ss", "-ltnpH"] for argv in host.ran
    )  # the record's and install's looks only


# ----------------------------------------------------------------------------- the review's
# defences, seen by an attacker


def snapshot(host: Host) -> dict[str, tuple[str, int]]:
    """Every file and link of the site folders and STATE with its mode (what a verb that fails must
    leave as it was)."""
    out = {}
    for top in (host.available.parent, host.state):
        for path in sorted(top.rglob("*")):
            text = (
                os.readlink(path)
                if path.is_symlink()
                else path.read_text()
                if path.is_file()
                else "/"
            )
            out[str(path)] = (text, stat.S_IMODE(path.lstat().st_mode))
    return out


def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rh.os, "geteuid", lambda: 0)
    monkeypatch.setattr(rh, "LOCK_FD", -1)


def release_lock() -> None:
    if rh.LOCK_FD >= 0:
        os.close(rh.LOCK_FD)


# 1. one file of kept locations per site file


def test_shop_and_shop_conf_get_different_extras_files_and_neither_touches_the_others(
    host: Host,
) -> None:
    conf = str(host.available / "shop.conf")
    assert nginx_site.extras_path(host.site) == host.site + ".locations"
    assert nginx_site.extras_path(conf) == conf + ".locations" != nginx_site.extras_path(host.site)
    Path(host.site).write_text(FOREIGN)  # A takes over `shop` and keeps one of its locations
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover", server_name="shop.example.com") == 0
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 0
    kept = Path(nginx_site.extras_path(host.site)).read_text()
    host.as_user(
        B
        # B's `shop.conf` includes only its own file, writes none, and its restore removes none of A's
    )
    assert host.install(state=Y, site=conf, server_name="blog.example.com", listen=["8080"]) == 0
    text = Path(conf).read_text()
    assert (
        f"include {conf}.location[s];" in text and f"include {host.site}.location[s];" not in text
    )
    with pytest.raises(rh.Refused, match="no takeover"):
        rh.v_extras_write([Y, conf, "-", "nginx -t"])
    assert rh.v_site_restore([Y, conf, "nginx -t"]) == 0 and not os.path.lexists(conf)
    assert Path(nginx_site.extras_path(host.site)).read_text() == kept and host.claim()["uid"] == A


# 2. upstream and map names are the site's own


def test_a_description_with_another_sites_upstream_stem_or_a_dns_upstream_is_refused(
    host: Host,
) -> None:
    assert host.install(server_name="shop.example.com") == 0
    before = snapshot(host)
    host.as_user(B)
    blog = str(host.available / "blog")
    for stem in (
        nginx_site.upstream_for(host.site),
        "shop",
        "blog",
        nginx_site.upstream_for(blog).upper(),
    ):
        with pytest.raises(rh.Refused, match="upstream must be"):
            host.install(
                state=Y, site=blog, upstream=stem, server_name="blog.example.com", listen=["8080"]
            )
    for address in (
        "evil.example:8001",
        "localhost.evil.example:8001",
        "metadata.google.internal:80",
    ):
        with pytest.raises(rh.Refused, match="python is not accepted"):
            host.install(
                state=Y, site=blog, python=address, server_name="blog.example.com", listen=["8080"]
            )
    assert snapshot(host) == before and host.tests == [["nginx", "-t"]]


# 3. every writing verb is kept only if the test passes


def test_a_failed_test_after_extras_write_leaves_every_file_as_it_was(host: Host) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover", server_name="shop.example.com") == 0
    host.test_ok = False
    before = snapshot(host)
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 65  # none before: none after
    assert snapshot(host) == before and not os.path.lexists(nginx_site.extras_path(host.site))
    host.test_ok = True
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 0
    host.test_ok = False
    before = snapshot(host)
    assert rh.v_extras_write([X, host.site, "3,6", "nginx -t"]) == 65  # the one before stays
    assert snapshot(host) == before


def test_a_failed_test_after_site_restore_leaves_every_file_as_it_was(host: Host) -> None:
    host.stock_default()
    assert host.install() == 0  # a first deploy: parked the stock site
    host.test_ok = False
    before = snapshot(host)
    assert (
        rh.v_site_restore([X, host.site, "nginx -t"]) == 65
    )  # would remove ours and unpark: neither kept
    assert snapshot(host) == before and rh.parked() is not None and host.claim()["uid"] == A
    host.test_ok = True
    assert host.install(routes=["v2"]) == 0  # a second deploy: the restore would put the first back
    host.test_ok = False
    before = snapshot(host)
    assert rh.v_site_restore([X, host.site, "nginx -t"]) == 65
    assert snapshot(host) == before and "v2" in Path(host.site).read_text()


def test_a_failed_test_after_takeover_restore_leaves_every_file_and_the_record_as_they_were(
    host: Host,
) -> None:
    host.stock_default()
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover") == 0 and rh.parked() is not None
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 0
    host.test_ok = False
    before = snapshot(host)
    assert rh.v_takeover_restore([X, host.site, "nginx -t"]) == 65
    assert snapshot(host) == before and Path(rh.takeover_folder(X), "meta.json").is_file()
    host.test_ok = (
        True  # and when it passes: the old site, the stock site enabled again, our records gone
    )
    assert rh.v_takeover_restore([X, host.site, "nginx -t"]) == 0
    assert (
        Path(host.site).read_text() == FOREIGN
        and host.default_link.is_symlink()
        and rh.parked() is None
    )
    assert host.claim() is None and not os.path.lexists(nginx_site.extras_path(host.site))


def test_a_site_reinstalled_as_not_the_default_server_unparks_the_stock_site_it_parked(
    host: Host,
) -> None:
    target = host.stock_default()
    assert host.install() == 0 and not os.path.lexists(host.default_link)
    host.test_ok = False  # a failed re-install leaves it parked
    assert host.install(server_name="shop.example.com") == 65
    assert not os.path.lexists(host.default_link) and rh.parked() is not None
    host.test_ok = True
    assert host.install(server_name="shop.example.com") == 0
    assert os.readlink(host.default_link) == str(target) and rh.parked() is None


def test_unpark_default_is_no_verb_any_more(capsys: pytest.CaptureFixture[str]) -> None:
    assert rh.main(["unpark-default", X, SITE]) == 2
    assert "unknown verb 'unpark-default'" in capsys.readouterr().err


# 4. names and TLS files of another user's site


@pytest.mark.parametrize(
    "name",
    [
        "shop.example.com",
        "SHOP.Example.COM",
        "*.example.com",
        "shop.example.*",
        "blog.example.org shop.example.com",
    ],
)
def test_another_user_cannot_install_a_site_serving_a_name_of_a_claimed_site(
    host: Host, name: str
) -> None:
    assert host.install(server_name="shop.example.com") == 0
    before = snapshot(host)
    host.as_user(B)
    with pytest.raises(rh.Refused, match="is served by another user's site"):
        host.install(state=Y, site=str(host.available / "evil"), server_name=name)
    assert snapshot(host) == before and host.tests == [["nginx", "-t"]]


def test_a_claimed_wildcard_is_refused_to_another_users_exact_name(host: Host) -> None:
    assert host.install(server_name="*.example.com") == 0
    host.as_user(B)
    with pytest.raises(rh.Refused, match="is served by another user's site"):
        host.install(state=Y, site=str(host.available / "evil"), server_name="shop.example.com")


@pytest.mark.parametrize(
    "name", ["example.com", "shop.example.org", "*.shop.example.com", "shopexample.com", "_"]
)
def test_names_that_cannot_match_the_claimed_ones_stay_free(host: Host, name: str) -> None:
    assert host.install(server_name="shop.example.com", listen=["8080"]) == 0
    host.as_user(B)
    assert host.install(state=Y, site=str(host.available / "blog"), server_name=name) == 0


def test_another_user_cannot_serve_a_leading_wildcard_over_a_claimed_trailing_one(
    host: Host,
) -> None:
    assert host.install(server_name="shop.example.*") == 0
    host.as_user(B)
    with pytest.raises(rh.Refused, match="is served by another user's site"):
        host.install(state=Y, site=str(host.available / "evil"), server_name="*.example.com")
    assert rh.names_overlap("*.example.com", "shop.example.*")  # both match shop.example.com


def test_another_user_cannot_use_a_claimed_sites_certificate_or_key(host: Host) -> None:
    tls = {"cert": "/etc/ssl/certs/shop.pem", "key": "/etc/ssl/private/shop.key", "redirect": False}
    assert host.install(server_name="shop.example.com", tls=tls) == 0
    assert host.claim()["tls"] == sorted([tls["cert"], tls["key"]])
    before = snapshot(host)
    host.as_user(B)
    evil = str(host.available / "evil")
    for theirs in (
        {**tls, "cert": "/etc/ssl/certs/evil.pem"},
        {**tls, "key": "/etc/ssl/private/evil.key"},
    ):
        with pytest.raises(rh.Refused, match="certificate or key is another user's"):
            host.install(state=Y, site=evil, server_name="evil.example.net", tls=theirs)
    assert snapshot(host) == before
    own = {"cert": "/etc/ssl/certs/evil.pem", "key": "/etc/ssl/private/evil.key", "redirect": False}
    assert host.install(state=Y, site=evil, server_name="evil.example.net", tls=own) == 0


def test_an_nginx_warning_of_a_conflicting_server_name_of_ours_fails_the_install(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = host.available / "admin"  # an admin's site, claimed by no one, serves the name
    admin.write_text("server { listen 80; server_name blog.example.com; }\n")
    rh.state_folder("sites")
    before = snapshot(host)
    host.test_said = (
        'nginx: [warn] conflicting server name "blog.example.com" on 0.0.0.0:80, ignored\n'
        "nginx: configuration file /etc/nginx/nginx.conf test is successful"
    )
    assert host.install(server_name="shop.example.com blog.example.com") == 65
    assert snapshot(host) == before and host.claim() is None
    assert (
        "the server name blog.example.com is also served by a site of this host"
        in capsys.readouterr().err
    )
    assert (
        host.install(server_name="shop.example.com") == 0
    )  # a warning about a name not ours does not count


# 5. a file at sites-enabled/<name> that is not our link


def test_an_admins_plain_file_at_sites_enabled_is_neither_replaced_nor_removed(host: Host) -> None:
    rh.state_folder("sites")
    admin = host.enabled / "shop"
    admin.write_text("server { listen 81; }\n")
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="is not the link to"):
        host.install()
    assert snapshot(host) == before
    admin.unlink()
    admin.symlink_to(host.available / "admin-site")  # a link elsewhere is the admin's too
    with pytest.raises(rh.Refused, match="is not the link to"):
        host.install()
    assert os.readlink(admin) == str(host.available / "admin-site") and not os.path.lexists(
        host.site
    )
    admin.unlink()
    admin.symlink_to("../sites-available/shop")  # a relative link to the site is ours
    assert host.install() == 0 and os.readlink(admin) == "../sites-available/shop"
    # after the install the admin puts its own file there: the restore removes ours only
    admin.unlink()
    admin.write_text("server { listen 81; }\n")
    assert rh.v_site_restore([X, host.site, "nginx -t"]) == 0
    assert (
        admin.read_text() == "server { listen 81; }\n"
        and not os.path.lexists(host.site)
        and host.claim() is None
    )


# 6. takeover-record: only the site of the caller's own server


ADMIN_UPSTREAM = """upstream admin_app {
    server 127.0.0.1:9000;
}
server {
    listen 80;
    location / {
        proxy_pass http://admin_app;
    }
}
"""


@pytest.mark.parametrize(
    ("text", "listening"),
    [
        (FOREIGN, {"127.0.0.1:9000"}),  # it proxies to 8001; the caller's process listens on 9000
        (ADMIN_UPSTREAM, {"127.0.0.1:9001"}),  # through an upstream block, to 9000
        (
            "server {\n    listen 80;\n    root /var/www;\n}\n",
            {"127.0.0.1:8001"},
        ),  # it proxies nowhere
        (FOREIGN, set()),  # the caller's process listens on nothing
    ],
)
def test_takeover_record_of_an_admins_site_that_proxies_elsewhere_is_refused_and_keeps_no_copy(
    host: Host, text: str, listening: set[str]
) -> None:
    Path(host.site).write_text(text)
    host.listening = {
        os.getpid(): listening,
        1: {"127.0.0.1:8001", "127.0.0.1:9000"},
    }  # another process serves it
    with pytest.raises(rh.Refused, match="does not proxy to a port pid"):
        rh.v_takeover_record([X, str(os.getpid()), host.site])
    assert host.ran and all(
        argv == ["ss", "-ltnpH"] for argv in host.ran
    )  # nothing but a look at the sockets
    assert [p for p in (host.state / "takeover").rglob("*")] == [] and rh.takeover_meta(
        X, host.site
    ) is None
    with pytest.raises(rh.Refused, match="needs takeover-record first"):
        host.install(mode="takeover")
    assert Path(host.site).read_text() == text and host.claim() is None


@pytest.mark.parametrize("listening", ["127.0.0.1:9000", "0.0.0.0:9000", "*:9000"])
def test_takeover_record_follows_upstream_blocks_to_the_callers_port(
    host: Host, listening: str
) -> None:
    Path(host.site).write_text(ADMIN_UPSTREAM)
    host.listening = {os.getpid(): {listening}}
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert Path(rh.takeover_folder(X), "nginx-site").read_text() == ADMIN_UPSTREAM


def test_takeover_record_refuses_a_caller_listening_on_the_port_at_another_address(
    host: Host,
) -> None:
    Path(host.site).write_text(
        FOREIGN
    )  # proxies to 127.0.0.1:8001, which pid 1 (the admin's server) listens on
    host.listening = {1: {"127.0.0.1:8001"}, os.getpid(): {"127.0.0.2:8001"}}
    with pytest.raises(rh.Refused, match="does not proxy to a port pid"):
        rh.v_takeover_record([X, str(os.getpid()), host.site])


@pytest.mark.parametrize(
    ("mode", "restored"),
    [(0o600, 0o600), (0o644, 0o644), (0o640, 0o640), (0o755, 0o644), (0o666, 0o644)],
)
def test_takeover_restore_puts_the_site_back_with_its_mode(
    host: Host, mode: int, restored: int
) -> None:
    Path(host.site).write_text(FOREIGN)
    os.chmod(host.site, mode)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert json.loads(Path(rh.takeover_folder(X), "meta.json").read_text())["mode"] == mode
    assert host.install(mode="takeover", server_name="shop.example.com") == 0
    assert rh.v_takeover_restore([X, host.site, "nginx -t"]) == 0
    assert (
        Path(host.site).read_text() == FOREIGN
        and stat.S_IMODE(os.stat(host.site).st_mode) == restored
    )


def test_takeover_restore_of_a_copy_that_is_ours_keeps_the_claim(host: Host) -> None:
    assert host.install(server_name="shop.example.com") == 0
    first = Path(host.site).read_text()
    host.listening = {}  # a site the caller already claims needs no proof
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover", server_name="shop.example.com", routes=["v2"]) == 0
    assert rh.v_takeover_restore([X, host.site, "nginx -t"]) == 0
    assert (
        Path(host.site).read_text() == first
        and host.claim()["uid"] == A
        and host.claim()["state"] == X
    )


# 7. the read verbs show only the caller's own or what anyone may read


def test_an_unclaimed_admin_file_only_root_may_read_is_neither_read_nor_dumped(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = host.available / "admin"
    secret.write_text("server {\n    # the admin's password: hunter2\n}\n")
    secret.chmod(0o600)
    (host.enabled / "admin").symlink_to(secret)
    public = host.available / "public"
    public.write_text("server { listen 8081; }\n")
    public.chmod(0o644)
    for uid in (B, A):  # not even the caller that installed other sites
        host.as_user(uid)
        with pytest.raises(rh.Refused, match="not yours to read"):
            rh.v_site_read([str(secret)])
        assert "hunter2" not in capsys.readouterr().out
        assert rh.v_site_read([str(public)]) == 0 and capsys.readouterr().out == public.read_text()
        host.dump = "\n".join(
            [
                f"# configuration file {host.enabled}/admin:",
                *secret.read_text().splitlines(),
                f"# configuration file {secret}:",
                *secret.read_text().splitlines(),
                f"# configuration file {public}:",
                "server { listen 8081; }",
                f"# configuration file {host.available}/gone:",
                "# a file deleted since: not shown either",
                "",
            ]
        )
        assert rh.v_nginx_dump([]) == 0
        seen = capsys.readouterr().out
        assert (
            "hunter2" not in seen
            and "deleted since" not in seen
            and "server { listen 8081; }" in seen
        )
        assert seen.count("# (not yours to read: not shown)") == 3


# 8. one writing verb at a time


def test_a_writing_verb_holds_the_lock_until_it_exits_and_a_reading_one_takes_none(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rh.WRITERS == {
        "site-install",
        "site-restore",
        "extras-write",
        "certbot-hook",
        "takeover-record",
        "takeover-restore",
        "site-remove",
        "maintenance-on",
        "maintenance-off",
    }
    as_root(monkeypatch)
    host.stdin(json.dumps(host.desc()))
    try:
        assert rh.main(["site-install", X, "backup", "guard", "nginx -t"]) == 0
        lock = host.state / ".lock"
        assert rh.LOCK_FD >= 0 and lock.is_file() and stat.S_IMODE(lock.stat().st_mode) == 0o600
        other = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # another helper run waits for this one
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        release_lock()
    taken: list[int] = []
    monkeypatch.setattr(rh, "hold_lock", lambda: taken.append(1))
    assert rh.main(["site-read", host.site]) == 0 and taken == []
    assert rh.main(["site-restore", X, host.site, "nginx -t"]) == 0 and taken == [1]


def test_a_link_at_the_lock_is_not_followed_one_line_exit_1(
    host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_root(monkeypatch)
    rh.state_folder()
    (host.state / ".lock").symlink_to(tmp_path / "elsewhere")
    assert rh.main(["site-restore", X, host.site, "nginx -t"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("signalcraft-root: site-restore failed: OSError") and err.count("\n") == 1
    assert not (tmp_path / "elsewhere").exists()


# 9. one line, never a traceback


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 200000 + b"]" * 200000,
        b'{"a": ' * 200000 + b"1" + b"}" * 200000,
        b"\xff\xfe{}",
        b'{"site": "\xc3\x28"}',
        b"\xed\xa0\x80",
        b"",
        b"\0" * 10,
    ],
)
def test_hostile_stdin_gives_one_line_and_exit_1_or_2(
    host: Host, monkeypatch: pytest.MonkeyPatch, data: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    as_root(monkeypatch)
    host.stdin(data)
    try:
        code = rh.main(["site-install", X, "backup", "guard", "nginx -t"])
    finally:
        release_lock()
    err = capsys.readouterr().err
    assert (
        code in (1, 2)
        and err.startswith("signalcraft-root: ")
        and err.count("\n") == 1
        and "Traceback" not in err
    )
    assert not os.path.lexists(host.site) and host.tests == []


def test_too_deep_json_in_an_argument_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    as_root(monkeypatch)
    with pytest.raises(rh.Refused, match="nests too deep"):
        rh._json('{"a": ' * 100000 + "1" + "}" * 100000, "x")
    assert rh.main(["nginx-reload", "[" * 100000 + "]" * 100000]) == 2
    assert rh.main(["tls-check", '{"cert": ' * 100000 + "1" + "}" * 100000]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err


def test_tls_real_passes_a_dangling_link_on_and_refuses_one_that_leaves_the_tls_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = tmp_path / "tls"
    (tls / "live").mkdir(parents=True)
    monkeypatch.setattr(nginx_site, "TLS_FOLDERS", (str(tls) + "/",))
    cert, key = str(tls / "live" / "cert.pem"), str(tls / "live" / "key.pem")
    (tls / "live" / "cert.pem").symlink_to(
        tls / "archive" / "cert1.pem"
    )  # certbot's links, their targets gone
    (tls / "live" / "key.pem").symlink_to(tls / "archive" / "key1.pem")
    spec = {"cert": cert, "key": key, "names": ["shop.example.com"]}
    assert json.loads(rh.tls_spec(json.dumps(spec))) == spec  # passed on for tls_check.py to name
    (tls / "live" / "key.pem").unlink()
    (tls / "live" / "key.pem").symlink_to(
        tmp_path / "home" / "key.pem"
    )  # dangling, and outside root's TLS folders
    with pytest.raises(rh.Refused, match="must be under"):
        rh.tls_spec(json.dumps(spec))


# 10. an empty file is a file


def test_an_empty_admin_file_is_left_alone_with_exit_66(host: Host) -> None:
    Path(host.site).write_text("")
    rh.state_folder("sites")
    before = snapshot(host)
    assert host.install() == 66
    assert snapshot(host) == before and host.tests == [] and host.claim() is None
    Path(host.site).write_text(FOREIGN)  # the kept locations' file too
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    Path(nginx_site.extras_path(host.site)).write_text("")
    assert rh.v_extras_write([X, host.site, "3", "nginx -t"]) == 66
    assert Path(nginx_site.extras_path(host.site)).read_text() == ""


# 11. certbot's hook


def test_certbot_hook_never_overwrites_a_file_the_tool_did_not_write(
    host: Host, tmp_path: Path
) -> None:
    args = [
        "shop",
        "/etc/letsencrypt/live/shop/fullchain.pem",
        host.site,
        "nginx -t",
        "nginx -s reload",
    ]
    path = tmp_path / "hooks" / "signalcraft-shop"
    path.parent.mkdir()
    for admins in (
        "#!/bin/sh\ncurl https://admin.example/renewed\n",
        "",
        "# Rendered by signalcraft-deploy.\n",
    ):
        path.write_text(admins)
        with pytest.raises(rh.Refused, match="was not written by signalcraft-deploy"):
            rh.v_certbot_hook(args)
        assert path.read_text() == admins
    path.unlink()
    path.symlink_to(tmp_path / "target")
    with pytest.raises(rh.Refused, match="cannot be read as a plain file"):
        rh.v_certbot_hook(args)
    assert path.is_symlink() and not (tmp_path / "target").exists()
    path.unlink()
    assert rh.v_certbot_hook(args) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    path.write_text(
        path.read_text().replace("nginx -s reload", "systemctl reload nginx")
    )  # an older hook of ours
    assert rh.v_certbot_hook(args) == 0 and "nginx -s reload" in path.read_text()


# 12. the reload marker is on this host


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:8080/.signalcraft-deploy-site", True),
        ("http://localhost:80/.signalcraft-deploy-site", True),
        ("http://169.254.169.254:80/.signalcraft-deploy-site", False),
        ("http://8.8.8.8:80/.signalcraft-deploy-site", False),
        ("http://10.255.255.1:80/.signalcraft-deploy-site", False),
        ("http://[2001:db8::1]:80/.signalcraft-deploy-site", False),
    ],
)
def test_the_reload_marker_must_be_on_an_address_of_this_host(url: str, ok: bool) -> None:
    spec = {
        "cmd": "nginx -s reload",
        "wait": 10,
        "marker": {"url": url, "host": None, "expect": "0123456789abcdef"},
    }
    if ok:
        assert json.loads(rh.reload_spec(json.dumps(spec)))["marker"]["url"] == url
    else:
        with pytest.raises(rh.Refused, match="not on an address of this host"):
            rh.reload_spec(json.dumps(spec))


# ----------------------------------------------------------------------------- the second review,
# seen by an attacker


def without_lock(files: dict[str, Any]) -> dict[str, Any]:
    return {path: value for path, value in files.items() if not path.endswith("/.lock")}


def main_as_root(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    as_root(monkeypatch)
    try:
        return rh.main(argv)
    finally:
        release_lock()


# H1. a takeover writes over or removes only the file takeover-record saw


def test_a_record_made_for_an_absent_site_neither_overwrites_nor_removes_an_admins_file_made_there_since(
    host: Host,
) -> None:
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert (
        rh.takeover_meta(X, host.site)["digest"] is None
        and rh.takeover_meta(X, host.site)["site_existed"] is False
    )
    Path(host.site).write_text(FOREIGN)  # the admin's own site, written after the record
    rh.state_folder("sites")
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="changed since takeover-record saw it"):
        host.install(mode="takeover", server_name="shop.example.com")
    assert snapshot(host) == before
    assert host.install(server_name="shop.example.com") == 66  # nor without the takeover: not ours
    assert snapshot(host) == before
    with pytest.raises(
        rh.Refused, match="changed since takeover-record saw it"
    ):  # would remove the admin's file
        rh.v_takeover_restore([X, host.site, "nginx -t"])
    assert snapshot(host) == before and Path(host.site).read_text() == FOREIGN and host.tests == []


def test_a_recorded_admins_site_changed_since_is_neither_overwritten_nor_put_back(
    host: Host,
) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert rh.takeover_meta(X, host.site)["digest"] == hashlib.sha256(FOREIGN.encode()).hexdigest()
    changed = FOREIGN.replace(
        "/srv/static/", "/srv/static2/"
    )  # the admin edits it after the record
    Path(host.site).write_text(changed)
    rh.state_folder("sites")
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="changed since takeover-record saw it"):
        host.install(mode="takeover", server_name="shop.example.com")
    with pytest.raises(rh.Refused, match="changed since takeover-record saw it"):
        rh.v_takeover_restore([X, host.site, "nginx -t"])
    assert snapshot(host) == before and Path(host.site).read_text() == changed


def test_after_a_takeover_an_admins_file_put_in_place_of_ours_is_not_written_over_by_the_restore(
    host: Host,
) -> None:
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0  # absent when recorded
    assert (
        host.install(mode="takeover", server_name="shop.example.com") == 0
    )  # ours since: still a takeover's
    assert host.install(mode="takeover", server_name="shop.example.com", routes=["v2"]) == 0
    Path(host.site).write_text(
        FOREIGN
    )  # the admin replaces our file with its own; our claim is still there
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="changed since takeover-record saw it"):
        rh.v_takeover_restore([X, host.site, "nginx -t"])
    with pytest.raises(rh.Refused, match="changed since takeover-record saw it"):
        host.install(mode="takeover", server_name="shop.example.com")
    assert snapshot(host) == before and Path(host.site).read_text() == FOREIGN


def test_a_takeover_restore_of_a_site_absent_before_drops_our_backup_too(host: Host) -> None:
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover", server_name="shop.example.com") == 0
    assert host.install(mode="takeover", server_name="shop.example.com", routes=["v2"]) == 0
    assert os.path.exists(host.site + ".signalcraft-prev")
    assert rh.v_takeover_restore([X, host.site, "nginx -t"]) == 0
    assert (
        not os.path.lexists(host.site)
        and not os.path.lexists(host.site + ".signalcraft-prev")
        and host.claim() is None
    )
    host.as_user(
        B
    )  # the next owner of the name: its rollback removes its own site, never puts A's back
    assert host.install(state=Y, server_name="blog.example.com") == 0
    assert rh.v_site_restore([Y, host.site, "nginx -t"]) == 0
    assert not os.path.lexists(host.site) and host.claim() is None


# H2. a site root rendered before is checked again before it is put back


def test_site_restore_refuses_a_backup_serving_a_name_another_user_claimed_since(
    host: Host, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.install(server_name="shop.example.com") == 0
    assert (
        host.install(server_name="www.example.com") == 0
    )  # the backup serves shop.example.com, the claim no more
    assert "shop.example.com" in Path(host.site + ".signalcraft-prev").read_text()
    host.as_user(B)
    blog = str(host.available / "blog")
    assert host.install(state=Y, site=blog, server_name="shop.example.com") == 0  # free: B takes it
    host.as_user(A)
    before = without_lock(snapshot(host))
    assert main_as_root(monkeypatch, ["site-restore", X, host.site, "nginx -t"]) == 2
    err = capsys.readouterr().err
    assert (
        "the server name shop.example.com is served by another user's site" in err
        and err.count("\n") == 1
    )
    assert (
        without_lock(snapshot(host)) == before and "www.example.com" in Path(host.site).read_text()
    )
    assert host.claim()["names"] == ["www.example.com"] and rh.claim_of(blog)["uid"] == B
    assert (
        host.tests == [["nginx", "-t"]] * 3
    )  # the three installs: the refused restore ran no test


def test_site_restore_claims_what_the_backup_serves(host: Host) -> None:
    assert host.install(server_name="shop.example.com", listen=["8080"]) == 0
    assert host.install(server_name="www.example.com") == 0
    assert rh.v_site_restore([X, host.site, "nginx -t"]) == 0
    claim = host.claim()
    assert claim["names"] == ["shop.example.com"] and claim["listens"] == [["*", "8080"]]
    assert claim["upstream_ports"] == ["3000", "8001"]
    assert host.tests[-1] == ["nginx", "-t"]


def test_takeover_restore_refuses_the_callers_own_earlier_site_serving_a_name_claimed_since(
    host: Host,
) -> None:
    assert host.install(server_name="shop.example.com") == 0
    host.listening = {}  # a site the caller already claims needs no proof
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover", server_name="www.example.com") == 0
    host.as_user(B)
    blog = str(host.available / "blog")
    assert host.install(state=Y, site=blog, server_name="shop.example.com") == 0
    host.as_user(A)
    before = snapshot(host)
    with pytest.raises(
        rh.Refused, match="the server name shop.example.com is served by another user's site"
    ):
        rh.v_takeover_restore([X, host.site, "nginx -t"])
    assert snapshot(host) == before and Path(rh.takeover_folder(X), "meta.json").is_file()
    assert host.claim()["names"] == ["www.example.com"] and rh.claim_of(blog)["uid"] == B


# H3. listen addresses, upstream ports and other programs' ports


@pytest.mark.parametrize("listen", ["127.0.0.2:80", "[::]:80", "127.0.0.1:80"])
def test_another_user_listening_on_a_claimed_port_at_another_address_is_refused(
    host: Host, listen: str
) -> None:
    assert host.install(server_name="shop.example.com") == 0  # *:80
    before = snapshot(host)
    host.as_user(B)
    with pytest.raises(rh.Refused, match="port 80 is served by another user's site on \\*"):
        host.install(
            state=Y,
            site=str(host.available / "evil"),
            server_name="evil.example.net",
            listen=[listen],
        )
    assert snapshot(host) == before


def test_a_claimed_specific_address_is_refused_to_another_users_wildcard_on_its_port(
    host: Host,
) -> None:
    assert host.install(server_name="shop.example.com", listen=["127.0.0.2:80"]) == 0
    host.as_user(B)
    with pytest.raises(rh.Refused, match="port 80 is served by another user's site on 127.0.0.2"):
        host.install(
            state=Y,
            site=str(host.available / "evil"),
            server_name="evil.example.net",
            listen=["80"],
        )
    assert (
        host.install(
            state=Y,
            site=str(host.available / "blog"),
            server_name="blog.example.net",
            listen=["127.0.0.2:80"],
        )
        == 0
    )  # the same address: Nginx picks by name


@pytest.mark.parametrize("listen", ["8001", "127.0.0.2:8001", "[::1]:3000"])
def test_another_user_listening_on_a_claimed_sites_upstream_port_is_refused(
    host: Host, listen: str
) -> None:
    host.listening = {}  # A's servers are down for the moment: only the claim tells
    assert host.install(server_name="shop.example.com") == 0
    before = snapshot(host)
    host.as_user(B)
    with pytest.raises(rh.Refused, match="is where another user's site sends its requests"):
        host.install(
            state=Y,
            site=str(host.available / "evil"),
            server_name="evil.example.net",
            listen=[listen],
        )
    assert snapshot(host) == before


POSTGRES = (
    'LISTEN 0      244        127.0.0.1:5432      0.0.0.0:*    users:(("postgres",pid=812,fd=6))'
)
NGINX_80 = (
    "LISTEN 0      511          0.0.0.0:80        0.0.0.0:*   "
    ' users:(("nginx",pid=901,fd=6),("nginx",pid=900,fd=6))'
)


@pytest.mark.parametrize("listen", ["5432", "10.1.2.3:5432", "[::]:5432"])
def test_a_port_another_program_listens_on_is_refused(host: Host, listen: str) -> None:
    host.ss_more = [POSTGRES, NGINX_80]
    rh.state_folder("sites")
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="port 5432 is held by a program other than Nginx"):
        host.install(server_name="shop.example.com", listen=[listen])
    assert snapshot(host) == before and host.tests == []
    assert (
        host.install(server_name="shop.example.com", listen=["80"]) == 0
    )  # Nginx's own port is Nginx's


# M1. takeover-record: a wildcard listener proves only a local backend; no other user's backend
# behind the site


REMOTE = """server {
    listen 80;
    location / {
        proxy_pass http://10.0.0.7:9000;
    }
}
"""


@pytest.mark.skipif(rh.is_local("10.0.0.7"), reason="10.0.0.7 is an address of this host")
@pytest.mark.parametrize("listening", ["*:9000", "0.0.0.0:9000", "[::]:9000"])
def test_a_wildcard_listener_does_not_prove_a_remote_backend(host: Host, listening: str) -> None:
    Path(host.site).write_text(REMOTE)
    host.listening = {os.getpid(): {listening}}
    with pytest.raises(rh.Refused, match="does not proxy to a port pid"):
        rh.v_takeover_record([X, str(os.getpid()), host.site])
    assert rh.takeover_meta(X, host.site) is None and Path(host.site).read_text() == REMOTE


def test_is_local() -> None:
    assert rh.is_local("127.0.0.1") and rh.is_local("localhost")
    assert not rh.is_local("192.0.2.1") and not rh.is_local("not an address")


TWO_BACKENDS = """server {
    listen 80;
    location /app {
        proxy_pass http://127.0.0.1:8001;
    }
    location /admin {
        proxy_pass http://127.0.0.1:9000;
    }
}
"""


@pytest.mark.parametrize("theirs", ["127.0.0.1:9000", "*:9000", "0.0.0.0:9000"])
def test_takeover_record_refuses_a_site_that_also_proxies_to_another_users_process(
    host: Host, monkeypatch: pytest.MonkeyPatch, theirs: str
) -> None:
    Path(host.site).write_text(TWO_BACKENDS)
    other = 4242
    host.listening = {os.getpid(): {"127.0.0.1:8001"}, other: {theirs}}
    monkeypatch.setattr(rh, "uid_of", lambda pid: A if pid == os.getpid() else B)
    with pytest.raises(rh.Refused, match="does not proxy to a port pid"):
        rh.v_takeover_record([X, str(os.getpid()), host.site])
    assert (
        rh.takeover_meta(X, host.site) is None
        and list((host.state / "takeover").rglob("*.json")) == []
    )
    host.listening = {
        os.getpid(): {"127.0.0.1:8001", "127.0.0.1:9000"}
    }  # both the caller's: its site
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0


# M2. TLS files compared as the files they are


@pytest.mark.skipif(os.geteuid() != 0, reason="tls_real accepts only files root owns")
def test_a_certificate_named_through_another_link_to_the_same_file_is_refused(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = tmp_path / "tls"
    (tls / "archive").mkdir(parents=True)
    (tls / "live" / "shop").mkdir(parents=True)
    (tls / "live" / "evil").mkdir(parents=True)
    monkeypatch.setattr(nginx_site, "TLS_FOLDERS", (str(tls) + "/",))
    for name in ("cert1.pem", "key1.pem", "evil-cert.pem", "evil-key.pem"):
        (tls / "archive" / name).write_text(name)
    (tls / "live" / "shop" / "fullchain.pem").symlink_to(tls / "archive" / "cert1.pem")
    (tls / "live" / "shop" / "privkey.pem").symlink_to(tls / "archive" / "key1.pem")
    mine = {
        "cert": str(tls / "live" / "shop" / "fullchain.pem"),
        "key": str(tls / "live" / "shop" / "privkey.pem"),
        "redirect": False,
    }
    assert host.install(server_name="shop.example.com", tls=mine) == 0
    assert host.claim()["tls"] == sorted(
        [
            str(tls / "archive" / "cert1.pem"),
            str(tls / "archive" / "key1.pem"),
            mine["cert"],
            mine["key"],
        ]
    )  # as named and as resolved
    (tls / "live" / "evil" / "cert.pem").symlink_to(
        "../../archive/cert1.pem"
    )  # another name for A's certificate
    (tls / "live" / "evil" / "key.pem").symlink_to(tls / "archive" / "key1.pem")
    before = snapshot(host)
    host.as_user(B)
    evil = str(host.available / "evil")
    own_cert, own_key = (
        str(tls / "archive" / "evil-cert.pem"),
        str(tls / "archive" / "evil-key.pem"),
    )
    for cert, key in (
        (str(tls / "live" / "evil" / "cert.pem"), own_key),
        (own_cert, str(tls / "live" / "evil" / "key.pem")),
        (str(tls / "archive" / "cert1.pem"), own_key),
    ):
        with pytest.raises(rh.Refused, match="certificate or key is another user's"):
            host.install(
                state=Y,
                site=evil,
                server_name="evil.example.net",
                listen=["8080"],
                tls_listen=["8443"],
                tls={"cert": cert, "key": key, "redirect": False},
            )
        assert snapshot(host) == before
    assert (
        host.install(
            state=Y,
            site=evil,
            server_name="evil.example.net",
            listen=["8080"],
            tls_listen=["8443"],
            tls={"cert": own_cert, "key": own_key, "redirect": False},
        )
        == 0
    )


# M3. a refusal part way undoes what was changed


def test_a_refusal_part_way_through_a_first_install_leaves_every_file_as_it_was(
    host: Host, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere-default"
    elsewhere.write_text("server {\n listen 80 default_server;\n}\n")
    (host.available / "default").symlink_to(
        elsewhere
    )  # the stock default is a link: park_default will not read it
    host.default_link.symlink_to(host.available / "default")
    rh.state_folder("sites")
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="cannot be read as a plain file"):
        host.install()  # the default server: after the site, its claim and its link were written
    assert snapshot(host) == before and host.claim() is None and host.tests == []
    assert not os.path.lexists(host.site) and not os.path.lexists(host.enabled / "shop")


def test_a_refusal_part_way_through_a_second_install_puts_the_first_back(
    host: Host, tmp_path: Path
) -> None:
    assert host.install(server_name="shop.example.com") == 0
    elsewhere = tmp_path / "elsewhere-default"
    elsewhere.write_text("server {\n listen 80 default_server;\n}\n")
    (host.available / "default").symlink_to(elsewhere)
    host.default_link.symlink_to(host.available / "default")
    before = snapshot(host)
    with pytest.raises(rh.Refused, match="cannot be read as a plain file"):
        host.install()
    assert snapshot(host) == before and not os.path.lexists(host.site + ".signalcraft-prev")
    assert host.claim()["names"] == ["shop.example.com"]


def test_a_refusal_part_way_through_main_is_one_line_exit_2_and_undone(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (host.available / "default").symlink_to(tmp_path / "anything")
    host.default_link.symlink_to(host.available / "default")
    rh.state_folder("sites")
    before = without_lock(snapshot(host))
    host.stdin(json.dumps(host.desc()))
    assert main_as_root(monkeypatch, ["site-install", X, "backup", "guard", "nginx -t"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and without_lock(snapshot(host)) == before


# L1. what nginx -t says, whatever its bytes


def test_non_utf8_bytes_in_the_tests_output_still_undo_a_failed_install(
    host: Host, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host.stock_default()
    rh.state_folder("sites")
    before = snapshot(host)
    monkeypatch.setattr(rh, "test_passes", TEST_PASSES)
    said = (
        "import sys; sys.stderr.buffer.write(b'nginx: [emerg] unknown \\xff\\xfe\\x80 in"
        " /etc/nginx\\n'); sys.exit(1)"
    )
    monkeypatch.setattr(
        rh, "nginx_test", lambda test: RUN_CHILD([sys.executable, "-c", said], True)
    )
    assert host.install() == 65
    assert snapshot(host) == before and host.claim() is None and rh.parked() is None
    assert "nginx: [emerg] unknown \ufffd\ufffd\ufffd in /etc/nginx" in capsys.readouterr().err


def test_non_utf8_bytes_beside_a_conflicting_name_warning_still_fail_the_install(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    rh.state_folder("sites")
    before = snapshot(host)
    monkeypatch.setattr(rh, "test_passes", TEST_PASSES)
    said = (
        "import sys; sys.stderr.buffer.write(b'nginx: [warn] \\xff conflicting server name"
        ' "shop.example.com" on 0.0.0.0:80, ignored\\n\')'
    )
    monkeypatch.setattr(
        rh, "nginx_test", lambda test: RUN_CHILD([sys.executable, "-c", said], True)
    )
    assert host.install(server_name="shop.example.com") == 65
    assert snapshot(host) == before


# L3. a wildcard over a whole top-level domain


@pytest.mark.parametrize("name", ["*.com", "*.com.", "shop.example.com *.org", "*.COM"])
def test_a_wildcard_over_a_top_level_domain_is_refused_before_any_claim_is_read(
    host: Host, name: str
) -> None:
    with pytest.raises(rh.Refused, match="a wildcard over a whole top-level domain"):
        host.install(server_name=name)
    assert host.ran == [] and not os.path.lexists(host.site)


# the second review's findings, fixed: listens on several addresses, certificate renewals, every
# *_pass, one spelling per port


def test_two_users_both_serving_ipv4_and_ipv6_on_port_80_coexist_by_name(host: Host) -> None:
    assert host.install(server_name="shop.example.com", listen=["80", "[::]:80"]) == 0
    host.as_user(B)
    assert (
        host.install(
            state=Y,
            site=str(host.available / "blog"),
            server_name="blog.example.net",
            listen=["80", "[::]:80"],
        )
        == 0
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="tls_real accepts only files root owns")
def test_a_certificate_renewed_since_the_claim_is_still_refused_to_another_user_by_the_same_path(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = tmp_path / "tls"
    (tls / "archive").mkdir(parents=True)
    (tls / "live").mkdir()
    monkeypatch.setattr(nginx_site, "TLS_FOLDERS", (str(tls) + "/",))
    for name in ("cert1.pem", "key1.pem", "cert2.pem", "key2.pem"):
        (tls / "archive" / name).write_text(name)
    cert, key = tls / "live" / "fullchain.pem", tls / "live" / "privkey.pem"
    cert.symlink_to(tls / "archive" / "cert1.pem")
    key.symlink_to(tls / "archive" / "key1.pem")
    assert (
        host.install(
            server_name="shop.example.com",
            tls={"cert": str(cert), "key": str(key), "redirect": False},
        )
        == 0
    )
    cert.unlink()  # certbot renews: live/ now names the second files
    cert.symlink_to(tls / "archive" / "cert2.pem")
    key.unlink()
    key.symlink_to(tls / "archive" / "key2.pem")
    host.as_user(B)
    with pytest.raises(rh.Refused, match="certificate or key is another user's"):
        host.install(
            state=Y,
            site=str(host.available / "evil"),
            server_name="evil.example.net",
            listen=["8080"],
            tls_listen=["8443"],
            tls={"cert": str(cert), "key": str(key), "redirect": False},
        )


@pytest.mark.parametrize(
    "directive",
    [
        "fastcgi_pass 127.0.0.1:9000",
        "uwsgi_pass 127.0.0.1:9000",
        "grpc_pass grpc://127.0.0.1:9000",
        "scgi_pass 127.0.0.1:9000",
    ],
)
def test_takeover_record_refuses_a_site_that_also_passes_to_another_users_process_by_another_directive(
    host: Host, monkeypatch: pytest.MonkeyPatch, directive: str
) -> None:
    Path(host.site).write_text(TWO_BACKENDS.replace("proxy_pass http://127.0.0.1:9000", directive))
    host.listening = {os.getpid(): {"127.0.0.1:8001"}, 4242: {"127.0.0.1:9000"}}
    monkeypatch.setattr(rh, "uid_of", lambda pid: A if pid == os.getpid() else B)
    with pytest.raises(rh.Refused, match="does not proxy to a port pid"):
        rh.v_takeover_record([X, str(os.getpid()), host.site])


@pytest.mark.parametrize("listen", ["127.0.0.2:080", "[::]:080", "08001", "05432"])
def test_a_port_spelled_with_a_leading_zero_is_the_same_port(host: Host, listen: str) -> None:
    host.listening = {}
    host.ss_more = [POSTGRES]
    assert host.install(server_name="shop.example.com") == 0  # *:80, upstream 8001
    before = snapshot(host)
    host.as_user(B)
    with pytest.raises(rh.Refused):
        host.install(
            state=Y,
            site=str(host.available / "evil"),
            server_name="evil.example.net",
            listen=[listen],
        )
    assert snapshot(host) == before


# ----------------------------------------------------------------------------- host/root.py


def test_the_digest_covers_the_helper_and_every_file_beside_it() -> None:
    files = root.files()
    assert list(files)[:2] == [root.HELPER, root.APP_HELPER] and files[root.HELPER] == (
        program("root_helper"),
        "0755",
    )
    assert files[root.APP_HELPER] == (program("app_helper"), "0755")
    beside = list(files)[2:]
    assert beside == sorted(beside) and all(p.startswith(root.LIB + "/") for p in beside)
    assert all(mode == "0644" for _, mode in list(files.values())[2:])
    programs = {p.rsplit("/", 1)[1] for p in beside if "/crossplane/" not in p}
    assert programs == set(root.LIB_FILES)
    # every program the helper runs is installed beside it
    assert set(re.findall(r'run_lib\("([a-z_]+\.(?:py|sh))"', source("root_helper.py"))) == set(
        root.LIB_FILES
    )
    # and the parser, as installed here (the helper imports it from LIB/crossplane/)
    parser = {p[len(root.LIB) + 1 :]: files[p][0] for p in beside if "/crossplane/" in p}
    assert parser == root.crossplane_files() and "crossplane/__init__.py" in parser
    assert (
        parser["crossplane/parser.py"]
        == Path(crossplane.__file__).with_name("parser.py").read_text()
    )
    assert (
        root.digest() == hashlib.sha256("".join(t for t, _ in files.values()).encode()).hexdigest()
    )


def test_the_helpers_version_verb_reads_the_files_in_the_clients_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for path, (text, _) in root.files().items():
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
    monkeypatch.setattr(rh, "HELPER", str(tmp_path / root.HELPER.lstrip("/")))
    monkeypatch.setattr(rh, "APP_HELPER", str(tmp_path / root.APP_HELPER.lstrip("/")))
    monkeypatch.setattr(rh, "LIB", str(tmp_path / root.LIB.lstrip("/")))
    assert rh.v_version([]) == 0
    assert capsys.readouterr().out.strip() == root.digest()


def test_the_digest_command_computes_the_same_on_the_host(tmp_path: Path) -> None:
    paths = list(root.files())
    command = root.digest_command()
    assert command.startswith("cat ")
    # the same command over copies of the files, in the same order
    copies = []
    for i, (text, _) in enumerate(root.files().values()):
        (tmp_path / str(i)).write_text(text)
        copies.append(str(tmp_path / str(i)))
    listed = command[len("cat ") : command.index(" 2>/dev/null")].split(" ")
    assert listed == paths  # none of the paths needs quoting
    local = "cat " + " ".join(copies) + command[command.index(" 2>/dev/null") :]
    assert (
        subprocess.run(["sh", "-c", local], capture_output=True, text=True).stdout.strip()
        == root.digest()
    )
    (tmp_path / "0").unlink()  # a missing file makes it differ
    assert (
        subprocess.run(["sh", "-c", local], capture_output=True, text=True).stdout.strip()
        != root.digest()
    )


def test_the_helper_command_quotes_every_argument() -> None:
    assert (
        root.command("site-read", "/etc/nginx/sites-available/a b")
        == "sudo -n /usr/local/sbin/signalcraft-root site-read '/etc/nginx/sites-available/a b'"
    )
    assert (
        root.command("nginx-test", "nginx -t; id")
        == "sudo -n /usr/local/sbin/signalcraft-root nginx-test 'nginx -t; id'"
    )


def test_install_command_writes_through_a_temporary_file_made_in_the_folder() -> None:
    command = root.install_command(f"{root.LIB}/crossplane/parser.py", "0644")
    assert command.startswith("sudo -n sh -c ")
    assert f"mktemp {root.LIB}/crossplane/.signalcraft-XXXXXX" in command
    assert "chown root:root /usr/local/lib/signalcraft-deploy/crossplane && chmod 0755" in command
    assert 'mv -f "$t" /usr/local/lib/signalcraft-deploy/crossplane/parser.py' in command
    helper = root.install_command(root.HELPER, "0755")
    assert (
        "mktemp /usr/local/sbin/.signalcraft-XXXXXX" in helper
        and "chown root:root /usr/local/sbin &&" not in helper
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="chown root:root needs root")
def test_install_command_installs_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sbin" / "helper"
    command = root.install_command(str(path), "0755").removeprefix("sudo -n ")
    done = subprocess.run(
        ["sh", "-c", command],
        input="#!/bin/sh\necho hi\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert path.read_text() == "#!/bin/sh\necho hi\n" and stat.S_IMODE(path.stat().st_mode) == 0o755
    assert path.stat().st_uid == 0 and os.listdir(path.parent) == [
        "helper"
    ]  # no temporary file left


def state(installed: str, full: bool, allowed: bool) -> HelperState:
    return HelperState(installed=installed, full_sudo=full, allowed=allowed)


def test_with_only_the_drop_in_an_outdated_helper_stops_before_anything_and_names_setup() -> None:
    c = mock_host()
    with pytest.raises(Exit) as err:
        root.ensure(c, state("0" * 64, full=False, allowed=True))
    assert (
        "fab -H" in str(err.value.message)
        and "setup" in str(err.value.message)
        and "Nothing was changed" in str(err.value.message)
    )
    with pytest.raises(Exit) as err:
        root.ensure(mock_host(), state("", full=False, allowed=False))
    assert "passwordless sudo" in str(err.value.message) and "NOPASSWD" in str(err.value.message)


def test_with_full_sudo_a_missing_helper_is_installed_once_per_connection() -> None:
    c = mock_host(
        run={re.compile(r"sudo -n sh -c .*"): Result(), re.compile(r"sudo -n rm -f .*"): Result()},
        repeat=True,
    )
    root.ensure(c, state("", full=True, allowed=True))
    commands = [call.args[0] for call in c.run.call_args_list]
    assert len(commands) == len(root.files()) + 1
    assert all("chown root:root" in cmd and "mktemp" in cmd for cmd in commands[:-1])
    for path, cmd in zip(root.files(), commands, strict=False):
        assert cmd == root.install_command(path, root.files()[path][1])
    # what older versions installed beside the helper is removed
    assert commands[-1].startswith("sudo -n rm -f ") and all(
        f"{root.LIB}/{name}" in commands[-1] for name in root.RETIRED
    )
    root.ensure(c, state("", full=True, allowed=True))  # ready: nothing more
    assert len(c.run.call_args_list) == len(commands)
    current = mock_host()
    root.ensure(
        current, state(root.digest(), full=False, allowed=True)
    )  # this version's: nothing to do, no command


def test_a_failed_install_stops_with_the_hint() -> None:
    c = mock_host(
        run={
            re.compile(r"sudo -n sh -c .*"): Result(exited=1, stderr="sudo: a password is required")
        },
        repeat=True,
    )
    with pytest.raises(Exit) as err:
        root.install(c)
    assert "sudo: a password is required" in str(
        err.value.message
    ) and "full passwordless sudo" in str(err.value.message)


def test_parse_state() -> None:
    assert root.parse_state(f"digest {root.digest()}\nallowed\n") == state(
        root.digest(), False, True
    )
    assert root.parse_state("digest abc\nfull\n") == state("abc", True, True)
    assert root.parse_state("") == state("", False, False)


@pytest.mark.skipif(not shutil.which("visudo"), reason="visudo not installed")
def test_the_sudoers_drop_in_passes_visudo_and_allows_only_the_helper(tmp_path: Path) -> None:
    text = root.sudoers_text("deploy")
    (tmp_path / "d").write_text(text)
    assert subprocess.run(["visudo", "-cqf", str(tmp_path / "d")]).returncode == 0
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == ["deploy ALL=(root) NOPASSWD: /usr/local/sbin/signalcraft-root"]
    assert (
        root.sudoers_path("first.last") == "/etc/sudoers.d/signalcraft-first_last"
    )  # sudo skips names with a '.'


def test_the_callers_own_processes_are_its_and_its_recorded_apps_accounts_and_no_others(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """own_uids: setup's record (root's) names the caller's app users; an entry whose account is
    gone, has another uid now (a reused name) or is root's, or a record of another deploy user, adds
    nobody."""
    me = pwd.getpwuid(A).pw_name
    accounts = {"shop": 998, "blog": 997, "reused": 1500, "rooty": 0}
    monkeypatch.setattr(
        rh.pwd,
        "getpwnam",
        lambda name: (
            pwd.struct_passwd((name, "x", accounts[name], 0, "", "/", "/bin/sh"))
            if name in accounts
            else (_ for _ in ()).throw(KeyError(name))
        ),
    )
    records = Path(rh.STATE) / "app-users"
    records.mkdir(parents=True)
    (records / f"{me}.json").write_text(
        json.dumps(
            {
                "deploy": me,
                "apps": {
                    "shop": {"uid": 998},
                    "blog": {"uid": 997},
                    "reused": {"uid": 996},
                    "rooty": {"uid": 0},
                    "gone": {"uid": 995},
                },
            }
        )
    )
    assert rh.own_uids() == {A, 998, 997}
    (records / f"{me}.json").write_text(
        json.dumps({"deploy": "someone-else", "apps": {"shop": {"uid": 998}}})
    )
    assert rh.own_uids() == {A}
    (records / f"{me}.json").write_text("{not json")
    assert rh.own_uids() == {A}


def test_pm2_boot_starts_only_a_recorded_apps_accounts_enabled_unit_and_only_when_no_daemon_of_it_runs(
    host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pm2-boot: the deploy user's way to have systemd (not its SSH session) run its apps' PM2, by
    the unit setup wrote; nothing for an account root's record does not give the caller, nothing
    when a daemon of it runs.
    """
    me = pwd.getpwuid(A).pw_name
    monkeypatch.setattr(
        rh.pwd,
        "getpwnam",
        lambda name: (
            pwd.struct_passwd((name, "x", 998, 998, "", "/", "/usr/sbin/nologin"))
            if name == "shop"
            else (_ for _ in ()).throw(KeyError(name))
        ),
    )
    (Path(rh.STATE) / "app-users").mkdir(parents=True)
    (Path(rh.STATE) / "app-users" / f"{me}.json").write_text(
        json.dumps({"deploy": me, "apps": {"shop": {"uid": 998}}})
    )
    units, running = tmp_path / "systemd", tmp_path / "run-systemd"
    (units / "multi-user.target.wants").mkdir(parents=True)
    monkeypatch.setattr(rh, "UNIT_DIR", str(units))
    monkeypatch.setattr(rh, "SYSTEMD_RUNNING", str(running))
    daemons: dict[int, int] = {}
    monkeypatch.setattr(rh, "pm2_daemon_of", lambda uid: daemons.get(uid))

    def boot(name: str = "shop") -> str:
        assert rh.v_pm2_boot([name]) == 0
        return capsys.readouterr().out.strip()

    with pytest.raises(rh.Refused, match="blog is not one of your apps' accounts"):
        rh.v_pm2_boot(["blog"])
    with pytest.raises(rh.Refused, match="an account name is not accepted"):
        rh.v_pm2_boot(["../shop"])
    assert boot() == "no-systemd"
    running.mkdir()
    assert boot() == "not-enabled"
    (units / "multi-user.target.wants" / "pm2-shop.service").symlink_to(units / "pm2-shop.service")
    daemons[998] = 4242
    assert boot() == "running" and host.ran == []  # a daemon outside the unit is never doubled
    del daemons[998]
    assert boot() == "started" and host.ran == [["systemctl", "start", "pm2-shop.service"]]


@pytest.mark.parametrize(
    ("title", "found"),
    [
        ("PM2 v7.0.4: God Daemon (/var/lib/signalcraft-apps/shop/.pm2)", True),
        ("node /usr/bin/pm2 jlist", False),
    ],
)
def test_pm2_daemon_of_finds_a_process_of_the_account_by_the_title_pm2_gives_its_daemon(
    monkeypatch: pytest.MonkeyPatch, title: str, found: bool
) -> None:
    proc = subprocess.Popen(["bash", "-c", f'exec -a "{title}" sleep 30'])
    try:
        for _ in range(100):  # until the exec has happened
            if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(title.encode()):
                break
            time.sleep(0.02)
        monkeypatch.setattr(
            rh, "uid_of", lambda pid: 4321 if pid == proc.pid else -1
        )  # the account's only process
        assert rh.pm2_daemon_of(4321) == (proc.pid if found else None)
        assert rh.pm2_daemon_of(4322) is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not shutil.which("visudo"), reason="visudo not installed")
def test_the_drop_in_with_app_users_passes_visudo_and_lets_the_app_helper_run_as_them_alone(
    tmp_path: Path,
) -> None:
    text = root.sudoers_text("deploy", ("shop", "blog"))
    (tmp_path / "d").write_text(text)
    assert subprocess.run(["visudo", "-cqf", str(tmp_path / "d")]).returncode == 0
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    # No variable of the caller's reaches the app helper, nor the caller's terminal (even where
    # use_pty is off).
    assert rules == [
        "Defaults!/usr/local/sbin/signalcraft-app use_pty, env_reset, !setenv",
        "deploy ALL=(root) NOPASSWD: /usr/local/sbin/signalcraft-root",
        "deploy ALL=(shop, blog) NOPASSWD: /usr/local/sbin/signalcraft-app",
    ]


# ----------------------------------------------------------------------------- site-remove
# (`remove`), seen by an attacker


def hook_for(host: Host, app: str, site: str) -> Path:
    """certbot's hook as certbot-hook writes it for `app` and `site`."""
    cert = "/etc/letsencrypt/live/shop/fullchain.pem"
    path, text = rh.certbot_hook(app, cert, site, "nginx -t", "nginx -s reload")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return Path(path)


def test_site_remove_takes_off_the_callers_site_its_leftovers_and_its_hook_and_unparks_the_default(
    host: Host,
) -> None:
    target = host.stock_default()
    assert (
        host.install(server_name="shop.example.com") == 0
        and host.install(server_name="shop.example.com") == 0
    )
    assert os.path.exists(host.site + ".signalcraft-prev")
    Path(host.site + ".signalcraft-tmpprev").write_text("an older version's backup\n")
    hook = hook_for(host, "shop", host.site)
    before = len(host.tests)
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 0
    left = [p.name for p in host.available.parent.rglob("*")]
    assert not [n for n in left if n.startswith("shop")], left
    assert (
        os.readlink(host.default_link) == str(target) and host.claim() is None and not hook.exists()
    )
    assert len(host.tests) == before + 1
    assert (
        rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 0
    )  # a second run: nothing left, nothing tested
    assert len(host.tests) == before + 1


def test_site_remove_refuses_another_users_or_deploy_roots_site_and_changes_nothing(
    host: Host,
) -> None:
    assert host.install() == 0
    hook = hook_for(host, "shop", host.site)
    before = host.files()
    for uid, state in other_callers(host):
        host.as_user(uid)
        with pytest.raises(rh.Refused, match="belongs to another user or deploy root"):
            rh.v_site_remove([state, host.site, "shop", "nginx -t"])
        assert host.files() == before and hook.exists()
    assert host.tests == [["nginx", "-t"]]


def test_site_remove_leaves_an_unclaimed_or_not_ours_site_alone(host: Host) -> None:
    Path(host.site).write_text(
        "server { listen 80; }\n"
    )  # an admin's, never installed by the helper
    with pytest.raises(rh.Refused, match="was not installed by this helper"):
        rh.v_site_remove([X, host.site, "shop", "nginx -t"])
    Path(host.site).unlink()
    assert host.install() == 0
    Path(host.site).write_text(
        "server { listen 80; }\n"
    )  # claimed, but an admin wrote over it since
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 66
    assert Path(host.site).read_text() == "server { listen 80; }\n" and host.claim() is not None


@pytest.mark.parametrize(
    "args",
    [
        [X, "/etc/nginx/sites-enabled/shop", "shop", "nginx -t"],  # the link, not the site
        [X, "/etc/passwd", "shop", "nginx -t"],
        [X, "SITE/../../../etc/passwd", "shop", "nginx -t"],
        [X, "SITE.signalcraft-prev", "shop", "nginx -t"],  # a second name of the site's
        [
            X,
            "SITE",
            "../../../etc/cron.d/x",
            "nginx -t",
        ],  # the hook's name is signalcraft-APP_NAME, a plain name
        [X, "SITE", "Shop", "nginx -t"],
        [X, "SITE", "shop", "rm -rf /"],
        ["/srv/shop", "SITE", "shop", "nginx -t"],
    ],
)
def test_site_remove_refuses_a_path_or_name_the_caller_chooses_freely(
    host: Host, args: list[str]
) -> None:
    assert host.install() == 0
    before = host.files()
    with pytest.raises(rh.Refused):
        rh.v_site_remove([a.replace("SITE", host.site) for a in args])
    assert host.files() == before


def test_site_remove_keeps_a_hook_for_another_site_or_not_roots_and_follows_no_link(
    host: Host, tmp_path: Path
) -> None:
    assert host.install() == 0
    other = hook_for(
        host, "shop", str(host.available / "blog")
    )  # signalcraft-shop, but written for another site
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 0 and other.exists()
    assert host.install() == 0
    other.unlink()
    secret = tmp_path / "secret"
    secret.write_text("#!/bin/sh\n" + SITE_HEADER + f" (site {host.site}).\n")
    other.symlink_to(secret)  # a link at the hook's name, to a file that looks like the hook
    Path(host.site + ".signalcraft-tmp").symlink_to(secret)  # and at a leftover's name
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 0
    assert secret.read_text().startswith("#!/bin/sh") and other.is_symlink()
    assert not os.path.lexists(
        host.site + ".signalcraft-tmp"
    )  # the link itself is gone, its target kept


def test_a_failed_test_after_site_remove_leaves_every_file_as_it_was(host: Host) -> None:
    host.stock_default()
    assert host.install() == 0
    hook_for(host, "shop", host.site)
    Path(host.site + ".signalcraft-tmpprev").write_text("old\n")
    before = snapshot(host)
    host.test_ok = False
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 65
    assert snapshot(host) == before and Path(rh.HOOK_DIR, "signalcraft-shop").exists()


def test_site_remove_drops_the_callers_takeover_record(host: Host) -> None:
    Path(host.site).write_text(FOREIGN)
    assert rh.v_takeover_record([X, str(os.getpid()), host.site]) == 0
    assert host.install(mode="takeover") == 0
    assert rh.takeover_meta(X, host.site) is not None
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 0
    assert rh.takeover_meta(X, host.site) is None and not os.path.lexists(host.site)


def test_an_install_renders_a_route_table_and_refuses_one_the_tool_could_not_make(
    host: Host,
) -> None:
    """ROUTES' descriptions (`table` in place of `routes`) go through the same door: a table that
    would put text of the caller's into Nginx's configuration (a directive, a second server) changes
    nothing."""
    table = host.desc(table=[["/", "python"], ["/chat", "nodejs", "mount"]])
    del table["routes"]
    for bad in (
        [["/", "python"], ["/x;} server {", "nodejs"]],
        [["/", "python"], ["/x", "nodejs;"]],
        [["/chat", "nodejs"]],
    ):
        before = host.files()
        host.stdin(json.dumps({**table, "table": bad}))
        with pytest.raises(rh.Refused, match="the site description"):
            rh.v_site_install([X, "backup", "guard", "nginx -t"])
        assert host.files() == before and host.tests == []
    host.stdin(json.dumps(table))
    assert rh.v_site_install([X, "backup", "guard", "nginx -t"]) == 0
    assert (
        Path(host.site).read_text() == nginx_site.render(table)
        and "X-Forwarded-Prefix /chat;" in Path(host.site).read_text()
    )


def test_another_user_can_neither_take_over_nor_remove_the_callers_certbot_hook(host: Host) -> None:
    # B names A's APP_NAME: certbot-hook would write signalcraft-shop over A's hook (now naming B's
    # own site), and B's site-remove with APP_NAME shop would then find "its" hook there and delete
    # it: A's renewals reload nothing.
    cert = "/etc/letsencrypt/live/shop/fullchain.pem"
    assert host.install() == 0
    assert rh.v_certbot_hook(["shop", cert, host.site, "nginx -t", "nginx -s reload"]) == 0
    hook = Path(rh.HOOK_DIR, "signalcraft-shop")
    mine = hook.read_text()
    blog = str(host.available / "blog")
    host.as_user(B)
    assert (
        host.install(
            state=Y,
            site=blog,
            upstream=nginx_site.upstream_for(blog),
            server_name="blog.example.com",
            python="127.0.0.1:8101",
            node="127.0.0.1:3100",
        )
        == 0
    )
    with pytest.raises(rh.Refused, match="another user's site"):
        rh.v_certbot_hook(["shop", cert, blog, "nginx -t", "nginx -s reload"])
    assert rh.v_site_remove([Y, blog, "shop", "nginx -t"]) == 0
    assert hook.read_text() == mine


# ----------------------------------------------------------------------------- maintenance-on/off
# (`maintenance`), seen by an attacker: root renders the files from a checked description; the pages
# are the only bytes it writes as sent, into its own folder, for Nginx to serve


def maintenance_desc(**changes: Any) -> dict[str, Any]:
    return {
        "retry_after": 600,
        "open": ["/api/flask/health"],
        "prefixes": ["/api/status"],
        "probe": ["/api/flask/health", "/"],
        "html": "<h1>Back at 5 $host ; } { include /etc/shadow;</h1>\n",
        "json": '{"error": "maintenance"}\n',
        **changes,
    }


def maintenance_on(host: Host, desc: Any = None, state: str = X) -> int:
    host.stdin(json.dumps(maintenance_desc() if desc is None else desc))
    return rh.v_maintenance_on([state, host.site, "nginx -t"])


def test_maintenance_on_writes_roots_rendering_and_the_pages_as_sent_and_prints_its_id(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.install() == 0
    capsys.readouterr()
    assert maintenance_on(host) == 0
    files = nginx_site.maintenance_files(nginx_site.upstream_for(host.site))
    rendered = nginx_site.render_maintenance(nginx_site.upstream_for(host.site), maintenance_desc())
    assert capsys.readouterr().out == rendered["id"] + "\n"
    assert Path(files["maps"]).read_text() == rendered["maps"]
    assert Path(files["server"]).read_text() == rendered["server"]
    pages = Path(files["pages"])
    assert (pages / "503.html").read_text() == maintenance_desc()["html"]
    assert (pages / "503.json").read_text() == maintenance_desc()["json"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in host.maintenance.rglob("*")}
    assert modes == {
        Path(files["maps"]).name: 0o640,
        Path(files["server"]).name: 0o640,
        pages.name: 0o755,
        "503.html": 0o644,
        "503.json": 0o644,
    }
    # the page's text never reaches the configuration; the site includes both files
    assert "shadow" not in rendered["maps"] + rendered["server"]
    site = Path(host.site).read_text()
    assert f"include {files['maps'][:-1]}[s];" in site
    assert f"include {files['server'][:-1]}[r];" in site
    assert host.tests[-1] == ["nginx", "-t"]


@pytest.mark.parametrize(
    "bad",
    [
        {"retry_after": "600; } server { listen 81; }"},
        {"retry_after": -1},
        {"retry_after": 0},
        {"retry_after": True},
        {"retry_after": 10**9},
        {"open": ["/health; alias /etc/"]},
        {"open": ["/health 1;\n} map $x $y {"]},
        {"open": ["/a/../b"]},
        {"open": ["/$host"]},
        {"open": ['/a"b']},
        {"open": ["health"]},
        {"open": ["/x"] * 2},
        {"open": [f"/p{i}" for i in range(101)]},
        {"prefixes": ["/"]},
        {"prefixes": ["/a{b}"]},
        {"probe": [7]},
        {"html": ""},
        {"html": "x" * (nginx_site.MAX_PAGE + 1)},
        {"json": None},
        {"alias": "/etc/"},
    ],
)
def test_maintenance_on_refuses_what_the_tool_could_not_have_sent_and_changes_nothing(
    host: Host, bad: dict[str, Any]
) -> None:
    assert host.install() == 0
    before, tests = host.files(), list(host.tests)
    with pytest.raises(rh.Refused, match="the maintenance description"):
        maintenance_on(host, maintenance_desc(**bad))
    assert host.files() == before and host.tests == tests


def test_maintenance_is_the_site_owners_alone_to_switch(host: Host) -> None:
    assert host.install() == 0 and maintenance_on(host) == 0
    before = host.files()
    for uid, state in other_callers(host):
        host.as_user(uid)
        with pytest.raises(rh.Refused, match="belongs to another user or deploy root"):
            maintenance_on(host, state=state)
        with pytest.raises(rh.Refused, match="belongs to another user or deploy root"):
            rh.v_maintenance_off([state, host.site, "nginx -t"])
        assert host.files() == before


def test_maintenance_needs_a_site_the_helper_installed_that_includes_its_files(host: Host) -> None:
    with pytest.raises(rh.Refused, match="was not installed by this helper"):
        maintenance_on(host)  # no site yet
    assert host.install() == 0
    old = re.sub(r"(?m)^.*signalcraft-deploy-maintenance.*\n", "", Path(host.site).read_text())
    Path(host.site).write_text(old)  # as a version before maintenance mode rendered it
    before = host.files()
    with pytest.raises(rh.Refused, match="older version"):
        maintenance_on(host)
    assert host.files() == before


def test_maintenance_needs_every_server_of_the_site_to_include_it(host: Host) -> None:
    """A TLS_REDIRECT site rendered before its redirect server included maintenance mode: the
    reload's marker (asked on that server) could never answer, so it is refused up front."""
    tls = {"cert": "/etc/ssl/certs/shop.pem", "key": "/etc/ssl/private/shop.key", "redirect": True}
    assert host.install(server_name="shop.example.com", tls=tls) == 0
    include = nginx_site.maintenance_include(nginx_site.upstream_for(host.site), "server")
    text = Path(host.site).read_text()
    assert text.count(include) == 2
    Path(host.site).write_text(text.replace("    " + include + "\n", "", 1))
    before = host.files()
    with pytest.raises(rh.Refused, match="older version"):
        maintenance_on(host)
    assert host.files() == before


def test_a_failed_nginx_test_puts_the_previous_maintenance_files_back(host: Host) -> None:
    assert host.install() == 0 and maintenance_on(host) == 0
    before = host.files()
    host.test_ok = False
    assert maintenance_on(host, maintenance_desc(retry_after=30, html="<p>other</p>")) == 65
    assert host.files() == before
    assert rh.v_maintenance_off([X, host.site, "nginx -t"]) == 65
    assert host.files() == before


def test_a_link_in_place_of_the_pages_folder_is_refused_and_nothing_written_through_it(
    host: Host, tmp_path: Path
) -> None:
    assert host.install() == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    host.maintenance.mkdir(mode=0o755)
    pages = Path(nginx_site.maintenance_files(nginx_site.upstream_for(host.site))["pages"])
    pages.symlink_to(elsewhere)
    with pytest.raises(rh.Refused, match="is not root's own folder"):
        maintenance_on(host)
    assert list(elsewhere.iterdir()) == []


def test_maintenance_off_removes_every_file_and_a_second_run_finds_it_absent(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.install() == 0 and maintenance_on(host) == 0
    capsys.readouterr()
    assert rh.v_maintenance_off([X, host.site, "nginx -t"]) == 0
    assert capsys.readouterr().out == "off\n"
    # the running Nginx serves the pages until the caller's reload: only the configuration goes
    assert sorted(p.name for p in host.maintenance.rglob("*") if p.is_file()) == [
        "503.html",
        "503.json",
    ]
    tests = len(host.tests)
    assert rh.v_maintenance_off([X, host.site, "nginx -t"]) == 0
    assert capsys.readouterr().out == "absent\n" and len(host.tests) == tests


def test_site_remove_and_a_new_install_leave_no_maintenance_behind_or_turn_it_off(
    host: Host,
) -> None:
    assert host.install() == 0 and maintenance_on(host) == 0
    files = nginx_site.maintenance_files(nginx_site.upstream_for(host.site))
    assert host.install() == 0  # a deploy: the site again, maintenance kept
    assert Path(files["server"]).exists() and Path(files["maps"]).exists()
    assert rh.v_site_remove([X, host.site, "shop", "nginx -t"]) == 0
    assert [p for p in host.maintenance.rglob("*") if p.is_file()] == []
