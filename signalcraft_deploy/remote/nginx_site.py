"""The Nginx site, from a structured description: the one renderer both sides use.

The root helper (root_helper.py, which inlines this module) renders the site that root writes
into /etc/nginx from a DESCRIPTION the deploy user sends as JSON, never from text: every field
is checked here against what the tool itself could have produced (`check`), and the text is
built by `render` from this module's own shape. The client (core.render.render_nginx_site) calls
the same two functions, so the text a deploy plans, diffs and proves by its id is byte for byte
the one root writes.

A description (every key required, nothing else allowed):
    site            /etc/nginx/sites-available/<name> or /etc/nginx/conf.d/<name>.conf
    upstream        the upstreams' name stem: upstream_for(site)
    listen          Nginx's plain-HTTP listen addresses: PORT, ADDRESS:PORT, [IPv6]:PORT, *:PORT
    tls_listen      the HTTPS ones (used only with `tls`)
    server_name     '_' or host names separated by single spaces ('_' makes the site the default server)
    routes          the Flask route prefixes (letters, digits, '._~-/'), Node.js owning the rest (PY_ROUTES)
  or, in place of `routes` (ROUTES):
    table           [[PREFIX, APP], ...]: '/' or '/'-led segments of letters, digits, '._~-', each owned by
                    'python' or 'nodejs', exactly one '/' entry; the longest prefix that matches a path owns it.
                    [PREFIX, APP, "mount"]: the app is written for '/' (MOUNTS): Node.js gets the path without
                    PREFIX, Python all of it (Gunicorn's SCRIPT_NAME takes PREFIX off), both X-Forwarded-Prefix
    python, node    the upstream addresses: HOST:PORT or [IPv6]:PORT (loopback unless ALLOW_PUBLIC_BIND)
    body_size       client_max_body_size ('' for Nginx's default), e.g. 10m
    tls             null, or {"cert": PATH, "key": PATH, "redirect": true|false}
  and, both or neither (a release recorded before them has neither):
    timeouts        {"python": SECONDS, "nodejs": SECONDS}: each app's locations' proxy_read_timeout and
                    proxy_send_timeout (1 to 100000), the app's own timeout plus a margin
    streams         ['/PREFIX', ...] (0 to 100): paths whose answers Nginx passes on as they come
                    (proxy_buffering off), in a location of their own proxied like their owner's

Every site includes its maintenance files (`maintenance_files`), which exist only while maintenance
mode is on: root renders them from a MAINTENANCE description (`check_maintenance`), so turning it on
and off never changes the site, and deploys and rollbacks keep it as it is.

Standard library only, Python 3.8+; no `from __future__` (the helper inlines this file).
"""

import hashlib
import os
import re
from typing import Any, Dict, List

SITE_HEADER = "# Rendered by signalcraft-deploy."
SITE_TEMPLATE = (  # what a TEMPLATES_DIR may no longer hold: root renders the site
    "nginx-site.conf.j2"
)
SITE_FOLDERS = ("/etc/nginx/sites-available", "/etc/nginx/conf.d")
# Where a certificate or key may live: root's folders, read by Nginx's master (root).
TLS_FOLDERS = ("/etc/letsencrypt/", "/etc/ssl/", "/etc/nginx/")
SITE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
LISTEN = re.compile(
    r"([0-9]{1,5})|\[([0-9A-Fa-f:.]{2,45})\]:([0-9]{1,5})|([0-9.]{7,15}|\*):([0-9]{1,5})"
)
# Where Nginx's workers (not root) connect: loopback in the tool's defaults, another address with
# ALLOW_PUBLIC_BIND; an address, never a name (root's Nginx would resolve a name on every test,
# reload and start).
UPSTREAM_ADDRESS = re.compile(
    r"(\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(\.[0-9]{1,3}){3}|localhost):([0-9]{1,5})"
)
_LABELS = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*"
HOST_NAME = re.compile(rf"\*\.{_LABELS}\.?|{_LABELS}\.?|{_LABELS}\.\*")
ROUTE = re.compile(r"[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*")
BODY_SIZE = re.compile(r"[0-9]{1,9}[kKmMgG]?")
TLS_FILE = re.compile(r"/[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*")
KEYS = (
    "site",
    "upstream",
    "listen",
    "tls_listen",
    "server_name",
    "routes",
    "python",
    "node",
    "body_size",
    "tls",
)
# A description from ROUTES: `table` in place of `routes` (a release recorded with either is
# rendered as it was).
TABLE_KEYS = tuple("table" if k == "routes" else k for k in KEYS)
OPTIONAL_KEYS = ("timeouts", "streams")
APPS = ("python", "nodejs")
MAX_TIMEOUT = 100000
# Maintenance mode's files, root's: `<upstream>.maps` (http level), `<upstream>.server` (in each
# server that serves the apps) and the pages folder `<upstream>/` (503.html, 503.json).
MAINTENANCE_DIR = "/etc/nginx/signalcraft-deploy-maintenance"
MAINTENANCE_KEYS = ("retry_after", "open", "prefixes", "probe", "html", "json")
MAX_PAGE = 256 * 1024
MAX_RETRY_AFTER = 7 * 86400
# What the tool's own checks through Nginx send: a health path that is also the home page ('/')
# stays open to them alone while the rest of the site is in maintenance (honoured only on a
# connection from the host itself: its source address is the one Nginx was asked on).
PROBE_HEADER = "X-Signalcraft-Health"


class BadSite(ValueError):
    """A description the tool could not have produced: nothing is rendered from it."""


def check(desc: Any) -> Dict[str, Any]:
    """The description with every field checked (BadSite names the first field that is not)."""
    optional = [k for k in OPTIONAL_KEYS if isinstance(desc, dict) and k in desc]
    if (
        not isinstance(desc, dict)
        or sorted(k for k in desc if k not in optional) not in (sorted(KEYS), sorted(TABLE_KEYS))
        or len(optional) not in (0, len(OPTIONAL_KEYS))
    ):
        raise BadSite(
            f"a site description has exactly the keys {', '.join(KEYS)} (or table in place of"
            f" routes), and {' and '.join(OPTIONAL_KEYS)} or neither"
        )
    site_path(desc["site"])
    if desc["upstream"] != upstream_for(desc["site"]):
        raise BadSite(
            f"upstream must be {upstream_for(desc['site'])} (the site's own), not"
            f" {desc['upstream']!r}"
        )
    for key in ("listen", "tls_listen"):
        if not isinstance(desc[key], list) or not desc[key] or len(desc[key]) > 16:
            raise BadSite(f"{key} must be a list of 1 to 16 addresses")
        for value in desc[key]:
            _port_of(_word(value, LISTEN, key), key)
    problem = server_name_problem(desc["server_name"])
    if problem:
        raise BadSite(f"server_name: {problem}")
    if "table" in desc:
        check_table(desc["table"])
    else:
        if not isinstance(desc["routes"], list) or not desc["routes"] or len(desc["routes"]) > 100:
            raise BadSite("routes must be a list of 1 to 100 prefixes")
        for route in desc["routes"]:
            _route(route)
    for key in ("python", "node"):
        _port_of(_word(desc[key], UPSTREAM_ADDRESS, key), key)
    if desc["body_size"] != "":
        _word(desc["body_size"], BODY_SIZE, "body_size")
    tls = desc["tls"]
    if tls is not None:
        if (
            not isinstance(tls, dict)
            or sorted(tls) != ["cert", "key", "redirect"]
            or not isinstance(tls["redirect"], bool)
        ):
            raise BadSite("tls must be null or {cert, key, redirect}")
        for key in ("cert", "key"):
            tls_file(tls[key], key)
    if optional:
        check_timeouts(desc["timeouts"])
        check_streams(desc["streams"])
    return desc


def check_timeouts(timeouts: Any) -> None:
    """{"python": SECONDS, "nodejs": SECONDS}: whole numbers, never text Nginx would read otherwise."""
    if not isinstance(timeouts, dict) or sorted(timeouts) != sorted(APPS):
        raise BadSite("timeouts must be {python, nodejs}")
    for app, seconds in timeouts.items():
        if type(seconds) is not int or not 1 <= seconds <= MAX_TIMEOUT:
            raise BadSite(f"timeouts.{app}: whole seconds from 1 to {MAX_TIMEOUT}, not {seconds!r}")


def check_streams(streams: Any) -> None:
    """0 to 100 distinct '/'-led prefixes ('/' itself is not one: name the paths that stream)."""
    if not isinstance(streams, list) or len(streams) > 100:
        raise BadSite("streams must be a list of 0 to 100 prefixes")
    for prefix in streams:
        if not isinstance(prefix, str) or not (prefix.startswith("/") and _route(prefix[1:])):
            raise BadSite(f"a stream prefix is '/' and a route: {prefix!r}")
    if len(set(streams)) != len(streams):
        raise BadSite("a stream prefix is listed once")


def check_maintenance(m: Any) -> Dict[str, Any]:
    """A maintenance description: {retry_after: SECONDS, open: [PATH, ...] (exact paths that stay
    open, such as the health routes), prefixes: [PREFIX, ...] (paths under them stay open),
    probe: [PATH, ...] (the paths the tool's own checks ask: they reach every path), html: TEXT,
    json: TEXT}.
    The pages are served as they are (never read as configuration); every other value is checked
    to be what it says."""
    if not isinstance(m, dict) or sorted(m) != sorted(MAINTENANCE_KEYS):
        raise BadSite(
            f"a maintenance description has exactly the keys {', '.join(MAINTENANCE_KEYS)}"
        )
    seconds = m["retry_after"]
    if type(seconds) is not int or not 1 <= seconds <= MAX_RETRY_AFTER:
        raise BadSite(f"retry_after: whole seconds from 1 to {MAX_RETRY_AFTER}, not {seconds!r}")
    for key in ("open", "prefixes", "probe"):
        paths = m[key]
        if not isinstance(paths, list) or len(paths) > 100 or len(set(paths)) != len(paths):
            raise BadSite(f"{key} must be a list of at most 100 distinct paths")
        for path in paths:
            if not _open_path(path, exact=key != "prefixes"):
                raise BadSite(f"{key}: a path is '/' or a route (with a '/' after it): {path!r}")
    for key in ("html", "json"):
        if not isinstance(m[key], str) or not 0 < len(m[key].encode()) <= MAX_PAGE:
            raise BadSite(f"{key} must be a page of 1 byte to {MAX_PAGE // 1024} KiB")
    return m


def _open_path(path: Any, exact: bool) -> bool:
    """A path maintenance mode can name: '/' + a route, and for an exact path also '/' alone or
    a route with a trailing '/' (a Flask route such as /health/)."""
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    if exact and path.endswith("/"):
        return path == "/" or bool(_route(path[1:-1]))
    return bool(_route(path[1:]))


def maintenance_files(up: str) -> Dict[str, str]:
    """Where the site `up` (its upstream stem) keeps maintenance mode's files."""
    return {
        "maps": f"{MAINTENANCE_DIR}/{up}.maps",
        "server": f"{MAINTENANCE_DIR}/{up}.server",
        "pages": f"{MAINTENANCE_DIR}/{up}",
    }


def render_maintenance(up: str, desc: Dict[str, Any]) -> Dict[str, str]:
    """Maintenance mode's configuration for the site `up`: {"maps": TEXT, "server": TEXT, "id":
    the digest /.signalcraft-deploy-maintenance answers}. Every path not named open answers 503
    with Retry-After and the page its Accept asks for (503.json for JSON, else 503.html)."""
    m = check_maintenance(desc)
    pages = hashlib.sha256(m["html"].encode() + b"\0" + m["json"].encode()).hexdigest()[:16]
    maps_text = "\n".join(_maintenance_maps(up, m)) + "\n"
    server_text = "\n".join(_maintenance_server_lines(up, m, pages)) + "\n"
    digest = hashlib.sha256(maps_text.encode() + b"\0" + server_text.encode()).hexdigest()[:16]
    return {"maps": maps_text, "server": server_text.replace("@@id@@", digest), "id": digest}


def _maintenance_maps(up: str, m: Dict[str, Any]) -> List[str]:
    """The maps (http level): the tool's checks, whether a path is closed, which page."""

    # \z, not $: Nginx decodes %0A into $uri, and `$` also matches before a final newline.
    def exact(path: str, who: str) -> str:
        return f"    ~^{who}{routes_regex([path])}\\z 0;"

    return [
        f"{SITE_HEADER} Maintenance mode is on: `maintenance off` removes this file.",
        # The tool's checks run on the host, so they reach Nginx from the address they ask it on.
        f'map "${_header_var(PROBE_HEADER)} $remote_addr $server_addr" ${up}_probe {{',
        '    default "";',
        r'    "~^1 (\S+) \1\z" probe;',
        "}",
        "",
        f"map ${up}_probe$uri ${up}_closed {{",
        "    volatile;",  # a value kept from before the error page's redirect would close the page
        "    default 1;",
        r"    ~^(probe)?/\.signalcraft-deploy-(site|maintenance)\z 0;",
        r"    ~^(probe)?/\.signalcraft-maintenance/ 0;",
        r"    ~^(probe)?/\.well-known/acme-challenge/ 0;",
        *(exact(path, "(probe)?") for path in m["open"]),
        *(f"    ~^(probe)?{routes_regex([p])}(/|\\z) 0;" for p in m["prefixes"]),
        # The tool's own checks reach every path (a deploy while it is on may move a health
        # route; its gate asks the new one); `probe` names the ones they are known to ask.
        "    ~^probe/ 0;",
        "}",
        "",
        f"map $http_accept ${up}_page {{",
        "    default 503.html;",
        # JSON when asked for, unless refused in so many words (q=0)
        r'    "~*application/([a-z0-9.+-]*\+)?json'
        r'(?!\s*;\s*q\s*=\s*0(\.0{0,3})?\s*(,|\z))" 503.json;',
        "}",
    ]


def _maintenance_server_lines(up: str, m: Dict[str, Any], pages: str) -> List[str]:
    """What each of the site's app servers includes: a closed path answers 503 with the page."""
    return [
        f"    {SITE_HEADER} Maintenance mode is on (pages {pages}).",
        f"    if (${up}_closed) {{",
        "        return 503;",
        "    }",
        f"    error_page 503 /.signalcraft-maintenance/${up}_page;",
        "    location ^~ /.signalcraft-maintenance/ {",
        "        internal;",
        f"        alias {maintenance_files(up)['pages']}/;",
        "        types { text/html html; application/json json; }",
        "        charset utf-8;",
        f"        add_header Retry-After {m['retry_after']} always;",
        '        add_header Cache-Control "no-store" always;',
        "    }",
        "    location = /.signalcraft-deploy-maintenance {",
        "        default_type text/plain;",
        '        return 200 "@@id@@\\n";',
        "    }",
    ]


def _header_var(header: str) -> str:
    return "http_" + header.lower().replace("-", "_")


def maintenance_include(up: str, part: str) -> str:
    """The site's include of a maintenance file ("maps" or "server"): `.map[s]` is a pattern, so
    that nothing (and no error) is included while the file is absent."""
    path = maintenance_files(up)[part]
    return f"include {path[:-1]}[{path[-1]}];"


def _route(route: Any) -> str:
    if ".." in _word(route, ROUTE, "a route").split("/"):
        raise BadSite(f"a route may not hold '..': {route!r}")
    return route


def check_table(table: Any) -> None:
    """A route table: 1 to 100 [PREFIX, APP] entries (or [PREFIX, APP, "mount"]: the app is written
    for '/' and mounted under PREFIX), distinct prefixes, exactly one '/', never mounted; Python
    mounted under one prefix only (Gunicorn's SCRIPT_NAME is one per process), and then it has no
    other."""
    if not isinstance(table, list) or not 1 <= len(table) <= 100:
        raise BadSite("table must be a list of 1 to 100 [prefix, app] pairs")
    seen = set()
    for entry in table:
        if (
            not isinstance(entry, list)
            or len(entry) not in (2, 3)
            or entry[1] not in APPS
            or not isinstance(entry[0], str)
            or entry[2:] not in ([], ["mount"])
        ):
            raise BadSite(
                "a table entry is [prefix, 'python' or 'nodejs'] or [prefix, app, 'mount'], not"
                f" {entry!r}"
            )
        prefix = entry[0]
        if prefix != "/" and not (prefix.startswith("/") and _route(prefix[1:])):
            raise BadSite(f"a table prefix is '/' or '/' and a route: {prefix!r}")
        if prefix in seen:
            raise BadSite(f"a table prefix is listed once: {prefix!r}")
        if prefix == "/" and len(entry) == 3:
            raise BadSite("'/' is never mounted")
        seen.add(prefix)
    if "/" not in seen:
        raise BadSite("a table has exactly one '/' entry (who serves what no other prefix does)")
    python = [entry for entry in table if entry[1] == "python"]
    if any(len(entry) == 3 for entry in python) and len(python) != 1:
        raise BadSite("Python mounted under a prefix serves no other")


def python_mount(table: List[List[str]]) -> "str | None":
    """The prefix Python is mounted under (Gunicorn's SCRIPT_NAME), if it is mounted; None when its
    routes carry their own prefixes (Nginx passes each path as it came)."""
    return next((entry[0] for entry in table if entry[1] == "python" and len(entry) == 3), None)


def server_name_problem(name: Any) -> "str | None":
    """Why `name` cannot be a site's server_name (None: it can)."""
    if not isinstance(name, str) or not (
        name == "_" or all(HOST_NAME.fullmatch(n) for n in name.split(" "))
    ):
        return f"not '_' or host names separated by single spaces: {name!r}"
    if any(n.startswith("*.") and n.rstrip(".").count(".") < 2 for n in name.split(" ")):
        return f"a wildcard over a whole top-level domain is not a site's: {name!r}"
    return None


def _word(value: Any, pattern: "re.Pattern[str]", what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadSite(f"{what} is not accepted: {value!r}")
    return value


def _port_of(value: str, what: str) -> int:
    digits = value.rsplit(":", 1)[-1].strip("[]")
    port = int(digits)
    if not 1 <= port <= 65535 or digits != str(
        port
    ):  # `080` is port 80 to Nginx: one spelling per port
        raise BadSite(f"{what}: a port from 1 to 65535, not {value!r}")
    return port


def site_path(value: Any) -> str:
    """A file directly in Nginx's site folders, with a plain name (conf.d: ending in .conf)."""
    if not isinstance(value, str) or os.path.normpath(value) != value:
        raise BadSite(f"site must be a normalised path: {value!r}")
    folder, name = os.path.split(value)
    if (
        folder not in SITE_FOLDERS
        or not SITE_NAME.fullmatch(name)
        or name == "default"
        or ".." in name
    ):
        raise BadSite(f"site must be a plain file name in {' or '.join(SITE_FOLDERS)}: {value!r}")
    if folder.endswith("conf.d") and not name.endswith(".conf"):
        raise BadSite(f"a site in conf.d must end in .conf: {value!r}")
    if name.endswith(
        (".locations", ".signalcraft-prev", ".signalcraft-tmp", ".signalcraft-tmpprev")
    ):
        raise BadSite(f"site may not end like the tool's own files: {value!r}")
    return value


def tls_file(value: Any, what: str) -> str:
    """A certificate or key path in root's folders: plain characters, absolute, normalised (no
    engine: or data:)."""
    if (
        not isinstance(value, str)
        or not TLS_FILE.fullmatch(value)
        or os.path.normpath(value) != value
    ):
        raise BadSite(f"TLS {what} must be a plain absolute path: {value!r}")
    if ".." in value.split("/") or not value.startswith(TLS_FOLDERS):
        raise BadSite(f"TLS {what} must be under {', '.join(TLS_FOLDERS)}: {value!r}")
    return value


def extras_path(site: str) -> str:
    """The file of location blocks kept from a site taken over, beside the site (the site includes
    it): one per site file, whatever its name (conf.d's `*.conf` include never reads it)."""
    return site + ".locations"


def upstream_for(site: str) -> str:
    """The stem of the site's upstream and map names, which are global in Nginx: its file's name,
    made an identifier, and a digest of its path, so that no site can take another's."""
    name = re.sub(r"[^a-z0-9_]", "_", os.path.basename(site).lower())[:24]
    if not name[:1].isalpha():
        name = ("site_" + name)[
            :24
        ]  # `$1shop_conn` would be the capture $1 and text: a name starts with a letter
    return f"{name}_{hashlib.sha256(site.encode()).hexdigest()[:16]}"


def routes_regex(routes: List[str]) -> str:
    return "|".join(re.sub(r"([.])", r"\\\1", route) for route in routes)


def prefix_regex(prefix: str) -> str:
    """A table prefix as a regex location's start: `^/chat(/|$)` matches /chat and /chat/x, never
    /chatter."""
    return "^" + routes_regex([prefix]) + "(/|$)"


def _listens(addresses: List[str], ssl: bool, default: bool) -> List[str]:
    return [
        f"    listen {a}{' ssl' if ssl else ''}{' default_server' if default else ''};"
        for a in addresses
    ]


def _common(d: Dict[str, Any], addresses: List[str], ssl: bool) -> List[str]:
    lines = _listens(addresses, ssl, d["server_name"] == "_") + [
        f"    server_name {d['server_name']};"
    ]
    if d["body_size"]:
        lines.append(f"    client_max_body_size {d['body_size']};")
    if "timeouts" in d:
        # The longest app's, for the locations that set none (kept or included ones): they
        # inherit it instead of Nginx's 60 s; the apps' own locations set their own below.
        longest = max(d["timeouts"].values())
        lines += [f"    proxy_read_timeout {longest}s;", f"    proxy_send_timeout {longest}s;"]
    return lines + [
        "",
        "    # Answers the id of this file: how a deploy knows that the running Nginx serves it.",
        "    location = /.signalcraft-deploy-site {",
        "        default_type text/plain;",
        '        return 200 "@@id@@\\n";',
        "    }",
    ]


def _plain_body(d: Dict[str, Any], app: str) -> List[str]:
    """A location's body for `app` in a PY_ROUTES site (paths passed on as they came)."""
    up = d["upstream"]
    lines = [
        f"        proxy_pass http://{up}_{app};",
        *(["        proxy_http_version 1.1;"] if app == "nodejs" else []),
        f"        proxy_set_header Host ${up}_host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        # As in a ROUTES site: a client's own X-Forwarded-Prefix or SCRIPT_NAME reaches no app.
        '        proxy_set_header X-Forwarded-Prefix "";',
        '        proxy_set_header SCRIPT_NAME "";',
    ]
    if app == "nodejs":
        lines += [
            "        proxy_set_header Upgrade $http_upgrade;",
            f"        proxy_set_header Connection ${up}_conn;",
        ]
    return lines


def _limits(d: Dict[str, Any], app: str, stream: bool = False) -> List[str]:
    """How long Nginx waits on `app` (a little longer than the app itself may take: the client gets
    the app's own answer, never Nginx's 504 first), and for a stream, no buffering."""
    lines = []
    if "timeouts" in d:
        seconds = d["timeouts"][app]
        lines += [
            f"        proxy_read_timeout {seconds}s;",
            f"        proxy_send_timeout {seconds}s;",
        ]
    if stream:
        lines += ["        proxy_buffering off;", "        proxy_cache off;"]
    return lines


def _kept_include(d: Dict[str, Any]) -> List[str]:
    # `.location[s]`: a pattern that matches that one name, and nothing (no error) while the file is
    # absent.
    return [
        (
            "    # Location blocks kept from the site this one replaced (a file beside it, if there"
            " is one)."
        ),
        f"    include {extras_path(d['site'])[:-1]}[s];",
        "",
    ]


def _stream_locations(d: Dict[str, Any]) -> List[str]:
    """STREAM_ROUTES: a location per prefix (longest first: Nginx takes the first regex that
    matches), proxied as its owner's, unbuffered."""
    lines: List[str] = []
    for prefix in sorted(d.get("streams", []), key=lambda p: (-len(p), p)):
        if "table" in d:
            owner = max(
                (
                    e[0]
                    for e in d["table"]
                    if e[0] == "/" or prefix == e[0] or prefix.startswith(e[0] + "/")
                ),
                key=len,
            )
            app = next(e[1] for e in d["table"] if e[0] == owner)
            body = _proxy(d, app, owner)
        else:
            python = any(prefix == "/" + r or prefix.startswith("/" + r + "/") for r in d["routes"])
            app = "python" if python else "nodejs"
            body = _plain_body(d, app)
        lines += [
            f"    location ~ {prefix_regex(prefix)} {{",
            *body,
            *_limits(d, app, True),
            "    }",
            "",
        ]
    return lines


def _apps(d: Dict[str, Any]) -> List[str]:
    return [
        *_kept_include(d),
        *_stream_locations(d),
        f"    location ~ ^/({routes_regex(d['routes'])})(/|$) {{",
        *_plain_body(d, "python"),
        *_limits(d, "python"),
        "    }",
        "",
        "    location / {",
        *_plain_body(d, "nodejs"),
        *_limits(d, "nodejs"),
        "    }",
    ]


def _proxy(d: Dict[str, Any], app: str, prefix: str) -> List[str]:
    """A location's body for `app` under `prefix` (ROUTES): Host with its port, the prefix stripped
    for Node.js and named in X-Forwarded-Prefix for an app mounted under it (and no client's
    X-Forwarded-Prefix or SCRIPT_NAME).
    """
    up, node = d["upstream"], app == "nodejs"
    mounted = [prefix, app, "mount"] in d["table"]
    lines = (
        [f"        rewrite {routes_regex(['^' + prefix])}/?(.*)$ /$1 break;"]
        if node and mounted
        else []
    )
    lines += [
        f"        proxy_pass http://{up}_{app};",
        *(["        proxy_http_version 1.1;"] if node else []),
        f"        proxy_set_header Host ${up}_host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
    ]
    # Set in every location, mounted or not: a client's own X-Forwarded-Prefix (or SCRIPT_NAME,
    # which Gunicorn takes from Nginx) never reaches an app; "" sends none.
    lines.append(
        "        proxy_set_header X-Forwarded-Prefix " + (prefix if mounted else '""') + ";"
    )
    if not node:
        lines.append('        proxy_set_header SCRIPT_NAME "";')
    if node:
        lines += [
            "        proxy_set_header Upgrade $http_upgrade;",
            f"        proxy_set_header Connection ${up}_conn;",
        ]
    return lines


def _table_apps(d: Dict[str, Any]) -> List[str]:
    # Nginx takes the first regex location that matches: the longest prefix first, so it wins.
    prefixed = sorted(
        ((e[0], e[1]) for e in d["table"] if e[0] != "/"), key=lambda pair: (-len(pair[0]), pair[0])
    )
    root = next(e[1] for e in d["table"] if e[0] == "/")
    lines = [*_kept_include(d), *_stream_locations(d)]
    for prefix, app in prefixed:
        lines += [
            f"    location ~ {prefix_regex(prefix)} {{",
            *_proxy(d, app, prefix),
            *_limits(d, app),
            "    }",
            "",
        ]
    return lines + ["    location / {", *_proxy(d, root, "/"), *_limits(d, root), "    }"]


def render(desc: Dict[str, Any]) -> str:
    """The site's text (after `check`); it answers /.signalcraft-deploy-site with a digest of
    itself."""
    d = check(desc)
    lines = [
        f"{SITE_HEADER} Edits here are replaced on the next deploy.",
        "# Maintenance mode's maps, while it is on (`maintenance on`).",
        maintenance_include(d["upstream"], "maps"),
        "",
        *_upstream_blocks(d),
        *_http_server(d),
    ]
    if d["tls"]:
        lines += ["", *_https_server(d)]
    lines += ["", *_site_maps(d["upstream"])]
    text = "\n".join(lines)
    return text.replace("@@id@@", hashlib.sha256(text.encode() + b"\0").hexdigest()[:16])


def _upstream_blocks(d: Dict[str, Any]) -> List[str]:
    """The two apps' upstreams, each followed by a blank line."""
    up = d["upstream"]
    return [
        f"upstream {up}_python {{",
        f"    server {d['python']};",
        "}",
        "",
        f"upstream {up}_nodejs {{",
        f"    server {d['node']};",
        "}",
        "",
    ]


def _http_server(d: Dict[str, Any]) -> List[str]:
    """The plain-HTTP server: the apps, or with TLS_REDIRECT a redirect of every path to HTTPS."""
    lines = ["server {", *_common(d, d["listen"], False)]
    if d["tls"] and d["tls"]["redirect"]:
        port = _port_of(d["tls_listen"][0], "tls_listen")
        # Maintenance mode here too: its marker is asked on this listener (the reload's proof).
        lines += [
            *_maintenance_server(d),
            "",
            "    location / {",
            f"        return 301 https://$host{'' if port == 443 else f':{port}'}$request_uri;",
            "    }",
        ]
    else:
        lines += [*_maintenance_server(d), *(_table_apps(d) if "table" in d else _apps(d))]
    return lines + ["}"]


def _maintenance_server(d: Dict[str, Any]) -> List[str]:
    return [
        "",
        "    # Maintenance mode, while it is on: every path but the open ones answers 503.",
        "    " + maintenance_include(d["upstream"], "server"),
    ]


def _https_server(d: Dict[str, Any]) -> List[str]:
    """The HTTPS server (with `tls`): the apps, over the description's certificate and key."""
    tls = d["tls"]
    return [
        "server {",
        *_common(d, d["tls_listen"], True),
        f"    ssl_certificate {tls['cert']};",
        f"    ssl_certificate_key {tls['key']};",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_prefer_server_ciphers off;",
        "    ssl_session_timeout 1d;",
        "    ssl_session_tickets off;",
        *_maintenance_server(d),
        *(_table_apps(d) if "table" in d else _apps(d)),
        "}",
    ]


def _site_maps(up: str) -> List[str]:
    """The maps the locations use: the Connection header for WebSocket upgrades, and the Host
    header passed on."""
    # $http_host keeps the port a client asked for (a redirect to http://HOST:8080/ stays there); an
    # HTTP/1.0 request may have no Host, and gets Nginx's name for it.
    return [
        f"map $http_upgrade ${up}_conn {{",
        "    default upgrade;",
        '    ""      close;',
        "}",
        "",
        f"map $http_host ${up}_host {{",
        '    ""      $host;',
        "    default $http_host;",
        "}",
        "",
    ]
