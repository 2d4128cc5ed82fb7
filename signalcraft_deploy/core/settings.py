"""Settings: one typed object from defaults < .env < environment < flags, validated once.

Everything a task needs to know about the app and the host layout lives here. Values are
validated before any host is touched; a bad value raises `SettingsError` naming the key,
where the value came from (file and line, environment, or flag), what was found and what
was expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any


class SettingsError(ValueError):
    """A configuration value is wrong; the message says which, where from and what is expected."""

@dataclass(frozen=True)
class Key:
    name: str
    default: str | None
    help: str
    secret: bool = False

# The one table of configuration keys: name, default, help. README's key table mirrors it.
KEYS: tuple[Key, ...] = (
    Key("APP_NAME", "signalcraft", "name prefix: PM2 apps <APP_NAME>-python and <APP_NAME>-nodejs"),
    Key("DEPLOY_ROOT", "/home/ubuntu/signalcraft", "absolute directory on the host holding releases/, current, shared/"),
    Key("SOURCE", "upload", "'upload' ships the local git HEAD of SOURCE_DIR; 'git' makes the host fetch REPO_URL at REF"),
    Key("SOURCE_DIR", ".", "local directory of the app (a git checkout, or a folder inside one)"),
    Key("REPO_URL", None, "repository the host clones when SOURCE=git"),
    Key("REF", "main", "branch, tag or commit the host checks out when SOURCE=git"),
    Key("PYTHON", "python3", "Python on the host that creates the app's virtual environment"),
    Key("GUNICORN_BIND", "127.0.0.1:8001", "loopback address Gunicorn listens on (Nginx proxies the Python routes to it)"),
    Key("GUNICORN_HANDOVER_BIND", None, "second loopback address used while a new Gunicorn master takes over (default: port + 1)"),
    Key("GUNICORN_WORKERS", "auto", "worker count, or 'auto' for 2 * CPUs + 1 on the host"),
    Key("GUNICORN_WORKER_CLASS", "sync", "Gunicorn worker class (sync, gthread, gevent, eventlet, ...)"),
    Key("GUNICORN_TIMEOUT", "120", "seconds before a silent worker is killed and restarted"),
    Key("GUNICORN_GRACEFUL_TIMEOUT", "30", "seconds a worker may finish its requests on reload or stop"),
    Key("GUNICORN_MAX_REQUESTS", "1000", "a worker is replaced after this many requests (bounds its memory); 0 turns it off"),
    Key("GUNICORN_MAX_REQUESTS_JITTER", "100", "random spread added to GUNICORN_MAX_REQUESTS so workers do not all restart at once"),
    Key("LEGACY_MATCH", "python", "regex: an unmanaged server on GUNICORN_BIND whose command matches is taken over by the first deploy"),
    Key("ALLOW_PUBLIC_BIND", "false", "allow GUNICORN_BIND on a non-loopback address (Nginx should be the only way in)"),
    Key("WSGI_APP", "app:create_app()", "the WSGI app: module:attribute or module:factory()"),
    Key("NODE_SCRIPT", "server.js", "the Node.js entry point, relative to the app directory"),
    Key("NODE_PORT", "3000", "port the Node.js server listens on (passed as PORT)"),
    Key("NODE_HANDOVER_PORT", None, "second port for Node.js while its processes are replaced (default: NODE_PORT + 1)"),
    Key("NODE_INSTANCES", "2", "Node.js processes in PM2 cluster mode (2 or more for rolling reloads)"),
    Key("NODE_ENV", "production", "NODE_ENV given to the Node.js app"),
    Key("PY_ROUTES", "api/ai,api/iot,api/lightweight-analyze,api/flask", "path prefixes (comma-separated) Nginx sends to Gunicorn"),
    Key("NGINX_SITE", "/etc/nginx/sites-available/signalcraft", "the Nginx site file this tool owns (linked from sites-enabled)"),
    Key("NGINX_LISTEN", "80", "port Nginx listens on for the site"),
    Key("SERVER_NAME", "_", "Nginx server_name; '_' makes the site the default server on NGINX_LISTEN"),
    Key("NGINX_TEST_CMD", "nginx -t", "command that validates Nginx's configuration (run with sudo)"),
    Key("NGINX_RELOAD_CMD", "nginx -s reload", "command that reloads Nginx gracefully (run with sudo; e.g. 'systemctl reload nginx')"),
    Key("HEALTH_PY", "/api/flask/health", "path of the Flask app's health route"),
    Key("HEALTH_NODE", "/", "path of the Node.js app's health route"),
    Key("HEALTH_TIMEOUT", "30", "seconds the health gate waits for both apps after a switch"),
    Key("KEEP_RELEASES", "5", "releases kept on the host (the current and previous are never pruned)"),
    Key("PM2", "pm2", "the pm2 command on the host"),
    Key("APP_ENV_FILE", None, "local file with the app's own secrets, uploaded to shared/.env (mode 0600) and linked into each release"),
    Key("LOCAL_VENV", None, "the app's local virtual environment for 'freeze' (default: $VIRTUAL_ENV, else SOURCE_DIR/.venv)"),
    Key("KNOWN_HOSTS", None, "extra known_hosts file used to verify host keys (besides ~/.ssh/known_hosts)"),
    Key("TEMPLATES_DIR", None, "directory whose templates win over the bundled ones"),
)
KEY_NAMES = tuple(k.name for k in KEYS)

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_ROUTE_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
_PY_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_WSGI_RE = re.compile(rf"^{_PY_IDENT}(\.{_PY_IDENT})*:{_PY_IDENT}(\.{_PY_IDENT})*(\(\))?$")
_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
_SAFE_REL_PATH_RE = re.compile(r"^[A-Za-z0-9._@+-][A-Za-z0-9._/@+-]*$")
_HTTP_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
# Host names of dot-separated labels; nginx takes '*' only as a whole first label ('*.example.com') or a
# whole last one ('example.*'): it refuses '*' and '*example.com' outright, and 'a*b', 'www.*.com' or
# 'a..b' as soon as another site shares the port ("invalid server name or wildcard").
_HOST_LABELS = r"[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9][A-Za-z0-9-]*)*"
_HOST_NAME = rf"(?=[^ ]{{1,253}}( |$))(\*\.{_HOST_LABELS}\.?|{_HOST_LABELS}\.?|{_HOST_LABELS}\.\*)"
_SERVER_NAME_RE = re.compile(rf"^(_|{_HOST_NAME})( {_HOST_NAME})*$")
_WORKER_CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_COMMAND_RE = re.compile(r"^[A-Za-z0-9_./ =-]+$")
_SYSTEM_DIRS = {
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/bin",
    "/usr/lib", "/usr/local", "/usr/local/bin", "/usr/sbin", "/var/lib", "/var/log", "/var/www",
    "/home/ubuntu",
}

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

@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with `load_settings`; never construct by hand outside tests."""

    app_name: str
    deploy_root: str
    source: str
    source_dir: str
    repo_url: str | None
    ref: str
    python: str
    gunicorn_bind: Address
    gunicorn_handover_bind: Address
    gunicorn_workers: int | None  # None means 'auto' (2 * CPUs + 1 on the host)
    gunicorn_worker_class: str
    gunicorn_timeout: int
    gunicorn_graceful_timeout: int
    gunicorn_max_requests: int
    gunicorn_max_requests_jitter: int
    allow_public_bind: bool
    legacy_match: str
    wsgi_app: str
    node_script: str
    node_port: int
    node_instances: int
    node_handover_port: int
    node_env: str
    py_routes: tuple[str, ...]
    nginx_site: str
    nginx_listen: int
    server_name: str
    nginx_test_cmd: str
    nginx_reload_cmd: str
    health_py: str
    health_node: str
    health_timeout: int
    keep_releases: int
    pm2: str
    app_env_file: str | None
    local_venv: str | None
    known_hosts: str | None
    templates_dir: str | None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    # Derived names and paths: one place, so templates and tasks agree.
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
    def nginx_enabled_link(self) -> str:
        site = PurePosixPath(self.nginx_site)
        if site.parent.name == "sites-available":
            return str(site.parent.parent / "sites-enabled" / site.name)
        return ""  # a site in conf.d (or elsewhere included) needs no link

    def public(self) -> dict[str, Any]:
        """Settings as plain data for plans, status and audit; secrets masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "origins":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Address):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name.upper()] = value
        return out

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

def read_env_file(path: str | os.PathLike[str], *, required: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Read a .env file: its values and, per key, where each came from ('file:line')."""
    env_path = Path(path)
    if not env_path.exists():
        if required:
            raise SettingsError(f"{env_path}: the settings file was named but does not exist. "
                                "Create it, or drop --env-file / ENV_FILE to use the defaults.")
        return {}, {}
    if not env_path.is_file() or not os.access(env_path, os.R_OK):
        raise SettingsError(f"{env_path}: the settings file cannot be read (not a readable file). "
                            "Check its permissions.")
    from dotenv import dotenv_values  # here: most runs have no .env to read

    raw = dotenv_values(env_path)
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for key, value in raw.items():
        line = _line_of(env_path, key)
        where = f"{env_path}:{line}" if line else str(env_path)
        if key not in KEY_NAMES:
            hint = difflib.get_close_matches(key, KEY_NAMES, n=1)
            suggestion = f" Did you mean {hint[0]}?" if hint else f" Known keys: {', '.join(KEY_NAMES)}."
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
            raise SettingsError(f"--set {pair!r}: expected KEY=VALUE, for example --set NODE_PORT=3100.")
        if key not in KEY_NAMES:
            hint = difflib.get_close_matches(key, KEY_NAMES, n=1)
            suggestion = f" Did you mean {hint[0]}?" if hint else ""
            raise SettingsError(f"{key} (flag --set): unknown setting.{suggestion}")
        out[key] = value
    return out

def load_settings(
    env_file: str | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Settings:
    """Merge defaults < .env < environment < flags, then validate. Pure but for reading the .env."""
    environ = os.environ if environ is None else environ
    base = Path(cwd or os.getcwd())
    named = env_file or environ.get("ENV_FILE")
    env_path = Path(named) if named else base / ".env"
    if not env_path.is_absolute():
        env_path = base / env_path
    file_values, file_origins = read_env_file(env_path, required=bool(named))

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
    return validate(raw, origins, local_base)

class _Checker:
    def __init__(self, raw: Mapping[str, str | None], origins: Mapping[str, str]):
        self.raw = raw
        self.origins = origins

    def fail(self, key: str, expected: str) -> SettingsError:
        found = self.raw.get(key)
        return SettingsError(f"{key} ({self.origins.get(key, 'default')}): found {found!r}; expected {expected}.")

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if value is None or value.strip() == "":
            raise self.fail(key, "a value")
        if value != value.strip() or "\n" in value or "\x00" in value:
            raise self.fail(key, "a value without surrounding spaces or line breaks")
        return value

    def optional(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None or value.strip() == "" else self.text(key)

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.text(key)
        if not re.fullmatch(r"[0-9]+", value):
            raise self.fail(key, f"a whole number from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise self.fail(key, f"a whole number from {low} to {high}")
        return number

    def boolean(self, key: str) -> bool:
        value = self.text(key).lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise self.fail(key, "true or false")

    def matching(self, key: str, pattern: re.Pattern[str], expected: str) -> str:
        value = self.text(key)
        if not pattern.fullmatch(value):
            raise self.fail(key, expected)
        return value

    def absolute_path(self, key: str) -> str:
        value = self.text(key)
        expected = "an absolute path of letters, digits and . _ - / @ + (no spaces, quotes or '..')"
        if not _SAFE_PATH_RE.fullmatch(value) or ".." in value.split("/") or "//" in value:
            raise self.fail(key, expected)
        return value.rstrip("/") or "/"

    def relative_path(self, key: str) -> str:
        value = self.text(key)
        if not _SAFE_REL_PATH_RE.fullmatch(value) or ".." in value.split("/"):
            raise self.fail(key, "a path relative to the app directory, without spaces, quotes or '..'")
        return value

    def address(self, key: str) -> Address:
        value = self.text(key)
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([A-Za-z0-9.-]+):([0-9]+)", value)
        if not match:
            raise self.fail(key, "HOST:PORT, for example 127.0.0.1:8001")
        host = match.group(1) or match.group(3)
        port = int(match.group(2) or match.group(4))
        if not 1 <= port <= 65535:
            raise self.fail(key, "a port from 1 to 65535 in HOST:PORT")
        return Address(host, port)

def validate(raw: Mapping[str, str | None], origins: Mapping[str, str], local_base: Path) -> Settings:
    """Check every value and build `Settings`; raise `SettingsError` on the first bad one."""
    ck = _Checker(raw, origins)

    def local_path(key: str) -> str | None:
        value = ck.optional(key)
        if value is None:
            return None
        return str((local_base / value).resolve()) if not os.path.isabs(value) else value

    app_name = ck.matching("APP_NAME", _NAME_RE, "lower-case letters, digits and '-', starting with a letter (at most 40)")
    deploy_root = ck.absolute_path("DEPLOY_ROOT")
    if deploy_root in _SYSTEM_DIRS or deploy_root.count("/") < 2 and deploy_root.split("/")[1] in {"home", "usr", "var", "etc"}:
        raise ck.fail("DEPLOY_ROOT", "a directory of its own, such as /home/ubuntu/signalcraft (not / or a system directory)")
    source = ck.text("SOURCE")
    if source not in ("upload", "git"):
        raise ck.fail("SOURCE", "'upload' or 'git'")
    repo_url = ck.optional("REPO_URL")
    if source == "git" and not repo_url:
        raise SettingsError(f"REPO_URL ({origins.get('REPO_URL', 'default')}): SOURCE=git needs a repository URL to fetch.")
    if repo_url and (repo_url.startswith("-") or not re.fullmatch(r"[A-Za-z0-9._~:/@%+=-]+", repo_url)):
        raise ck.fail("REPO_URL", "a git URL such as https://github.com/org/app.git or git@github.com:org/app.git")
    ref = ck.matching("REF", re.compile(r"[A-Za-z0-9._/-]+"), "a branch, tag or commit name")
    if ref.startswith("-") or ".." in ref:
        raise ck.fail("REF", "a branch, tag or commit name not starting with '-' and without '..'")

    bind = ck.address("GUNICORN_BIND")
    allow_public = ck.boolean("ALLOW_PUBLIC_BIND")
    if not bind.is_loopback and not allow_public:
        raise ck.fail("GUNICORN_BIND", "a loopback address such as 127.0.0.1:8001 (Nginx is the only way in; "
                      "set ALLOW_PUBLIC_BIND=true to allow another address)")
    if raw.get("GUNICORN_HANDOVER_BIND"):
        handover = ck.address("GUNICORN_HANDOVER_BIND")
    else:
        handover = Address(bind.host, bind.port + 1 if bind.port < 65535 else bind.port - 1)
    if not handover.is_loopback and not allow_public:
        raise ck.fail("GUNICORN_HANDOVER_BIND", "a loopback address")

    legacy_match = ck.text("LEGACY_MATCH")
    try:
        re.compile(legacy_match)
    except re.error as err:
        raise ck.fail("LEGACY_MATCH", f"a regular expression ({err})") from None
    workers_raw = ck.text("GUNICORN_WORKERS")
    workers = None if workers_raw == "auto" else ck.integer("GUNICORN_WORKERS", 1, 256)
    timeout = ck.integer("GUNICORN_TIMEOUT", 1, 86400)
    graceful = ck.integer("GUNICORN_GRACEFUL_TIMEOUT", 1, 3600)
    max_requests = ck.integer("GUNICORN_MAX_REQUESTS", 0, 10_000_000)
    jitter = ck.integer("GUNICORN_MAX_REQUESTS_JITTER", 0, 10_000_000)
    worker_class = ck.matching("GUNICORN_WORKER_CLASS", _WORKER_CLASS_RE, "a worker class name such as sync or gthread")
    wsgi_app = ck.matching("WSGI_APP", _WSGI_RE, "module:attribute or module:factory(), for example app:create_app()")

    node_script = ck.relative_path("NODE_SCRIPT")
    node_port = ck.integer("NODE_PORT", 1, 65535)
    node_instances = ck.integer("NODE_INSTANCES", 1, 64)
    if raw.get("NODE_HANDOVER_PORT"):
        node_handover_port = ck.integer("NODE_HANDOVER_PORT", 1, 65535)
    else:
        node_handover_port = node_port + 1 if node_port < 65535 else node_port - 1
    node_env = ck.matching("NODE_ENV", re.compile(r"[A-Za-z0-9_.-]+"), "a word such as production")

    routes_raw = ck.text("PY_ROUTES")
    routes: list[str] = []
    for part in routes_raw.split(","):
        route = part.strip().strip("/")
        segments = route.split("/") if route else []
        if not segments or not all(_ROUTE_SEGMENT_RE.fullmatch(s) and s not in (".", "..") for s in segments):
            raise SettingsError(
                f"PY_ROUTES ({origins.get('PY_ROUTES', 'default')}): found route {part.strip()!r}; expected "
                "comma-separated path prefixes of letters, digits and . _ ~ - such as api/ai,api/iot "
                "(no spaces, regex or shell characters)."
            )
        if route in routes:
            raise ck.fail("PY_ROUTES", f"each route once ({route!r} is listed twice)")
        routes.append(route)

    nginx_site = ck.absolute_path("NGINX_SITE")
    if not nginx_site.startswith("/etc/nginx/") and not nginx_site.startswith(deploy_root + "/"):
        raise ck.fail("NGINX_SITE", "a file under /etc/nginx/ (for example /etc/nginx/sites-available/<name>)")
    nginx_listen = ck.integer("NGINX_LISTEN", 1, 65535)
    server_name = ck.matching("SERVER_NAME", _SERVER_NAME_RE, "'_' or host names separated by single spaces")
    nginx_test_cmd = ck.matching("NGINX_TEST_CMD", _COMMAND_RE, "a plain command such as 'nginx -t'")
    nginx_reload_cmd = ck.matching("NGINX_RELOAD_CMD", _COMMAND_RE, "a plain command such as 'nginx -s reload'")
    health_py = ck.matching("HEALTH_PY", _HTTP_PATH_RE, "a URL path such as /api/flask/health")
    health_node = ck.matching("HEALTH_NODE", _HTTP_PATH_RE, "a URL path such as /")
    if not any(health_py == "/" + r or health_py.startswith("/" + r + "/") for r in routes):
        raise ck.fail("HEALTH_PY", f"a path under one of the Python routes ({', '.join('/' + r for r in routes)}), "
                      "or Nginx would send the health check to Node.js")
    if any(health_node == "/" + r or health_node.startswith("/" + r + "/") for r in routes):
        raise ck.fail("HEALTH_NODE", "a path outside the Python routes, or Nginx would send it to Gunicorn")
    health_timeout = ck.integer("HEALTH_TIMEOUT", 1, 3600)
    keep = ck.integer("KEEP_RELEASES", 2, 100)
    python = ck.matching("PYTHON", re.compile(r"[A-Za-z0-9._/+-]+"), "a command or absolute path such as python3")
    pm2 = ck.matching("PM2", re.compile(r"[A-Za-z0-9._/+-]+"), "a command or absolute path such as pm2")

    ports = {"GUNICORN_BIND": bind.port, "GUNICORN_HANDOVER_BIND": handover.port, "NODE_PORT": node_port,
             "NODE_HANDOVER_PORT": node_handover_port, "NGINX_LISTEN": nginx_listen}
    # A handover port left unset sits next to its app's port: say so, and where that port came from.
    where = {key: origins.get(key, "default") for key in ports}
    for handover_key, app_key in (("GUNICORN_HANDOVER_BIND", "GUNICORN_BIND"), ("NODE_HANDOVER_PORT", "NODE_PORT")):
        if not raw.get(handover_key):
            where[handover_key] = f"default, next to {app_key} ({where[app_key]})"
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            raise SettingsError(
                f"{key} ({where[key]}): port {port} is also used by {seen[port]} "
                f"({where[seen[port]]}); expected a port of its own for each of Gunicorn, "
                "the handover addresses, Node.js and Nginx."
            )
        seen[port] = key

    source_dir = local_path("SOURCE_DIR") or str(local_base)
    return Settings(
        app_name=app_name, deploy_root=deploy_root, source=source, source_dir=source_dir,
        repo_url=repo_url, ref=ref, python=python, gunicorn_bind=bind, gunicorn_handover_bind=handover,
        gunicorn_workers=workers, gunicorn_worker_class=worker_class, gunicorn_timeout=timeout,
        gunicorn_graceful_timeout=graceful, gunicorn_max_requests=max_requests,
        gunicorn_max_requests_jitter=jitter, allow_public_bind=allow_public, legacy_match=legacy_match, wsgi_app=wsgi_app,
        node_script=node_script, node_port=node_port, node_instances=node_instances, node_env=node_env,
        node_handover_port=node_handover_port,
        py_routes=tuple(routes), nginx_site=nginx_site, nginx_listen=nginx_listen, server_name=server_name,
        nginx_test_cmd=nginx_test_cmd, nginx_reload_cmd=nginx_reload_cmd, health_py=health_py,
        health_node=health_node, health_timeout=health_timeout, keep_releases=keep, pm2=pm2,
        app_env_file=local_path("APP_ENV_FILE"), local_venv=local_path("LOCAL_VENV"),
        known_hosts=local_path("KNOWN_HOSTS"), templates_dir=local_path("TEMPLATES_DIR"),
        origins=dict(origins),
    )

def settings_from_task(
    env_file: str | None = None, set_: list[str] | None = None, extra: Mapping[str, str | None] | None = None
) -> Settings:
    """The tasks' entry: `--env-file`, `--set KEY=VALUE` and named flags (named flags win)."""
    overrides = parse_overrides(set_)
    for key, value in (extra or {}).items():
        if value is not None:
            overrides[key] = str(value)
    return load_settings(env_file=env_file, overrides=overrides)
