"""Settings: every bad value is refused before a host is touched, with a message naming the key and
its origin.

Each bad case is given through one of the three layers a user writes settings in (a .env file, the
environment, a `--set` flag), and the message must say which key is wrong and where that value came
from ('.env:LINE', 'environment' or 'flag --set'), since that is what a user needs to find and fix
it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from signalcraft_deploy.core.settings import (
    KEY_NAMES,
    SettingsError,
    load_settings,
    parse_overrides,
    settings_from_task,
)

# Lines written before the case's own lines in a .env file, so line numbers are not trivially 1.
ENV_PREAMBLE = ["# signalcraft-deploy settings", "NODE_ENV=production", ""]


@dataclass(frozen=True)
class Bad:
    key: str  # the key given the bad value
    value: str
    via: str  # "file", "env" or "flag"
    expect: tuple[
        str, ...
    ] = ()  # more text the message must hold (what was expected, the other key, ...)
    extra: dict[str, str] = field(
        default_factory=dict
    )  # other keys given through the same layer first
    named: str | None = (
        None  # the key the message leads with, when it is not `key` (e.g. a port clash)
    )


def _case(
    id_: str,
    key: str,
    value: str,
    via: str,
    *expect: str,
    extra: dict[str, str] | None = None,
    named: str | None = None,
) -> object:
    return pytest.param(Bad(key, value, via, tuple(expect), extra or {}, named), id=f"{id_}-{via}")


PORT_RANGE = "from 1 to 65535"
ROUTE_RULE = "letters, digits and . _ ~ -"
ABS_PATH_RULE = "absolute path"
NOT_SYSTEM = "not / or a system directory"
WSGI_RULE = "module:attribute or module:factory()"
NAME_RULE = "lower-case letters, digits and '-'"

BAD_CASES = [
    # Ports: out of range, not numbers, negative.
    _case("bind-port-0", "GUNICORN_BIND", "127.0.0.1:0", "file", "'127.0.0.1:0'", PORT_RANGE),
    _case(
        "bind-port-70000",
        "GUNICORN_BIND",
        "127.0.0.1:70000",
        "env",
        "'127.0.0.1:70000'",
        PORT_RANGE,
    ),
    _case("bind-no-port", "GUNICORN_BIND", "127.0.0.1", "flag", "ADDRESS:PORT"),
    _case(
        "bind-a-name",
        "GUNICORN_BIND",
        "app.internal:8001",
        "flag",
        "with an IP address (or localhost)",
    ),
    _case("node-port-abc", "NODE_PORT", "abc", "flag", "'abc'", "whole number from 1 to 65535"),
    _case("node-port-negative", "NODE_PORT", "-3000", "env", "'-3000'", "whole number"),
    _case(
        "node-port-70000", "NODE_PORT", "70000", "file", "'70000'", "whole number from 1 to 65535"
    ),
    _case(
        "listen-negative", "NGINX_LISTEN", "-1", "file", "'-1'", "a port, ADDRESS:PORT, [IPv6]:PORT"
    ),
    _case("listen-0", "NGINX_LISTEN", "0", "flag", "'0'", "ports from 1 to 65535"),
    _case("listen-float", "NGINX_LISTEN", "80.5", "env", "'80.5'", "a port, ADDRESS:PORT"),
    _case(
        "listen-name",
        "NGINX_LISTEN",
        "localhost:80",
        "env",
        "'localhost:80'",
        "a port, ADDRESS:PORT",
    ),
    _case(
        "tls-listen-vs-nginx",
        "TLS_LISTEN",
        "80",
        "flag",
        "port 80",
        "NGINX_LISTEN (default)",
        extra={"TLS_CERT": "/etc/ssl/c.pem", "TLS_KEY": "/etc/ssl/k.pem"},
    ),
    # The same port twice.
    _case("gunicorn-vs-node", "NODE_PORT", "8001", "file", "port 8001", "GUNICORN_BIND (default)"),
    _case("node-vs-nginx", "NGINX_LISTEN", "3000", "env", "port 3000", "NODE_PORT (default)"),
    _case(
        "handover-vs-node",
        "NODE_PORT",
        "8002",
        "flag",
        "port 8002",
        "GUNICORN_HANDOVER_BIND (default, next to GUNICORN_BIND (default))",
    ),
    _case(
        "bind-onto-node", "GUNICORN_BIND", "127.0.0.1:3000", "file", "port 3000", named="NODE_PORT"
    ),
    _case(
        "handover-is-bind",
        "GUNICORN_HANDOVER_BIND",
        "127.0.0.1:8001",
        "env",
        "port 8001",
        "GUNICORN_BIND (default)",
    ),
    # A handover port left to its default sits next to its app's port: a clash must name the key the
    # user set.
    _case(
        "bind-below-node",
        "GUNICORN_BIND",
        "127.0.0.1:2999",
        "flag",
        "port 3000",
        "GUNICORN_HANDOVER_BIND (default, next to",
    ),
    _case(
        "node-below-nginx",
        "NODE_PORT",
        "79",
        "file",
        "port 80",
        "NODE_HANDOVER_PORT (default, next to",
    ),
    # Gunicorn must stay behind Nginx.
    _case(
        "bind-any", "GUNICORN_BIND", "0.0.0.0:8001", "file", "loopback", "ALLOW_PUBLIC_BIND=true"
    ),
    _case(
        "bind-private",
        "GUNICORN_BIND",
        "10.0.0.5:8001",
        "env",
        "loopback",
        "ALLOW_PUBLIC_BIND=true",
    ),
    _case("bind-any-v6", "GUNICORN_BIND", "[::]:8001", "flag", "loopback"),
    _case("handover-public", "GUNICORN_HANDOVER_BIND", "10.0.0.5:8002", "flag", "loopback"),
    _case("allow-public-maybe", "ALLOW_PUBLIC_BIND", "maybe", "file", "true or false"),
    # Routes: only plain path prefixes may reach the Nginx regex.
    _case("route-space", "PY_ROUTES", "api/ai,api/my route", "file", "'api/my route'", ROUTE_RULE),
    _case("route-regex-group", "PY_ROUTES", "api/(x)", "env", "'api/(x)'", ROUTE_RULE),
    _case("route-regex-dotstar", "PY_ROUTES", "api/.*", "flag", "'api/.*'", ROUTE_RULE),
    _case("route-semicolon", "PY_ROUTES", "api;rm -rf /", "file", "'api;rm -rf /'", ROUTE_RULE),
    _case("route-dollar-paren", "PY_ROUTES", "$(id)", "flag", "'$(id)'", ROUTE_RULE),
    _case("route-backticks", "PY_ROUTES", "api/`id`", "env", "'api/`id`'", ROUTE_RULE),
    _case("route-dotdot-inside", "PY_ROUTES", "api/../etc", "file", "'api/../etc'", ROUTE_RULE),
    _case("route-dotdot", "PY_ROUTES", "..", "env", "'..'", ROUTE_RULE),
    _case("route-dot", "PY_ROUTES", "api,.", "flag", "'.'", ROUTE_RULE),
    _case("routes-empty", "PY_ROUTES", "", "flag", "a value"),
    _case("route-empty-between-commas", "PY_ROUTES", "api/ai,,api/iot", "file", "''", ROUTE_RULE),
    _case("route-slash-only", "PY_ROUTES", "api/ai,/", "env", "'/'", ROUTE_RULE),
    _case(
        "route-duplicate", "PY_ROUTES", "api/ai,api/iot,api/ai", "file", "'api/ai' is listed twice"
    ),
    _case(
        "route-duplicate-slashes",
        "PY_ROUTES",
        "api/ai,/api/ai/",
        "flag",
        "'api/ai' is listed twice",
    ),
    _case("route-brace", "PY_ROUTES", "api/{x}", "env", "'api/{x}'", ROUTE_RULE),
    # App name: it becomes PM2 names and Nginx upstream names.
    _case("app-double-quote", "APP_NAME", 'sig"nal', "env", NAME_RULE),
    _case("app-single-quote", "APP_NAME", "sig'nal", "flag", NAME_RULE),
    _case("app-space", "APP_NAME", "signal craft", "file", "'signal craft'", NAME_RULE),
    _case("app-upper", "APP_NAME", "SignalCraft", "env", "'SignalCraft'", NAME_RULE),
    _case("app-semicolon", "APP_NAME", "app;id", "flag", "'app;id'", NAME_RULE),
    _case("app-leading-digit", "APP_NAME", "1app", "file", NAME_RULE),
    _case("app-too-long", "APP_NAME", "a" * 41, "flag", "at most 40"),
    _case("app-surrounding-space", "APP_NAME", " signalcraft", "env", "without surrounding spaces"),
    _case("app-empty", "APP_NAME", "", "flag", "a value"),
    # Deploy root: never a system directory, never relative, never escapes with '..', no shell
    # characters.
    _case("root-slash", "DEPLOY_ROOT", "/", "file", NOT_SYSTEM),
    _case("root-etc", "DEPLOY_ROOT", "/etc", "env", NOT_SYSTEM),
    _case("root-usr", "DEPLOY_ROOT", "/usr", "flag", NOT_SYSTEM),
    _case("root-usr-trailing-slash", "DEPLOY_ROOT", "/usr/", "file", NOT_SYSTEM),
    _case("root-home-ubuntu", "DEPLOY_ROOT", "/home/ubuntu", "env", NOT_SYSTEM),
    _case("root-relative", "DEPLOY_ROOT", "app", "flag", ABS_PATH_RULE),
    _case("root-dotdot", "DEPLOY_ROOT", "/srv/app/../../etc", "file", ABS_PATH_RULE, "'..'"),
    _case("root-space", "DEPLOY_ROOT", "/srv/my app", "env", ABS_PATH_RULE),
    _case("root-quote", "DEPLOY_ROOT", "/srv/app'x", "flag", ABS_PATH_RULE),
    _case("root-dollar", "DEPLOY_ROOT", "/srv/$HOME", "flag", ABS_PATH_RULE),
    _case("root-double-slash", "DEPLOY_ROOT", "//srv/app", "env", ABS_PATH_RULE),
    # The Nginx site file.
    _case("site-tmp", "NGINX_SITE", "/tmp/signalcraft.conf", "file", "/etc/nginx/"),
    _case("site-escape", "NGINX_SITE", "/etc/nginx/../passwd", "env", ABS_PATH_RULE),
    _case("site-relative", "NGINX_SITE", "sites-available/signalcraft", "flag", ABS_PATH_RULE),
    # WSGI_APP becomes Python in gunicorn.conf.py.
    _case("wsgi-module-only", "WSGI_APP", "app", "file", "'app'", WSGI_RULE),
    _case("wsgi-no-attribute", "WSGI_APP", "app:", "env", WSGI_RULE),
    _case("wsgi-no-module", "WSGI_APP", ":create_app", "flag", WSGI_RULE),
    _case(
        "wsgi-call-args", "WSGI_APP", "app:create_app(1)", "file", "'app:create_app(1)'", WSGI_RULE
    ),
    _case("wsgi-semicolon", "WSGI_APP", "app;rm:x", "env", WSGI_RULE),
    _case("wsgi-quote", "WSGI_APP", "app:x'", "flag", WSGI_RULE),
    # Counts and timeouts.
    _case("workers-0", "GUNICORN_WORKERS", "0", "file", "whole number from 1 to 256"),
    _case("workers-negative", "GUNICORN_WORKERS", "-1", "env", "whole number from 1 to 256"),
    _case("workers-word", "GUNICORN_WORKERS", "two", "flag", "'two'", "whole number"),
    _case("timeout-0", "GUNICORN_TIMEOUT", "0", "file", "whole number from 1"),
    _case("node-timeout-0", "NODE_TIMEOUT", "0", "env", "whole number from 1"),
    _case("node-timeout-text", "NODE_TIMEOUT", "120s", "file", "whole number"),
    _case("stream-root", "STREAM_ROUTES", "/", "env", "prefixes other than '/'"),
    _case("stream-no-slash", "STREAM_ROUTES", "api/stream", "file", "prefixes other than '/'"),
    _case("stream-twice", "STREAM_ROUTES", "/a,/a", "env", "each once"),
    _case("drain-negative", "NGINX_DRAIN_SECONDS", "-1", "env", "whole number"),
    _case("graceful-0", "GUNICORN_GRACEFUL_TIMEOUT", "0", "env", "whole number from 1"),
    _case("instances-0", "NODE_INSTANCES", "0", "flag", "whole number from 1 to 64"),
    _case("keep-1", "KEEP_RELEASES", "1", "file", "whole number from 2"),
    # Health routes must be served by the app they check.
    _case(
        "health-py-outside-routes", "HEALTH_PY", "/health", "file", "under one of the Python routes"
    ),
    _case(
        "health-py-prefix-lookalike",
        "HEALTH_PY",
        "/api/flaskx/health",
        "env",
        "under one of the Python routes",
    ),
    _case(
        "health-node-inside-routes",
        "HEALTH_NODE",
        "/api/ai/status",
        "flag",
        "outside the Python routes",
    ),
    _case(
        "health-node-route-itself", "HEALTH_NODE", "/api/iot", "file", "outside the Python routes"
    ),
    # Source.
    _case("source-svn", "SOURCE", "svn", "env", "'upload' or 'git'"),
    _case("git-empty-repo", "REPO_URL", "", "file", "SOURCE=git", extra={"SOURCE": "git"}),
    _case(
        "repo-dash",
        "REPO_URL",
        "-uhttps://example.com/x.git",
        "flag",
        "git URL",
        extra={"SOURCE": "git"},
    ),
    _case(
        "repo-space",
        "REPO_URL",
        "https://example.com/a b.git",
        "env",
        "git URL",
        extra={"SOURCE": "git"},
    ),
    _case("ref-dash", "REF", "--detach", "file", "not starting with '-'"),
    _case("ref-dotdot", "REF", "main..dev", "env", "without '..'"),
    _case("ref-backtick", "REF", "`id`", "flag", "branch, tag or commit"),
    # Nginx tokens and commands run with sudo.
    _case("server-name-semicolon", "SERVER_NAME", "example.com;", "file", "host names"),
    _case("server-name-include", "SERVER_NAME", "a.com; include /etc/passwd", "env", "host names"),
    _case("server-name-brace", "SERVER_NAME", "a.com}", "flag", "host names"),
    _case("server-name-double-space", "SERVER_NAME", "a.com  b.com", "flag", "host names"),
    # nginx refuses these wildcards (`nginx -t`: 'server name "*" is invalid' / 'invalid server name
    # or wildcard').
    _case("server-name-star", "SERVER_NAME", "*", "file", "host names"),
    _case("server-name-star-no-dot", "SERVER_NAME", "*example.com", "env", "host names"),
    _case("server-name-star-middle", "SERVER_NAME", "www.*.example.com", "flag", "host names"),
    _case("server-name-star-inside-label", "SERVER_NAME", "a*b.example.com", "file", "host names"),
    _case("server-name-empty-label", "SERVER_NAME", "example..com", "env", "host names"),
    _case("reload-semicolon", "NGINX_RELOAD_CMD", "nginx -s reload; id", "file", "plain command"),
    _case("reload-and", "NGINX_RELOAD_CMD", "nginx -s reload && reboot", "env", "plain command"),
    _case("reload-subshell", "NGINX_RELOAD_CMD", "nginx -s reload $(id)", "flag", "plain command"),
    _case("test-pipe", "NGINX_TEST_CMD", "nginx -t | cat", "file", "plain command"),
    # Other tokens that land in shell or config files.
    _case(
        "node-script-escape", "NODE_SCRIPT", "../server.js", "env", "relative to the app directory"
    ),
    _case(
        "node-script-absolute",
        "NODE_SCRIPT",
        "/srv/server.js",
        "flag",
        "relative to the app directory",
    ),
    _case("python-space", "PYTHON", "python3 -c x", "file", "command or absolute path"),
    _case("pm2-semicolon", "PM2", "pm2;id", "env", "command or absolute path"),
    _case(
        "worker-class-dash", "GUNICORN_WORKER_CLASS", "sync -b 0.0.0.0:1", "flag", "worker class"
    ),
    # A name without a dot is one of Gunicorn's own or nothing: refused here, not after an upload to
    # the host.
    _case(
        "worker-class-unknown-name",
        "GUNICORN_WORKER_CLASS",
        "nonexistentworker",
        "file",
        "worker classes (sync, gthread",
    ),
]


def _write_env(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _env_line(key: str, value: str) -> str:
    # Single quotes: python-dotenv takes the text literally (no escapes, no command substitution).
    assert "'" not in value and "\n" not in value, "file cases need values dotenv can quote"
    return f"{key}='{value}'"


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_value_is_refused_naming_key_and_origin(case: Bad, tmp_path: Path) -> None:
    given = {**case.extra, case.key: case.value}
    environ: dict[str, str] = {}
    overrides: dict[str, str] = {}
    if case.via == "file":
        lines = ENV_PREAMBLE + [_env_line(k, v) for k, v in given.items()]
        _write_env(tmp_path / ".env", lines)
        where = f"{tmp_path / '.env'}:{len(lines)}"  # the case's own key is the last line
    elif case.via == "env":
        environ = {"HOME": "/home/someone", "PATH": "/usr/bin", **given}
        where = "environment"
    else:
        overrides = given
        where = "flag --set"

    with pytest.raises(SettingsError) as err:
        load_settings(overrides=overrides, environ=environ, cwd=str(tmp_path))
    message = str(err.value)

    assert f"{case.key} ({where})" in message, message
    if case.named:
        assert message.startswith(f"{case.named} ("), message
    for text in case.expect:
        assert text in message, message


def test_there_are_enough_bad_cases() -> None:
    assert len(BAD_CASES) >= 35
    sources = {c.values[0].via for c in BAD_CASES}
    assert sources == {"file", "env", "flag"}


# --- SOURCE=git without a repository
# -------------------------------------------------------------------------


def test_git_source_without_repo_url_names_repo_url(load) -> None:
    with pytest.raises(SettingsError) as err:
        load({"SOURCE": "git"})
    assert str(err.value).startswith("REPO_URL (default): SOURCE=git needs a repository URL")


# --- Public bind is allowed only when asked for
# ---------------------------------------------------------------


@pytest.mark.parametrize("bind", ["0.0.0.0:8001", "10.0.0.5:8001", "[::]:8001"])
def test_public_bind_accepted_with_allow_public_bind(load, bind: str) -> None:
    s = load({"GUNICORN_BIND": bind, "ALLOW_PUBLIC_BIND": "true"})
    assert str(s.gunicorn_bind) == bind
    assert s.allow_public_bind is True
    assert s.gunicorn_handover_bind.port == 8002


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001", "127.0.0.2:9000"]
)
def test_loopback_binds_accepted_without_allow_public_bind(load, bind: str) -> None:
    assert str(load({"GUNICORN_BIND": bind}).gunicorn_bind) == bind


# --- Unknown keys, malformed flags, missing or unreadable files
# ------------------------------------------------


def test_unknown_key_in_env_file_suggests_the_close_one(tmp_path: Path, load) -> None:
    _write_env(tmp_path / ".env", ["APP_NAME=shop", "GUNICORN_BIN=127.0.0.1:9000"])
    with pytest.raises(SettingsError) as err:
        load()
    assert (
        str(err.value)
        == f"GUNICORN_BIN ({tmp_path / '.env'}:2): unknown setting. Did you mean GUNICORN_BIND?"
    )


def test_unknown_key_in_env_file_without_close_match_lists_known_keys(tmp_path: Path, load) -> None:
    _write_env(tmp_path / ".env", ["# nothing", "DATABASE_PASSWORD=x"])
    with pytest.raises(SettingsError) as err:
        load()
    message = str(err.value)
    assert message.startswith(
        f"DATABASE_PASSWORD ({tmp_path / '.env'}:2): unknown setting. Known keys: "
    )
    assert all(k in message for k in KEY_NAMES)


def test_unknown_set_key_is_refused_with_a_suggestion() -> None:
    with pytest.raises(SettingsError) as err:
        parse_overrides(["NODE_PROT=3100"])
    assert str(err.value) == "NODE_PROT (flag --set): unknown setting. Did you mean NODE_PORT?"


@pytest.mark.parametrize("pair", ["NODE_PORT", "NODE_PORT:3100", "=3100", ""])
def test_set_without_key_value_is_refused(pair: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_overrides([pair])
    assert str(err.value).startswith(f"--set {pair!r}: expected KEY=VALUE")


def test_settings_from_task_refuses_unknown_set_key_before_reading_anything(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SettingsError,
        match=r"^GUNICORN_WORKER \(flag --set\): unknown setting. Did you mean GUNICORN_WORKERS\?",
    ):
        settings_from_task(set_=["GUNICORN_WORKER=4"])


def test_set_value_may_contain_equals_signs() -> None:
    assert parse_overrides(["NGINX_TEST_CMD=nginx -t -c=/etc/nginx/nginx.conf"]) == {
        "NGINX_TEST_CMD": "nginx -t -c=/etc/nginx/nginx.conf"
    }


def test_named_env_file_that_does_not_exist_names_the_path(tmp_path: Path, load) -> None:
    with pytest.raises(SettingsError) as err:
        load(env_file="deploy/production.env")
    assert str(err.value).startswith(
        f"{tmp_path / 'deploy' / 'production.env'}: the settings file was named but does not exist"
    )


def test_env_file_named_by_env_file_variable_that_does_not_exist(tmp_path: Path, load) -> None:
    with pytest.raises(SettingsError, match="does not exist") as err:
        load(environ={"ENV_FILE": "/nonexistent/prod.env"})
    assert str(err.value).startswith("/nonexistent/prod.env: ")


def test_missing_default_env_file_is_fine(load) -> None:
    s = load()
    assert s.app_name == "signalcraft"
    assert set(s.origins.values()) == {"default"}


def test_unreadable_env_file_is_refused(tmp_path: Path, load) -> None:
    env = tmp_path / "prod.env"
    env.write_text("APP_NAME=shop\n")
    env.chmod(0)
    try:
        if os.access(env, os.R_OK):
            pytest.skip("this user (root?) can read a mode-000 file")
        with pytest.raises(SettingsError) as err:
            load(env_file=str(env))
        assert str(err.value).startswith(f"{env}: the settings file cannot be read")
    finally:
        env.chmod(0o600)


def test_env_file_that_is_a_directory_is_refused(tmp_path: Path, load) -> None:
    (tmp_path / "conf.env").mkdir()
    with pytest.raises(SettingsError) as err:
        load(env_file="conf.env")
    assert str(err.value).startswith(f"{tmp_path / 'conf.env'}: the settings file cannot be read")


def test_duplicate_key_in_env_file_reports_the_line_that_counts(tmp_path: Path, load) -> None:
    # dotenv keeps the last assignment, so the error must point there, not at the earlier good line.
    _write_env(tmp_path / ".env", ["APP_NAME=shop", "NODE_PORT=3100", "", "APP_NAME='Shop Front'"])
    with pytest.raises(SettingsError) as err:
        load()
    assert str(err.value).startswith(f"APP_NAME ({tmp_path / '.env'}:4): found 'Shop Front'")


def test_export_prefix_line_numbers(tmp_path: Path, load) -> None:
    _write_env(
        tmp_path / ".env",
        ["# shell-compatible", "export NODE_PORT=3100", "export NGINX_LISTEN=3100"],
    )
    with pytest.raises(SettingsError) as err:
        load()
    assert (
        f"NGINX_LISTEN ({tmp_path / '.env'}:3): port 3100 is also used by NODE_PORT"
        f" ({tmp_path / '.env'}:2)" in str(err.value)
    )


# --- Precedence: defaults < .env < environment < flags
# --------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_flag", "port", "origin"),
    [
        (False, False, False, 3000, "default"),
        (True, False, False, 3100, ".env:2"),
        (False, True, False, 3200, "environment"),
        (True, True, False, 3200, "environment"),
        (False, False, True, 3300, "flag --set"),
        (True, False, True, 3300, "flag --set"),
        (True, True, True, 3300, "flag --set"),
    ],
)
def test_precedence(
    tmp_path: Path, load, in_file: bool, in_env: bool, in_flag: bool, port: int, origin: str
) -> None:
    if in_file:
        _write_env(tmp_path / ".env", ["# layer 1", "NODE_PORT=3100"])
    s = load(
        overrides={"NODE_PORT": "3300"} if in_flag else None,
        environ={"NODE_PORT": "3200"} if in_env else None,
    )
    assert s.node_port == port
    expected_origin = f"{tmp_path / '.env'}:2" if origin == ".env:2" else origin
    assert s.origins["NODE_PORT"] == expected_origin
    assert s.origins["APP_NAME"] == "default"


def test_each_layer_keeps_its_own_keys(tmp_path: Path, load) -> None:
    _write_env(tmp_path / ".env", ["APP_NAME=shop", "NODE_PORT=3100", "NGINX_LISTEN=8080"])
    s = load(
        environ={"NODE_PORT": "3200", "NODE_INSTANCES": "4"}, overrides={"NGINX_LISTEN": "8081"}
    )
    assert (s.app_name, s.node_port, s.node_instances, s.nginx_port) == ("shop", 3200, 4, 8081)
    assert s.origins["APP_NAME"] == f"{tmp_path / '.env'}:1"
    assert s.origins["NODE_PORT"] == "environment"
    assert s.origins["NODE_INSTANCES"] == "environment"
    assert s.origins["NGINX_LISTEN"] == "flag --set"
    assert s.origins["GUNICORN_BIND"] == "default"


def test_a_bad_file_value_is_harmless_when_a_later_layer_overrides_it(tmp_path: Path, load) -> None:
    _write_env(tmp_path / ".env", ["NODE_PORT=abc"])
    assert load(overrides={"NODE_PORT": "3100"}).node_port == 3100


def test_unrelated_environment_variables_are_ignored(load) -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PORT": "1",
        "APP": "x y",
        "node_port": "abc",
        "SECRET_KEY": "s3cr3t",
    }
    s = load(environ=environ)
    assert s.node_port == 3000
    assert set(s.origins.values()) == {"default"}
    assert "s3cr3t" not in repr(s.public())


def test_env_file_named_by_environment(tmp_path: Path, load) -> None:
    (tmp_path / "prod.env").write_text("APP_NAME=prod-shop\n")
    (tmp_path / ".env").write_text("APP_NAME=dev-shop\n")
    assert load(environ={"ENV_FILE": "prod.env"}).app_name == "prod-shop"
    assert load(env_file=str(tmp_path / "prod.env")).app_name == "prod-shop"
    assert load().app_name == "dev-shop"


# --- Good values are accepted
# ----------------------------------------------------------------------------------

ALL_CHANGED = {
    "APP_NAME": "shopfront",
    "DEPLOY_ROOT": "/srv/shopfront",
    "GUNICORN_BIND": "127.0.0.1:9101",
    "GUNICORN_HANDOVER_BIND": "127.0.0.1:9102",
    "GUNICORN_WORKERS": "3",
    "GUNICORN_WORKER_CLASS": "gthread",
    "GUNICORN_TIMEOUT": "45",
    "GUNICORN_GRACEFUL_TIMEOUT": "12",
    "WSGI_APP": "service.wsgi:application",
    "NODE_SCRIPT": "dist/main.js",
    "NODE_PORT": "4100",
    "NODE_INSTANCES": "3",
    "NODE_ENV": "staging",
    "PY_ROUTES": "v2/ml, v2/sensors ,/v2/batch/",
    "NGINX_SITE": "/etc/nginx/conf.d/shopfront.conf",
    "NGINX_LISTEN": "18080",
    "SERVER_NAME": "shop.example.com www.shop.example.com",
    "HEALTH_PY": "/v2/ml/healthz",
    "HEALTH_NODE": "/healthz",
    "SOURCE": "git",
    "REPO_URL": "git@github.com:org/shopfront.git",
    "REF": "release/2024.06",
    "NGINX_RELOAD_CMD": "systemctl reload nginx",
}


@pytest.mark.parametrize("via", ["file", "env", "flag"])
def test_every_value_changed_is_accepted(tmp_path: Path, load, via: str) -> None:
    if via == "file":
        _write_env(tmp_path / ".env", [_env_line(k, v) for k, v in ALL_CHANGED.items()])
        s = load()
    else:
        s = load(environ=ALL_CHANGED) if via == "env" else load(overrides=ALL_CHANGED)
    assert s.app_name == "shopfront"
    assert (s.python_app, s.node_app, s.handover_app) == (
        "shopfront-python",
        "shopfront-nodejs",
        "shopfront-python-handover",
    )
    assert s.deploy_root == "/srv/shopfront"
    assert (s.releases_dir, s.current_dir, s.venvs_dir) == (
        "/srv/shopfront/releases",
        "/srv/shopfront/current",
        "/srv/shopfront/venvs",
    )
    assert str(s.gunicorn_bind) == "127.0.0.1:9101" and s.gunicorn_bind.port == 9101
    assert str(s.gunicorn_handover_bind) == "127.0.0.1:9102"
    assert (
        s.gunicorn_workers,
        s.gunicorn_worker_class,
        s.gunicorn_timeout,
        s.gunicorn_graceful_timeout,
    ) == (3, "gthread", 45, 12)
    assert s.wsgi_app == "service.wsgi:application"
    assert (s.node_script, s.node_port, s.node_instances, s.node_env) == (
        "dist/main.js",
        4100,
        3,
        "staging",
    )
    assert s.py_routes == ("v2/ml", "v2/sensors", "v2/batch")
    assert s.nginx_site == "/etc/nginx/conf.d/shopfront.conf"
    assert s.nginx_enabled_link == ""  # conf.d is included directly, no link
    assert s.nginx_port == 18080 and [str(x) for x in s.nginx_listen] == ["18080"]
    assert s.server_name == "shop.example.com www.shop.example.com"
    assert (s.health_py, s.health_node) == ("/v2/ml/healthz", "/healthz")
    assert (s.source, s.repo_url, s.ref) == (
        "git",
        "git@github.com:org/shopfront.git",
        "release/2024.06",
    )
    assert s.nginx_reload_cmd == "systemctl reload nginx"


def test_defaults(load) -> None:
    s = load()
    assert s.gunicorn_workers is None  # 'auto'
    assert str(s.gunicorn_bind) == "127.0.0.1:8001"
    assert str(s.gunicorn_handover_bind) == "127.0.0.1:8002"
    assert s.py_routes == ("api/ai", "api/iot", "api/lightweight-analyze", "api/flask")
    assert s.nginx_enabled_link == "/etc/nginx/sites-enabled/signalcraft"


@pytest.mark.parametrize(
    ("bind", "handover"),
    [("127.0.0.1:9000", "127.0.0.1:9001"), ("127.0.0.1:65535", "127.0.0.1:65534")],
)
def test_handover_defaults_next_to_the_bind(load, bind: str, handover: str) -> None:
    assert str(load({"GUNICORN_BIND": bind}).gunicorn_handover_bind) == handover


@pytest.mark.parametrize("value", ["true", "TRUE", "yes", "1", "on"])
def test_booleans(load, value: str) -> None:
    assert load({"ALLOW_PUBLIC_BIND": value}).allow_public_bind is True


@pytest.mark.parametrize(
    "name",
    ["_", "example.com", "*.example.com", "example.*", "a.example.com b.example.org", "localhost"],
)
def test_server_names_nginx_accepts(load, name: str) -> None:
    assert load({"SERVER_NAME": name}).server_name == name


def test_relative_local_paths_are_relative_to_the_env_file(tmp_path: Path, load) -> None:
    conf = tmp_path / "deploy"
    conf.mkdir()
    (conf / "prod.env").write_text("TEMPLATES_DIR=templates\nAPP_ENV_FILE=app.env\n")
    s = load(env_file="deploy/prod.env")
    assert s.templates_dir == str(conf / "templates")
    assert s.app_env_file == str(conf / "app.env")
    assert s.source_dir == str(conf)


def test_the_apps_account_is_app_name_unless_set_and_never_root() -> None:
    from signalcraft_deploy.core.settings import SettingsError, load_settings

    assert load_settings(environ={}, cwd="/").app_user == "signalcraft"
    assert load_settings(environ={"APP_NAME": "shop"}, cwd="/").app_user == "shop"
    assert (
        load_settings(environ={"APP_NAME": "shop", "APP_USER": "ubuntu"}, cwd="/").app_user
        == "ubuntu"
    )
    assert load_settings(environ={"APP_NAME": "a" * 40}, cwd="/").app_user == "a" * 32
    for environ, says in (
        (
            {"APP_USER": "root"},
            "APP_USER (environment): found 'root'; expected an unprivileged account",
        ),
        ({"APP_USER": "Shop"}, "APP_USER (environment): found 'Shop'; expected a user name"),
        ({"APP_USER": "a" * 33}, "(at most 32)"),
    ):
        with pytest.raises(SettingsError, match=re.escape(says)):
            load_settings(environ=environ, cwd="/")


def test_graceful_timeout_help_says_what_a_hup_waits_for_and_pm2_waits_longer(load):
    from signalcraft_deploy.core.render import python_entry
    from signalcraft_deploy.core.settings import KEYS

    help_text = next(k.help for k in KEYS if k.name == "GUNICORN_GRACEFUL_TIMEOUT")
    # Measured on Gunicorn 27.0.1: a HUP's master does not kill an old worker at this timeout.
    assert "the health gate waits this long for old workers" in help_text
    assert "after a HUP Gunicorn itself ends an old worker GUNICORN_TIMEOUT seconds" in help_text
    assert "PM2 waits this + 5" in help_text
    s = load({"GUNICORN_GRACEFUL_TIMEOUT": "12"})
    assert python_entry(s, "/v")["kill_timeout"] == (12 + 5) * 1000  # what the help promises
