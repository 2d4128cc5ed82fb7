"""Root renders the Nginx site itself (remote/nginx_site.py) from a JSON description the deploy user
sends.

`check` is what stands between a deploy user and a file Nginx's master (root) reads: every field
must be one the tool itself could have produced. `render` builds the text from its own fixed shape,
so whatever passes `check` gives a site of a fixed set of directives whose every argument is either
a constant of the shape or a field that `check` allowed. The client renders through the same two
functions (core.render.render_nginx_site), byte for byte.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any

import crossplane
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalcraft_deploy.core import render as core_render
from signalcraft_deploy.core.settings import SettingsError
from signalcraft_deploy.remote import nginx_site
from signalcraft_deploy.remote.nginx_site import (
    BadSite,
    check,
    extras_path,
    prefix_regex,
    render,
    routes_regex,
    upstream_for,
)

GOOD: dict[str, Any] = {
    "site": "/etc/nginx/sites-available/shop",
    "upstream": upstream_for("/etc/nginx/sites-available/shop"),
    "listen": ["80", "[::]:80"],
    "tls_listen": ["443"],
    "server_name": "shop.example.com www.shop.example.com",
    "routes": ["api", "auth/v1"],
    "python": "127.0.0.1:8001",
    "node": "127.0.0.1:3000",
    "body_size": "10m",
    "tls": {
        "cert": "/etc/letsencrypt/live/shop/fullchain.pem",
        "key": "/etc/letsencrypt/live/shop/privkey.pem",
        "redirect": False,
    },
}


def desc(**changes: Any) -> dict[str, Any]:
    """GOOD with `changes`; a new site gets its own upstream stem unless the change names one."""
    site = changes.get("site", GOOD["site"])
    upstream = upstream_for(site) if isinstance(site, str) else GOOD["upstream"]
    return {**copy.deepcopy(GOOD), "upstream": upstream, **changes}


def refused(d: Any) -> None:
    with pytest.raises(BadSite):
        check(d)
    with pytest.raises(BadSite):  # render checks first: nothing is rendered from it
        render(d)


def test_a_description_the_tool_makes_passes_unchanged() -> None:
    assert check(desc()) == GOOD
    assert (
        check(desc(tls=None, body_size="", server_name="_", site="/etc/nginx/conf.d/shop.conf"))
        is not None
    )
    assert GOOD["upstream"] == "shop_" + hashlib.sha256(GOOD["site"].encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- check: everything
# outside the tool's own values


# What would let a field break out of its directive: a comment, a variable, the end of a directive,
# a block, a space (another argument), a line, quotes (a string Nginx unquotes), an escape, a NUL.
BREAKOUT = ["#", "$", ";", "{", "}", " ", "\n", "\r", "\t", '"', "'", "\\", "\0", "*", "(", "|"]
FIELDS = {  # a key, how to put a value in it
    "site": lambda v: {"site": v},
    "upstream": lambda v: {"upstream": v},
    "server_name": lambda v: {"server_name": v},
    "body_size": lambda v: {"body_size": v},
    "python": lambda v: {"python": v},
    "node": lambda v: {"node": v},
    "listen": lambda v: {"listen": ["80", v]},
    "tls_listen": lambda v: {"tls_listen": [v]},
    "routes": lambda v: {"routes": ["api", v]},
    "tls.cert": lambda v: {"tls": {**GOOD["tls"], "cert": v}},
    "tls.key": lambda v: {"tls": {**GOOD["tls"], "key": v}},
}
GOOD_VALUE = {
    "site": GOOD["site"],
    "upstream": GOOD["upstream"],
    "server_name": "shop.example.com",
    "body_size": "10m",
    "python": "127.0.0.1:8001",
    "node": "127.0.0.1:3000",
    "listen": "8080",
    "tls_listen": "8443",
    "routes": "api/v2",
    "tls.cert": GOOD["tls"]["cert"],
    "tls.key": GOOD["tls"]["key"],
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_the_good_values_used_below_pass(field: str) -> None:
    assert check(desc(**FIELDS[field](GOOD_VALUE[field])))


@pytest.mark.parametrize("char", BREAKOUT, ids=repr)
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_character_that_could_break_out_of_a_directive_is_refused_in_every_field(
    field: str, char: str
) -> None:
    value = GOOD_VALUE[field]
    middle = len(value) // 2
    variants = [char + value, value + char]
    if not (
        field == "server_name" and char == " "
    ):  # one space between two names is what server_name is
        variants.append(value[:middle] + char + value[middle:])
    for bad in variants:
        refused(desc(**FIELDS[field](bad)))


@pytest.mark.parametrize(
    "value",
    [
        "/tmp/cert.pem",
        "/home/deploy/key.pem",
        "/root/key.pem",
        "/var/lib/signalcraft-deploy/x",
        "/proc/self/environ",
        "engine:pkcs11:id_01",
        "data:-----BEGIN PRIVATE KEY-----",
        "data:/etc/ssl/x.pem",
        "etc/ssl/x.pem",
        "./etc/ssl/x.pem",
        "/etc/letsencrypt/../shadow",
        "/etc/ssl/../shadow",
        "/etc/nginx/../../home/deploy/key.pem",
        "/etc/ssl/./x.pem",
        "/etc/ssl//x.pem",
        "/etc/ssl/x.pem/",
        "/etc/ssl/",
        "/etc/ssl",
        "/etc/sslx/cert.pem",
        "/etc/letsencryptx/k.pem",
        "/etc/nginxfoo/k.pem",
        "//etc/ssl/x.pem",
        "",
        "/etc/ssl/x.pem\n",
        "/etc/ssl/x pem",
        "/etc/ssl/$x.pem",
        "/etc/ssl/x;.pem",
    ],
)
def test_tls_files_outside_roots_folders_or_not_plain_paths_are_refused(value: str) -> None:
    for key in ("cert", "key"):
        refused(desc(tls={**GOOD["tls"], key: value}))


@pytest.mark.parametrize(
    "value",
    [
        "/etc/letsencrypt/live/a.b/fullchain.pem",
        "/etc/ssl/certs/ssl-cert-snakeoil.pem",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
        "/etc/nginx/tls/shop@2024.crt",
    ],
)
def test_tls_files_in_roots_folders_are_accepted(value: str) -> None:
    assert check(desc(tls={**GOOD["tls"], "cert": value}))


@pytest.mark.parametrize(
    "value", ["10.0.0.1:8001", "[2001:db8::1]:8001", "127.0.0.1:8001", "localhost:8001"]
)
def test_an_upstream_may_be_any_address_and_port_nginxs_workers_connect_to(value: str) -> None:
    """ALLOW_PUBLIC_BIND lets Gunicorn listen elsewhere; Nginx's workers (not root) connect
    there."""
    assert check(desc(python=value, node=value))


@pytest.mark.parametrize(
    "value",
    [
        "unix:/tmp/gunicorn.sock",
        "unix:/run/x",
        "127.0.0.1",
        "localhost",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:99999",
        "http://127.0.0.1:8001",
        "127.0.0.1:8001/x",
        "127.0.0.1:80 backup",
        "",
        "127.0.0.1:",
        ":8001",
        # a DNS name: root's Nginx would resolve it on every test, reload and start
        "example.com:8001",
        "evil.attacker.example:80",
        "localhost.attacker.example:8001",
        "metadata.google.internal:80",
        "shop:8001",
        "LOCALHOST:8001",
        "localhost.:8001",
        "127.0.0.1.nip.io:8001",
        "0x7f.1:8001",
    ],
)
def test_an_upstream_that_is_not_a_plain_host_and_port_is_refused(value: str) -> None:
    refused(desc(python=value))
    refused(desc(node=value))


@pytest.mark.parametrize(
    "value", ["127.0.0.1:8001", "127.1.2.3:1", "localhost:65535", "[::1]:8001"]
)
def test_loopback_upstreams_are_accepted(value: str) -> None:
    assert check(desc(python=value, node=value))


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "65536",
        "99999",
        "80 default_server",
        "80 ssl",
        "unix:/tmp/s",
        "example.com:80",
        "localhost:80",
        "[::]",
        "[::]:0",
        "*",
        "*:",
        "1.2.3.4",
        "80,81",
        "-80",
        "+80",
        "",
    ],
)
def test_listen_addresses_the_settings_never_make_are_refused(value: str) -> None:
    refused(desc(listen=[value]))
    refused(desc(tls_listen=[value]))


@pytest.mark.parametrize(
    "value",
    [
        "/api",
        "api/",
        "api//v1",
        "..",
        "api/../x",
        "../x",
        "api/..",
        "",
        "api?x",
        "a+b",
        "api.*",
        "(api)",
        "api|admin",
        "api)|(.*",
        "[a-z]",
        "^api",
    ],
)
def test_routes_that_are_not_plain_prefixes_are_refused(value: str) -> None:
    refused(desc(routes=[value]))


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "_ shop.example.com",
        "shop.example.com  www.example.com",
        " shop.example.com",
        "shop.example.com ",
        "~^(?<x>.+)$",
        "-shop.example.com",
        "shop..example.com",
        "*",
        "*.*.example.com",
        "shop_.example.com",
        "a" * 64 + ".com",
    ],
)
def test_server_names_that_are_not_plain_host_names_are_refused(value: str) -> None:
    refused(desc(server_name=value))


@pytest.mark.parametrize(
    "value", ["*.com", "*.com.", "*.COM", "*.org", "shop.example.com *.net", "*.localhost"]
)
def test_a_leading_wildcard_over_a_whole_top_level_domain_is_refused(value: str) -> None:
    """`*.com` would match every name under .com: another user's names too, before any claim is
    read."""
    with pytest.raises(BadSite, match="a wildcard over a whole top-level domain"):
        check(desc(server_name=value))
    refused(desc(server_name=value))


@pytest.mark.parametrize(
    "value",
    [
        "*.example.com",
        "*.example.com.",
        "*.shop.example.com",
        "example.*",
        "com",
        "shop.example.com *.example.org",
    ],
)
def test_a_wildcard_under_a_domain_or_over_its_ending_is_accepted(value: str) -> None:
    assert check(desc(server_name=value))["server_name"] == value


@given(st.from_regex(nginx_site.HOST_NAME, fullmatch=True))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_no_accepted_leading_wildcard_covers_a_whole_top_level_domain(name: str) -> None:
    try:
        check(desc(server_name=name))
    except BadSite:
        return
    if name.startswith("*."):
        assert "." in name[2:].rstrip("."), name


def test_upstream_names_carry_16_hex_digits_of_the_sites_path() -> None:
    for site in (
        "/etc/nginx/sites-available/shop",
        "/etc/nginx/conf.d/shop.conf",
        "/etc/nginx/sites-available/1shop",
    ):
        stem, digest = upstream_for(site).rsplit("_", 1)
        assert digest == hashlib.sha256(site.encode()).hexdigest()[:16] and stem[:1].isalpha()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("upstream", "Shop"),
        ("upstream", "shop-x"),
        ("upstream", "1shop"),
        ("upstream", "a" * 41),
        ("upstream", ""),
        ("upstream", "shop"),  # the stem the old checks accepted: not the site's own any more
        ("body_size", "10mb"),
        ("body_size", "1T"),
        ("body_size", "-1"),
        ("body_size", "1e9"),
        ("body_size", "1234567890"),
        ("site", "/etc/nginx/nginx.conf"),
        ("site", "/etc/nginx/sites-enabled/shop"),
        ("site", "/etc/nginx/sites-available/default"),
        ("site", "/etc/nginx/sites-available/../nginx.conf"),
        ("site", "/etc/nginx/sites-available/shop.locations"),
        ("site", "/etc/nginx/sites-available/shop.signalcraft-prev"),
        ("site", "/etc/nginx/conf.d/shop"),
        ("site", "/etc/nginx/sites-available/.shop"),
        ("site", "/etc/nginx/sites-available/sub/shop"),
        ("site", "/tmp/shop"),
        ("site", "/etc/cron.d/shop"),
    ],
)
def test_other_values_of_the_plain_fields_are_refused(key: str, value: str) -> None:
    refused(desc(**{key: value}))


@pytest.mark.parametrize("extra", ["access_log", "include", "extra", "ssl_ciphers", "SITE"])
def test_an_extra_key_is_refused(extra: str) -> None:
    refused({**desc(), extra: "/var/log/nginx/x.log"})
    refused(desc(tls={**GOOD["tls"], extra: "x"}))


@pytest.mark.parametrize("key", nginx_site.KEYS)
def test_a_missing_key_is_refused(key: str) -> None:
    d = desc()
    del d[key]
    refused(d)


@pytest.mark.parametrize("key", ["cert", "key", "redirect"])
def test_a_tls_without_one_of_its_keys_is_refused(key: str) -> None:
    tls = dict(GOOD["tls"])
    del tls[key]
    refused(desc(tls=tls))


@pytest.mark.parametrize(
    "changes",
    [
        {"site": None},
        {"site": ["/etc/nginx/sites-available/shop"]},
        {"upstream": 1},
        {"listen": "80"},
        {"listen": [80]},
        {"listen": []},
        {"listen": ["80"] * 17},
        {"listen": None},
        {"tls_listen": 443},
        {"tls_listen": []},
        {"server_name": ["_"]},
        {"server_name": None},
        {"routes": "api"},
        {"routes": []},
        {"routes": [["api"]]},
        {"routes": ["r"] * 101},
        {"python": 8001},
        {"python": ["127.0.0.1:8001"]},
        {"node": None},
        {"body_size": None},
        {"body_size": 10},
        {"body_size": False},
        {"tls": "yes"},
        {"tls": True},
        {"tls": {}},
        {"tls": []},
        {"tls": {**GOOD["tls"], "redirect": "true"}},
        {"tls": {**GOOD["tls"], "redirect": 1}},
        {"tls": {**GOOD["tls"], "cert": None}},
        {"tls": {**GOOD["tls"], "key": ["/etc/ssl/k.pem"]}},
    ],
)
def test_wrong_types_are_refused(changes: dict[str, Any]) -> None:
    refused(desc(**changes))


@pytest.mark.parametrize("value", [None, [], "site", 1, [GOOD], "{}"])
def test_a_description_that_is_not_an_object_is_refused(value: Any) -> None:
    refused(value)


# ----------------------------------------------------------------------------- render: a fixed
# shape


FIXED = {  # (the block a directive is in, the directive): what the shape holds
    ("server", "proxy_read_timeout"),
    ("server", "proxy_send_timeout"),
    ("location", "proxy_read_timeout"),
    ("location", "proxy_send_timeout"),
    ("location", "proxy_buffering"),
    ("location", "proxy_cache"),
    ("", "upstream"),
    ("", "server"),
    ("", "map"),
    ("", "include"),
    ("upstream", "server"),
    ("map", "default"),
    ("map", ""),
    ("server", "listen"),
    ("server", "server_name"),
    ("server", "client_max_body_size"),
    ("server", "location"),
    ("server", "include"),
    ("server", "ssl_certificate"),
    ("server", "ssl_certificate_key"),
    ("server", "ssl_protocols"),
    ("server", "ssl_prefer_server_ciphers"),
    ("server", "ssl_session_timeout"),
    ("server", "ssl_session_tickets"),
    ("location", "default_type"),
    ("location", "return"),
    ("location", "proxy_pass"),
    ("location", "proxy_set_header"),
    ("location", "proxy_http_version"),
}


def parsed(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(the block it is in, directive, args) of every directive of `text`, as Nginx's own grammar
    (crossplane) reads it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "site")
        path.write_text(text)
        result = crossplane.parse(
            str(path),
            single=True,
            catch_errors=False,
            check_ctx=False,
            check_args=False,
            comments=False,
        )
    assert result["status"] == "ok", result["errors"]
    out: list[tuple[str, str, tuple[str, ...]]] = []

    def walk(block: list[dict[str, Any]], parent: str) -> None:
        for d in block:
            out.append((parent, d["directive"], tuple(d["args"])))
            walk(d.get("block", []), d["directive"])

    walk(result["config"][0]["parsed"], "")
    return out


def allowed(d: dict[str, Any], site_id: str) -> dict[tuple[str, str], set[tuple[str, ...]]]:
    """Every argument list each directive may have: the shape's constants, or a field of the
    (checked) description."""
    up, tls = d["upstream"], d["tls"]
    longest = {(f"{max(d['timeouts'].values())}s",)} if "timeouts" in d else set()
    default = ("default_server",) if d["server_name"] == "_" else ()
    listens = {(a, *default) for a in d["listen"]}
    if tls:
        listens |= {(a, "ssl", *default) for a in d["tls_listen"]}
    headers = {
        ("Host", f"${up}_host"),
        ("X-Real-IP", "$remote_addr"),
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", "$scheme"),
        ("Upgrade", "$http_upgrade"),
        ("Connection", f"${up}_conn"),
        ("X-Forwarded-Prefix", ""),
        ("SCRIPT_NAME", ""),
    }
    returns = {("200", site_id + "\\n")}
    if tls and tls["redirect"]:
        port = int(d["tls_listen"][0].rsplit(":", 1)[-1])  # as Nginx reads it: 00443 is 443
        returns.add(("301", f"https://$host{'' if port == 443 else f':{port}'}$request_uri"))
    return {
        ("", "upstream"): {(f"{up}_python",), (f"{up}_nodejs",)},
        ("", "server"): {()},
        ("", "map"): {("$http_upgrade", f"${up}_conn"), ("$http_host", f"${up}_host")},
        ("upstream", "server"): {(d["python"],), (d["node"],)},
        ("map", "default"): {("upgrade",), ("$http_host",)},
        ("map", ""): {("close",), ("$host",)},
        ("server", "listen"): listens,
        ("server", "server_name"): {tuple(d["server_name"].split(" "))},
        ("server", "client_max_body_size"): {(d["body_size"],)} if d["body_size"] else set(),
        ("server", "location"): {
            ("=", "/.signalcraft-deploy-site"),
            ("~", f"^/({routes_regex(d['routes'])})(/|$)"),
            ("/",),
            *(("~", prefix_regex(p)) for p in d.get("streams", [])),
        },
        ("server", "include"): {
            (extras_path(d["site"])[:-1] + "[s]",),
            (f"{nginx_site.MAINTENANCE_DIR}/{up}.serve[r]",),
        },
        ("", "include"): {(f"{nginx_site.MAINTENANCE_DIR}/{up}.map[s]",)},
        ("server", "ssl_certificate"): {(tls["cert"],)} if tls else set(),
        ("server", "ssl_certificate_key"): {(tls["key"],)} if tls else set(),
        ("server", "ssl_protocols"): {("TLSv1.2", "TLSv1.3")},
        ("server", "ssl_prefer_server_ciphers"): {("off",)},
        ("server", "ssl_session_timeout"): {("1d",)},
        ("server", "ssl_session_tickets"): {("off",)},
        ("location", "default_type"): {("text/plain",)},
        ("location", "return"): returns,
        ("location", "proxy_pass"): {(f"http://{up}_python",), (f"http://{up}_nodejs",)},
        ("location", "proxy_set_header"): headers,
        ("location", "proxy_http_version"): {("1.1",)},
        # the longest app's for what the site's own locations do not set (kept, included ones)
        ("server", "proxy_read_timeout"): longest,
        ("server", "proxy_send_timeout"): longest,
        ("location", "proxy_read_timeout"): {(f"{v}s",) for v in d.get("timeouts", {}).values()},
        ("location", "proxy_send_timeout"): {(f"{v}s",) for v in d.get("timeouts", {}).values()},
        ("location", "proxy_buffering"): {("off",)} if d.get("streams") else set(),
        ("location", "proxy_cache"): {("off",)} if d.get("streams") else set(),
    }


def assert_fixed_shape(d: dict[str, Any]) -> str:
    text = render(d)
    site_id = core_render.site_id(text)
    assert site_id is not None and len(site_id) == 16
    shape = allowed(d, site_id)
    found = parsed(text)
    assert {(parent, directive) for parent, directive, _ in found} <= FIXED
    for parent, directive, args in found:
        assert args in shape[(parent, directive)], (parent, directive, args)
    # and what the description asks for is there: its upstreams, its names, its listens
    assert ("upstream", "server", (d["python"],)) in found and (
        "upstream",
        "server",
        (d["node"],),
    ) in found
    assert {args[0] for parent, directive, args in found if directive == "listen"} == set(
        d["listen"]
    ) | (set(d["tls_listen"]) if d["tls"] else set())
    assert text.startswith(nginx_site.SITE_HEADER)
    return text


STREAMED = {"timeouts": {"python": 125, "nodejs": 65}, "streams": ["/api/stream", "/live/events"]}

CASES = {
    "tls": desc(),
    "timeouts-streams": desc(**copy.deepcopy(STREAMED)),
    "tls-redirect": desc(tls={**GOOD["tls"], "redirect": True}, tls_listen=["8443", "[::]:8443"]),
    "tls-redirect-443": desc(tls={**GOOD["tls"], "redirect": True}),
    "plain-default": desc(
        tls=None, server_name="_", body_size="", listen=["80", "[::]:80", "127.0.0.1:8080", "*:81"]
    ),
    "conf.d": desc(
        site="/etc/nginx/conf.d/shop.conf",
        routes=["api.v1", "a-b/c_d~e"],
        python="[::1]:9000",
        node="localhost:9001",
        body_size="512K",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_rendered_site_has_only_the_shapes_directives_and_the_descriptions_values(
    name: str,
) -> None:
    assert_fixed_shape(CASES[name])


def _descriptions() -> st.SearchStrategy[dict[str, Any]]:
    """Any description `check` accepts (drawn from its own patterns, then checked)."""

    def rx(pattern: Any) -> st.SearchStrategy[str]:
        return st.from_regex(pattern, fullmatch=True)

    listen = rx(nginx_site.LISTEN)
    site = st.one_of(
        rx(nginx_site.SITE_NAME).map(lambda n: f"/etc/nginx/sites-available/{n}"),
        rx(nginx_site.SITE_NAME).map(lambda n: f"/etc/nginx/conf.d/{n}.conf"),
    )
    site = st.shared(site, key="site")
    tls_file = st.tuples(
        st.sampled_from(nginx_site.TLS_FOLDERS), rx(r"[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,20}")
    ).map("".join)
    tls = st.one_of(
        st.none(),
        st.fixed_dictionaries({"cert": tls_file, "key": tls_file, "redirect": st.booleans()}),
    )
    names = st.one_of(
        st.just("_"), st.lists(rx(nginx_site.HOST_NAME), min_size=1, max_size=3).map(" ".join)
    )
    raw = st.fixed_dictionaries(
        {
            "site": site,
            "upstream": site.map(upstream_for),
            "listen": st.lists(listen, min_size=1, max_size=3),
            "tls_listen": st.lists(listen, min_size=1, max_size=2),
            "server_name": names,
            "routes": st.lists(rx(nginx_site.ROUTE), min_size=1, max_size=3),
            "python": rx(nginx_site.UPSTREAM_ADDRESS),
            "node": rx(nginx_site.UPSTREAM_ADDRESS),
            "body_size": st.one_of(st.just(""), rx(nginx_site.BODY_SIZE)),
            "tls": tls,
        }
    )

    def passes(d: dict[str, Any]) -> bool:
        try:
            check(d)
        except BadSite:
            return False
        return True

    return raw.filter(passes)


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(_descriptions())
def test_every_description_check_accepts_renders_to_the_fixed_shape(d: dict[str, Any]) -> None:
    assert_fixed_shape(d)


def test_the_site_id_is_stable_and_changes_with_every_field() -> None:
    base = render(desc())
    assert render(desc()) == base and core_render.site_id(base) == core_render.site_id(
        render(desc())
    )
    # the id answered is a digest of the rest of the file
    site_id = core_render.site_id(base)
    assert base.count(f'return 200 "{site_id}\\n";') == 2  # both servers answer it
    variants = {
        "site": "/etc/nginx/sites-available/shop2",
        "upstream": None,
        "listen": ["81", "[::]:80"],
        "tls_listen": ["8443"],
        "server_name": "shop.example.com",
        "routes": ["api", "auth/v2"],
        "python": "127.0.0.1:8002",
        "node": "127.0.0.1:3001",
        "body_size": "11m",
        "tls": None,
    }
    assert sorted(variants) == sorted(nginx_site.KEYS)
    ids = {"base": site_id}
    for key, value in variants.items():
        if key == "upstream":  # the stem follows the site: another site file's
            ids[key] = core_render.site_id(render(desc(site="/etc/nginx/conf.d/shop.conf")))
            continue
        ids[key] = core_render.site_id(render(desc(**{key: value})))
    for key in ("cert", "key", "redirect"):
        changed = {"cert": "/etc/ssl/c.pem", "key": "/etc/ssl/k.pem", "redirect": True}[key]
        ids[f"tls.{key}"] = core_render.site_id(render(desc(tls={**GOOD["tls"], key: changed})))
    assert None not in ids.values()
    assert len(set(ids.values())) == len(ids), ids


def test_the_site_id_is_not_a_site_of_ours_for_other_text() -> None:
    assert core_render.site_id("server { listen 80; }") is None
    assert core_render.site_id("") is None


# ----------------------------------------------------------------------------- the client renders
# through the same two functions


SETTINGS = {
    "defaults": {},
    "tls": {
        "TLS_CERT": "/etc/letsencrypt/live/a/fullchain.pem",
        "TLS_KEY": "/etc/letsencrypt/live/a/privkey.pem",
    },
    "tls-no-redirect": {
        "TLS_CERT": "/etc/ssl/certs/a.pem",
        "TLS_KEY": "/etc/ssl/private/a.key",
        "TLS_REDIRECT": "false",
        "TLS_LISTEN": "8443,[::]:8443",
    },
    "listens": {
        "NGINX_LISTEN": "80,[::]:80,127.0.0.1:8080",
        "SERVER_NAME": "shop.example.com www.shop.example.com",
        "CLIENT_MAX_BODY_SIZE": "10m",
    },
    "conf.d": {
        "APP_NAME": "shop-front",
        "NGINX_SITE": "/etc/nginx/conf.d/shop.conf",
        "GUNICORN_BIND": "[::1]:9001",
        "PY_ROUTES": "api,v1/x",
        "HEALTH_PY": "/api/health",
        "CLIENT_MAX_BODY_SIZE": "512k",
    },
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_client_renders_what_root_renders(load, name: str) -> None:
    s = load(SETTINGS[name])
    description = core_render.site_description(s)
    assert check(copy.deepcopy(description)) == description  # root accepts what the client sends
    assert core_render.render_nginx_site(s) == render(description)
    assert_fixed_shape(description)
    # during a handover, the addresses the client overrides are the ones root renders
    handover = core_render.site_description(s, "127.0.0.1:9999", "127.0.0.1:9998")
    assert core_render.render_nginx_site(s, "127.0.0.1:9999", "127.0.0.1:9998") == render(handover)
    assert core_render.site_id(render(handover)) != core_render.site_id(render(description))


def test_settings_that_load_with_allow_public_bind_also_render(load) -> None:
    s = load({"GUNICORN_BIND": "0.0.0.0:8001", "ALLOW_PUBLIC_BIND": "true"})
    assert core_render.render_nginx_site(s)


def test_a_tls_path_that_is_not_normalised_is_refused_by_its_key(load) -> None:
    """What loads renders: a path root would refuse is refused by the settings, naming the key."""
    with pytest.raises(SettingsError, match="TLS_CERT.*normalised"):
        load({"TLS_CERT": "/etc/ssl/./c.pem", "TLS_KEY": "/etc/ssl/k.pem"})


# ----------------------------------------------------------------------------- one site's names are
# never another's


SITES = [
    "/etc/nginx/sites-available/shop",
    "/etc/nginx/sites-available/shop.conf",
    "/etc/nginx/conf.d/shop.conf",
    "/etc/nginx/sites-available/Shop",
    "/etc/nginx/sites-available/shop-",
    "/etc/nginx/sites-available/shop_",
    "/etc/nginx/sites-available/" + "a" * 24 + "x",
    "/etc/nginx/sites-available/" + "a" * 24 + "y",
    "/etc/nginx/conf.d/shop.conf.conf",
    "/etc/nginx/sites-available/shop.conf.conf",
]


def test_every_site_file_has_its_own_extras_file_and_upstream_stem() -> None:
    """`shop` and `shop.conf` once shared shop.locations, so one user could add location blocks to
    another's site."""
    assert (
        extras_path("/etc/nginx/sites-available/shop")
        == "/etc/nginx/sites-available/shop.locations"
    )
    assert (
        extras_path("/etc/nginx/sites-available/shop.conf")
        == "/etc/nginx/sites-available/shop.conf.locations"
    )
    assert (
        extras_path("/etc/nginx/conf.d/shop.conf") == "/etc/nginx/conf.d/shop.conf.locations"
    )  # never `*.conf`
    assert len({extras_path(s) for s in SITES}) == len(SITES)
    assert len({upstream_for(s) for s in SITES}) == len(SITES)
    for site in SITES:  # the include's pattern names its own file and nothing else of the folder
        include = extras_path(site)[:-1] + "[s]"
        assert [s for s in SITES if fnmatch.fnmatchcase(extras_path(s), include)] == [site]
        assert not any(fnmatch.fnmatchcase(s, include) for s in SITES)
        with pytest.raises(BadSite):  # no site file is another's extras file
            nginx_site.site_path(extras_path(site))


@settings(max_examples=200)
@given(
    st.lists(
        st.from_regex(nginx_site.SITE_NAME, fullmatch=True), min_size=2, max_size=2, unique=True
    ),
    st.sampled_from(["/etc/nginx/sites-available/", "/etc/nginx/conf.d/"]),
)
def test_two_site_files_never_share_an_extras_file_nor_upstream_names(
    names: list[str], folder: str
) -> None:
    sites = [folder + n + (".conf" if folder.endswith("conf.d/") else "") for n in names]
    assert extras_path(sites[0]) != extras_path(sites[1])
    assert upstream_for(sites[0]) != upstream_for(sites[1])
    for site in sites:
        assert re.fullmatch(r"[a-z0-9_]{1,24}_[0-9a-f]{16}", upstream_for(site))


def test_a_description_with_another_sites_upstream_stem_is_refused() -> None:
    """Upstream and map names are global in Nginx: a second site defining `shop_python` would take
    the first's."""
    mine, theirs = "/etc/nginx/sites-available/blog", GOOD["site"]
    assert check(desc(site=mine))["upstream"] == upstream_for(mine)
    for stem in (
        upstream_for(theirs),
        upstream_for("/etc/nginx/conf.d/blog.conf"),
        "blog",
        "shop",
        "shop_python",
        upstream_for(mine) + "_",
        upstream_for(mine).upper(),
    ):
        with pytest.raises(BadSite, match="upstream must be"):
            check(desc(site=mine, upstream=stem))
    rendered = parsed(render(desc(site=mine)))
    names = {args[0] for parent, directive, args in rendered if directive == "upstream"}
    assert names == {upstream_for(mine) + "_python", upstream_for(mine) + "_nodejs"}
    assert not names & {upstream_for(theirs) + "_python", upstream_for(theirs) + "_nodejs"}


@pytest.mark.parametrize("name", ["1shop", "2024-site", "9"])
def test_the_map_variable_of_a_site_whose_name_starts_with_a_digit_is_one_variable(
    name: str,
) -> None:
    stem = upstream_for("/etc/nginx/sites-available/" + name)
    assert stem[0] not in "123456789", (
        f"${stem}_conn starts with ${stem[0]}: a regex capture in Nginx's scripts"
    )


# --- Timeouts and streams (issue 28): values root renders only as whole numbers and route prefixes


@pytest.mark.parametrize(
    "changes",
    [
        {"timeouts": {"python": 125, "nodejs": 65}},  # one of the pair without the other
        {"streams": []},
        {**STREAMED, "timeouts": {"python": "125s; include /etc/shadow", "nodejs": 65}},
        {**STREAMED, "timeouts": {"python": 12.5, "nodejs": 65}},
        {**STREAMED, "timeouts": {"python": True, "nodejs": 65}},
        {**STREAMED, "timeouts": {"python": 0, "nodejs": 65}},
        {**STREAMED, "timeouts": {"python": 100001, "nodejs": 65}},
        {**STREAMED, "timeouts": {"python": 125}},
        {**STREAMED, "timeouts": {"python": 125, "nodejs": 65, "ws": 9}},
        {**STREAMED, "streams": ["/"]},
        {**STREAMED, "streams": ["api"]},
        {**STREAMED, "streams": ["/a/../b"]},
        {**STREAMED, "streams": ["/a;proxy_pass http://x"]},
        {**STREAMED, "streams": ["/a", "/a"]},
        {**STREAMED, "streams": "/a"},
    ],
)
def test_timeouts_and_streams_are_numbers_and_prefixes_or_refused(changes: dict[str, Any]) -> None:
    refused(desc(**copy.deepcopy(changes)))


def location_bodies(text: str) -> dict[str, list[str]]:
    """{location args joined: the directives of its block, each as 'name args'}."""
    bodies: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("location "):
            current = stripped[len("location ") : -2]
            bodies[current] = []
        elif stripped == "}":
            current = None
        elif current is not None and stripped:
            bodies[current].append(stripped.rstrip(";"))
    return bodies


def test_each_apps_locations_wait_as_long_as_the_description_says_and_streams_are_unbuffered() -> (
    None
):
    bodies = location_bodies(render(desc(**copy.deepcopy(STREAMED))))
    up = GOOD["upstream"]
    python, node = bodies[f"~ ^/({routes_regex(GOOD['routes'])})(/|$)"], bodies["/"]
    assert "proxy_read_timeout 125s" in python and "proxy_send_timeout 125s" in python
    assert "proxy_read_timeout 65s" in node and "proxy_send_timeout 65s" in node
    assert "proxy_buffering off" not in python + node  # X-Accel-Buffering decides there
    api, live = (
        bodies["~ " + prefix_regex("/api/stream")],
        bodies["~ " + prefix_regex("/live/events")],
    )
    assert f"proxy_pass http://{up}_python" in api and "proxy_read_timeout 125s" in api
    assert f"proxy_pass http://{up}_nodejs" in live and "proxy_read_timeout 65s" in live
    assert "proxy_http_version 1.1" in live and "proxy_http_version 1.1" not in api
    for body in (api, live):
        assert "proxy_buffering off" in body and "proxy_cache off" in body
    # Nginx takes the first regex that matches: the stream locations come before the app's own
    names = list(bodies)
    assert names.index("~ " + prefix_regex("/api/stream")) < names.index(
        f"~ ^/({routes_regex(GOOD['routes'])})(/|$)"
    )


def test_a_stream_under_a_mounted_prefix_is_proxied_as_its_owner_is() -> None:
    table = [["/", "python"], ["/chat", "nodejs", "mount"]]
    d = desc(routes=None, **copy.deepcopy(STREAMED))
    del d["routes"]
    d["table"], d["streams"] = table, ["/chat/events"]
    bodies = location_bodies(render(d))
    events = bodies["~ " + prefix_regex("/chat/events")]
    assert events[:1] == ["rewrite ^/chat/?(.*)$ /$1 break"]  # as /chat's own location
    assert "proxy_set_header X-Forwarded-Prefix /chat" in events
    assert "proxy_buffering off" in events and "proxy_read_timeout 65s" in events
    assert "proxy_read_timeout 125s" in bodies["/"]


def test_a_release_recorded_without_timeouts_renders_as_it_did() -> None:
    old = render(desc())
    assert "proxy_read_timeout" not in old and "proxy_buffering" not in old


# --- maintenance mode's files


def parsed_block(text: str) -> list[dict[str, Any]]:
    """crossplane's parse of a file that is included inside a server block."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.conf"
        path.write_text("http {\nserver {\n" + text + "}\n}\n")
        out = crossplane.parse(str(path), single=True, comments=False)
    assert out["status"] == "ok", out["errors"]
    return out["config"][0]["parsed"][0]["block"][0]["block"]


MAINTENANCE = {
    "retry_after": 900,
    "open": ["/api/flask/health", "/a.b/c~d"],
    "prefixes": ["/api/status"],
    "probe": ["/"],
    "html": "<p>$uri ; } include /etc/shadow;</p>",
    "json": "{}",
}


def test_maintenance_closes_all_but_the_open_paths_with_the_retry_after_asked() -> None:
    up = upstream_for("/etc/nginx/sites-available/shop")
    files = nginx_site.render_maintenance(up, MAINTENANCE)
    server = parsed_block(files["server"])
    assert [d["directive"] for d in server] == ["if", "error_page", "location", "location"]
    assert server[0]["args"] == [f"${up}_closed"] and server[0]["block"][0]["args"] == ["503"]
    pages = {d["directive"]: d["args"] for d in server[2]["block"]}
    assert pages["alias"] == [nginx_site.maintenance_files(up)["pages"] + "/"]
    assert ["Retry-After", "900", "always"] in [
        d["args"] for d in server[2]["block"] if d["directive"] == "add_header"
    ]
    assert server[3]["block"][1]["args"] == ["200", files["id"] + "\\n"]
    closed = next(line for line in files["maps"].split("map ") if f"${up}_closed" in line)
    assert r"~^(probe)?/api/flask/health\z 0;" in closed
    assert r"~^(probe)?/a\.b/c~d\z 0;" in closed
    assert r"~^(probe)?/api/status(/|\z) 0;" in closed
    # '/' (and every path) open to the tool's own checks only, never to everyone
    assert "    ~^probe/ 0;" in closed and r"~^(probe)?/\z" not in closed
    # the pages never reach the configuration; another page is another id
    assert "shadow" not in files["maps"] + files["server"]
    other = nginx_site.render_maintenance(up, {**MAINTENANCE, "html": "<p>x</p>"})
    assert other["id"] != files["id"]


@given(
    st.lists(st.from_regex(nginx_site.ROUTE, fullmatch=True), max_size=4, unique=True),
    st.integers(1, nginx_site.MAX_RETRY_AFTER),
)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_every_accepted_maintenance_description_parses_to_the_same_shape(
    routes: list[str], seconds: int
) -> None:
    paths = ["/" + r for r in routes if ".." not in r.split("/")]
    desc = {**MAINTENANCE, "open": paths, "prefixes": paths, "probe": paths, "retry_after": seconds}
    files = nginx_site.render_maintenance("shop_0123456789abcdef", desc)
    assert [d["directive"] for d in parsed_block(files["server"])] == [
        "if",
        "error_page",
        "location",
        "location",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "maps.conf"
        path.write_text("http {\n" + files["maps"] + "}\n")
        out = crossplane.parse(str(path), single=True, comments=False)
    assert out["status"] == "ok", out["errors"]
    maps = out["config"][0]["parsed"][0]["block"]
    assert [d["directive"] for d in maps] == ["map", "map", "map"]
    entries = maps[1]["block"]
    assert len(entries) == 2 + 4 + len(paths) * 2 and all(len(e["args"]) <= 1 for e in entries)
