"""The settings declarations drive everything else: parsing, the release key, the README's table and
the `settings` task.

Each key is declared once, as a field of `Settings` (core/settings.py `key(...)`, read into
`KEYS`); these tests hold the rest of the library to those fields: a key added there gets its
parsing, its README row and its line in `invoke settings` without a second list. mypy checks each
field's type against its parser; the tests below check the values that reach the fields.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields, replace
from pathlib import Path
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

import pytest
from invoke.exceptions import Exit

from signalcraft_deploy.core.plan import release_key
from signalcraft_deploy.core.settings import (
    KEY_NAMES,
    KEYS,
    MASK,
    Address,
    Listen,
    Settings,
    SettingsError,
    load_settings,
    readme_table,
)
from signalcraft_deploy.tasks.settings import settings as settings_task
from tests.unit.conftest import mock_host

# A valid value other than the default for every key, and the attribute it must produce.
CHANGED: dict[str, tuple[str, object]] = {
    "APP_NAME": ("shop", "shop"),
    "DEPLOY_ROOT": ("/srv/shop/", "/srv/shop"),
    "SOURCE": ("git", "git"),
    "SOURCE_DIR": ("app", "{tmp}/app"),
    "REPO_URL": ("https://github.com/org/shop.git", "https://github.com/org/shop.git"),
    "REF": ("v1.2", "v1.2"),
    "PYTHON": ("/usr/bin/python3.12", "/usr/bin/python3.12"),
    "GUNICORN_BIND": ("127.0.0.1:9001", Address("127.0.0.1", 9001)),
    "GUNICORN_HANDOVER_BIND": ("127.0.0.1:9500", Address("127.0.0.1", 9500)),
    "GUNICORN_WORKERS": ("4", 4),
    "GUNICORN_WORKER_CLASS": ("gthread", "gthread"),
    "GUNICORN_TIMEOUT": ("60", 60),
    "GUNICORN_GRACEFUL_TIMEOUT": ("10", 10),
    "GUNICORN_MAX_REQUESTS": ("0", 0),
    "GUNICORN_MAX_REQUESTS_JITTER": ("5", 5),
    "LEGACY_MATCH": ("app[.]py", "app[.]py"),
    "ALLOW_PUBLIC_BIND": ("yes", True),
    "WSGI_APP": ("wsgi:app", "wsgi:app"),
    "NODE_SCRIPT": ("dist/main.js", "dist/main.js"),
    "NODE_PORT": ("4000", 4000),
    "NODE_HANDOVER_PORT": ("4500", 4500),
    "NODE_INSTANCES": ("4", 4),
    "NODE_ENV": ("staging", "staging"),
    "NODE_SESSION_BOUND": ("yes", "yes"),
    "NODE_RELOAD": ("reload", "reload"),
    "NODE_LISTEN_TIMEOUT": ("45", 45),
    "NODE_WAIT_READY": ("true", True),
    "NODE_KILL_TIMEOUT": ("8", 8),
    "NODE_WS_DRAIN_SECONDS": ("0", 0),
    "PY_ROUTES": ("api/flask, /api/v2/", ("api/flask", "api/v2")),
    "ROUTES": ("/api/flask=python, /=nodejs", (("/api/flask", "python"), ("/", "nodejs"))),
    "MOUNTS": ("/chat, /a.b", ("/chat", "/a.b")),
    "NGINX_SITE": ("/etc/nginx/conf.d/shop.conf", "/etc/nginx/conf.d/shop.conf"),
    "NGINX_LISTEN": ("127.0.0.1:8080,[::1]:8080", (Listen("127.0.0.1", 8080), Listen("::1", 8080))),
    "TLS_CERT": (
        "/etc/letsencrypt/live/shop/fullchain.pem",
        "/etc/letsencrypt/live/shop/fullchain.pem",
    ),
    "TLS_KEY": ("/etc/letsencrypt/live/shop/privkey.pem", "/etc/letsencrypt/live/shop/privkey.pem"),
    "TLS_LISTEN": ("8443", (Listen(None, 8443),)),
    "TLS_REDIRECT": ("off", False),
    "CLIENT_MAX_BODY_SIZE": ("10m", "10m"),
    "NODE_TIMEOUT": ("600", 600),
    "STREAM_ROUTES": ("/api/flask/stream, /live", ("/api/flask/stream", "/live")),
    "NGINX_DRAIN_SECONDS": ("0", 0),
    "SERVER_NAME": ("shop.example.com", "shop.example.com"),
    "NGINX_TEST_CMD": ("/usr/sbin/nginx -t", "/usr/sbin/nginx -t"),
    "NGINX_RELOAD_CMD": ("systemctl reload nginx", "systemctl reload nginx"),
    "HEALTH_PY": ("/api/flask/ping", "/api/flask/ping"),
    "HEALTH_NODE": ("/ping", "/ping"),
    "HEALTH_TIMEOUT": ("90", 90),
    "KEEP_RELEASES": ("3", 3),
    "PM2": ("/usr/local/bin/pm2", "/usr/local/bin/pm2"),
    "BEFORE_SWITCH": (
        "flask --app app:create_app db upgrade",
        "flask --app app:create_app db upgrade",
    ),
    "AFTER_SWITCH": (
        "curl -fsS http://127.0.0.1/warm | head -c 100",
        "curl -fsS http://127.0.0.1/warm | head -c 100",
    ),
    "AFTER_SWITCH_FAILURE": ("rollback", "rollback"),
    "ON_FAILURE": (
        'echo "$DEPLOY_RESULT" >> failures.log',
        'echo "$DEPLOY_RESULT" >> failures.log',
    ),
    "HOOK_TIMEOUT": ("900", 900),
    "WHEELS": ("local", "local"),
    "MIN_FREE_MB": ("0", 0),
    "LOG_ROTATE_SIZE": ("20M", "20M"),
    "LOG_ROTATE_COUNT": ("3", 3),
    "APP_ENV_FILE": ("app.env", "{tmp}/app.env"),
    "LOCAL_VENV": ("/opt/venv", "/opt/venv"),
    "KNOWN_HOSTS": ("hosts", "{tmp}/hosts"),
    "TEMPLATES_DIR": ("tpl", "{tmp}/tpl"),
    "PY_FILES": ("flaskr/**, *.json", ("flaskr/**", "*.json")),
    "NODE_FILES": ("bin/,public/", ("bin/", "public/")),
    "SHARED_PATHS": ("instance/, .env.local", ("instance/", ".env.local")),
    "APP_USER": ("shop_app", "shop_app"),
    "PROCESS_INSTANCES": ("worker=2, mail=3", {"worker": "2", "mail": "3"}),
    "PROCESS_STOP_TIMEOUT": ("worker=120", {"worker": "120"}),
    "PROCESS_STOP_SIGNAL": ("worker=SIGQUIT", {"worker": "SIGQUIT"}),
    "SINGLETONS": ("beat,cron", {"beat": "yes", "cron": "yes"}),
    "PROCESS_APP": ("jobs=nodejs", {"jobs": "nodejs"}),
    "RUN_SINGLETONS": ("no", "no"),
    "NOTIFY_URL": ("https://hooks.example.com/T1/B2", "https://hooks.example.com/T1/B2"),
    "NOTIFY_FORMAT": ("json", "json"),
    "NOTIFY_TIMEOUT": ("10", 10),
    "MAINTENANCE_RETRY_AFTER": ("120", 120),
    "MAINTENANCE_PAGE": ("public/503.html", "public/503.html"),
    "MAINTENANCE_OPEN_ROUTES": ("/api/status, /hooks", ("/api/status", "/hooks")),
}


# what load_settings, uploads (the Procfile's processes) and fleets add
NOT_KEYS = (
    "origins",
    "settings_file",
    "environment",
    "environment_file",
    "tool_collection",
    "processes",
    "procfile_notes",
    "singleton_host",
)


def _holds(value: object, hint: object) -> bool:
    """Whether `value` is of the annotated type `hint` (a class, a union, tuple[X, ...] or tuple[X,
    Y])."""
    args = get_args(hint)
    if get_origin(hint) in (Union, UnionType):
        return any(_holds(value, arg) for arg in args)
    if get_origin(hint) is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_holds(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(_holds, value, args))
    if get_origin(hint) is dict:
        return isinstance(value, dict) and all(
            _holds(k, args[0]) and _holds(v, args[1]) for k, v in value.items()
        )
    return value is None if hint is type(None) else isinstance(value, hint)


def test_each_field_is_a_key_but_the_three_the_tool_adds() -> None:
    names = [f.name for f in fields(Settings)]
    assert [k.attr for k in KEYS] + list(NOT_KEYS) == names
    assert [k.name for k in KEYS] == [k.attr.upper() for k in KEYS] == list(KEY_NAMES)
    assert all(k.help for k in KEYS)


def test_every_key_is_required_and_the_others_are_not() -> None:
    for f in fields(Settings):
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        assert has_default == (f.name in NOT_KEYS), f.name


def test_the_defaults_have_the_types_the_fields_declare(load) -> None:
    hints = get_type_hints(Settings)
    s = load()
    assert [k.name for k in KEYS if not _holds(getattr(s, k.attr), hints[k.attr])] == []


def test_settings_can_be_built_by_keyword() -> None:
    s = load_settings(environ={}, cwd="/")
    again = Settings(**{k.attr: getattr(s, k.attr) for k in KEYS})
    assert again == s and again.origins == {}
    assert (again.python_app, again.releases_dir, again.nginx_enabled_link) == (
        "signalcraft-python",
        "/home/ubuntu/signalcraft/releases",
        "/etc/nginx/sites-enabled/signalcraft",
    )
    with pytest.raises(TypeError):
        Settings(**{k.attr: getattr(s, k.attr) for k in KEYS[1:]})  # every key is required


# What a changed value needs beside it to be valid.
EXTRA = {
    "SOURCE": {"REPO_URL": "git@github.com:org/shop.git"},
    "PY_ROUTES": {"HEALTH_PY": "/api/v2/health"},
    "ALLOW_PUBLIC_BIND": {"GUNICORN_BIND": "0.0.0.0:8001"},
    "MOUNTS": {"ROUTES": "/api/flask=python,/=nodejs,/chat=nodejs,/a.b=nodejs"},
    "TLS_CERT": {"TLS_KEY": "/etc/ssl/k.pem"},
    "TLS_KEY": {"TLS_CERT": "/etc/ssl/c.pem"},
}


def test_every_declared_key_has_a_changed_value_here() -> None:
    assert set(CHANGED) == set(KEY_NAMES)


@pytest.mark.parametrize("key", KEY_NAMES)
def test_every_declared_key_is_parsed_into_its_attribute(key: str, tmp_path: Path, load) -> None:
    raw, expected = CHANGED[key]
    s = load({key: raw, **EXTRA.get(key, {})})
    if isinstance(expected, str):
        expected = expected.format(tmp=tmp_path)
    assert getattr(s, next(k.attr for k in KEYS if k.name == key)) == expected
    assert s.origins[key] == "flag --set"


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.name)
def test_a_changed_key_makes_another_release_unless_it_is_local(key, load) -> None:
    before = load()
    changed = load({key.name: CHANGED[key.name][0], **EXTRA.get(key.name, {})})
    after = replace(before, **{key.attr: getattr(changed, key.attr)})  # only this key differs
    keys = [release_key(s, "tree", "requirements", None, None) for s in (before, after)]
    assert (keys[0] == keys[1]) == key.local


@pytest.mark.parametrize("key", KEY_NAMES)
def test_every_declared_key_refuses_a_line_break_naming_itself(key: str, load) -> None:
    with pytest.raises(SettingsError) as err:
        load({key: "a\nb"})
    assert (
        str(err.value)
        == f"{key} (flag --set): found 'a\\nb'; expected a value without surrounding spaces or line"
        " breaks."
    )


DERIVED_DEFAULTS = {
    "APP_USER": "signalcraft",
    "GUNICORN_HANDOVER_BIND": "127.0.0.1:8002",
    "NODE_HANDOVER_PORT": "3001",
    "NGINX_SITE": "/etc/nginx/sites-available/signalcraft",
}


@pytest.mark.parametrize(
    "key", [k for k in KEYS if k.name != "SOURCE_DIR"], ids=lambda k: k.name
)  # '.': the folder
def test_every_default_is_shown_as_written(key, load) -> None:
    assert key.parse.show(getattr(load(), key.attr)) == (
        key.default or DERIVED_DEFAULTS.get(key.name, "")
    )


def test_readme_table_has_a_row_per_key() -> None:
    rows = readme_table().splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [f"| `{k}`" for k in KEY_NAMES]


# --- The `settings` task
# ------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The task reads the real environment and the cwd's .env: neither may hold settings here."""
    for key in (*KEY_NAMES, "ENV_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _lines(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()}


def test_settings_task_shows_each_value_and_origin_with_the_secret_masked(
    clean_env: Path, capsys, monkeypatch
) -> None:
    token = "ghp_s3cr3tT0ken"
    (clean_env / ".env").write_text(
        f"# deploy\nSOURCE=git\nREPO_URL=https://deploy:{token}@github.com/org/shop.git\n"
    )
    monkeypatch.setenv("NODE_PORT", "3100")
    settings_task(mock_host(), set_=["NGINX_LISTEN=8080"])
    out = capsys.readouterr().out
    assert token not in out and "github.com" not in out
    lines = _lines(out)
    assert set(lines) == {"KEY", *KEY_NAMES}
    assert lines["REPO_URL"].split() == ["REPO_URL", MASK, f"{clean_env / '.env'}:3"]
    assert lines["SOURCE"].split() == ["SOURCE", "git", f"{clean_env / '.env'}:2"]
    assert lines["NODE_PORT"].split() == ["NODE_PORT", "3100", "environment"]
    assert lines["NGINX_LISTEN"].split() == ["NGINX_LISTEN", "8080", "flag", "--set"]
    assert lines["APP_NAME"].split() == ["APP_NAME", "signalcraft", "default"]
    assert lines["NODE_HANDOVER_PORT"].split()[:2] == ["NODE_HANDOVER_PORT", "3101"]
    assert lines["NODE_HANDOVER_PORT"].endswith("default, next to NODE_PORT (environment)")
    assert lines["GUNICORN_WORKERS"].split() == ["GUNICORN_WORKERS", "auto", "default"]
    assert lines["PY_ROUTES"].split()[1] == "api/ai,api/iot,api/lightweight-analyze,api/flask"
    assert lines["KNOWN_HOSTS"].split() == ["KNOWN_HOSTS", "—", "default"]


def test_settings_task_stops_on_a_bad_value(clean_env: Path) -> None:
    with pytest.raises(Exit) as err:
        settings_task(mock_host(), set_=["NODE_PORT=abc"])
    assert err.value.code == 2
    assert "NODE_PORT (flag --set): found 'abc'" in str(err.value.message)


def test_settings_task_defaults_prints_the_declarations(clean_env: Path, capsys) -> None:
    (clean_env / ".env").write_text("NODE_PORT=3100\n")  # ignored: the declarations, not the values
    settings_task(mock_host(), defaults=True)
    lines = _lines(capsys.readouterr().out)
    assert set(lines) == {"KEY", *KEY_NAMES}
    for key in (
        KEYS
    ):  # columns are two spaces or more apart; a default such as 'nginx -t' holds single ones
        assert re.split(r"\s{2,}", lines[key.name]) == [key.name, key.default or "—", key.help]
    assert "3100" not in lines["NODE_PORT"]


def test_settings_task_defaults_markdown_is_the_readme_table(clean_env: Path, capsys) -> None:
    settings_task(mock_host(), defaults=True, markdown=True)
    assert capsys.readouterr().out == readme_table() + "\n"
