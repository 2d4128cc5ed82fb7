"""Settings: one typed object from defaults < .env < environment < flags, validated once.

Everything a task needs to know about the app and the host layout lives here. Each key is
declared once, as a field of the `Settings` dataclass made by `key(...)`: its name (the field's,
in upper case), type, default, parser, help, whether it is secret and whether it only matters on
the deploying machine. `KEYS`, the README's table and the `settings` task all come from those
fields; the rules that involve several keys are in `_check_together`. Values are validated
before any host is touched; a bad value raises `SettingsError` naming the key, where the value
came from (file and line, environment, or flag), what was found and what was expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Generic, TypeVar, cast

from signalcraft_deploy.core import procfile
from signalcraft_deploy.core.apps import App
from signalcraft_deploy.remote import nginx_site


class SettingsError(ValueError):
    """A configuration value is wrong; the message says which, where from and what is expected."""


class Invalid(Exception):
    """Raised by a parser: what was expected, and (rarely) the part of the value at fault."""

    def __init__(self, expected: str, found: str | None = None):
        super().__init__(expected)
        self.expected = expected
        self.found = found  # shown as is instead of the whole value, e.g. "route 'api/(x)'"


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


# --- Parsers: raw text (None when unset) -> typed value, or `Invalid`
# -------------------------------------------


T = TypeVar("T")


@dataclass(frozen=True)
class Parser(Generic[T]):
    """How one key's text becomes its value of type T, and the value written back as text."""

    # (raw value, folder that relative local paths start from) -> value
    parse: Callable[[str | None, Path], T]
    show: Callable[[T], str] = str  # the value as a .env line would hold it

    def __call__(self, value: str | None, base: Path) -> T:
        return self.parse(value, base)


def _text(value: str | None) -> str:
    if value is None or value.strip() == "":
        raise Invalid("a value")
    if value != value.strip() or "\n" in value or "\x00" in value:
        raise Invalid("a value without surrounding spaces or line breaks")
    return value


def on_text(check: Callable[[str], T], show: Callable[[T], str] = str) -> Parser[T]:
    """A parser for a required key: `check` gets its text, already non-empty and without surrounding
    spaces."""
    return Parser(lambda value, base: check(_text(value)), show)


def regex(pattern: str | re.Pattern[str], expected: str) -> Parser[str]:
    compiled = re.compile(pattern)

    def check(text: str) -> str:
        if not compiled.fullmatch(text):
            raise Invalid(expected)
        return text

    return on_text(check)


def choice(*options: str) -> Parser[str]:
    quoted = [repr(o) for o in options]
    expected = (
        " or ".join(quoted) if len(quoted) < 3 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    )

    def check(text: str) -> str:
        if text not in options:
            raise Invalid(expected)
        return text

    return on_text(check)


def _whole_number(text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
        raise Invalid(f"a whole number from {low} to {high}")
    return int(text)


def integer(low: int, high: int) -> Parser[int]:
    return on_text(lambda text: _whole_number(text, low, high))


port = integer(1, 65535)


def _worker_class(text: str) -> str:
    if not _WORKER_CLASS_RE.fullmatch(text) or (
        "." not in text and text not in GUNICORN_WORKER_NAMES
    ):
        raise Invalid(
            f"one of Gunicorn's worker classes ({', '.join(GUNICORN_WORKER_NAMES)}) "
            "or a class's dotted path such as uvicorn.workers.UvicornWorker"
        )
    return text


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise Invalid("true or false")


boolean = on_text(_boolean, lambda value: "true" if value else "false")


def _address(text: str) -> Address:
    # An address, never a host name: Nginx's master (root) would resolve a name at every test and
    # reload.
    match = re.fullmatch(
        r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([0-9]{1,3}(?:\.[0-9]{1,3}){3}|localhost):([0-9]+)", text
    )
    if not match:
        raise Invalid("ADDRESS:PORT with an IP address (or localhost), for example 127.0.0.1:8001")
    number = int(match.group(2) or match.group(4))
    if not 1 <= number <= 65535:
        raise Invalid("a port from 1 to 65535 in HOST:PORT")
    return Address(match.group(1) or match.group(3), number)


address = on_text(_address)


@dataclass(frozen=True)
class Listen:
    """One address Nginx listens on: `host` None means every IPv4 address (a bare port)."""

    host: str | None
    port: int

    def __str__(self) -> str:
        if self.host is None:
            return str(self.port)
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family(self) -> int:
        return 6 if self.host and ":" in self.host else 4

    @property
    def wildcard(self) -> bool:
        return self.host in (None, "*", "0.0.0.0", "::")

    @property
    def local(self) -> str:
        """host:port to reach this listener from the host itself."""
        if self.wildcard:
            return f"[::1]:{self.port}" if self.family == 6 else f"127.0.0.1:{self.port}"
        return str(self)


def _listen(part: str) -> Listen:
    match = re.fullmatch(r"([0-9]+)|\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([0-9.]+|\*):([0-9]+)", part)
    if not match:
        raise Invalid(
            "a port, ADDRESS:PORT, [IPv6]:PORT, or a comma-separated list of them, such as 80 or"
            " 127.0.0.1:8080",
            found=repr(part),
        )
    host = match.group(2) or match.group(4)
    number = int(match.group(1) or match.group(3) or match.group(5))
    if host and host != "*":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise Invalid("an IP address in ADDRESS:PORT", found=repr(part)) from None
    if not 1 <= number <= 65535:
        raise Invalid("ports from 1 to 65535", found=repr(part))
    return Listen(None if host in (None, "*", "0.0.0.0") else host, number)


def _listens(text: str) -> tuple[Listen, ...]:
    found: list[Listen] = []
    for part in text.split(","):
        item = _listen(part.strip())
        if item not in found:
            found.append(item)
    return tuple(found)


listens = on_text(_listens, lambda value: ",".join(str(x) for x in value))

_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
_SAFE_REL_PATH_RE = re.compile(r"^[A-Za-z0-9._@+-][A-Za-z0-9._/@+-]*$")


def _absolute_path(text: str) -> str:
    if not _SAFE_PATH_RE.fullmatch(text) or ".." in text.split("/") or "//" in text:
        raise Invalid(
            "an absolute path of letters, digits and . _ - / @ + (no spaces, quotes or '..')"
        )
    return text.rstrip("/") or "/"


absolute_path = on_text(_absolute_path)


def _relative_path(text: str) -> str:
    if not _SAFE_REL_PATH_RE.fullmatch(text) or ".." in text.split("/"):
        raise Invalid("a path relative to the app directory, without spaces, quotes or '..'")
    return text


relative_path = on_text(_relative_path)


def optional(parser: Parser[T]) -> Parser[T | None]:
    """Unset or blank means None; anything else goes to `parser`."""
    return Parser(
        lambda value, base: None if value is None or value.strip() == "" else parser(value, base),
        lambda value: "" if value is None else parser.show(value),
    )


def unset_or(parser: Parser[T]) -> Parser[T | None]:
    """Unset or empty means None (decided elsewhere: NODE_SCRIPT from package.json); anything else,
    blanks included, goes to `parser`."""
    return Parser(
        lambda value, base: parser(value, base) if value else None,
        lambda value: "" if value is None else parser.show(value),
    )


def derived(parser: Parser[T]) -> Parser[T]:
    """Unset or empty: None here, filled in by `_check_together` from another key (the handover
    defaults), so the field holds a T once `validate` is done."""

    def parse(value: str | None, base: Path) -> T:
        return parser(value, base) if value else cast(T, None)  # None until `_check_together`

    return Parser(parse, parser.show)


def _local_path(value: str | None, base: Path) -> str | None:
    if value is None or value.strip() == "":
        return None
    text = _text(value)
    return str((base / text).resolve()) if not os.path.isabs(text) else text


local_path: Parser[str | None] = Parser(_local_path, lambda value: "" if value is None else value)
# The app's folder: blank means the settings file's folder (or the current one).
app_folder = Parser(lambda value, base: _local_path(value, base) or str(base))

_SYSTEM_DIRS = {
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/local/bin",
    "/usr/sbin",
    "/var/lib",
    "/var/log",
    "/var/www",
    "/home/ubuntu",
}


# Trees a deploy root never goes in, whatever the depth: the system's own files and kernel
# interfaces.
_SYSTEM_TREES = (
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/boot",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/share",
    "/usr/include",
    "/var/lib/dpkg",
    "/var/log",
)


def _deploy_root(text: str) -> str:
    root = _absolute_path(text)
    own = "a directory of its own, such as /home/ubuntu/signalcraft (not / or a system directory)"
    parts = root.split("/")[1:]
    if any(part == "." or part.startswith(".") for part in parts):
        raise Invalid(own + ", without '.' or hidden folders such as .ssh")
    if root in _SYSTEM_DIRS or len(parts) < 2 and parts[0] in {"home", "usr", "var", "etc"}:
        raise Invalid(own)
    if any(root == tree or root.startswith(tree + "/") for tree in _SYSTEM_TREES):
        raise Invalid(own)
    return root


def _git_url(text: str) -> str:
    if text.startswith("-") or not re.fullmatch(r"[A-Za-z0-9._~:/@%+=-]+", text):
        raise Invalid(
            "a git URL such as https://github.com/org/app.git or git@github.com:org/app.git"
        )
    return text


def _webhook_url(text: str) -> str:
    # Never shown: a webhook's URL carries its token (Slack's in the path). Printable ASCII only:
    # http.client refuses a control character by quoting the whole path in its error.
    if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s]*)?", text) or not re.fullmatch(
        r"[!-~]+", text
    ):
        raise Invalid("an http:// or https:// URL", found="a value that is not one (not shown)")
    return text


def _git_ref(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", text):
        raise Invalid("a branch, tag or commit name")
    if text.startswith("-") or ".." in text:
        raise Invalid("a branch, tag or commit name not starting with '-' and without '..'")
    return text


def _pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise Invalid(f"a regular expression ({err})") from None
    return text


def _workers(text: str) -> int | None:
    return None if text == "auto" else _whole_number(text, 1, 256)


_ROUTE_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+$")


def _routes(text: str) -> tuple[str, ...]:
    routes: list[str] = []
    for part in text.split(","):
        route = part.strip().strip("/")
        segments = route.split("/") if route else []
        if not segments or not all(
            _ROUTE_SEGMENT_RE.fullmatch(s) and s not in (".", "..") for s in segments
        ):
            raise Invalid(
                "comma-separated path prefixes of letters, digits and . _ ~ - such as"
                " api/ai,api/iot (no spaces, regex or shell characters)",
                found=f"route {part.strip()!r}",
            )
        if route in routes:
            raise Invalid(f"each route once ({route!r} is listed twice)")
        routes.append(route)
    return tuple(routes)


Table = tuple[tuple[str, App], ...]  # ROUTES: (prefix, app) pairs
_TABLE_RULE = (
    "comma-separated PREFIX=APP pairs, APP python or nodejs, PREFIX '/' or a path of letters,"
    " digits and . _ ~ - without a trailing slash, exactly one '/', such as /=python,/chat=nodejs"
)


def _route_table(text: str) -> Table:
    table: list[tuple[str, App]] = []
    for part in text.split(","):
        prefix, sep, app = (x.strip() for x in part.partition("="))
        segments = prefix[1:].split("/")
        if (
            not sep
            or app not in (App.PYTHON, App.NODEJS)
            or not prefix.startswith("/")
            or prefix != "/"
            and not all(_ROUTE_SEGMENT_RE.fullmatch(s) and s not in (".", "..") for s in segments)
        ):
            raise Invalid(_TABLE_RULE, found=f"entry {part.strip()!r}")
        if prefix in (p for p, _ in table):
            raise Invalid(f"each prefix once ({prefix!r} is listed twice)")
        table.append((prefix, App(app)))
    if sum(prefix == "/" for prefix, _ in table) != 1:
        raise Invalid(
            "exactly one '/' entry: the app that serves every path no other prefix does, such as"
            " /=python"
        )
    return tuple(table)


def _mounts(text: str) -> tuple[str, ...]:
    found = tuple(part.strip() for part in text.split(","))
    for prefix in found:
        if (
            not prefix.startswith("/")
            or prefix == "/"
            or not all(
                _ROUTE_SEGMENT_RE.fullmatch(s) and s not in (".", "..")
                for s in prefix[1:].split("/")
            )
        ):
            raise Invalid(
                "comma-separated prefixes of ROUTES other than '/', such as /chat",
                found=f"entry {prefix!r}",
            )
    return found


def _stream_routes(text: str) -> tuple[str, ...]:
    found = tuple(part.strip() for part in text.split(","))
    for prefix in found:
        segments = prefix[1:].split("/")
        if not prefix.startswith("/") or not all(
            _ROUTE_SEGMENT_RE.fullmatch(s) and s not in (".", "..") for s in segments
        ):
            raise Invalid(
                "comma-separated path prefixes other than '/', such as /api/flask/stream",
                found=f"entry {prefix!r}",
            )
    if len(set(found)) != len(found) or len(found) > 100:
        raise Invalid("at most 100 prefixes, each once")
    return found


def _show_table(table: Table) -> str:
    return ",".join(f"{prefix}={app}" for prefix, app in table)


def route_owner(path: str, table: Table) -> str:
    """The app Nginx sends `path` to: the owner of the longest prefix that holds it."""
    return dict(table)[_owning_prefix(path, table)]


def _owning_prefix(path: str, table: Table) -> str:
    """The longest prefix of the table that holds `path` ('/' holds every path)."""
    return max((p for p, _ in table if p == "/" or path == p or path.startswith(p + "/")), key=len)


_GLOB_RE = re.compile(r"^[A-Za-z0-9._@+*?/-]+$")
# Files a release holds of its own: never a shared path.
RESERVED_PATHS = frozenset(
    {
        ".signalcraft",
        "REVISION",
        "gunicorn.conf.py",
        "ecosystem.config.js",
        "ecosystem.config.cjs",
        "node_modules",
        "logs",
        ".git",
    }
)


def _globs(text: str) -> tuple[str, ...]:
    globs = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [
        g for g in globs if not _GLOB_RE.fullmatch(g) or ".." in g.split("/") or g.startswith("/")
    ]
    if not globs or bad:
        raise Invalid(
            "comma-separated globs relative to the app directory such as 'app/**,*.json,templates/'"
            " (letters, digits, . _ - / * ?; no spaces or '..')",
            found=repr(bad[0]) if bad else None,
        )
    return globs


def _shared_paths(text: str) -> tuple[str, ...]:
    paths: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        name = part.rstrip("/")
        if (
            not part
            or not _SAFE_REL_PATH_RE.fullmatch(part)
            or ".." in name.split("/")
            or "//" in part
            or part.startswith("./")
        ):
            raise Invalid(
                "comma-separated paths relative to the app directory such as"
                " instance/,uploads/,.env.local (a trailing / for a folder; no spaces or '..')",
                found=f"path {part!r}",
            )
        if name.split("/")[0] in RESERVED_PATHS:
            raise Invalid(
                "paths other than those a release holds of its own"
                f" ({', '.join(sorted(RESERVED_PATHS))})",
                found=f"path {part!r}",
            )
        if any(
            name == o.rstrip("/")
            or name.startswith(o.rstrip("/") + "/")
            or o.startswith(name + "/")
            for o in paths
        ):
            raise Invalid("each path once, none inside another", found=f"path {part!r}")
        paths.append(part)
    return tuple(paths)


def _process_value(key_name: str, value: str) -> str:
    if key_name == "PROCESS_INSTANCES":
        return str(_whole_number(value, 1, 64))
    if key_name == "PROCESS_STOP_TIMEOUT":
        return str(_whole_number(value, 1, 86400))
    allowed = procfile.STOP_SIGNALS if key_name == "PROCESS_STOP_SIGNAL" else procfile.RUNTIMES
    if value not in allowed:
        raise Invalid(f"name=value pairs, each value one of {', '.join(allowed)}")
    return value


def _process_list(text: str, key_name: str) -> dict[str, str]:
    try:
        return procfile.parse_list(text, lambda value: _process_value(key_name, value))
    except ValueError as err:
        raise Invalid(f"Procfile process names with values: {err}") from None


def _singletons(text: str) -> dict[str, str]:
    try:
        return procfile.parse_names(text)
    except ValueError as err:
        raise Invalid(str(err)) from None


def _show_list(values: dict[str, str]) -> str:
    return ",".join(f"{name}={value}" for name, value in values.items())


_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_USER_RE = re.compile(
    r"^[a-z_][a-z0-9_-]{0,31}$"
)  # Debian's NAME_REGEX, and useradd's 32 characters
_PY_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_WSGI_RE = re.compile(rf"^{_PY_IDENT}(\.{_PY_IDENT})*:{_PY_IDENT}(\.{_PY_IDENT})*(\(\))?$")
_HTTP_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
# Host names of dot-separated labels; nginx takes '*' only as a whole first label ('*.example.com')
# or a whole last one ('example.*'): it refuses '*' and '*example.com' outright, and 'a*b',
# 'www.*.com' or 'a..b' as soon as another site shares the port ("invalid server name or wildcard").
_HOST_LABELS = r"[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9][A-Za-z0-9-]*)*"
_HOST_NAME = rf"(?=[^ ]{{1,253}}( |$))(\*\.{_HOST_LABELS}\.?|{_HOST_LABELS}\.?|{_HOST_LABELS}\.\*)"
_SERVER_NAME_RE = re.compile(rf"^(_|{_HOST_NAME})( {_HOST_NAME})*$")
_WORKER_CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# Gunicorn's own names for its worker classes (gunicorn/workers/__init__.py; eventlet is older
# Gunicorns' only); any other class is named by its dotted path, which only the host's venv can
# check.
GUNICORN_WORKER_NAMES = (
    "sync",
    "gthread",
    "gevent",
    "gevent_wsgi",
    "gevent_pywsgi",
    "eventlet",
    "tornado",
    "asgi",
)
# What root runs is not free text: these settings choose between the ways Nginx is tested and
# reloaded.
_NGINX = r"(/usr/sbin/|/usr/bin/|/usr/local/sbin/|/usr/local/bin/|/usr/local/nginx/sbin/)?nginx"
_NGINX_TEST_RE = rf"{_NGINX}( -q)? -t( -q)?"
_NGINX_RELOAD_RE = (
    rf"{_NGINX} -s reload|(/usr/bin/|/bin/)?systemctl reload nginx(\.service)?|(/usr/sbin/)?service"
    r" nginx reload"
)
_SIZE_RE = re.compile(r"^[0-9]{1,9}[kKmMgG]?$")
_PROGRAM_RE = r"[A-Za-z0-9._/+][A-Za-z0-9._/+-]*"  # never an option: no leading '-'


# --- The declarations: each key once
# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One setting: its name, default (None: unset), parser, the README's meaning, and two flags."""

    name: str
    default: str | None
    parse: Parser[Any]
    help: str
    secret: bool = False  # never printed (the `settings` task masks it)
    local: bool = False  # only matters on the deploying machine: not part of what makes a release

    @property
    def attr(self) -> str:
        """Its attribute on `Settings`."""
        return self.name.lower()


KEY_FIELD = "signalcraft_deploy.key"  # where a field of `Settings` that is a key holds its `Key`


def key(
    default: str | None,
    parse: Parser[T],
    help: str,
    *,
    secret: bool = False,
    local: bool = False,
) -> T:
    """A field of `Settings` that is a key, named after the field in upper case.

    Typed as its parser's value, so mypy checks the field's annotation against the parser. The
    field has no default of its own: `validate` gives every key its value.
    """
    declared = Key("", default, parse, help, secret, local)  # named from the field: see KEYS
    return field(metadata={KEY_FIELD: declared})


# --- Settings: a frozen dataclass with one field per key, plus the names and paths derived from
# them --------------


@dataclass(frozen=True)
class Settings:
    """Validated settings, one field per key (its declaration). Build with `load_settings`; never
    construct by hand outside tests."""

    LOCAL_ONLY: ClassVar[frozenset[str]]  # from the declarations, once they are read (below)

    app_name: str = key(
        "signalcraft",
        regex(_NAME_RE, "lower-case letters, digits and '-', starting with a letter (at most 40)"),
        "name prefix: PM2 apps <APP_NAME>-python and <APP_NAME>-nodejs",
    )
    app_user: str = key(
        None,
        derived(
            regex(
                _USER_RE,
                "a user name: lower-case letters, digits, '_' and '-', starting with a "
                "letter or '_' (at most 32)",
            )
        ),
        "the system account both apps run as (no shell, no password, no sudo; `setup` creates it);"
        " default APP_NAME (its first 32 characters). The deploy user's own name runs the apps as"
        " the deploy user (`status` warns)",
    )
    deploy_root: str = key(
        "/home/ubuntu/signalcraft",
        on_text(_deploy_root),
        "absolute directory on the host holding releases/, current, shared/",
    )
    source: str = key(
        "upload",
        choice("upload", "git"),
        "'upload' ships the local git HEAD of SOURCE_DIR; 'git' makes the host fetch REPO_URL"
        " at REF",
    )
    source_dir: str = key(
        ".",
        app_folder,
        "local directory of the app (a git checkout, or a folder inside one)",
        local=True,
    )
    # A URL may carry a token (https://user:token@host/...).
    repo_url: str | None = key(
        None,
        optional(on_text(_git_url)),
        "repository the host clones when SOURCE=git",
        secret=True,
    )
    ref: str = key(
        "main",
        on_text(_git_ref),
        "branch, tag or commit the host checks out when SOURCE=git",
    )
    python: str = key(
        "python3",
        regex(_PROGRAM_RE, "a command or absolute path such as python3"),
        "Python on the host that creates the app's virtual environment",
    )
    gunicorn_bind: Address = key(
        "127.0.0.1:8001",
        address,
        "loopback address Gunicorn listens on (Nginx proxies the Python routes to it)",
    )
    gunicorn_handover_bind: Address = key(
        None,
        derived(address),
        "second loopback address used while a new Gunicorn master takes over (default: port + 1)",
    )
    gunicorn_workers: int | None = key(
        "auto",
        on_text(_workers, lambda value: "auto" if value is None else str(value)),
        "worker count, or 'auto' for 2 * CPUs + 1 on the host",
    )
    gunicorn_worker_class: str = key(
        "sync",
        on_text(_worker_class),
        "Gunicorn worker class (sync, gthread, gevent, eventlet, ...)",
    )
    gunicorn_timeout: int = key(
        "120",
        integer(1, 86400),
        "seconds before a silent worker is killed and restarted",
    )
    gunicorn_graceful_timeout: int = key(
        "30",
        integer(1, 3600),
        "seconds a request in flight at a reload may take to finish: the health gate waits this"
        " long for old workers that only finish theirs, a new master's handover waits this long"
        " before PM2 stops the old master (SIGINT: a request still running then is cut, its client"
        " gets a 500); after a HUP Gunicorn itself ends an old worker GUNICORN_TIMEOUT seconds"
        " after its request began (a 500 too). PM2 waits this + 5 before it kills Gunicorn",
    )
    gunicorn_max_requests: int = key(
        "1000",
        integer(0, 10_000_000),
        "a worker is replaced after this many requests (bounds its memory); 0 turns it off",
    )
    gunicorn_max_requests_jitter: int = key(
        "100",
        integer(0, 10_000_000),
        "random spread added to GUNICORN_MAX_REQUESTS so workers do not all restart at once",
    )
    legacy_match: str = key(
        r"^(\S*/)?(python[0-9.]*|gunicorn|flask)\b",
        on_text(_pattern),
        "regex: an unmanaged server on GUNICORN_BIND whose command matches is taken over by the"
        " first deploy, if it is the deploy user's own and runs from the app's folder (one holding"
        " WSGI_APP's module); the default matches a command that starts with python, gunicorn or"
        " flask",
    )
    allow_public_bind: bool = key(
        "false",
        boolean,
        "allow GUNICORN_BIND on a non-loopback address (Nginx should be the only way in)",
    )
    wsgi_app: str = key(
        "app:create_app()",
        regex(_WSGI_RE, "module:attribute or module:factory(), for example app:create_app()"),
        "the WSGI app: module:attribute or module:factory()",
    )
    node_script: str | None = key(
        None,
        unset_or(relative_path),
        "the Node.js entry point, relative to the app directory (default: package.json's main, or"
        " its start script 'node <file>', else server.js)",
    )
    node_port: int = key("3000", port, "port the Node.js server listens on (passed as PORT)")
    node_handover_port: int = key(
        None,
        derived(port),
        "second port for Node.js while its processes are replaced (default: NODE_PORT + 1)",
    )
    node_instances: int = key(
        "2",
        integer(1, 64),
        "Node.js processes in PM2 cluster mode; 1 by default for a session-bound app"
        " (NODE_SESSION_BOUND), which refuses more",
    )
    node_session_bound: str = key(
        "auto",
        choice("auto", "yes", "no"),
        "whether every request of a client's session must reach one Node.js process (socket.io's"
        " polling transport, per-process broadcasts): then NODE_INSTANCES defaults to 1 and more is"
        " refused. auto: yes when package.json depends on socket.io; no: the app shares sessions"
        " across processes itself (WebSocket-only clients and a Redis adapter)",
    )
    node_reload: str = key(
        "handover",
        choice("handover", "reload"),
        "how a change of the Node.js code, dependencies or environment reaches it: handover (new"
        " processes beside the old ones, Nginx moves, then the old ones stop: no request refused,"
        " whatever the app does on SIGINT; WebSocket clients reconnect to the new code) or reload"
        " (`pm2 reload`, rolling through the instances: faster, but each old process gets"
        " connections while it closes, which only an app that drains on SIGINT survives)",
    )
    node_listen_timeout: int = key(
        "30",
        integer(1, 3600),
        "seconds PM2 waits for a new Node.js process to listen (or send 'ready' with"
        " NODE_WAIT_READY) before it stops the old one anyway (PM2's listen_timeout)",
    )
    node_wait_ready: bool = key(
        "false",
        boolean,
        "the app calls process.send('ready') once it can serve: PM2 waits for that, not for the"
        " port to listen (PM2's wait_ready; init sets it when the source sends 'ready')",
    )
    node_kill_timeout: int = key(
        "15",
        integer(1, 3600),
        "seconds a stopped Node.js process has to finish its requests and close its WebSockets"
        " (close frames) after SIGINT, then PM2 kills it (PM2's kill_timeout)",
    )
    node_ws_drain_seconds: int = key(
        "5",
        integer(0, 3600),
        "at a Node.js handover, seconds the old processes keep their open connections"
        " (WebSockets, streams) once Nginx sends new ones elsewhere, before they get SIGINT; an"
        " old process is gone at most this + NODE_KILL_TIMEOUT after the switch",
    )
    node_env: str = key(
        "production",
        regex(r"[A-Za-z0-9_.-]+", "a word such as production"),
        "NODE_ENV given to the Node.js app",
    )
    py_routes: tuple[str, ...] = key(
        "api/ai,api/iot,api/lightweight-analyze,api/flask",
        on_text(_routes, ",".join),
        "path prefixes (comma-separated) Nginx sends to Gunicorn, Node.js serving the rest (ROUTES"
        " says both ways)",
    )
    routes: Table | None = key(
        None,
        unset_or(on_text(_route_table, _show_table)),
        "the route table, PREFIX=APP pairs (comma-separated), APP python or nodejs, exactly one"
        " '/': the longest prefix that holds a path owns it, e.g. /=python,/chat=nodejs. Each app"
        " gets the path as the client sent it (its routes carry their prefixes) unless MOUNTS names"
        " the prefix. Unset: from PY_ROUTES",
    )
    mounts: tuple[str, ...] | None = key(
        None,
        unset_or(on_text(_mounts, ",".join)),
        "prefixes of ROUTES (comma-separated) whose app is written for '/' and mounted there:"
        " Node.js gets the path without the prefix, Python gets SCRIPT_NAME (Gunicorn takes the"
        " prefix off; url_for and redirects add it), both X-Forwarded-Prefix. Python may be mounted"
        " under its one prefix only",
    )
    nginx_site: str = key(
        None,
        derived(absolute_path),
        "the Nginx site file this tool owns: in sites-available/ (linked from sites-enabled) or"
        " conf.d/ (*.conf); default /etc/nginx/sites-available/<APP_NAME>",
    )
    nginx_listen: tuple[Listen, ...] = key(
        "80",
        listens,
        "where Nginx listens for the site: a port, ADDRESS:PORT, [IPv6]:PORT or a comma-separated"
        " list (at a takeover, default: the old site's own listen lines)",
    )
    server_name: str = key(
        "_",
        regex(_SERVER_NAME_RE, "'_' or host names separated by single spaces"),
        "Nginx server_name; '_' makes the site the default server on NGINX_LISTEN",
    )
    tls_cert: str | None = key(
        None,
        optional(absolute_path),
        "certificate chain on the host, e.g. certbot's /etc/letsencrypt/live/<name>/fullchain.pem"
        " (with TLS_KEY: HTTPS on)",
    )
    tls_key: str | None = key(
        None,
        optional(absolute_path),
        "private key of TLS_CERT on the host, e.g. /etc/letsencrypt/live/<name>/privkey.pem",
    )
    tls_listen: tuple[Listen, ...] = key(
        "443",
        listens,
        "where Nginx listens for HTTPS: a port, ADDRESS:PORT, [IPv6]:PORT or a comma-separated"
        " list",
    )
    tls_redirect: bool = key(
        "true", boolean, "with TLS on, answer plain HTTP with a redirect to HTTPS"
    )
    client_max_body_size: str | None = key(
        None,
        optional(regex(_SIZE_RE, "a size such as 10m or 512k")),
        "largest request body Nginx accepts, e.g. 10m (unset: Nginx's own 1m)",
    )
    node_timeout: int = key(
        "120",
        integer(1, 86400),
        "seconds the Node.js app may take to answer, or a stream or WebSocket may stay silent"
        " (send a ping more often): Nginx waits 5 s longer on Node.js routes, as it waits"
        " GUNICORN_TIMEOUT + 5 s on Python routes",
    )
    stream_routes: tuple[str, ...] | None = key(
        None,
        unset_or(on_text(_stream_routes, ",".join)),
        "path prefixes (comma-separated, such as /api/flask/stream,/live/events) whose answers Nginx"
        " passes on as they come (proxy_buffering off), for an app that cannot send"
        " `X-Accel-Buffering: no` itself",
    )
    nginx_drain_seconds: int = key(
        "300",
        integer(0, 86400),
        "`setup`: after a reload, old Nginx workers close the connections they still hold"
        " (WebSockets, streams, long requests) after this many seconds (worker_shutdown_timeout);"
        " 0: they wait for each to end",
    )
    nginx_test_cmd: str = key(
        "nginx -t",
        regex(
            _NGINX_TEST_RE,
            "a plain command that tests Nginx: 'nginx -t', optionally with nginx's absolute path"
            " and -q",
        ),
        "command that validates Nginx's configuration (run as root by the tool's root helper,"
        " without a shell)",
    )
    nginx_reload_cmd: str = key(
        "nginx -s reload",
        regex(
            _NGINX_RELOAD_RE,
            "a plain command that reloads Nginx: 'nginx -s reload' (optionally with its path), "
            "'systemctl reload nginx' or 'service nginx reload'",
        ),
        "command that reloads Nginx gracefully (run as root by the tool's root helper; e.g."
        " 'systemctl reload nginx')",
    )
    health_py: str = key(
        "/api/flask/health",
        regex(_HTTP_PATH_RE, "a URL path such as /api/flask/health"),
        "path of the Flask app's health route",
    )
    health_node: str = key(
        "/",
        regex(_HTTP_PATH_RE, "a URL path such as /"),
        "path of the Node.js app's health route",
    )
    health_timeout: int = key(
        "30",
        integer(1, 3600),
        "seconds the health gate waits for both apps after a switch",
        local=True,
    )
    keep_releases: int = key(
        "5",
        integer(2, 100),
        "releases kept on the host (the current and previous are never pruned)",
        local=True,
    )
    pm2: str = key(
        "pm2",
        regex(_PROGRAM_RE, "a command or absolute path such as pm2"),
        "the pm2 command on the host",
    )
    before_switch: str | None = key(
        None,
        optional(on_text(str)),
        "shell command run once on the host in the new release before it serves (e.g. a migration);"
        " a failure stops the deploy",
        local=True,
    )
    after_switch: str | None = key(
        None,
        optional(on_text(str)),
        "shell command run on the host in the new release once the health gate has passed (cache"
        " warm-up, notifications)",
        local=True,
    )
    after_switch_failure: str = key(
        "warn",
        choice("warn", "rollback"),
        "what a failing AFTER_SWITCH does: 'warn' (the deploy stands) or 'rollback'",
        local=True,
    )
    on_failure: str | None = key(
        None,
        optional(on_text(str)),
        "shell command run on the host after a failed deploy has been undone (best effort)",
        local=True,
    )
    wheels: str = key(
        "index",
        choice("index", "local"),
        "'index': the host installs from the package index; 'local': this machine downloads or"
        " builds the wheels (and the npm packages) for the host's Python and ships them, for hosts"
        " without egress",
        local=True,
    )
    hook_timeout: int = key(
        "300",
        integer(1, 86400),
        "seconds a hook may run before it is stopped (and counts as failed)",
        local=True,
    )
    min_free_mb: int = key(
        "500",
        integer(0, 10_000_000),
        "a deploy refuses to start when the deploy root's filesystem has less free space (MB); 0"
        " turns the check off",
        local=True,
    )
    log_rotate_size: str = key(
        "100M",
        regex(r"[1-9][0-9]{0,6}[kMG]?", "a size such as 100M, 500k or 1G"),
        "`setup`: a PM2 log (each app's, and pm2.log) is rotated once it is larger than this",
        local=True,
    )
    log_rotate_count: int = key(
        "10",
        integer(1, 1000),
        "`setup`: compressed rotated files kept per log",
        local=True,
    )
    app_env_file: str | None = key(
        None,
        local_path,
        "local file with the app's own configuration and secrets (dotenv lines), written into each"
        " new release as .env and given to every process the tool starts for the app in its"
        " environment (os.environ, process.env; a variable the process already has wins), read"
        " from the release's .signalcraft/env.json (0640, never through PM2); unset: the live"
        " release's are carried over",
        local=True,
    )
    py_files: tuple[str, ...] | None = key(
        None,
        optional(on_text(_globs, ",".join)),
        "globs (comma-separated) of the files the Python app reads; a change to others leaves"
        " Gunicorn alone (default: every file but Node.js's own: package.json, the lock file,"
        " node_modules/, and *.js, *.mjs, *.cjs, *.ts outside static/ and templates/ folders, which"
        " PY_FILES may name; the tool's own files, such as deploy.env, reach neither app)",
    )
    node_files: tuple[str, ...] | None = key(
        None,
        optional(on_text(_globs, ",".join)),
        "globs (comma-separated) of the files the Node.js app reads; a change to others leaves it"
        " alone (default: every file but Python's own: *.py, requirements.txt; the tool's own"
        " files, such as deploy.env, reach neither app)",
    )
    shared_paths: tuple[str, ...] | None = key(
        None,
        optional(on_text(_shared_paths, ",".join)),
        "paths (comma-separated, a trailing / for a folder) kept across releases in shared/ and"
        " linked into each, such as instance/,uploads/,.env.local",
    )
    process_instances: dict[str, str] | None = key(
        None,
        optional(on_text(lambda text: _process_list(text, "PROCESS_INSTANCES"), _show_list)),
        "Procfile processes' instance counts, as name=count pairs such as worker=2 (default 1 each)",
    )
    process_stop_timeout: dict[str, str] | None = key(
        None,
        optional(on_text(lambda text: _process_list(text, "PROCESS_STOP_TIMEOUT"), _show_list)),
        "seconds a Procfile process may take to finish its job after the stop signal, as"
        " name=seconds pairs such as worker=120 (default 30 each)",
    )
    process_stop_signal: dict[str, str] | None = key(
        None,
        optional(on_text(lambda text: _process_list(text, "PROCESS_STOP_SIGNAL"), _show_list)),
        "the signal that asks a Procfile process to stop (SIGTERM, SIGINT or SIGQUIT), as"
        " name=signal pairs (default SIGTERM: Celery's and RQ's warm shutdown)",
    )
    singletons: dict[str, str] | None = key(
        None,
        optional(on_text(_singletons, lambda names: ",".join(names) or "none")),
        "Procfile processes that must never run twice at once, comma-separated, or none; each is"
        " stopped before its new one starts, and on a fleet runs on the first host only (default:"
        " those named beat, clock or scheduler)",
    )
    run_singletons: str = key(
        "auto",
        choice("auto", "yes", "no"),
        "whether this host runs the SINGLETONS: auto (a fleet deploy: the first host in -H; a deploy"
        " or rollback of one host: as its last deploy recorded, so deploying one host of a fleet"
        " never starts a second scheduler), yes (a fleet cut down to this host), or no (they run"
        " elsewhere)",
    )
    process_app: dict[str, str] | None = key(
        None,
        optional(on_text(lambda text: _process_list(text, "PROCESS_APP"), _show_list)),
        "which runtime a Procfile process uses, as name=python or name=nodejs pairs: the venv's bin"
        " or node_modules/.bin first on its PATH, and which changes reach it (default: nodejs for"
        " node, npm, npx, yarn, pnpm or a .js script, else python)",
    )
    local_venv: str | None = key(
        None,
        local_path,
        "the app's local virtual environment for 'freeze' (default: $VIRTUAL_ENV unless it is the"
        " tool's own, else SOURCE_DIR/.venv)",
        local=True,
    )
    known_hosts: str | None = key(
        None,
        local_path,
        "extra known_hosts file used to verify host keys (besides ~/.ssh/known_hosts)",
        local=True,
    )
    templates_dir: str | None = key(
        None,
        local_path,
        "directory whose templates win over the bundled ones",
        local=True,
    )
    notify_url: str | None = key(
        None,
        optional(on_text(_webhook_url)),
        "webhook told when a deploy starts, succeeds, fails or is rolled back, and when `rollback`"
        " runs (POST from this machine; best set in the environment, e.g. a CI secret)",
        secret=True,
        local=True,
    )
    notify_format: str = key(
        "slack",
        choice("slack", "json"),
        "the webhook's body: 'slack' ({\"text\": ...}, which Slack and Mattermost take) or 'json'"
        " (the fields as an object)",
        local=True,
    )
    notify_timeout: int = key(
        "5",
        integer(1, 60),
        "seconds a deploy waits at most for the webhook at its end; a webhook that fails or hangs"
        " only prints a warning",
        local=True,
    )
    maintenance_retry_after: int = key(
        "600",
        integer(1, 7 * 86400),
        "`maintenance on`: the seconds its 503 answers ask clients to wait (Retry-After), unless"
        " --retry-after says",
        local=True,
    )
    maintenance_page: str = key(
        "maintenance.html",
        relative_path,
        "`maintenance on`: the app's own page (in SOURCE_DIR), served in place of the tool's when"
        " the file is there; {{ message }} and {{ retry_after }} in it are filled in",
        local=True,
    )
    maintenance_open_routes: tuple[str, ...] | None = key(
        None,
        unset_or(on_text(_stream_routes, ",".join)),
        "`maintenance on`: path prefixes (comma-separated, such as /api/status,/webhooks) that stay"
        " open besides HEALTH_PY and HEALTH_NODE",
        local=True,
    )

    # Not keys (no declaration): what `load_settings` and the shipment add.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # The settings file read, if any: the tool's own, so a change to it reloads no app
    # (core/source.py tool_files).
    settings_file: str | None = field(default=None, compare=False, repr=False)
    # The environment chosen (--environment, SIGNALCRAFT_ENV) and its own file, read over the
    # settings file: a tool's file too.
    environment: str | None = field(default=None, compare=False, repr=False)
    environment_file: str | None = field(default=None, compare=False, repr=False)
    # The release's fabfile.py/tasks.py that are the tool's collection (they import
    # signalcraft_deploy): set from the shipment (steps/upload.py), so an app's own tasks.py
    # (Celery's, say) still reaches its app.
    tool_collection: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # The release's Procfile processes with the PROCESS_* settings applied (core/procfile.py): set
    # from the shipment, or from a release's manifest for a rollback.
    processes: tuple[procfile.Process, ...] = field(default=(), compare=False, repr=False)
    procfile_notes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # This host runs the singletons (SINGLETONS): on a fleet, the first host only.
    singleton_host: bool = field(default=True, compare=False, repr=False)

    def process_lists(self) -> procfile.Lists:
        """The PROCESS_* settings that are set, by key (core/procfile.py `processes`)."""
        keys = ("PROCESS_INSTANCES", "PROCESS_STOP_TIMEOUT", "PROCESS_STOP_SIGNAL", "PROCESS_APP")
        lists = {k: getattr(self, k.lower()) for k in (*keys, "SINGLETONS")}
        return {k: v for k, v in lists.items() if v is not None}

    def process_name(self, name: str) -> str:
        """A Procfile process's PM2 name."""
        return f"{self.app_name}-{name}"

    @property
    def python_app(self) -> str:
        return f"{self.app_name}-python"

    @property
    def node_app(self) -> str:
        return f"{self.app_name}-nodejs"

    @property
    def handover_app(self) -> str:
        return f"{self.app_name}-python-handover"

    @property
    def node_handover_app(self) -> str:
        return f"{self.app_name}-nodejs-handover"

    @property
    def releases_dir(self) -> str:
        return f"{self.deploy_root}/releases"

    @property
    def current_dir(self) -> str:
        return f"{self.deploy_root}/current"

    @property
    def shared_dir(self) -> str:
        return f"{self.deploy_root}/shared"

    @property
    def venvs_dir(self) -> str:
        return f"{self.deploy_root}/venvs"

    @property
    def node_modules_dir(self) -> str:
        return f"{self.deploy_root}/node_modules"

    @property
    def state_dir(self) -> str:
        return f"{self.deploy_root}/.deploy"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def nginx_port(self) -> int:
        """The port of the site's first plain-HTTP listener (its health checks go there)."""
        return self.nginx_listen[0].port

    @property
    def nginx_url(self) -> str:
        """Where this host reaches the site through Nginx: HTTPS when TLS is on, else plain HTTP."""
        return (
            f"https://{self.tls_listen[0].local}"
            if self.tls
            else f"http://{self.nginx_listen[0].local}"
        )

    @property
    def route_table(self) -> Table:
        """ROUTES, or the table PY_ROUTES implies (each route Python's, Node.js on '/')."""
        return (
            self.routes
            if self.routes is not None
            else tuple((f"/{r}", App.PYTHON) for r in self.py_routes) + (("/", App.NODEJS),)
        )

    @property
    def site_table(self) -> list[list[str]]:
        """ROUTES as the site description holds it: [PREFIX, APP], or [PREFIX, APP, "mount"] for a
        MOUNTS prefix."""
        return [
            [prefix, app, *(["mount"] if prefix in (self.mounts or ()) else [])]
            for prefix, app in self.routes or ()
        ]

    @property
    def python_mount(self) -> str | None:
        """The prefix Gunicorn mounts the app under (SCRIPT_NAME): Python's prefix named in MOUNTS,
        if any."""
        return nginx_site.python_mount(self.site_table)

    def app_path(self, app: str, path: str) -> str:
        """The path an app itself is asked for when Nginx is asked for `path`: without a mounted
        prefix for Node.js (Nginx strips it); Python's as it is (Gunicorn moves a mount's prefix to
        SCRIPT_NAME itself).
        """
        prefix = _owning_prefix(path, self.route_table)
        if app != App.NODEJS or prefix not in (self.mounts or ()):
            return path
        return "/" + path[len(prefix) :].removeprefix("/")

    @property
    def nginx_extras(self) -> str:
        """The file beside the site holding the location blocks kept from a site taken over."""
        return nginx_site.extras_path(self.nginx_site)

    @property
    def nginx_enabled_link(self) -> str:
        site = PurePosixPath(self.nginx_site)
        if site.parent.name == "sites-available":
            return str(site.parent.parent / "sites-enabled" / site.name)
        return ""  # a site in conf.d (or elsewhere included) needs no link

    def public(self) -> dict[str, Any]:
        """Every setting as plain data (KEY: value), as the release key digests it."""
        out: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key.attr)
            if isinstance(value, Address):
                value = str(value)
            elif isinstance(value, tuple) and value and isinstance(value[0], Listen):
                value = [str(x) for x in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[key.name] = value
        return out


# Each key in the order of its field; its name is the field's, in upper case.
KEYS: tuple[Key, ...] = tuple(
    replace(f.metadata[KEY_FIELD], name=f.name.upper())
    for f in fields(Settings)
    if KEY_FIELD in f.metadata
)
KEY_NAMES = tuple(k.name for k in KEYS)
_KEY_DEFAULTS = {k.name: k.default for k in KEYS}
# Settings that only matter on the deploying machine: the same commit from another checkout is the
# same release.
LOCAL_ONLY = frozenset(k.name for k in KEYS if k.local)
Settings.LOCAL_ONLY = LOCAL_ONLY


# --- Reading the layers: .env, environment, flags
# ---------------------------------------------------------------


def _line_of(path: Path, key: str) -> int | None:
    # The last assignment: dotenv keeps the last value of a key written twice.
    pattern = re.compile(rf"^\s*(export\s+)?{re.escape(key)}\s*=")
    found = None
    try:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.match(line):
                found = number
    except OSError:
        return None
    return found


def require_utf8(path: Path, what: str) -> str:
    """The file's text; a file that is not UTF-8 is a clear error, not a traceback."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SettingsError(
            f"{what} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
            "save it as UTF-8."
        ) from None


def read_env_file(
    path: str | os.PathLike[str], *, required: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Read a .env file: its values and, per key, where each came from ('file:line')."""
    env_path = Path(path)
    if not env_path.exists():
        if required:
            raise SettingsError(
                f"{env_path}: the settings file was named but does not exist. "
                "Create it, or drop --env-file / ENV_FILE to use the defaults."
            )
        return {}, {}
    if not env_path.is_file() or not os.access(env_path, os.R_OK):
        raise SettingsError(
            f"{env_path}: the settings file cannot be read (not a readable file). "
            "Check its permissions."
        )
    from dotenv import dotenv_values  # here: most runs have no .env to read

    require_utf8(env_path, f"{env_path}: the settings file")
    raw = dotenv_values(env_path)
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for key, value in raw.items():
        line = _line_of(env_path, key)
        where = f"{env_path}:{line}" if line else str(env_path)
        if key not in KEY_NAMES:
            hint = difflib.get_close_matches(key, KEY_NAMES, n=1)
            suggestion = (
                f" Did you mean {hint[0]}?" if hint else f" Known keys: {', '.join(KEY_NAMES)}."
            )
            raise SettingsError(f"{key} ({where}): unknown setting.{suggestion}")
        values[key] = "" if value is None else value
        origins[key] = where
    return values, origins


def parse_overrides(pairs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Parse `--set KEY=VALUE` flags."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(
                f"--set {pair!r}: expected KEY=VALUE, for example --set NODE_PORT=3100."
            )
        if key not in KEY_NAMES:
            hint = difflib.get_close_matches(key, KEY_NAMES, n=1)
            suggestion = f" Did you mean {hint[0]}?" if hint else ""
            raise SettingsError(f"{key} (flag --set): unknown setting.{suggestion}")
        out[key] = value
    return out


# Which environment's settings file is read over the shared one (besides --environment).
ENVIRONMENT_VAR = "SIGNALCRAFT_ENV"
ENVIRONMENT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def environment_file(settings_file: Path, name: str) -> Path:
    """An environment's own settings file, beside the shared one: X.NAME.env over X.env
    (deploy.staging.env over deploy.env), .env.NAME over any other name (.env.staging over .env)."""
    if settings_file.name.endswith(".env") and settings_file.name != ".env":
        return settings_file.with_name(f"{settings_file.name[:-4]}.{name}.env")
    return settings_file.with_name(f"{settings_file.name}.{name}")


def environments_beside(settings_file: Path) -> list[str]:
    """The names of the environments whose files lie beside the settings file."""
    pattern = environment_file(settings_file, "*").name
    found = settings_file.parent.glob(pattern) if settings_file.parent.is_dir() else []
    prefix, suffix = pattern.split("*")
    names = [p.name[len(prefix) : len(p.name) - len(suffix)] for p in found]
    return sorted(n for n in names if ENVIRONMENT_NAME.fullmatch(n))


def read_environment(
    settings_file: Path, name: str, where: str
) -> tuple[Path, dict[str, str], dict[str, str]]:
    """The environment's file (which must exist), its values and their origins."""
    if not ENVIRONMENT_NAME.fullmatch(name):
        raise SettingsError(
            f"environment ({where}): found {name!r}; expected lower-case letters, digits, '-' and"
            " '_', starting with a letter (at most 40), such as staging or production."
        )
    path = environment_file(settings_file, name)
    if not path.is_file():
        known = ", ".join(environments_beside(settings_file)) or "none"
        raise SettingsError(
            f"environment {name!r} ({where}): {path} does not exist (environments beside"
            f" {settings_file.name}: {known}). Create {path.name}, or name an environment that"
            " exists."
        )
    values, origins = read_env_file(path, required=True)
    return path, values, origins


def load_settings(
    env_file: str | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    environment: str | None = None,
) -> Settings:
    """Merge defaults < .env < the environment's file < environment variables < flags, then
    validate. Pure but for reading the files."""
    environ = os.environ if environ is None else environ
    base = Path(cwd or os.getcwd())
    named = env_file or environ.get("ENV_FILE")
    env_path = Path(named) if named else base / ".env"
    if not env_path.is_absolute():
        env_path = base / env_path
    file_values, file_origins = read_env_file(env_path, required=bool(named))
    # A flag given empty (`--environment "$ENV"`, ENV unset) is refused by its name, never read as
    # no environment: the shared settings alone would deploy where another environment was meant.
    chosen = environment if environment is not None else environ.get(ENVIRONMENT_VAR) or None
    over = None
    if chosen is not None:
        where = "flag --environment" if environment is not None else ENVIRONMENT_VAR
        over, over_values, over_origins = read_environment(env_path, chosen, where)
        file_values.update(over_values)
        file_origins.update(over_origins)

    raw: dict[str, str | None] = {k.name: k.default for k in KEYS}
    origins: dict[str, str] = {k.name: "default" for k in KEYS}
    raw.update(file_values)
    origins.update(file_origins)
    for key in KEY_NAMES:
        if key in environ:
            raw[key] = environ[key]
            origins[key] = "environment"
    for key, value in (overrides or {}).items():
        raw[key] = value
        origins[key] = "flag --set"
    # Relative local paths are relative to the settings file's folder (or the cwd).
    local_base = env_path.parent if file_values else base
    s = validate(raw, origins, local_base)
    s = replace(s, environment=chosen, environment_file=str(over.resolve()) if over else None)
    return replace(s, settings_file=str(env_path.resolve())) if env_path.is_file() else s


# --- Validation: each key by its parser, then the rules that involve several keys
# -----------------------------


def _error(
    key: str,
    raw: Mapping[str, str | None],
    origins: Mapping[str, str],
    expected: str,
    found: str | None = None,
) -> SettingsError:
    shown = repr(raw.get(key)) if found is None else found
    return SettingsError(
        f"{key} ({origins.get(key, 'default')}): found {shown}; expected {expected}."
    )


def _parse(
    key: Key, raw: Mapping[str, str | None], origins: Mapping[str, str], local_base: Path
) -> Any:
    try:
        return key.parse(raw.get(key.name), local_base)
    except Invalid as bad:
        raise _error(key.name, raw, origins, bad.expected, bad.found) from None


def validate(
    raw: Mapping[str, str | None], origins: Mapping[str, str], local_base: Path
) -> Settings:
    """Check every value and build `Settings`; raise `SettingsError` on the first bad one."""
    values = {key.name: _parse(key, raw, origins, local_base) for key in KEYS}
    _check_together(values, raw, origins)
    return Settings(**{key.attr: values[key.name] for key in KEYS}, origins=dict(origins))


# A handover key left unset sits next to its app's key.
_HANDOVER_OF = {"GUNICORN_HANDOVER_BIND": "GUNICORN_BIND", "NODE_HANDOVER_PORT": "NODE_PORT"}
_PORT_KEYS = (
    "GUNICORN_BIND",
    "GUNICORN_HANDOVER_BIND",
    "NODE_PORT",
    "NODE_HANDOVER_PORT",
    "NGINX_LISTEN",
)


def _next_port(number: int) -> int:
    return number + 1 if number < 65535 else number - 1


def _python_route(path: str, routes: tuple[str, ...]) -> bool:
    """Whether Nginx sends `path` to Gunicorn."""
    return any(path == "/" + r or path.startswith("/" + r + "/") for r in routes)


_Fail = Callable[[str, str], SettingsError]  # makes the error naming a key and what it expects


def _check_together(
    v: dict[str, Any], raw: Mapping[str, str | None], origins: Mapping[str, str]
) -> None:
    """The rules that involve several keys, on the parsed values `v`; fills in the handover
    defaults."""

    def fail(key: str, expected: str) -> SettingsError:
        return _error(key, raw, origins, expected)

    _check_account_and_source(v, origins, fail)
    _check_binds(v, fail)
    _check_site_names(v, fail)
    _check_tls(v, fail)
    _check_templates(v, fail)
    _check_routes(v, raw, origins, fail)
    _check_shared_paths(v, fail)
    _check_ports_apart(v, raw, origins)


def _check_account_and_source(v: dict[str, Any], origins: Mapping[str, str], fail: _Fail) -> None:
    """APP_USER (defaulted from APP_NAME) is not root; SOURCE=git has a REPO_URL."""
    if v["APP_USER"] is None:
        v["APP_USER"] = v["APP_NAME"][:32]  # a user name holds 32 characters, APP_NAME 40
    if v["APP_USER"] == "root":
        raise fail(
            "APP_USER",
            "an unprivileged account, not root (the apps would run with every right on the host)",
        )
    if v["SOURCE"] == "git" and not v["REPO_URL"]:
        raise SettingsError(
            f"REPO_URL ({origins.get('REPO_URL', 'default')}): SOURCE=git needs a repository URL to"
            " fetch."
        )


def _check_binds(v: dict[str, Any], fail: _Fail) -> None:
    """Fills in the handover addresses (the next port) and keeps Gunicorn's on loopback unless
    ALLOW_PUBLIC_BIND says otherwise."""
    bind = v["GUNICORN_BIND"]
    if v["GUNICORN_HANDOVER_BIND"] is None:
        v["GUNICORN_HANDOVER_BIND"] = Address(bind.host, _next_port(bind.port))
    if v["NODE_HANDOVER_PORT"] is None:
        v["NODE_HANDOVER_PORT"] = _next_port(v["NODE_PORT"])
    if not bind.is_loopback and not v["ALLOW_PUBLIC_BIND"]:
        raise fail(
            "GUNICORN_BIND",
            "a loopback address such as 127.0.0.1:8001 (Nginx is the only way in; "
            "set ALLOW_PUBLIC_BIND=true to allow another address)",
        )
    if not v["GUNICORN_HANDOVER_BIND"].is_loopback and not v["ALLOW_PUBLIC_BIND"]:
        raise fail("GUNICORN_HANDOVER_BIND", "a loopback address")


def _check_site_names(v: dict[str, Any], fail: _Fail) -> None:
    """SERVER_NAME is a name a site may serve; NGINX_SITE (defaulted per app) passes _check_site."""
    if nginx_site.server_name_problem(v["SERVER_NAME"]) and v["SERVER_NAME"]:
        raise fail(
            "SERVER_NAME",
            "host names a site may serve: a wildcard needs a domain under a top-level one "
            "(*.example.com, not *.com)",
        )
    if v["NGINX_SITE"] is None:
        v["NGINX_SITE"] = (
            f"/etc/nginx/sites-available/{v['APP_NAME']}"  # two apps on a host: two sites
        )
    _check_site(v, fail)


def _check_tls(v: dict[str, Any], fail: _Fail) -> None:
    """TLS_CERT and TLS_KEY come as a pair, each a plain path under root's TLS folders."""
    if bool(v["TLS_CERT"]) != bool(v["TLS_KEY"]):
        raise fail(
            "TLS_KEY" if v["TLS_CERT"] else "TLS_CERT",
            "both TLS_CERT and TLS_KEY, or neither (HTTPS needs the pair)",
        )
    for key in ("TLS_CERT", "TLS_KEY"):
        try:
            if v[key]:
                nginx_site.tls_file(v[key], key)
        except nginx_site.BadSite:
            raise fail(
                key,
                f"a normalised path of plain characters under {', '.join(nginx_site.TLS_FOLDERS)}"
                " (root's folders: Nginx's master reads it as root, so the deploy user may not"
                " choose a file of its own)",
            ) from None


def _check_templates(v: dict[str, Any], fail: _Fail) -> None:
    """TEMPLATES_DIR holds no Nginx site template: root renders the site from its own shape."""
    templates = v["TEMPLATES_DIR"]
    if templates and Path(templates, nginx_site.SITE_TEMPLATE).exists():
        raise fail(
            "TEMPLATES_DIR",
            f"a folder without {nginx_site.SITE_TEMPLATE}: root renders the Nginx site from the"
            " tool's own shape (remote/nginx_site.py), which the settings fill in (listen"
            " addresses, names, routes, TLS, body size); move that file away",
        )


def _check_shared_paths(v: dict[str, Any], fail: _Fail) -> None:
    """SHARED_PATHS leaves .env alone when APP_ENV_FILE makes each release's."""
    if v["APP_ENV_FILE"] and ".env" in {p.rstrip("/") for p in v["SHARED_PATHS"] or ()}:
        raise fail(
            "SHARED_PATHS",
            "paths other than .env while APP_ENV_FILE is set (each release gets its own .env"
            " from it)",
        )


def _check_ports_apart(
    v: dict[str, Any], raw: Mapping[str, str | None], origins: Mapping[str, str]
) -> None:
    """Gunicorn, the handover addresses, Node.js and Nginx each listen on a port of their own."""
    seen: dict[int, str] = {}
    for key, number in _ports(v):
        if number in seen:
            raise SettingsError(
                f"{key} ({_where(key, raw, origins)}): port {number} is also used by {seen[number]}"
                f" ({_where(seen[number], raw, origins)}); expected a port of its own for each of"
                " Gunicorn, the handover addresses, Node.js and Nginx."
            )
        seen[number] = key


def _check_routes(
    v: dict[str, Any],
    raw: Mapping[str, str | None],
    origins: Mapping[str, str],
    fail: Callable[[str, str], SettingsError],
) -> None:
    """One route table: ROUTES or PY_ROUTES, never both; each health path owned by its own app."""
    table = v["ROUTES"]
    if table is None and v["MOUNTS"]:
        raise fail(
            "MOUNTS",
            "prefixes of ROUTES, which is unset (PY_ROUTES' routes carry their own prefixes): "
            "set ROUTES, or remove MOUNTS",
        )
    if table is None:
        routes = v["PY_ROUTES"]
        if not _python_route(v["HEALTH_PY"], routes):
            raise fail(
                "HEALTH_PY",
                f"a path under one of the Python routes ({', '.join('/' + r for r in routes)}), "
                "or Nginx would send the health check to Node.js",
            )
        if _python_route(v["HEALTH_NODE"], routes):
            raise fail(
                "HEALTH_NODE",
                "a path outside the Python routes, or Nginx would send it to Gunicorn",
            )
        return
    if v["PY_ROUTES"] != _routes(_KEY_DEFAULTS["PY_ROUTES"] or ""):
        raise SettingsError(
            f"ROUTES ({_where('ROUTES', raw, origins)}) and PY_ROUTES"
            f" ({_where('PY_ROUTES', raw, origins)}) are both set; expected one route table: keep"
            " ROUTES (PY_ROUTES=a,b is ROUTES=/a=python,/b=python,/=nodejs) and remove PY_ROUTES."
        )
    for prefix in v["MOUNTS"] or ():
        owner = next((app for p, app in table if p == prefix), None)
        if owner is None:
            raise fail(
                "MOUNTS",
                f"prefixes ROUTES lists ({', '.join(p for p, _ in table if p != '/')}); "
                f"{prefix} is not one of them",
            )
        if owner == App.PYTHON and sum(app == App.PYTHON for _, app in table) != 1:
            raise fail(
                "MOUNTS",
                "a Python prefix only when it is Python's one entry in ROUTES (Gunicorn's"
                f" SCRIPT_NAME is one per process): {prefix} is mounted while Python serves others",
            )
    for key, app in (("HEALTH_PY", App.PYTHON), ("HEALTH_NODE", App.NODEJS)):
        if route_owner(v[key], table) != app:
            raise fail(
                key,
                f"a path ROUTES gives to {app}"
                f" ({', '.join(p for p, a in table if a == app) or 'none'}; the longest prefix"
                " wins), or Nginx would send the health check to the other app",
            )


def _ports(v: dict[str, Any]) -> list[tuple[str, int]]:
    """(key, port) of every port the settings use, each key's ports once (TLS_LISTEN only with TLS
    on)."""
    out: list[tuple[str, int]] = []
    for key in _PORT_KEYS + (("TLS_LISTEN",) if v["TLS_CERT"] else ()):
        value = v[key]
        numbers = (
            [x.port for x in value]
            if isinstance(value, tuple)
            else [value.port if isinstance(value, Address) else value]
        )
        out += [(key, n) for n in dict.fromkeys(numbers)]
    return out


def _check_site(v: dict[str, Any], fail: Callable[[str, str], SettingsError]) -> None:
    """NGINX_SITE: a site file of a plain name in Nginx's site folders (what the root helper
    writes), never nginx.conf."""
    if PurePosixPath(v["NGINX_SITE"]).name == "nginx.conf":
        raise fail(
            "NGINX_SITE",
            "a site file of its own, not Nginx's main configuration nginx.conf "
            "(for example /etc/nginx/sites-available/<name>)",
        )
    try:
        nginx_site.site_path(v["NGINX_SITE"])
    except nginx_site.BadSite:
        raise fail(
            "NGINX_SITE",
            "a file of a plain name under /etc/nginx/ in Nginx's site folders: "
            "/etc/nginx/sites-available/<name> or /etc/nginx/conf.d/<name>.conf",
        ) from None


def _where(key: str, raw: Mapping[str, str | None], origins: Mapping[str, str]) -> str:
    """Where a value came from; for a handover key left unset, next to which key (and where that
    came from)."""
    app_key = _HANDOVER_OF.get(key)
    if app_key and not raw.get(key):
        return f"default, next to {app_key} ({origins.get(app_key, 'default')})"
    return origins.get(key, "default")


def settings_from_task(
    env_file: str | None = None,
    set_: list[str] | None = None,
    extra: Mapping[str, str | None] | None = None,
    environment: str | None = None,
) -> Settings:
    """The tasks' entry: `--env-file`, `--environment`, `--set KEY=VALUE` and named flags (named
    flags win)."""
    overrides = parse_overrides(set_)
    for key, value in (extra or {}).items():
        if value is not None:
            overrides[key] = str(value)
    return load_settings(env_file=env_file, overrides=overrides, environment=environment)


# --- The declarations as text: the `settings` task and README's table
# -------------------------------------------

MASK = "********"


def effective(s: Settings) -> list[tuple[str, str, str]]:
    """(key, value as text, where it came from) for every key; a secret that is set shows as
    MASK."""
    rows: list[tuple[str, str, str]] = []
    for key in KEYS:
        value = key.parse.show(getattr(s, key.attr))
        if key.secret and value:
            value = MASK
        origin = s.origins.get(key.name, "default")
        if key.name in _HANDOVER_OF and origin == "default":
            origin = _where(key.name, {}, s.origins)
        rows.append((key.name, value, origin))
    return rows


def readme_table() -> str:
    """README's Settings table, from the declarations (tests/unit/test_readme.py holds the README to
    it)."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key in KEYS:
        default = (
            f"`{key.default}`".replace("|", "\\|") if key.default else "—"
        )  # a | would end the cell
        lines.append(f"| `{key.name}` | {default} | {key.help} |")
    return "\n".join(lines)
