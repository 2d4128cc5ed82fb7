"""The route table (ROUTES): routing both ways, prefix mounting, and what root accepts of it (issue
25, D2/D3).

PY_ROUTES alone keeps today's locations (test_nginx_site's golden); ROUTES gives `/` to either app
and passes each path as the client sent it (the app's routes carry their prefixes, as init finds
them in its code); MOUNTS names the prefixes whose app is written for '/': Nginx strips a Node.js
one (X-Forwarded-Prefix names it), Gunicorn mounts Python under its one prefix (SCRIPT_NAME).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import crossplane
import pytest

from signalcraft_deploy.core import render as core_render
from signalcraft_deploy.core.settings import SettingsError, route_owner
from signalcraft_deploy.remote import nginx_site
from signalcraft_deploy.remote.nginx_site import BadSite, check, render

FLASK_ON_ROOT = {
    "ROUTES": "/=python,/chat=nodejs",
    "MOUNTS": "/chat",
    "HEALTH_PY": "/healthz",
    "HEALTH_NODE": "/chat/",
}


# ----------------------------------------------------------------------------- settings


def test_py_routes_alone_is_todays_table(load) -> None:
    s = load({"PY_ROUTES": "api,v1/x", "HEALTH_PY": "/api/health"})
    assert s.routes is None
    assert s.route_table == (("/api", "python"), ("/v1/x", "python"), ("/", "nodejs"))
    assert "routes" in core_render.site_description(
        s
    ) and "table" not in core_render.site_description(s)
    assert s.python_mount is None  # its routes carry their prefixes: no SCRIPT_NAME
    assert "raw_env" not in core_render.render_gunicorn_conf(s)


def test_routes_is_read_as_pairs(load) -> None:
    s = load({**FLASK_ON_ROOT, "ROUTES": "/=python , /chat=nodejs,/api/v2=python"})
    assert s.routes == (("/", "python"), ("/chat", "nodejs"), ("/api/v2", "python"))
    assert core_render.site_description(s)["table"] == [
        ["/", "python"],
        ["/chat", "nodejs", "mount"],
        ["/api/v2", "python"],
    ]


def test_routes_and_a_py_routes_of_its_own_are_refused_naming_both(load) -> None:
    with pytest.raises(
        SettingsError, match=r"ROUTES \(flag --set\) and PY_ROUTES \(environment\) are both set"
    ) as err:
        load(FLASK_ON_ROOT, environ={"PY_ROUTES": "api"})
    assert "remove PY_ROUTES" in str(err.value)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("/=python,/=nodejs", "'/' is listed twice"),
        ("/chat=nodejs", "exactly one '/' entry"),
        ("/=python,/chat/=nodejs", "entry '/chat/=nodejs'"),
        ("/=python,chat=nodejs", "entry 'chat=nodejs'"),
        ("/=python,/chat=node", "entry '/chat=node'"),
        ("/=python,/chat", "entry '/chat'"),
        ("/=python,/a/../b=nodejs", "entry '/a/../b=nodejs'"),
        ("/=python,/(x)=nodejs", "entry '/(x)=nodejs'"),
        ("/=python,/a;b=nodejs", "entry '/a;b=nodejs'"),
        ("/=python,,/chat=nodejs", "entry ''"),
        ("/=python,/chat=nodejs,/chat=python", "'/chat' is listed twice"),
    ],
)
def test_a_bad_table_is_refused_by_name(load, value: str, found: str) -> None:
    with pytest.raises(SettingsError, match="^ROUTES") as err:
        load({**FLASK_ON_ROOT, "ROUTES": value})
    assert found in str(err.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("HEALTH_PY", "/chat/health"), ("HEALTH_NODE", "/healthz"), ("HEALTH_NODE", "/chatter")],
)
def test_each_health_path_must_be_its_apps_under_the_table(load, key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{key} .*a path ROUTES gives to"):
        load({**FLASK_ON_ROOT, key: value})


def test_the_longest_prefix_owns_a_path() -> None:
    table = (("/", "python"), ("/chat", "nodejs"), ("/chat/admin", "python"))
    assert [
        route_owner(p, table)
        for p in (
            "/",
            "/chat",
            "/chat/",
            "/chat/x",
            "/chatter",
            "/chat/admin",
            "/chat/admin/y",
            "/chat/administrator",
        )
    ] == ["python", "nodejs", "nodejs", "nodejs", "python", "python", "python", "nodejs"]


def test_node_health_is_asked_directly_without_its_prefix_when_mounted(load) -> None:
    s = load(FLASK_ON_ROOT)
    assert s.app_path("nodejs", "/chat/") == "/" and s.app_path("nodejs", "/chat") == "/"
    assert s.app_path("nodejs", "/chat/ping") == "/ping"
    assert s.app_path("python", "/healthz") == "/healthz"
    unmounted = load(
        {**FLASK_ON_ROOT, "MOUNTS": ""}
    )  # Express's own app.use('/chat', ...): the path as sent
    assert unmounted.app_path("nodejs", "/chat/ping") == "/chat/ping"


def test_without_mounts_every_app_gets_the_path_as_the_client_sent_it(load, tmp_path) -> None:
    # init writes ROUTES from the app's own code (Flask's url_map, Express's app.use('/chat')):
    # those routes carry their prefixes, and a stripped or SCRIPT_NAME-mounted path would miss every
    # one of them.
    s = load(
        {
            **FLASK_ON_ROOT,
            "MOUNTS": "",
            "ROUTES": "/api=python,/=nodejs,/chat=nodejs",
            "HEALTH_PY": "/api/h",
            "HEALTH_NODE": "/chat/h",
        }
    )
    assert s.python_mount is None and "raw_env" not in _conf_values(
        core_render.render_gunicorn_conf(s)
    )
    site = core_render.render_nginx_site(s)
    assert "rewrite" not in site and "X-Forwarded-Prefix /" not in site
    locations = _locations(site, tmp_path)
    assert [_served_by(locations, uri) for uri in ("/api/x", "/chat/x", "/x")] == [
        ("python", "/api/x"),
        ("nodejs", "/chat/x"),
        ("nodejs", "/x"),
    ]


@pytest.mark.parametrize(
    ("mounts", "routes", "found"),
    [
        ("/chat", None, "ROUTES, which is unset"),
        ("/nope", "/=python,/chat=nodejs", "/nope is not one of them"),
        ("/", "/=python,/chat=nodejs", "entry '/'"),
        ("/api", "/api=python,/v2=python,/=nodejs", "Python's one entry"),
    ],
)
def test_a_mount_outside_the_table_or_of_python_beside_other_prefixes_is_refused(
    load, mounts, routes, found
) -> None:
    values = {"MOUNTS": mounts, "HEALTH_PY": "/api/h", "HEALTH_NODE": "/"}
    if routes:
        values["ROUTES"] = routes
        values["HEALTH_NODE"] = "/chat/" if "/chat" in routes else "/"
        values["HEALTH_PY"] = "/api/h" if "/api" in routes else "/h"
    with pytest.raises(SettingsError, match="^MOUNTS") as err:
        load(values)
    assert found in str(err.value)


# ----------------------------------------------------------------------------- Gunicorn's mount
# (SCRIPT_NAME)


def _conf_values(text: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    # noqa: S102 - the file Gunicorn itself executes
    exec(compile(text, "gunicorn.conf.py", "exec"), values)
    return values


def test_python_mounted_under_its_one_prefix_gets_script_name(load) -> None:
    s = load({"ROUTES": "/app=python,/=nodejs", "MOUNTS": "/app", "HEALTH_PY": "/app/healthz"})
    assert s.python_mount == "/app"
    assert _conf_values(core_render.render_gunicorn_conf(s))["raw_env"] == ["SCRIPT_NAME=/app"]
    assert "proxy_set_header X-Forwarded-Prefix /app;" in core_render.render_nginx_site(s)


@pytest.mark.parametrize("routes", ["/=python,/chat=nodejs", "/api=python,/v2=python,/=nodejs"])
def test_python_on_root_or_several_prefixes_is_not_mounted(load, routes: str) -> None:
    s = load(
        {
            **FLASK_ON_ROOT,
            "ROUTES": routes,
            "MOUNTS": "/chat" if "chat" in routes else "",
            "HEALTH_PY": "/api/h" if "/api" in routes else "/healthz",
            "HEALTH_NODE": "/chat/" if "chat" in routes else "/",
        }
    )
    assert s.python_mount is None
    assert "raw_env" not in _conf_values(core_render.render_gunicorn_conf(s))
    site = core_render.render_nginx_site(s)
    assert not re.search(r"X-Forwarded-Prefix /(api|v2);", site)


# ----------------------------------------------------------------------------- the site


def _locations(site: str, tmp_path) -> list[tuple[list[str], list[dict[str, Any]]]]:
    path = tmp_path / "site.conf"
    path.write_text(site)
    parsed = crossplane.parse(
        str(path), single=True, check_ctx=False, check_args=False, comments=False
    )
    server = next(d for d in parsed["config"][0]["parsed"] if d["directive"] == "server")
    return [(d["args"], d["block"]) for d in server["block"] if d["directive"] == "location"]


def _served_by(
    locations: list[tuple[list[str], list[dict[str, Any]]]], uri: str
) -> tuple[str, str]:
    """Nginx's choice for `uri` among our locations (regex in order, first match; else `/`), and the
    URI passed on."""
    regex = [block for args, block in locations if args[0] == "~" and re.search(args[1], uri)]
    block = regex[0] if regex else next(b for a, b in locations if a == ["/"])
    upstream = next(d["args"][0] for d in block if d["directive"] == "proxy_pass").rsplit("_", 1)[
        -1
    ]
    for d in block:
        if d["directive"] == "rewrite":
            uri = re.sub(d["args"][0].replace("$1", r"\1"), d["args"][1].replace("$1", r"\1"), uri)
    return upstream, uri


@pytest.mark.parametrize(
    "values",
    [
        FLASK_ON_ROOT,
        {**FLASK_ON_ROOT, "MOUNTS": ""},
        {"ROUTES": "/app=python,/=nodejs", "MOUNTS": "/app", "HEALTH_PY": "/app/healthz"},
    ],
)
def test_no_client_sent_prefix_reaches_an_app(load, tmp_path, values) -> None:
    # The apps are told X-Forwarded-Prefix names their mount (an app honouring it, e.g.
    # ProxyFix(x_prefix=1), builds its links and redirects from it): a client's own
    # X-Forwarded-Prefix: //evil.example, passed through where nothing is mounted, would make those
    # links and redirects its own. Gunicorn trusts a SCRIPT_NAME header from Nginx
    # (forwarder_headers), which passes one when any server on the address has
    # underscores_in_headers on.
    s = load(values)
    for args, block in _locations(core_render.render_nginx_site(s), tmp_path):
        if not any(d["directive"] == "proxy_pass" for d in block):
            continue
        headers = {
            d["args"][0]: d["args"][1] for d in block if d["directive"] == "proxy_set_header"
        }
        mounted = args[0] == "~" and any(
            args[1] == nginx_site.prefix_regex(p) for p in s.mounts or ()
        )
        assert headers.get("X-Forwarded-Prefix") == (
            next(p for p in s.mounts if args[1] == nginx_site.prefix_regex(p)) if mounted else ""
        ), args
        python = next(d["args"][0] for d in block if d["directive"] == "proxy_pass").endswith(
            "_python"
        )
        assert headers.get("SCRIPT_NAME") == ("" if python else None), args


def test_flask_on_root_and_node_under_chat(load, tmp_path) -> None:
    s = load(
        {
            **FLASK_ON_ROOT,
            "ROUTES": "/=python,/chat=nodejs,/chat/admin=python,/a.b=nodejs",
            "MOUNTS": "/chat,/a.b",
            "HEALTH_PY": "/healthz",
        }
    )
    locations = _locations(core_render.render_nginx_site(s), tmp_path)
    cases = {
        "/": ("python", "/"),
        "/jobs/": ("python", "/jobs/"),
        "/chat": ("nodejs", "/"),
        "/chat/": ("nodejs", "/"),
        "/chat/x/y": ("nodejs", "/x/y"),
        "/chatter": ("python", "/chatter"),
        "/chat/admin/z": ("python", "/chat/admin/z"),
        "/a.b/c": ("nodejs", "/c"),
        "/aXb/c": ("python", "/aXb/c"),
    }
    assert {uri: _served_by(locations, uri) for uri in cases} == cases


def test_the_table_site_keeps_the_hosts_port_and_names_the_prefix(load) -> None:
    s = load(FLASK_ON_ROOT)
    site = core_render.render_nginx_site(s)
    up = nginx_site.upstream_for(s.nginx_site)
    assert "Host $host;" not in site and site.count(f"proxy_set_header Host ${up}_host;") == 2
    assert f'map $http_host ${up}_host {{\n    ""      $host;\n    default $http_host;\n}}' in site
    assert site.count("X-Forwarded-Prefix /chat;") == 1
    chat = site[site.index("location ~ ^/chat(/|$)") :]
    assert chat.index("Upgrade $http_upgrade") < chat.index(
        "location /"
    )  # the WebSocket upgrade goes to Node.js


def test_the_table_site_passes_nginx_t_with_tls(load, nginx_tester) -> None:
    s = load(
        {
            **FLASK_ON_ROOT,
            "ROUTES": "/=nodejs,/api=python,/api/ws=nodejs",
            "MOUNTS": "/api/ws",
            "HEALTH_PY": "/api/h",
            "HEALTH_NODE": "/",
        }
    )
    result = nginx_tester.check(core_render.render_nginx_site(s))
    assert result.ok, result.output


def test_two_table_sites_pass_nginx_t_together(load, nginx_tester) -> None:
    # the Host map is per site (its upstream stem): two sites in one http block must not define one
    # twice
    one = core_render.render_nginx_site(load(FLASK_ON_ROOT))
    two = core_render.render_nginx_site(
        load({**FLASK_ON_ROOT, "APP_NAME": "other", "NGINX_LISTEN": "8080"})
    )
    result = nginx_tester.check(one + "\n" + two)
    assert result.ok, result.output


# ----------------------------------------------------------------------------- what root accepts


def _table_desc(table: Any) -> dict[str, Any]:
    site = "/etc/nginx/sites-available/shop"
    return {
        "site": site,
        "upstream": nginx_site.upstream_for(site),
        "listen": ["80"],
        "tls_listen": ["443"],
        "server_name": "_",
        "table": table,
        "python": "127.0.0.1:8001",
        "node": "127.0.0.1:3000",
        "body_size": "",
        "tls": None,
    }


def test_root_accepts_a_table_and_an_older_releases_routes(load) -> None:
    assert check(_table_desc([["/", "python"], ["/chat", "nodejs"]]))
    older = {**_table_desc(None), "routes": ["api"]}
    del older["table"]
    assert check(copy.deepcopy(older)) == older


@pytest.mark.parametrize(
    "table",
    [
        [],
        "/=python",
        [["/chat", "nodejs"]],
        [["/", "python"], ["/", "nodejs"]],
        [["/", "root"]],
        [["/", "python", "x"]],
        [("/", "python")],
        [["/", "python"], ["chat", "nodejs"]],
        [["/", "python"], ["/chat/", "nodejs"]],
        [["/", "python", "mount"]],
        [["/", "nodejs"], ["/a", "python", "mount"], ["/b", "python"]],
        [["/", "python"], ["/chat", "nodejs", "mount", "x"]],
        [["/", "python"], ["/chat", "nodejs", "Mount"]],
        [["/", "python"], ["/a/../etc", "nodejs"]],
        [["/", "python"], ["/x;}", "nodejs"]],
        [["/", "python"], ["/x y", "nodejs"]],
        [["/", "python"], ["/$host", "nodejs"]],
        [["/", "python"], [None, "nodejs"]],
        [["/", "python"]] + [["/a", "nodejs"]] * 2,
        [["/", "python"]] + [[f"/r{i}", "nodejs"] for i in range(100)],
    ],
)
def test_root_refuses_a_table_the_tool_could_not_have_made(table: Any) -> None:
    with pytest.raises(BadSite):
        render(_table_desc(table))


def test_root_refuses_routes_and_table_together() -> None:
    with pytest.raises(BadSite):
        check({**_table_desc([["/", "python"]]), "routes": ["api"]})


def test_the_table_names_the_apps_as_the_plan_does() -> None:
    from signalcraft_deploy.core.plan import App

    assert set(nginx_site.APPS) == {App.PYTHON.value, App.NODEJS.value}
