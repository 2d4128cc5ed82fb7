"""Issue 15: the root helper (remote/root_helper.py) refuses every argument it was not made for, before anything runs;
the client side (host/root.py) installs it when it may and stops with one clear message when it may not."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from invoke import MockContext, Result
from invoke.exceptions import Exit

from signalcraft_deploy.core import settings as settings_mod
from signalcraft_deploy.core.render import SITE_HEADER, certbot_hook_path, render_certbot_hook
from signalcraft_deploy.host import facts, root
from signalcraft_deploy.remote import root_helper as rh
from signalcraft_deploy.remote import source

SITE = "/etc/nginx/sites-available/shop"


@pytest.mark.parametrize("value", [
    "/tmp/shop", "/etc/shadow", "/etc/nginx/nginx.conf", "/etc/nginx/sites-available/../../shadow",
    "/etc/nginx/sites-available/./shop", "/etc/nginx/sites-available//shop", "etc/nginx/sites-available/shop",
    "/etc/nginx/sites-available/sub/shop", "/etc/nginx/sites-available/", "/etc/nginx/sites-available/default",
    "/etc/nginx/sites-available/shop name", "/etc/nginx/sites-available/.hidden", "/etc/nginx/conf.d/x\n",
])
def test_a_site_path_outside_the_site_folders_or_not_normalised_is_refused(value: str) -> None:
    with pytest.raises(rh.Refused):
        rh.nginx_file(value, "the site")


def test_dot_dot_is_named_in_the_refusal() -> None:
    with pytest.raises(rh.Refused, match=r"must not contain '\.\.'"):
        rh.nginx_file("/etc/nginx/sites-available/../shadow", "the site")


@pytest.mark.parametrize("value", [SITE, "/etc/nginx/conf.d/shop.conf", "/etc/nginx/sites-enabled/shop",
                                   "/etc/nginx/conf.d/shop.locations"])
def test_our_site_files_are_accepted(value: str) -> None:
    assert rh.nginx_file(value, "the site") == value


def test_the_link_must_be_the_sites_own() -> None:
    assert rh.site_link("/etc/nginx/sites-enabled/shop", SITE) == "/etc/nginx/sites-enabled/shop"
    assert rh.site_link("-", "/etc/nginx/conf.d/shop.conf") == ""
    for wrong in ("/etc/nginx/sites-enabled/other", "/etc/nginx/sites-available/shop"):
        with pytest.raises(rh.Refused):
            rh.site_link(wrong, SITE)
    with pytest.raises(rh.Refused):
        rh.site_link("/etc/nginx/sites-enabled/shop.conf", "/etc/nginx/conf.d/shop.conf")
    with pytest.raises(rh.Refused):
        rh.extras_file("/etc/nginx/sites-available/other-site")  # extras end in .locations


@pytest.mark.parametrize("value", ["cp /etc/shadow /tmp/x", "nginx -t; id", "nginx -t && id", "sh -c id", "nginx -s stop",
                                   "nginx  -t", "/tmp/nginx -t", "nginx -c /tmp/evil.conf -t"])
def test_commands_that_are_not_the_fixed_nginx_ones_are_refused(value: str) -> None:
    with pytest.raises(rh.Refused):
        rh.command(value, rh.TEST_RE, "the test command")
    with pytest.raises(rh.Refused):
        rh.command(value, rh.RELOAD_RE, "the reload command")


def test_the_fixed_commands_become_argv_without_a_shell() -> None:
    assert rh.command("/usr/sbin/nginx -t -q", rh.TEST_RE, "t") == ["/usr/sbin/nginx", "-t", "-q"]
    assert rh.command("systemctl reload nginx", rh.RELOAD_RE, "r") == ["systemctl", "reload", "nginx"]
    # the same fixed lists as the settings that name them
    assert rh.TEST_RE.pattern == settings_mod._NGINX_TEST_RE and rh.RELOAD_RE.pattern == settings_mod._NGINX_RELOAD_RE


def test_unknown_verbs_and_wrong_argument_counts_are_refused() -> None:
    for argv in ([], ["sh"], ["rm", "-rf", "/"], ["nginx-test"], ["nginx-test", "nginx -t", "extra"], ["site-read", "a\nb"]):
        with pytest.raises(rh.Refused):
            rh.check_call(argv)
    assert rh.check_call(["nginx-test", "nginx -t"])[1] == ["nginx -t"]


def test_main_exits_2_with_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert rh.main(["chmod", "777", "/etc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("signalcraft-root: refused: unknown verb 'chmod'") and err.count("\n") == 1
    assert rh.main(["site-read", "/etc/shadow"]) == 2  # refused before anything is read (even when run as root)
    assert "must be in /etc/nginx/sites-available" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "ok"), [("2", True), ("4194304", True), ("0", False), ("1", False), ("-5", False),
                                           ("1e3", False), ("", False), ("99999999999", False)])
def test_pids_are_whole_numbers_never_0_or_1(value: str, ok: bool) -> None:
    if ok:
        assert rh.integer(value, "the pid", 2, 2 ** 22) == int(value)
    else:
        with pytest.raises(rh.Refused):
            rh.integer(value, "the pid", 2, 2 ** 22)


def test_the_reload_spec_is_checked_field_by_field() -> None:
    good = {"cmd": "nginx -s reload", "wait": 10,
            "marker": {"url": "http://127.0.0.1:8080/.signalcraft-deploy-site", "host": "shop.example.com", "expect": "0123456789abcdef"}}
    assert json.loads(rh.reload_spec(json.dumps(good))) == good
    assert json.loads(rh.reload_spec(json.dumps({**good, "marker": None})))["marker"] is None
    bad = [{**good, "cmd": "kill -9 1"}, {**good, "wait": "10; id"}, {**good, "conf": "/tmp/x.conf"},
           {**good, "marker": {**good["marker"], "url": "http://evil.example/x"}},
           {**good, "marker": {**good["marker"], "host": "a b"}}, {**good, "marker": {**good["marker"], "expect": "x"}}]
    for spec in bad:
        with pytest.raises(rh.Refused):
            rh.reload_spec(json.dumps(spec))
    with pytest.raises(rh.Refused):
        rh.reload_spec("not json")


def test_the_tls_spec_is_checked() -> None:
    spec = {"cert": "/etc/letsencrypt/live/shop/fullchain.pem", "key": "/etc/letsencrypt/live/shop/privkey.pem",
            "names": ["shop.example.com"]}
    assert json.loads(rh.tls_spec(json.dumps(spec))) == spec
    for bad in ({**spec, "cert": "relative.pem"}, {**spec, "key": "/etc/../shadow"}, {**spec, "names": ["a b"]}, {"cert": "/x"}):
        with pytest.raises(rh.Refused):
            rh.tls_spec(json.dumps(bad))


def test_the_certbot_hook_is_the_one_the_tool_renders(load) -> None:
    s = load({"TLS_CERT": "/etc/letsencrypt/live/shop/fullchain.pem", "TLS_KEY": "/etc/letsencrypt/live/shop/privkey.pem",
              "NGINX_RELOAD_CMD": "systemctl reload nginx"})
    path, text = rh.certbot_hook(s.app_name, s.tls_cert, s.nginx_site, s.nginx_test_cmd, s.nginx_reload_cmd)
    assert (path, text) == (certbot_hook_path(s), render_certbot_hook(s))
    for args in (("../x", s.tls_cert), (s.app_name, "/etc/ssl/private/x.pem"), (s.app_name, s.tls_cert + "\nid")):
        with pytest.raises(rh.Refused):
            rh.certbot_hook(*args, s.nginx_site, s.nginx_test_cmd, s.nginx_reload_cmd)


def test_the_helpers_constants_are_the_tools() -> None:
    assert rh.HEADER == SITE_HEADER and rh.MARK == facts.MARK
    assert rh.HELPER == root.HELPER and rh.LIB == root.LIB
    assert source("root_helper.py").splitlines()[0] == "#!/usr/bin/python3 -I"


def test_the_state_folder_must_be_the_callers_own_real_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    me = rh.pwd.getpwuid(os.getuid())
    state = tmp_path / "app" / ".deploy"
    state.mkdir(parents=True)
    assert rh.state_dir(str(state), me) == str(state)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".deploy").symlink_to(tmp_path / "elsewhere")
    for bad in (str(tmp_path / "other" / ".deploy"), str(tmp_path / "app"), str(tmp_path / "missing" / ".deploy"), str(state) + "/"):
        with pytest.raises(rh.Refused):
            rh.state_dir(bad, me)
    with pytest.raises(rh.Refused):
        rh.takeover_folder(str(state / "elsewhere"), me)


def test_a_parked_default_must_name_a_site_in_sites_available(tmp_path: Path) -> None:
    state = tmp_path / ".deploy"
    state.mkdir()
    assert rh.parked_target(str(state)) == ""
    (state / rh.PARKED).write_text("/etc/nginx/sites-available/default\n")
    assert rh.parked_target(str(state)) == "/etc/nginx/sites-available/default"
    for bad in ("/etc/shadow", "/etc/nginx/sites-available/../../shadow", "/etc/nginx/sites-available/a b"):
        (state / rh.PARKED).write_text(bad)
        with pytest.raises(rh.Refused):
            rh.parked_target(str(state))
    (state / rh.PARKED).unlink()
    (state / rh.PARKED).symlink_to("/etc/hostname")
    with pytest.raises(rh.Refused):
        rh.parked_target(str(state))


# ----------------------------------------------------------------------------- host/root.py


def test_the_digest_covers_the_helper_and_every_program_it_runs() -> None:
    files = root.files()
    assert list(files)[0] == root.HELPER and files[root.HELPER][1] == "0755"
    assert {p.rsplit("/", 1)[1] for p in list(files)[1:]} == set(root.LIB_FILES)
    assert all(p.startswith(root.LIB + "/") for p in list(files)[1:])
    # every program the helper runs is installed beside it
    assert set(re.findall(r'run_lib\("([a-z_]+\.(?:py|sh))"', source("root_helper.py"))) == set(root.LIB_FILES)
    assert root.digest() == hashlib.sha256("".join(t for t, _ in files.values()).encode()).hexdigest()


def test_the_digest_command_computes_the_same_on_the_host(tmp_path: Path) -> None:
    copies = []
    for i, (_, (text, _)) in enumerate(root.files().items()):
        (tmp_path / str(i)).write_text(text)
        copies.append(str(tmp_path / str(i)))
    command = root.digest_command()
    for path, copy in zip(root.files(), copies, strict=True):
        command = command.replace(path, copy, 1)
    assert subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.strip() == root.digest()


def test_the_helper_command_quotes_every_argument() -> None:
    assert root.command("site-read", "/etc/nginx/sites-available/a b") == \
        "sudo -n /usr/local/sbin/signalcraft-root site-read '/etc/nginx/sites-available/a b'"


def state(installed: str, full: bool, allowed: bool) -> root.HelperState:
    return root.HelperState(installed=installed, full_sudo=full, allowed=allowed)


def test_with_only_the_drop_in_an_outdated_helper_stops_before_anything_and_names_setup() -> None:
    c = MockContext()
    with pytest.raises(Exit) as err:
        root.ensure(c, state("0" * 64, full=False, allowed=True))
    assert "fab -H" in str(err.value.message) and "setup" in str(err.value.message) and "Nothing was changed" in str(err.value.message)
    with pytest.raises(Exit) as err:
        root.ensure(MockContext(), state("", full=False, allowed=False))
    assert "passwordless sudo" in str(err.value.message) and "NOPASSWD" in str(err.value.message)


def test_with_full_sudo_a_missing_helper_is_installed_once_per_connection() -> None:
    c = MockContext(run={re.compile(r"sudo -n sh -c .*"): Result()}, repeat=True)
    root.ensure(c, state("", full=True, allowed=True))
    assert len(c.run.call_args_list) == len(root.files())
    assert all("chown root:root" in call.args[0] for call in c.run.call_args_list)
    root.ensure(c, state("", full=True, allowed=True))  # ready: nothing more
    assert len(c.run.call_args_list) == len(root.files())
    current = MockContext()
    root.ensure(current, state(root.digest(), full=False, allowed=True))  # this version's: nothing to do, no command


def test_parse_state() -> None:
    assert root.parse_state(f"digest {root.digest()}\nallowed\n") == state(root.digest(), False, True)
    assert root.parse_state("digest abc\nfull\n") == state("abc", True, True)
    assert root.parse_state("") == state("", False, False)


@pytest.mark.skipif(not shutil.which("visudo"), reason="visudo not installed")
def test_the_sudoers_drop_in_passes_visudo_and_allows_only_the_helper(tmp_path: Path) -> None:
    text = root.sudoers_text("deploy")
    (tmp_path / "d").write_text(text)
    assert subprocess.run(["visudo", "-cqf", str(tmp_path / "d")]).returncode == 0
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == ["deploy ALL=(root) NOPASSWD: /usr/local/sbin/signalcraft-root"]
    assert root.sudoers_path("first.last") == "/etc/sudoers.d/signalcraft-first_last"  # sudo skips names with a '.'


@pytest.mark.parametrize("overrides", [{}, {"TLS_CERT": "/etc/letsencrypt/live/a/fullchain.pem",
                                           "TLS_KEY": "/etc/letsencrypt/live/a/privkey.pem"},
                                       {"SERVER_NAME": "shop.example.com", "CLIENT_MAX_BODY_SIZE": "10m"}])
def test_the_sites_the_tool_renders_pass_the_site_check(load, overrides) -> None:
    from signalcraft_deploy.core.render import render_nginx_site

    text = render_nginx_site(load(overrides))
    assert rh.site_text(text) == text


@pytest.mark.parametrize("line", [
    "access_log /etc/cron.d/evil;", "error_log /root/x.log;", "access_log '/etc/cron.d/x' combined;",
    "acc\\ess_log /etc/cron.d/x;", "access_log /var/log/nginx/../../../etc/cron.d/x;", "include /tmp/evil.conf;",
    "include ../../tmp/evil.conf;", "load_module /tmp/evil.so;", "content_by_lua_block { os.execute('id') }",
    "perl_modules /tmp;", "proxy_temp_path /etc/cron.d;", "client_body_temp_path /root/t;", "user root;",
])
def test_a_site_that_makes_root_open_files_elsewhere_or_load_code_is_refused(line: str) -> None:
    with pytest.raises(rh.Refused):
        rh.site_text(f"# Rendered by signalcraft-deploy.\nserver {{\n    listen 80;\n    {line}\n}}\n")


def test_logs_and_includes_in_nginxs_own_folders_are_accepted() -> None:
    text = ("server {\n  access_log /var/log/nginx/shop.access.log combined;\n  error_log /var/log/nginx/shop.error.log warn;\n"
            "  access_log off;\n  error_log syslog:server=unix:/dev/log;\n  include snippets/ssl.conf;\n"
            "  include /etc/nginx/sites-available/shop.locations;\n  proxy_cache_path /var/cache/nginx/shop keys_zone=s:1m;\n}\n")
    assert rh.site_text(text) == text
