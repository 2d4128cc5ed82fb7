"""Nginx: check that the routes reach the right app (crossplane), install the site, reload.

`nginx -T` prints the whole configuration with every included file; `crossplane` parses each
file, and `route_table` follows nginx's own location rules (exact, longest prefix, ^~, regex in
order) to find which `proxy_pass` serves each Python route and the Node.js paths.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

from invoke import Result
from invoke.exceptions import Exit

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.render import nginx_timeouts, site_id
from signalcraft_deploy.core.settings import Settings, route_owner
from signalcraft_deploy.host import root
from signalcraft_deploy.host.io import Background, ConnectionLost, fail, q, run
from signalcraft_deploy.remote import nginx_site

FILE_MARK = re.compile(r"^# configuration file (.+):$")


@dataclass(frozen=True)
class Route:
    uri: str
    expected: str
    found: str | None
    file: str
    line: int | None

    @property
    def ok(self) -> bool:
        return self.found == self.expected


def split_dump(dump: str) -> dict[str, str]:
    """`nginx -T` stdout → {path: text} of every configuration file."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in dump.splitlines():
        match = FILE_MARK.match(line)
        if match:
            current = files.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {path: "\n".join(lines) + "\n" for path, lines in files.items()}


def parse_files(files: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Parse each file on its own with crossplane (includes are followed by `_expand`)."""
    # here, not at the top: a deploy that changes nothing never reads Nginx's config
    import crossplane

    parsed: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (path, text) in enumerate(files.items()):
            local = os.path.join(tmp, f"{index}.conf")
            with open(local, "w", encoding="utf-8") as fh:
                fh.write(text)
            result = crossplane.parse(
                local, single=True, catch_errors=True, check_ctx=False, check_args=False
            )
            parsed[path] = result["config"][0]["parsed"] if result["config"] else []
    return parsed


class ParsedFiles(Mapping[str, list[dict[str, Any]]]):
    """{path: directives} of a dump's files, each parsed the first time it is asked for: a check
    reads the main file, our site and what the site includes, not every other site or mime.types."""

    def __init__(self, files: dict[str, str]):
        self._files = files
        self._parsed: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, path: str) -> list[dict[str, Any]]:
        if path not in self._parsed:
            self._parsed[path] = parse_files({path: self._files[path]})[path]
        return self._parsed[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


@functools.lru_cache(maxsize=2)
def read_dump(dump: str) -> tuple[dict[str, str], ParsedFiles]:
    """A dump's files and their directives, for the route table and the timeouts of one check
    (both read the same dump; nothing changes what this returns)."""
    files = split_dump(dump)
    return files, ParsedFiles(files)


def _expand(
    block: list[dict[str, Any]], parsed: Mapping[str, list[dict[str, Any]]], file: str
) -> list[dict[str, Any]]:
    """Directives of a block with `include`s replaced by the included files' directives."""
    out = []
    for d in block:
        if d["directive"] == "include" and d.get("args"):
            pattern = d["args"][0]
            if not pattern.startswith("/"):
                pattern = "/etc/nginx/" + pattern
            for path in sorted(p for p in parsed if fnmatch(p, pattern)):
                out.extend(_expand(parsed[path], parsed, path))
        else:
            item = {**d, "_file": d.get("_file", file)}
            if (
                "block" in d
            ):  # includes inside server/location blocks too (e.g. `include snippets/x.conf;`)
                item["block"] = _expand(d["block"], parsed, item["_file"])
            out.append(item)
    return out


_PASS_DIRECTIVES = {
    "proxy_pass",
    "fastcgi_pass",
    "uwsgi_pass",
    "scgi_pass",
    "memcached_pass",
    "grpc_pass",
}


def _location_for(uri: str, locations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Nginx's choice: exact '=', else the longest prefix ('^~' stops there), else the first regex,
    else that prefix."""
    best = None
    for loc in locations:
        args = loc.get("args", [])
        if len(args) == 2 and args[0] == "=" and args[1] == uri:
            return loc
    # auto_redirect: a non-regex location named uri + '/' that passes requests on answers `uri` with
    # a 301 to uri + '/' before any regex is tried, unless a prefix location named exactly `uri`
    # exists. Follow it.
    static = [
        (args[-1], loc)
        for loc in locations
        if (args := loc.get("args", [])) and (len(args) == 1 or args[0] in ("=", "^~"))
    ]
    if all(name != uri for name, _ in static) and any(
        name == uri + "/" and any(d["directive"] in _PASS_DIRECTIVES for d in loc.get("block", []))
        for name, loc in static
    ):
        return _location_for(uri + "/", locations)
    for loc in locations:
        args = loc.get("args", [])
        prefix = (
            args[1] if len(args) == 2 and args[0] == "^~" else (args[0] if len(args) == 1 else None)
        )
        if prefix is not None and uri.startswith(prefix):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, loc)
    if best and best[1]["args"][0] == "^~":
        return best[1]
    for loc in locations:
        args = loc.get("args", [])
        if len(args) == 2 and args[0] in ("~", "~*"):
            if re.search(args[1], uri, re.IGNORECASE if args[0] == "~*" else 0):
                return loc
    return best[1] if best else None


def _target(loc: dict[str, Any], upstreams: dict[str, list[str]]) -> tuple[str | None, int | None]:
    for d in loc.get("block", []):
        if d["directive"] == "proxy_pass" and d.get("args"):
            url = re.sub(r"^https?://", "", d["args"][0]).split("/", 1)[0]
            servers = upstreams.get(url)
            return (",".join(servers) if servers else url), d.get("line")
    return None, loc.get("line")


def route_table(s: Settings, dump: str) -> tuple[list[Route], list[str]]:
    """Which address serves each route through our site, and any problem finding the site."""
    files, parsed = read_dump(dump)
    site_paths = [p for p in files if p in (s.nginx_site, s.nginx_enabled_link)]
    if not site_paths:
        return [], [
            f"the site {s.nginx_site} is not part of Nginx's configuration (is it linked from"
            " sites-enabled?)"
        ]
    site = site_paths[0]
    directives = _expand(parsed[site], parsed, site)
    upstreams = _upstreams(directives)
    port = str((s.tls_listen if s.tls else s.nginx_listen)[0].port)  # the server serving the apps
    servers = _servers_on(port, directives)
    if not servers:
        return [], [f"{site}: no server block listens on port {port}"]
    locations = [d for d in servers[0].get("block", []) if d["directive"] == "location"]
    routes = []
    for uri, expected in _expected_routes(s):
        loc = _location_for(uri, locations)
        found, line = _target(loc, upstreams) if loc else (None, servers[0].get("line"))
        routes.append(
            Route(
                uri=uri,
                expected=expected,
                found=found,
                file=loc.get("_file", site) if loc else site,
                line=line,
            )
        )
    return routes, []


def _upstreams(directives: list[dict[str, Any]]) -> dict[str, list[str]]:
    """{name: its servers' addresses} of the `upstream` blocks among `directives`."""
    upstreams: dict[str, list[str]] = {}
    for d in directives:
        if d["directive"] == "upstream":
            upstreams[d["args"][0]] = [
                x["args"][0] for x in d.get("block", []) if x["directive"] == "server"
            ]
    return upstreams


def _servers_on(port: str, directives: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `server` blocks among `directives` that listen on `port`."""
    return [
        d
        for d in directives
        if d["directive"] == "server"
        and any(
            x["directive"] == "listen" and port in re.split(r"[:\s]", x["args"][0])
            for x in d.get("block", [])
        )
    ]


def _expected_routes(s: Settings) -> list[tuple[str, str]]:
    """(URI, the address that should serve it) for each path to check: each ROUTES prefix with and
    without its slash, HEALTH_NODE and `/`."""
    # ROUTES names its apps as text, which App's members equal.
    address: dict[str, str] = {
        App.PYTHON: str(s.gunicorn_bind),
        App.NODEJS: f"127.0.0.1:{s.node_port}",
    }
    prefixed = [(p, app) for p, app in s.route_table if p != "/"]
    checks = [(f"{p}/", address[app]) for p, app in prefixed] + [
        (p, address[app]) for p, app in prefixed
    ]
    checks += [
        (s.health_node, address[App.NODEJS]),
        ("/", address[route_owner("/", s.route_table)]),
    ]
    return list(dict.fromkeys(checks))  # HEALTH_NODE is '/' by default: check (and report) it once


NGINX_DEFAULT_TIMEOUT = 60  # proxy_read_timeout where nothing sets it
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "ms": 0.001}


def nginx_seconds(value: str) -> float | None:
    """Nginx's time syntax ('90', '90s', '2m', '1h 30m') in seconds; None if it is not one."""
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d)?", value.replace(" ", ""))
    if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
        return None
    return sum(int(n) * _TIME_UNITS[u] for n, u in parts)


def _read_timeout(block: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    for d in block:
        if d["directive"] == "proxy_read_timeout" and d.get("args"):
            return d["args"][0], d
    return None


def _app_of(loc: dict[str, Any], s: Settings, upstream: str) -> App | None:
    """Which of our apps a location proxies to (by our upstream's name or the app's address)."""
    for d in loc.get("block", []):
        if d["directive"] == "proxy_pass" and d.get("args"):
            target = re.sub(r"^https?://", "", d["args"][0]).split("/", 1)[0]
            if target in (f"{upstream}_python", str(s.gunicorn_bind)):
                return App.PYTHON
            if target in (
                f"{upstream}_nodejs",
                f"127.0.0.1:{s.node_port}",
                f"localhost:{s.node_port}",
            ):
                return App.NODEJS
    return None


def _locations(block: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every location in `block`, nested ones too."""
    found = []
    for d in block:
        if d["directive"] == "location":
            found += [d, *_locations(d.get("block", []))]
    return found


def timeout_problems(s: Settings, dump: str) -> list[str]:
    """Locations of our site's servers (kept or included ones too) where Nginx would give up on an
    app sooner than the app itself allows: Nginx's 504 for a request the app still serves."""
    files, parsed = read_dump(dump)
    site = next((p for p in files if p in (s.nginx_site, s.nginx_enabled_link)), None)
    if site is None:
        return []
    http = next((d for d in parsed[next(iter(files))] if d["directive"] == "http"), None)
    inherited = _read_timeout(http.get("block", [])) if http else None
    problems = []
    for server in (d for d in _expand(parsed[site], parsed, site) if d["directive"] == "server"):
        server_level = _read_timeout(server.get("block", [])) or inherited
        for loc in _locations(server.get("block", [])):
            problem = _location_timeout_problem(s, site, loc, server_level)
            problems += [problem] if problem else []
    return problems


def _location_timeout_problem(
    s: Settings, site: str, loc: dict[str, Any], outer: tuple[str, dict[str, Any]] | None
) -> str | None:
    app = _app_of(loc, s, nginx_site.upstream_for(s.nginx_site))
    if app is None:
        return None
    key, limit, who = (
        ("GUNICORN_TIMEOUT", s.gunicorn_timeout, "Gunicorn")
        if app is App.PYTHON
        else ("NODE_TIMEOUT", s.node_timeout, "the Node.js app")
    )
    own = _read_timeout(loc.get("block", []))
    value = (own or outer or (f"{NGINX_DEFAULT_TIMEOUT}s", {}))[0]
    seconds = nginx_seconds(value)
    if seconds is None or seconds >= limit:
        return None
    file = loc.get("_file", site)
    fix = (
        "deploy again: the site this version renders sets it"
        if file == site
        else f"set `proxy_read_timeout {nginx_timeouts(s)[app]}s;` in that location, or lower {key}"
    )
    return (
        f"{file}:{(own[1] if own else loc).get('line')}: location {' '.join(loc.get('args', []))}"
        f" {'sets' if own else 'inherits'} proxy_read_timeout {value}, shorter than {key}={limit}s"
        f" that {who} allows: Nginx would answer 504 to a request {who} still serves. Fix: {fix}."
    )


def describe_mismatches(routes: list[Route]) -> list[str]:
    return [
        f"{r.file}:{r.line}: {r.uri} is proxied to {r.found or 'nothing'}; expected {r.expected}"
        for r in routes
        if not r.ok
    ]


def install_site_args(s: Settings, backup: bool = True, takeover: bool = False) -> list[str]:
    """The root helper's `site-install` arguments; the site's description goes on stdin
    (`site_description`).

    The helper renders the site itself, puts it in place, enables it, and keeps it only if the test
    passes. The previous file is kept as <site>.signalcraft-prev; on a failed test it is put back
    and the stock `default` site (disabled when ours becomes the default server) is enabled again.
    An existing file that does not start with our header is left alone (exit 66), unless `takeover`
    (root's copy, made first by takeover-record, is what `rollback` puts back). A site another user
    or deploy root installed is refused (exit 2).
    """
    return [
        s.state_dir,
        "backup" if backup else "replace",
        "takeover" if takeover else "guard",
        s.nginx_test_cmd,
    ]


def write_extras(c: Any, s: Settings, lines: tuple[int, ...]) -> None:
    """Keep beside our site the location blocks that start on `lines` of the site taken over: the
    helper reads them from root's own copy of that site (takeover-record); never over a file that is
    not ours."""
    arg = ",".join(str(n) for n in lines) or "-"
    result = root.call(
        c, "extras-write", s.state_dir, s.nginx_site, arg, s.nginx_test_cmd, warn=True
    )
    if result.exited == 66:
        raise fail(
            f"{s.nginx_extras} exists and was not written by signalcraft-deploy: move it away, then"
            " deploy again."
        )
    if result.exited == 65:
        raise fail(
            "nginx -t rejected the location blocks kept from the site taken over"
            f" ({s.nginx_extras}); nothing was changed. nginx said:\n{result.stderr.strip()}"
        )
    if not result.ok:
        raise fail(f"Could not write {s.nginx_extras}: {result.stderr.strip()[-400:]}")


def install_site(
    c: Any, s: Settings, description: dict[str, Any], *, backup: bool = True, takeover: bool = False
) -> None:
    """Have root render, write and enable the site `description` says
    (core.render.site_description); on a failed `nginx -t` the previous site is back and nothing is
    reloaded. A file there that this tool did not write is never written over, except by a takeover
    (recorded first)."""
    result = root.call(
        c,
        "site-install",
        *install_site_args(s, backup, takeover),
        stdin=json.dumps(description),
        warn=True,
    )
    if result.exited == 66:
        raise fail(
            f"NGINX_SITE {s.nginx_site} exists and was not written by signalcraft-deploy (its first"
            " line is not our header): it was left as it is. Move that file away, or set"
            " NGINX_SITE to a file of its own."
        )
    if result.exited == 65:
        raise fail(
            f"nginx -t rejected the new site {s.nginx_site}; the previous site is back in place and"
            f" Nginx was not reloaded. nginx said:\n{result.stderr.strip()}\nFix the setting that"
            " produced it."
        )
    if result.exited == 2 and "belongs to another" in result.stderr:
        raise fail(
            f"NGINX_SITE {s.nginx_site} belongs to another deploy user or deploy root on this host:"
            " set NGINX_SITE (or APP_NAME, which names it by default) to a site of this app's own."
        )
    if not result.ok:
        raise fail(f"Could not write the Nginx site {s.nginx_site}: {result.stderr.strip()}")


def restore_site(c: Any, s: Settings) -> None:
    """Put the previous site back (rollback); after a first deploy, remove ours and re-enable the
    stock default."""
    root.call(c, "site-restore", s.state_dir, s.nginx_site, s.nginx_test_cmd, warn=True)


def remove_site(c: Any, s: Settings) -> bool:
    """Have root take our site off for good (`remove`): the file, its link, its kept locations and
    backups, its claim, and certbot's hook for it; the stock default site it parked enabled again.
    True when something was removed (the caller reloads Nginx), False when nothing of it was left.
    On a failed `nginx -t` everything is as it was.
    """
    result = root.call(
        c, "site-remove", s.state_dir, s.nginx_site, s.app_name, s.nginx_test_cmd, warn=True
    )
    if result.exited == 66:
        raise fail(
            f"NGINX_SITE {s.nginx_site} was not written by signalcraft-deploy (someone wrote over"
            " it): it was left as it is, and nothing was removed. Move that file away yourself,"
            " then run remove again."
        )
    if result.exited == 65:
        raise fail(
            f"nginx -t fails without the site {s.nginx_site} (another site needs something of it),"
            " so it was left in place and nothing was removed. nginx"
            f" said:\n{result.stderr.strip()}"
        )
    if result.exited == 2 and "belongs to another" in result.stderr:
        raise fail(
            f"NGINX_SITE {s.nginx_site} belongs to another deploy user or deploy root on this host:"
            " nothing was removed. Check APP_NAME, DEPLOY_ROOT and NGINX_SITE: they must be this"
            " app's."
        )
    if result.exited == 2 and "not installed by this helper" in result.stderr:
        raise fail(
            f"NGINX_SITE {s.nginx_site} was not installed by this tool's root helper for this"
            " deploy user and DEPLOY_ROOT: it was left as it is, and nothing was removed. Check"
            " NGINX_SITE and DEPLOY_ROOT."
        )
    if not result.ok:
        raise fail(
            f"Could not remove the Nginx site {s.nginx_site}:"
            f" {(result.stderr or result.stdout).strip()[-400:]}"
        )
    return result.stdout.strip().endswith("removed")


def test_nginx(c: Any, s: Settings) -> Any:
    """NGINX_TEST_CMD as root (through the helper); the result, never raising (no usable helper: a
    failed test)."""
    try:
        return root.call(c, "nginx-test", s.nginx_test_cmd, warn=True)
    except ConnectionLost:
        raise  # not a failed test: nothing could be asked
    except Exit as err:
        return Result(stderr=str(err.message), exited=1, command="nginx-test")


def read_site(c: Any, s: Settings) -> str | None:
    result = root.call(c, "site-read", s.nginx_site, warn=True)
    return result.stdout if result.ok else None


def marker_spec(s: Settings, site_text: str) -> dict[str, Any] | None:
    """Ask Nginx, on the site's first plain-HTTP listener, for the id only `site_text` answers."""
    expect = site_id(site_text)
    if expect is None:
        return None
    host = s.server_name.split()[0] if s.server_name != "_" else None
    return {
        "url": f"http://{s.nginx_listen[0].local}/.signalcraft-deploy-site",
        "host": host,
        "expect": expect,
    }


RELOAD_FIXES = (
    (
        "bind()",
        (
            "a port of NGINX_LISTEN or TLS_LISTEN is held by another process, or by Nginx on"
            " another address: free it, or set NGINX_LISTEN/TLS_LISTEN to what Nginx holds now"
        ),
    ),
    ("certificate", "check TLS_CERT and TLS_KEY (run nginx-check)"),
    ("PEM", "check TLS_CERT and TLS_KEY (run nginx-check)"),
)


def reload_nginx(
    c: Any,
    s: Settings,
    site_text: str | None = None,
    wait_seconds: int = 10,
    marker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reload gracefully and prove it took (remote/reload_nginx.py): new workers of the master in
    Nginx's pid file, its old workers gone, no [emerg] logged, and (given the site just written) the
    site's id answered through Nginx, or `marker`'s. A reload that did not take raises, quoting
    Nginx."""
    spec = {
        "cmd": s.nginx_reload_cmd,
        "wait": wait_seconds,
        "marker": marker_spec(s, site_text) if site_text else marker,
    }
    result = root.call(c, "nginx-reload", json.dumps(spec), warn=True)
    try:
        verdict: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        verdict = {
            "ok": False,
            "why": (result.stderr or result.stdout).strip()[-500:] or f"exit {result.exited}",
        }
    if verdict.get("ok"):
        return verdict
    why = str(verdict.get("why"))
    fix = next(
        (text for word, text in RELOAD_FIXES if word in why),
        "fix what Nginx names, then `sudo nginx -t && sudo nginx -s reload`",
    )
    raise fail(
        f"Nginx's reload did not take ({s.nginx_reload_cmd}); Nginx still serves its previous"
        f" configuration. Nginx said: {why}\nFix: {fix}."
    )


def draining_note(s: Settings, verdict: dict[str, Any]) -> str:
    """What a reload left to old workers: the connections they still hold (WebSockets, streams,
    long requests), and the bound on them ("" when none is left)."""
    workers, held = int(verdict.get("draining") or 0), int(verdict.get("held") or 0)
    if not workers:
        return ""
    bound = (
        f"Nginx closes what is left {s.nginx_drain_seconds}s after the reload (NGINX_DRAIN_SECONDS)"
        if s.nginx_drain_seconds
        else "no bound: NGINX_DRAIN_SECONDS=0"
    )
    return f"; {workers} old worker(s) still hold {held} connection(s) ({bound})"


# Every Nginx process's age and title: old workers retitle themselves "... is shutting down".
NGINX_PROCESSES = "ps -C nginx -o etimes=,args= 2>/dev/null"


def old_workers(ps_text: str) -> tuple[int, int | None]:
    """(old workers still draining, seconds since the last reload: the age of the youngest worker
    that is not shutting down) from NGINX_PROCESSES's output."""
    draining, current = 0, []
    for line in ps_text.splitlines():
        age, _, title = line.strip().partition(" ")
        if not age.isdigit() or "worker process" not in title:
            continue
        if "shutting down" in title:
            draining += 1
        else:
            current.append(int(age))
    return draining, (min(current) if current else None)


def draining_status(c: Any, s: Settings) -> str | None:
    """`status`'s line on old Nginx workers still draining, or None when there are none."""
    draining, since = old_workers(run(c, NGINX_PROCESSES, warn=True).stdout)
    if not draining:
        return None
    when = f"the last reload {since}s ago" if since is not None else "a reload"
    bound = (
        f"Nginx closes what they hold {s.nginx_drain_seconds}s after it (NGINX_DRAIN_SECONDS)"
        if s.nginx_drain_seconds
        else "no bound (NGINX_DRAIN_SECONDS=0): they end when their last connection does"
    )
    return f"{draining} old Nginx worker(s) still draining since {when}; {bound}"


def running_site(c: Any, s: Settings) -> str | None:
    """The site id the running Nginx answers on the site's first listener (None: no id of ours)."""
    host = s.server_name.split()[0] if s.server_name != "_" else ""
    url = f"http://{s.nginx_listen[0].local}/.signalcraft-deploy-site"
    out = run(
        c, f"{q(s.python)} -c {q(MARKER_PY)} {q(url)} {q(host)} 2>/dev/null", warn=True
    ).stdout.strip()
    return out if re.fullmatch(r"[0-9a-f]{16}", out) else None


MARKER_PY = (
    "import sys, urllib.request as u\nr = u.Request(sys.argv[1], headers={'Host': sys.argv[2]} if"
    " sys.argv[2] else {})\nprint(u.urlopen(r, timeout=2).read(100).decode().strip())"
)


def drift(c: Any, s: Settings, on_disk: str | None) -> str | None:
    """A problem if the running Nginx does not serve the site on disk (a reload that did not
    take)."""
    want = site_id(on_disk or "")
    if want is None:
        return None
    running = running_site(c, s)
    if running == want:
        return None
    return (
        f"the running Nginx does not serve the site on disk ({s.nginx_site}: id {want}; Nginx"
        f" answers {running or 'no id'} on {s.nginx_listen[0].local}): an earlier reload did not"
        " take. Fix: `sudo nginx -t && sudo nginx -s reload` and look for [emerg] in Nginx's error"
        " log; if a bind() failed on an address Nginx holds itself, only a restart applies it"
        " (`sudo systemctl restart nginx`)"
    )


LISTENERS_MARK = "@@signalcraft-listeners@@"


def check_command(c: Any) -> str:
    """`nginx -T` as root, then the listening sockets: one command for what `check` reads."""
    root.ensure(c)
    return (
        f"{root.command('nginx-dump')}; r=$?; echo {LISTENERS_MARK}; ss -ltnH 2>/dev/null; exit $r"
    )


def start_check(c: Any) -> Background:
    """What `check` reads, asked now (while other work goes on): pass the result to `check` as
    `read`."""
    return Background(c, check_command(c))


def check(c: Any, s: Settings, read: Background | None = None) -> tuple[list[Route], list[str]]:
    """Check the running Nginx's configuration (`nginx -T`) and our routes in it; returns the table
    and every problem."""
    result = read.wait() if read is not None else run(c, check_command(c), warn=True)
    dump, _, listeners = result.stdout.partition(f"{LISTENERS_MARK}\n")
    if not result.ok:
        return [], [f"nginx -t failed: {(result.stderr or dump).strip()}"]
    routes, problems = route_table(s, dump)
    problems += describe_mismatches(routes) + timeout_problems(s, dump)
    for line in listeners.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            addr = parts[3]
            host, _, port = addr.rpartition(":")
            if (
                port == str(s.gunicorn_bind.port)
                and host.strip("[]") not in ("127.0.0.1", "::1", "localhost")
                and not host.startswith("127.")
                and not s.allow_public_bind
            ):
                problems.append(
                    f"Gunicorn's port {port} is reachable on {addr}, not only on loopback; "
                    "bind it to 127.0.0.1 so Nginx is the only way in"
                )
    return routes, problems
