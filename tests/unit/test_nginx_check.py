"""nginx-check's pure half: which address serves each route in an `nginx -T` dump, and the root
script installing the site.

The dumps are what Debian's nginx prints for `nginx -T`: nginx.conf including sites-enabled/*, the
stock default site, and ours. Location choice follows nginx (exact, longest prefix, ^~, regex in
order, auto-redirect), which was checked against a running nginx for the forms used here.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from signalcraft_deploy.core.render import render_nginx_site, upstream_name
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.nginx import (
    _location_for,
    describe_mismatches,
    install_site_args,
    nginx_seconds,
    parse_files,
    route_table,
    split_dump,
    timeout_problems,
)

DEBIAN_NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /etc/nginx/modules-enabled/*.conf;

events {
\tworker_connections 768;
\t# multi_accept on;
}

http {
\tsendfile on;
\ttcp_nopush on;
\ttypes_hash_max_size 2048;
\tinclude /etc/nginx/mime.types;
\tdefault_type application/octet-stream;
\tssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; # Dropping SSLv3, ref: POODLE
\tssl_prefer_server_ciphers on;
\taccess_log /var/log/nginx/access.log;
\tgzip on;
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
"""

MIME_TYPES = """\
types {
    text/html                                        html htm shtml;
    text/css                                         css;
    application/javascript                           js;
}
"""

STOCK_DEFAULT = """\
##
# You should look at the following URL's in order to grasp a solid understanding
# of Nginx configuration files in order to fully unleash the power of Nginx.
##
server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\troot /var/www/html;
\tindex index.html index.htm index.nginx-debian.html;
\tserver_name _;
\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
"""


def dump(files: dict[str, str]) -> str:
    """`nginx -T` stdout: each file behind a '# configuration file PATH:' line."""
    return "".join(f"# configuration file {path}:\n{text}\n" for path, text in files.items())


def debian_dump(site_path: str | None, site: str | None, *, with_default: bool = False) -> str:
    files = {
        "/etc/nginx/nginx.conf": DEBIAN_NGINX_CONF,
        "/etc/nginx/modules-enabled/50-mod-http-echo.conf": (
            "load_module modules/ngx_http_echo_module.so;\n"
        ),
        "/etc/nginx/mime.types": MIME_TYPES,
    }
    if with_default:
        files["/etc/nginx/sites-enabled/default"] = STOCK_DEFAULT
    if site_path and site is not None:
        files[site_path] = site
    return dump(files)


def python_uris(s: Settings) -> list[str]:
    return [f"/{r}/" for r in s.py_routes] + [f"/{r}" for r in s.py_routes]


# --- split_dump / parse_files
# -----------------------------------------------------------------------------------


def test_split_dump_gives_every_file() -> None:
    text = "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n" + debian_dump(
        "/etc/nginx/sites-enabled/signalcraft", "server { listen 80; }\n", with_default=True
    )
    files = split_dump(text)
    assert list(files) == [
        "/etc/nginx/nginx.conf",
        "/etc/nginx/modules-enabled/50-mod-http-echo.conf",
        "/etc/nginx/mime.types",
        "/etc/nginx/sites-enabled/default",
        "/etc/nginx/sites-enabled/signalcraft",
    ]
    assert files["/etc/nginx/nginx.conf"].startswith("user www-data;\n")
    assert "syntax is ok" not in "".join(files.values())
    parsed = parse_files(files)
    assert [d["directive"] for d in parsed["/etc/nginx/sites-enabled/signalcraft"]] == ["server"]
    assert parsed["/etc/nginx/nginx.conf"][-1]["directive"] == "http"


# --- route_table over our own rendered site
# --------------------------------------------------------------------


@pytest.mark.parametrize("path_kind", ["enabled-link", "available"])
def test_rendered_site_routes_all_ok(load, path_kind: str) -> None:
    s = load()
    path = s.nginx_enabled_link if path_kind == "enabled-link" else s.nginx_site
    routes, problems = route_table(s, debian_dump(path, render_nginx_site(s)))
    assert problems == []
    assert routes and all(r.ok for r in routes), describe_mismatches(routes)
    assert describe_mismatches(routes) == []
    assert [r.uri for r in routes] == [
        *python_uris(s),
        "/",
    ]  # each URI once, though HEALTH_NODE is also '/'
    by_uri = {r.uri: r for r in routes}
    for uri in python_uris(s):
        assert by_uri[uri].found == "127.0.0.1:8001"
    assert by_uri["/"].found == "127.0.0.1:3000"
    assert all(r.file == path for r in routes)


def test_rendered_site_next_to_the_stock_default(load) -> None:
    """With a server name, the stock default site stays enabled on the same port; our site is still
    the one checked."""
    s = load({"SERVER_NAME": "shop.example.com"})
    routes, problems = route_table(
        s, debian_dump(s.nginx_enabled_link, render_nginx_site(s), with_default=True)
    )
    assert problems == []
    assert all(r.ok for r in routes)


def test_rendered_site_with_every_setting_changed(load) -> None:
    s = load(
        {
            "APP_NAME": "shopfront",
            "GUNICORN_BIND": "127.0.0.1:9101",
            "NODE_PORT": "4100",
            "NGINX_LISTEN": "8080",
            "PY_ROUTES": "v2/ml,v2/sensors,v1.0",
            "HEALTH_PY": "/v2/ml/healthz",
            "HEALTH_NODE": "/healthz",
            "NGINX_SITE": "/etc/nginx/conf.d/shopfront.conf",
            "SERVER_NAME": "shop.example.com",
        }
    )
    routes, problems = route_table(s, debian_dump(s.nginx_site, render_nginx_site(s)))
    assert problems == []
    by_uri = {r.uri: r.found for r in routes}
    assert by_uri["/v2/ml/"] == by_uri["/v1.0"] == "127.0.0.1:9101"
    assert by_uri["/healthz"] == by_uri["/"] == "127.0.0.1:4100"
    assert all(r.ok for r in routes)


def test_handover_site_is_reported_as_a_mismatch(load) -> None:
    """During a master handover the site points at the handover address; a check then says so."""
    s = load()
    routes, _ = route_table(
        s, debian_dump(s.nginx_enabled_link, render_nginx_site(s, python_address="127.0.0.1:8002"))
    )
    assert {r.found for r in routes if not r.ok} == {"127.0.0.1:8002"}


# --- A Python route sent to the wrong place
# --------------------------------------------------------------------

# Line numbers matter: the mismatch must point at line 10, the proxy_pass that sends /api/iot/
# elsewhere.
WRONG_SITE = """\
upstream signalcraft_python {
    server 127.0.0.1:8001;
}

server {
    listen 80 default_server;
    server_name _;

    location ^~ /api/iot/ {
        proxy_pass http://127.0.0.1:9999;
    }

    location ~ ^/(api/ai|api/iot|api/lightweight-analyze|api/flask)(/|$) {
        proxy_pass http://signalcraft_python;
    }

    location / {
        proxy_pass http://127.0.0.1:3000;
    }
}
"""


def test_one_route_proxied_elsewhere_names_file_line_found_and_expected(load) -> None:
    s = load()
    path = "/etc/nginx/sites-enabled/signalcraft"
    routes, problems = route_table(s, debian_dump(path, WRONG_SITE, with_default=False))
    assert problems == []
    bad = {r.uri: r for r in routes if not r.ok}
    # /api/iot itself is answered with a 301 to /api/iot/ (the ^~ location passes requests on), so
    # it ends at 9999 too.
    assert set(bad) == {"/api/iot/", "/api/iot"}
    assert describe_mismatches(routes) == [
        f"{path}:10: /api/iot/ is proxied to 127.0.0.1:9999; expected 127.0.0.1:8001",
        f"{path}:10: /api/iot is proxied to 127.0.0.1:9999; expected 127.0.0.1:8001",
    ]
    assert {r.uri for r in routes if r.ok} == {
        "/api/ai/",
        "/api/ai",
        "/api/lightweight-analyze/",
        "/api/lightweight-analyze",
        "/api/flask/",
        "/api/flask",
        "/",
    }


def test_upstream_pointing_elsewhere_is_a_mismatch_at_the_proxy_pass(load) -> None:
    s = load()
    site = render_nginx_site(s).replace("server 127.0.0.1:8001;", "server 127.0.0.1:9999;")
    routes, _ = route_table(s, debian_dump(s.nginx_enabled_link, site))
    proxy_line = next(
        n
        for n, line in enumerate(site.splitlines(), 1)
        if f"proxy_pass http://{upstream_name(s, 'python')};" in line
    )
    messages = describe_mismatches(routes)
    assert len(messages) == 2 * len(s.py_routes)
    path = "/etc/nginx/sites-enabled/signalcraft"
    assert (
        messages[0]
        == f"{path}:{proxy_line}: /api/ai/ is proxied to 127.0.0.1:9999; expected 127.0.0.1:8001"
    )


def test_python_route_missing_goes_to_node(load) -> None:
    s = load()
    site = render_nginx_site(s).replace("api/ai|", "")
    routes, _ = route_table(s, debian_dump(s.nginx_enabled_link, site))
    assert {r.uri: r.found for r in routes if not r.ok} == {
        "/api/ai/": "127.0.0.1:3000",
        "/api/ai": "127.0.0.1:3000",
    }


def test_location_without_proxy_pass_is_proxied_to_nothing(load) -> None:
    s = load()
    site = (
        "server {\n    listen 80;\n    location /api/ {\n        return 404;\n    }\n"
        "    location / {\n        proxy_pass http://127.0.0.1:3000;\n    }\n}\n"
    )
    routes, _ = route_table(s, debian_dump(s.nginx_enabled_link, site))
    messages = describe_mismatches(routes)
    assert (
        "/etc/nginx/sites-enabled/signalcraft:3: /api/ai/ is proxied to nothing; expected"
        " 127.0.0.1:8001" in messages
    )


# --- Other location forms
# --------------------------------------------------------------------------------------

PREFIX_SITE = """\
server {
    listen 80 default_server;
    server_name _;

    location /api/ai/ { proxy_pass http://127.0.0.1:8001; }
    location /api/iot/ { proxy_pass http://127.0.0.1:8001; }
    location /api/lightweight-analyze/ { proxy_pass http://127.0.0.1:8001; }
    location /api/flask/ { proxy_pass http://127.0.0.1:8001; }

    location / { proxy_pass http://127.0.0.1:3000; }
}
"""


def test_prefix_locations_one_per_route_are_understood(load) -> None:
    """The plan's own form: `location /api/ai/ { proxy_pass ...:8001; }`. nginx answers /api/ai with
    a 301 to /api/ai/."""
    s = load()
    routes, problems = route_table(s, debian_dump(s.nginx_enabled_link, PREFIX_SITE))
    assert problems == []
    assert describe_mismatches(routes) == []
    assert {r.uri: r.line for r in routes}["/api/iot/"] == 6


def test_prefix_location_for_a_different_route_is_not_taken(load) -> None:
    s = load({"PY_ROUTES": "api/ai,api/new", "HEALTH_PY": "/api/ai/health"})
    routes, _ = route_table(s, debian_dump(s.nginx_enabled_link, PREFIX_SITE))
    assert {r.uri for r in routes if not r.ok} == {"/api/new/", "/api/new"}


CARET_EXACT_SITE = """\
upstream py {
    server 127.0.0.1:8001;
}
server {
    listen 80;
    listen [::]:80;
    server_name _;
    location = /api/ai { proxy_pass http://py; }
    location ^~ /api/ai/ { proxy_pass http://py; }
    location ~ \\.php$ { proxy_pass http://127.0.0.1:9000; }
    location ^~ /api/iot { proxy_pass http://py; }
    location = / { proxy_pass http://127.0.0.1:3000; }
    location / { proxy_pass http://127.0.0.1:3000; }
}
"""


def test_caret_and_exact_locations(load) -> None:
    s = load({"PY_ROUTES": "api/ai,api/iot", "HEALTH_PY": "/api/ai/health"})
    routes, problems = route_table(s, debian_dump(s.nginx_enabled_link, CARET_EXACT_SITE))
    assert problems == []
    assert describe_mismatches(routes) == []
    lines = {r.uri: r.line for r in routes}
    assert lines == {"/api/ai/": 9, "/api/iot/": 11, "/api/ai": 8, "/api/iot": 11, "/": 12}


def _loc(*args: str, proxy: str | None = "http://x") -> dict:
    block = (
        [{"directive": "proxy_pass", "args": [proxy], "line": 1}]
        if proxy
        else [{"directive": "root", "args": ["/srv"]}]
    )
    return {"directive": "location", "args": list(args), "block": block}


@pytest.mark.parametrize(
    ("uri", "locations", "chosen"),
    [
        ("/a/b", [_loc("/"), _loc("/a/"), _loc("/a/b/c")], 1),  # longest matching prefix
        ("/a/b", [_loc("/"), _loc("~", "^/a"), _loc("/a/")], 1),  # a regex beats a plain prefix
        ("/a/b", [_loc("/"), _loc("~", "^/a"), _loc("^~", "/a/")], 2),  # ...but not a ^~ prefix
        ("/a/b", [_loc("~", "^/x"), _loc("/a/")], 1),  # no regex matches: the prefix
        (
            "/a/b",
            [_loc("/a/"), _loc("~", "b$"), _loc("~", "^/a")],
            1,
        ),  # the first matching regex, in order
        ("/A/b", [_loc("/"), _loc("~*", "^/a/")], 1),  # ~* ignores case
        ("/A/b", [_loc("/"), _loc("~", "^/a/")], 0),  # ~ does not
        ("/a", [_loc("/"), _loc("=", "/a"), _loc("~", "^/a")], 1),  # exact beats everything
        ("/a", [_loc("/"), _loc("/a/")], 1),  # auto-redirect to /a/ (proxied)
        ("/a", [_loc("/"), _loc("/a/", proxy=None)], 0),  # no redirect without a *_pass
        ("/a", [_loc("/"), _loc("~", "^/a$"), _loc("/a/")], 2),  # the redirect comes before regexes
        (
            "/a",
            [_loc("/"), _loc("~", "^/a"), _loc("/a/")],
            1,
        ),  # ...and /a/ then goes wherever nginx sends /a/
        ("/a", [_loc("/"), _loc("^~", "/a/")], 1),  # ^~ and = locations redirect too
        ("/a", [_loc("/"), _loc("=", "/a/")], 1),
        (
            "/a",
            [_loc("/"), _loc("/a"), _loc("/a/")],
            1,
        ),  # a prefix named exactly /a stops the redirect
        ("/zzz", [_loc("/a/")], None),
    ],
)
def test_location_choice(uri: str, locations: list[dict], chosen: int | None) -> None:
    got = _location_for(uri, locations)
    assert (None if got is None else locations.index(got)) == chosen


# --- The site is not part of the configuration
# -----------------------------------------------------------------


def test_site_not_included_is_a_problem(load) -> None:
    s = load()
    routes, problems = route_table(s, debian_dump(None, None, with_default=True))
    assert routes == []
    assert problems == [
        "the site /etc/nginx/sites-available/signalcraft is not part of Nginx's configuration (is"
        " it linked from sites-enabled?)"
    ]


def test_site_under_another_name_is_not_ours(load) -> None:
    s = load()
    routes, problems = route_table(
        s, debian_dump("/etc/nginx/sites-enabled/signalcraft.bak", render_nginx_site(s))
    )
    assert routes == [] and "is not part of Nginx's configuration" in problems[0]


def test_site_listening_on_another_port_is_a_problem(load) -> None:
    s = load({"NGINX_LISTEN": "8080"})
    site = render_nginx_site(load())  # rendered for port 80
    routes, problems = route_table(s, debian_dump(s.nginx_enabled_link, site))
    assert routes == []
    assert problems == [
        "/etc/nginx/sites-enabled/signalcraft: no server block listens on port 8080"
    ]


def test_site_split_over_an_include(load) -> None:
    s = load()
    site = "server {\n    listen 80;\n    include snippets/signalcraft-routes.conf;\n}\n"
    snippet = (
        "location ~ ^/(api/ai|api/iot|api/lightweight-analyze|api/flask)(/|$) { proxy_pass"
        " http://127.0.0.1:8001; }\nlocation / { proxy_pass http://127.0.0.1:3000; }\n"
    )
    text = dump(
        {
            "/etc/nginx/nginx.conf": DEBIAN_NGINX_CONF,
            s.nginx_enabled_link: site,
            "/etc/nginx/snippets/signalcraft-routes.conf": snippet,
        }
    )
    routes, problems = route_table(s, text)
    assert problems == [] and all(r.ok for r in routes), describe_mismatches(routes)

    # A mismatch inside the snippet is reported at the snippet's file and line.
    wrong = text.replace("http://127.0.0.1:3000", "http://127.0.0.1:3999")
    assert describe_mismatches(route_table(s, wrong)[0]) == [
        "/etc/nginx/snippets/signalcraft-routes.conf:2: / is proxied to 127.0.0.1:3999; expected"
        " 127.0.0.1:3000"
    ]


def test_real_nginx_T_dump_of_the_rendered_site(tmp_path: Path, load, nginx_bin: str) -> None:
    """split_dump must read the format nginx itself prints, not just ours."""
    rendered = load({"DEPLOY_ROOT": str(tmp_path / "app"), "NGINX_LISTEN": "18080"})
    s = dataclasses.replace(
        rendered, nginx_site=str(tmp_path / "app" / "site.conf")
    )  # a private Nginx's folder
    (tmp_path / "app").mkdir()
    Path(s.nginx_site).write_text(render_nginx_site(rendered))
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n   "
        " access_log off;\n"
        + "".join(
            f"    {k}_temp_path {tmp_path}/{k};\n"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {tmp_path}/app/*.conf;\n}}\n"
    )
    out = subprocess.run(
        [nginx_bin, "-T", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    routes, problems = route_table(s, out.stdout)
    assert problems == []
    assert routes and all(r.ok for r in routes), describe_mismatches(routes)


# --- site-install: its arguments (the helper renders the site: tests/unit/test_root_helper_args.py)
# ------------


def test_install_site_args(load) -> None:
    s = load()
    assert install_site_args(s) == [s.state_dir, "backup", "guard", "nginx -t"]
    named = install_site_args(
        load({"NGINX_TEST_CMD": "/usr/sbin/nginx -t -q"}), backup=False, takeover=True
    )
    assert named == [s.state_dir, "replace", "takeover", "/usr/sbin/nginx -t -q"]


# --- timeouts that agree: no location cuts a request its app still allows
# ---------------------------------------------------------------------------------------


def extras_dump(s: Settings, extras: str, site: str | None = None) -> str:
    files = {
        "/etc/nginx/nginx.conf": DEBIAN_NGINX_CONF,
        s.nginx_enabled_link: site if site is not None else render_nginx_site(s),
        s.nginx_extras: extras,
    }
    return dump(files)


def test_the_rendered_site_waits_longer_than_each_app(load) -> None:
    for s in (load(), load({"GUNICORN_TIMEOUT": "600", "NODE_TIMEOUT": "3600"})):
        assert timeout_problems(s, extras_dump(s, "")) == []


def test_a_kept_location_that_gives_up_sooner_than_its_app_is_named_with_its_key(load) -> None:
    s = load()
    extras = (
        "location = /api/flask/report {\n    proxy_pass http://127.0.0.1:8001;\n"
        "    proxy_read_timeout 30s;\n}\n"
        "location /live/ {\n    proxy_pass http://127.0.0.1:3000;\n}\n"
        "location /static/ {\n    root /srv;\n    proxy_read_timeout 1s;\n}\n"  # no app: fine
    )
    problems = timeout_problems(s, extras_dump(s, extras))
    assert problems == [
        f"{s.nginx_extras}:3: location = /api/flask/report sets proxy_read_timeout 30s, shorter"
        " than GUNICORN_TIMEOUT=120s that Gunicorn allows: Nginx would answer 504 to a request"
        " Gunicorn still serves. Fix: set `proxy_read_timeout 125s;` in that location, or lower"
        " GUNICORN_TIMEOUT.",
    ]
    # A kept location that sets none inherits the server's (the longest app's), not Nginx's 60 s:
    # a takeover's kept locations, which the deploy user cannot edit, never stop a deploy.
    assert "/live/" not in " ".join(problems)
    # long enough, in Nginx's other spellings, is fine
    fine = extras.replace("30s", "2m 5s").replace("}\nlocation /live/ {", "}\nlocation /x {")
    fine = fine.replace(
        "proxy_pass http://127.0.0.1:3000;",
        "proxy_pass http://127.0.0.1:3000;\n proxy_read_timeout 1h;",
    )
    assert timeout_problems(s, extras_dump(s, fine)) == []


def test_a_site_rendered_before_the_timeouts_is_named_and_a_deploy_fixes_it(load) -> None:
    s = load()
    old = "\n".join(line for line in render_nginx_site(s).splitlines() if "_timeout" not in line)
    problems = timeout_problems(s, extras_dump(s, "", site=old))
    assert len(problems) == 2 and all("deploy again" in p for p in problems)


def test_nginx_time_syntax() -> None:
    assert [nginx_seconds(v) for v in ("90", "90s", "2m", "1h 30m", "500ms", "x", "5q")] == [
        90,
        90,
        120,
        5400,
        0.5,
        None,
        None,
    ]
