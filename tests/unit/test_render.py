"""Rendering: each file the tool writes is read back by the program that will read it on the host.

gunicorn.conf.py is executed as Python (as Gunicorn does), ecosystem.config.js is `require()`d by
Node (as PM2 does), and the Nginx site goes through `nginx -t`. What they see must be exactly what
the settings say.
"""

from __future__ import annotations

import ast
import multiprocessing
import re
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import UndefinedError

from signalcraft_deploy.core.render import (
    GUNICORN_CONF,
    render_ecosystem,
    render_gunicorn_conf,
    render_nginx_site,
    render_release_configs,
    routes_regex,
    upstream_name,
    venv_dir,
)
from signalcraft_deploy.core.settings import Settings

REQUIREMENTS = "flask==3.0.3\ngunicorn==23.0.0\n"

CHANGED = {
    "APP_NAME": "shopfront",
    "DEPLOY_ROOT": "/srv/shopfront",
    "GUNICORN_BIND": "127.0.0.1:9101",
    "GUNICORN_WORKERS": "3",
    "GUNICORN_WORKER_CLASS": "gthread",
    "GUNICORN_TIMEOUT": "45",
    "GUNICORN_GRACEFUL_TIMEOUT": "12",
    "GUNICORN_MAX_REQUESTS": "500",
    "GUNICORN_MAX_REQUESTS_JITTER": "25",
    "WSGI_APP": "service.wsgi:application",
    "NODE_SCRIPT": "dist/main.js",
    "NODE_PORT": "4100",
    "NODE_INSTANCES": "3",
    "NODE_ENV": "staging",
    "NODE_LISTEN_TIMEOUT": "45",
    "NODE_KILL_TIMEOUT": "8",
    "NODE_WAIT_READY": "true",
    "PY_ROUTES": "v2/ml,v2/sensors,v2/batch.jobs",
    "NGINX_SITE": "/etc/nginx/conf.d/shopfront.conf",
    "NGINX_LISTEN": "18080",
    "SERVER_NAME": "shop.example.com",
    "HEALTH_PY": "/v2/ml/healthz",
    "HEALTH_NODE": "/healthz",
    "PYTHON": "python3.12",
}
# Defaults that must not survive once every setting is changed.
DEFAULT_TOKENS = (
    "8001",
    "3000",
    "api/ai",
    "api/iot",
    "api/flask",
    "/home/ubuntu",
    "server.js",
    "create_app",
)


def exec_gunicorn_conf(text: str) -> dict[str, Any]:
    """Run the file as Gunicorn does (it execs the config as a Python module) and return its
    globals."""
    namespace: dict[str, Any] = {"__file__": GUNICORN_CONF, "__name__": "__config__"}
    exec(compile(text, GUNICORN_CONF, "exec"), namespace)
    return namespace


# --- gunicorn.conf.py
# ------------------------------------------------------------------------------------------


def test_gunicorn_conf_defaults(load) -> None:
    s = load()
    text = render_gunicorn_conf(s)
    ast.parse(text)
    conf = exec_gunicorn_conf(text)
    assert conf["bind"] == ["127.0.0.1:8001"]
    assert conf["workers"] == multiprocessing.cpu_count() * 2 + 1  # 'auto'
    assert conf["chdir"] == "/home/ubuntu/signalcraft/current"
    assert conf["wsgi_app"] == "app:create_app()"
    assert conf["timeout"] == 120
    assert conf["graceful_timeout"] == 30
    assert conf["worker_class"] == "sync"
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (1000, 100)
    assert conf["proc_name"] == "signalcraft-python"
    assert (conf["accesslog"], conf["errorlog"]) == ("-", "-")


def test_gunicorn_conf_changed_values(load) -> None:
    conf = exec_gunicorn_conf(render_gunicorn_conf(load(CHANGED)))
    assert conf["bind"] == ["127.0.0.1:9101"]
    assert conf["workers"] == 3
    assert conf["chdir"] == "/srv/shopfront/current"
    assert conf["wsgi_app"] == "service.wsgi:application"
    assert (conf["timeout"], conf["graceful_timeout"], conf["worker_class"]) == (45, 12, "gthread")
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (500, 25)
    assert conf["proc_name"] == "shopfront-python"


def test_gunicorn_conf_ipv6_bind(load) -> None:
    conf = exec_gunicorn_conf(render_gunicorn_conf(load({"GUNICORN_BIND": "[::1]:8001"})))
    assert conf["bind"] == ["[::1]:8001"]


def test_gunicorn_conf_trial_run_chdir(load, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial run before a switch loads the new release through SIGNALCRAFT_CHDIR."""
    monkeypatch.setenv("SIGNALCRAFT_CHDIR", "/srv/x/releases/r2")
    assert exec_gunicorn_conf(render_gunicorn_conf(load()))["chdir"] == "/srv/x/releases/r2"
    monkeypatch.delenv("SIGNALCRAFT_CHDIR")
    assert (
        exec_gunicorn_conf(render_gunicorn_conf(load()))["chdir"]
        == "/home/ubuntu/signalcraft/current"
    )


# --- ecosystem.config.js
# ---------------------------------------------------------------------------------------


def test_ecosystem_passes_node_check(load, node_tester) -> None:
    s = load()
    result = node_tester.check(render_ecosystem(s, venv_dir(s, REQUIREMENTS)))
    assert result.ok, result.output


def test_ecosystem_as_pm2_reads_it(load, node_tester) -> None:
    s = load()
    venv = venv_dir(s, REQUIREMENTS)
    apps = {a["name"]: a for a in node_tester.load(render_ecosystem(s, venv))["apps"]}
    assert set(apps) == {"signalcraft-python", "signalcraft-nodejs"}

    py = apps["signalcraft-python"]
    assert venv.startswith("/home/ubuntu/signalcraft/venvs/")
    assert py["script"] == f"{venv}/bin/gunicorn"
    assert py["interpreter"] == f"{venv}/bin/python"
    assert py["args"] == ["-c", "/home/ubuntu/signalcraft/current/gunicorn.conf.py"]
    assert py["cwd"] == "/home/ubuntu/signalcraft/current"
    assert py["exec_mode"] == "fork"
    assert (
        "kill_signal" not in py
    )  # PM2 7 ignores it (always SIGINT); deploys drain before stopping instead
    assert (
        py["kill_timeout"] > s.gunicorn_graceful_timeout * 1000
    )  # PM2 must not SIGKILL a graceful shutdown
    assert py["env"] == {"PYTHONUNBUFFERED": "1"}

    node = apps["signalcraft-nodejs"]
    assert node["script"] == "/home/ubuntu/signalcraft/current/server.js"
    assert node["cwd"] == "/home/ubuntu/signalcraft/current"
    assert node["exec_mode"] == "cluster"
    assert node["instances"] == 2
    assert node["env"] == {"NODE_ENV": "production", "PORT": "3000"}
    assert node["env_production"] == node["env"]


def test_ecosystem_changed_values(load, node_tester) -> None:
    s = load(CHANGED)
    venv = venv_dir(s, REQUIREMENTS)
    apps = {a["name"]: a for a in node_tester.load(render_ecosystem(s, venv))["apps"]}
    py, node = apps["shopfront-python"], apps["shopfront-nodejs"]
    assert venv.startswith("/srv/shopfront/venvs/")
    assert (py["script"], py["interpreter"]) == (f"{venv}/bin/gunicorn", f"{venv}/bin/python")
    assert py["cwd"] == node["cwd"] == "/srv/shopfront/current"
    assert py["kill_timeout"] > 12 * 1000
    assert node["script"] == "/srv/shopfront/current/dist/main.js"
    assert (node["exec_mode"], node["instances"]) == ("cluster", 3)
    assert node["env"] == {"NODE_ENV": "staging", "PORT": "4100"}


def test_venv_follows_requirements_and_python(load) -> None:
    s = load()
    assert venv_dir(s, REQUIREMENTS) == venv_dir(s, REQUIREMENTS)
    assert venv_dir(s, REQUIREMENTS) != venv_dir(s, REQUIREMENTS + "requests==2.32.3\n")
    assert venv_dir(s, REQUIREMENTS) != venv_dir(load({"PYTHON": "python3.12"}), REQUIREMENTS)


# --- Nginx site
# ------------------------------------------------------------------------------------------------


def test_nginx_site_passes_nginx_t(load, nginx_tester) -> None:
    result = nginx_tester.check(render_nginx_site(load({"NGINX_LISTEN": "18080"})))
    assert result.ok, result.output
    assert "test is successful" in result.output


def test_nginx_site_changed_passes_nginx_t(load, nginx_tester) -> None:
    result = nginx_tester.check(render_nginx_site(load(CHANGED)))
    assert result.ok, result.output


@pytest.mark.parametrize("length", [1, 20, 21, 40])
def test_nginx_site_for_any_app_name_length_passes_nginx_t(load, nginx_tester, length: int) -> None:
    """nginx caps variable names (variables_hash_bucket_size 64); names derived from APP_NAME must
    fit at 40."""
    name = ("a-" * 20)[: length - 1] + "z"
    result = nginx_tester.check(
        render_nginx_site(load({"APP_NAME": name, "NGINX_LISTEN": "18080"}))
    )
    assert result.ok, result.output


def test_nginx_t_catches_a_broken_site(nginx_tester) -> None:
    """The checker itself must be able to fail: a site with a stray brace is refused."""
    result = nginx_tester.check("server { listen 18080; location / { return 200; }\n")
    assert not result.ok
    assert "unexpected end of file" in result.output


def test_nginx_site_content(load) -> None:
    site = render_nginx_site(load({"NGINX_LISTEN": "18080"}))
    assert "server 127.0.0.1:8001;" in site
    assert "server 127.0.0.1:3000;" in site
    assert "listen 18080 default_server;" in site
    assert "server_name _;" in site
    assert r"location ~ ^/(api/ai|api/iot|api/lightweight-analyze|api/flask)(/|$) {" in site


def test_nginx_site_named_server_is_not_default(load) -> None:
    site = render_nginx_site(load({"SERVER_NAME": "shop.example.com"}))
    assert "listen 80;" in site
    assert "default_server" not in site


def test_nginx_site_handover_address(load) -> None:
    site = render_nginx_site(load(), python_address="127.0.0.1:8002")
    assert "server 127.0.0.1:8002;" in site
    assert "server 127.0.0.1:8001;" not in site


@pytest.mark.parametrize(
    ("routes", "uri", "python"),
    [
        (("api/ai",), "/api/ai", True),
        (("api/ai",), "/api/ai/x", True),
        (("api/ai",), "/api/aix", False),
        (("v1.0",), "/v1.0/x", True),
        (("v1.0",), "/v1x0/x", False),  # a dot in a route is a literal dot
        (("a~b", "c-d"), "/c-d", True),
        (("api/ai",), "/other/api/ai", False),
    ],
)
def test_routes_regex_matches_like_a_prefix(
    routes: tuple[str, ...], uri: str, python: bool
) -> None:
    pattern = rf"^/({routes_regex(routes)})(/|$)"
    assert bool(re.search(pattern, uri)) is python


def test_upstream_names_are_nginx_identifiers(load) -> None:
    s = load({"APP_NAME": "my-shop-2"})
    assert re.fullmatch(r"my_shop_2_[0-9a-f]{16}_python", upstream_name(s, "python"))
    assert upstream_name(s, "python") != upstream_name(
        load({"APP_NAME": "my-shop-2", "NGINX_SITE": "/etc/nginx/conf.d/my-shop-2.conf"}), "python"
    )  # global in Nginx: one site's, never another's
    assert re.fullmatch(r"[A-Za-z0-9_]+", upstream_name(s, "nodejs"))


# --- Every setting changed: no default survives
# ---------------------------------------------------------------


def _all_outputs(s: Settings) -> dict[str, str]:
    out = dict(render_release_configs(s, venv_dir(s, REQUIREMENTS)))
    out["nginx-site"] = render_nginx_site(s)
    return out


def test_changed_settings_leave_no_default_behind(load) -> None:
    for name, text in _all_outputs(load(CHANGED)).items():
        for token in DEFAULT_TOKENS:
            assert token not in text, f"{name} still holds the default {token!r}"
        # The tool's own name may appear ("Rendered by signalcraft-deploy", SIGNALCRAFT_CHDIR, its
        # folder .signalcraft/ in a release, its hooks' _signalcraft_ names); the app name may not.
        assert not re.search(r"(?<![._])signalcraft(?!-deploy)", text), (
            f"{name} still holds the default app name"
        )
    outputs = _all_outputs(load(CHANGED))
    assert "9101" in outputs["gunicorn.conf.py"] and "9101" in outputs["nginx-site"]
    assert "4100" in outputs["ecosystem.config.js"] and "4100" in outputs["nginx-site"]
    assert "v2/ml|v2/sensors|v2/batch\\.jobs" in outputs["nginx-site"]
    assert (
        "shopfront" in outputs["gunicorn.conf.py"] and "upstream shopfront" in outputs["nginx-site"]
    )


def test_default_tokens_are_really_in_default_output(load) -> None:
    """Guard for the test above: with defaults, the tokens it looks for are present."""
    joined = "\n".join(_all_outputs(load()).values())
    for token in DEFAULT_TOKENS:
        assert token in joined
    assert re.search(r"signalcraft(?!-deploy)", joined)


# --- TEMPLATES_DIR
# -------------------------------------------------------------------------------------------


def test_user_template_wins_over_bundled(tmp_path: Path, load) -> None:
    templates = tmp_path / "my-templates"
    templates.mkdir()
    (templates / "gunicorn.conf.py.j2").write_text(
        "# house style\nbind = [{{ bind | pyrepr }}]\nworkers = 7\nwsgi_app = {{ wsgi_app | pyrepr"
        " }}\n"
    )
    (tmp_path / ".env").write_text("TEMPLATES_DIR=my-templates\n")
    s = load()
    assert s.templates_dir == str(templates)
    text = render_gunicorn_conf(s)
    assert text.startswith("# house style\n")
    conf = exec_gunicorn_conf(text)
    assert (conf["bind"], conf["workers"], conf["wsgi_app"]) == (
        ["127.0.0.1:8001"],
        7,
        "app:create_app()",
    )
    # Templates the user did not supply still come from the bundle.
    assert "module.exports" in render_ecosystem(s, venv_dir(s, REQUIREMENTS))
    assert "upstream signalcraft_" in render_nginx_site(s)


def test_user_template_with_unknown_variable_fails_loudly(tmp_path: Path, load) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "gunicorn.conf.py.j2").write_text("bind = {{ lisen }}\n")
    s = load({"TEMPLATES_DIR": str(tmp_path / "t")})
    with pytest.raises(UndefinedError, match="lisen"):
        render_gunicorn_conf(s)
