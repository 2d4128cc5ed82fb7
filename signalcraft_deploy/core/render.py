"""Rendering: pure functions from settings to the text of every file the tool writes.

Templates live in `templates/` (a user's TEMPLATES_DIR wins for the apps' files). The files root
installs (`setup`'s boot unit and logrotate file) are rendered from the bundled templates only:
TEMPLATES_DIR is the deploy user's to shape, root's files are not. Values are escaped for the
language they land in: `pyrepr` for Python, `jsjson` for JavaScript; Nginx only ever receives
tokens that settings validation already restricted to safe characters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signalcraft_deploy.core.procfile import Process
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.remote import nginx_site
from signalcraft_deploy.remote import source as remote_source

if TYPE_CHECKING:
    from jinja2 import Environment


def _bundled_templates() -> Path:
    """The tool's templates: `templates/` at the top of a checkout, which the wheel ships as the
    package's `templates/` folder (pyproject.toml's package-dir)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


BUNDLED_TEMPLATES = _bundled_templates()
# How often PM2 looks whether a stopped app has exited (its default, 100 ms, adds up to that much
# to every stop, and a handover stops two Gunicorn masters).
KILL_RETRY_MS = 20

GUNICORN_CONF = "gunicorn.conf.py"
GUNICORN_HOOKS = "gunicorn_hooks.py"  # remote/, appended to every gunicorn.conf.py
GUNICORN_HOOKS_MARK = (
    "# Added by signalcraft-deploy after the template (remote/gunicorn_hooks.py): the release each"
    " worker's code\n# was imported from, as the X-Signalcraft-Release header of every answer."
)
ECOSYSTEM = "ecosystem.config.js"
# The same file for a package with "type": "module", where Node would read a .js file as an ES
# module and PM2 fails on `module.exports` ("File ecosystem.config.js malformated").
ECOSYSTEM_CJS = "ecosystem.config.cjs"
ECOSYSTEMS = (ECOSYSTEM, ECOSYSTEM_CJS)
RELEASE_CONFIGS = (GUNICORN_CONF, ECOSYSTEM)
DEFAULT_NODE_SCRIPT = "server.js"
# APP_ENV_FILE's values as a JSON object (string to string) in each release that has a .env, beside
# the loader Node.js runs first (node_args --require): every process the tool starts reads them
# from here, at its start, inside itself; never through PM2's env (its dump, `pm2 env`).
APP_ENV_JSON = ".signalcraft/env.json"
APP_ENV_CJS = ".signalcraft/env.cjs"


def ecosystem_name(esm: bool) -> str:
    return ECOSYSTEM_CJS if esm else ECOSYSTEM


TEMPLATES = (GUNICORN_CONF + ".j2", ECOSYSTEM + ".j2")
# Root renders the site itself (remote/nginx_site.py); a TEMPLATES_DIR may not hold this one.
SITE_TEMPLATE = "nginx-site.conf.j2"


def templates_digest(templates_dir: str | None) -> str:
    """What the rendered files are made from besides settings: each template as it will be found
    (a user's TEMPLATES_DIR first) and this module's own code. Read without Jinja2."""
    parts: list[bytes] = [
        Path(__file__).read_bytes(),
        Path(nginx_site.__file__).read_bytes(),
        remote_source(GUNICORN_HOOKS).encode(),
    ]
    for name in TEMPLATES:
        for folder in ([Path(templates_dir)] if templates_dir else []) + [BUNDLED_TEMPLATES]:
            if (folder / name).is_file():
                parts.append(name.encode() + b"\0" + (folder / name).read_bytes())
                break
    return digest(*parts)


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: str | None) -> Environment:
    # One per template folder and process: Jinja2 then compiles each template once (it still notices
    # a template file that changed). Imported here: a deploy that changes nothing renders nothing.
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

    loaders = [FileSystemLoader(templates_dir)] if templates_dir else []
    loaders.append(FileSystemLoader(str(BUNDLED_TEMPLATES)))
    env = Environment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pyrepr"] = _pyrepr
    env.filters["jsjson"] = _jsjson
    env.filters["shq"] = shlex.quote
    return env


def _pyrepr(value: Any) -> str:
    if not isinstance(value, (str, int, list, tuple)):
        raise TypeError(f"cannot write {type(value).__name__} into Python")
    return repr(value)


def _jsjson(value: Any) -> str:
    # JSON is valid JavaScript; escape the two line separators older engines choke on.
    return json.dumps(value).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def venv_dir(s: Settings, requirements: str) -> str:
    """The venv for a requirements set: reused while requirements and PYTHON are unchanged."""
    return f"{s.venvs_dir}/{digest(s.python, requirements)[:16]}"


def python_entry(s: Settings, venv: str) -> dict[str, Any]:
    """The PM2 entry of the Gunicorn app: a change here needs a new master, not a HUP."""
    return {
        "name": s.python_app,
        "script": f"{venv}/bin/gunicorn",
        "args": ["-c", f"{s.current_dir}/{GUNICORN_CONF}"],
        "interpreter": f"{venv}/bin/python",
        "cwd": s.current_dir,
        "kill_timeout": (s.gunicorn_graceful_timeout + 5) * 1000,
        "kill_retry_time": KILL_RETRY_MS,
        "env": {"PYTHONUNBUFFERED": "1"},
    }


def node_entry(s: Settings, folder: str | None = None) -> dict[str, Any]:
    """The PM2 entry of the Node.js app (cluster mode), run from `folder` (default `current`).

    Every Node.js process of it (each cluster worker: PM2 gives them node_args as execArgv) loads
    the release's env.cjs first, which reads APP_ENV_JSON from its own folder.
    """
    folder = folder or s.current_dir
    return {
        "name": s.node_app,
        "script": f"{folder}/{s.node_script or DEFAULT_NODE_SCRIPT}",
        "cwd": folder,
        "node_args": ["--require", f"{folder}/{APP_ENV_CJS}"],
        "instances": s.node_instances,
        "kill_timeout": s.node_kill_timeout * 1000,
        "listen_timeout": s.node_listen_timeout * 1000,
        "wait_ready": s.node_wait_ready,
        "kill_retry_time": KILL_RETRY_MS,
        "env": {"NODE_ENV": s.node_env, "PORT": str(s.node_port)},
    }


LAUNCHER = ".signalcraft/launch.py"  # remote/launch.py, shipped into each release


def process_entry(
    s: Settings, proc: Process, venv: str, release_dir: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """The PM2 entry of a Procfile process: the release's launcher (remote/launch.py) with the
    venv's bin or node_modules/.bin first on PATH, execing the command. `release_dir` None: the
    ecosystem file's entry, from `current`; `name`: another PM2 name (its overlap twin, a trial)."""
    base = release_dir or s.current_dir
    path_first = f"{venv}/bin" if proc.app == "python" else f"{base}/node_modules/.bin"
    env = {"PYTHONUNBUFFERED": "1"} if proc.app == "python" else {"NODE_ENV": s.node_env}
    return {
        "name": name or s.process_name(proc.name),
        "script": f"{base}/{LAUNCHER}",
        "interpreter": s.python,
        "interpreter_args": ["-I"],
        "args": [path_first, "--", *proc.argv],
        "cwd": base,
        "exec_mode": "fork",
        "instances": proc.instances,
        "autorestart": True,
        "watch": False,
        "merge_logs": True,
        # The tool stops a process itself (its PROCESS_STOP_SIGNAL, all instances at once) and
        # deletes it from PM2 once it exited; a clean exit (0) after that signal is not restarted.
        "stop_exit_codes": [0],
        "kill_timeout": (proc.stop_timeout + 5) * 1000,
        "kill_retry_time": KILL_RETRY_MS,
        "min_uptime": 5000,
        "max_restarts": 10,
        "env": env,
    }


def render_gunicorn_conf(s: Settings) -> str:
    """gunicorn.conf.py: the template's text (a TEMPLATES_DIR override's too), then the tool's hooks
    (remote/gunicorn_hooks.py), which no template can leave out."""
    return _gunicorn_template(s).rstrip("\n") + "\n\n\n" + gunicorn_hooks_text(s)


def gunicorn_hooks_text(s: Settings) -> str:
    """The hooks appended to every gunicorn.conf.py: each worker's answers name the release its app
    was imported from (X-Signalcraft-Release)."""
    module = s.wsgi_app.split(":", 1)[0].strip()
    return (
        f"{GUNICORN_HOOKS_MARK}\n"
        + remote_source(GUNICORN_HOOKS).split('"""', 2)[2].lstrip("\n")
        + f"\n\n_signalcraft_install(globals(), {s.releases_dir!r}, {module!r})\n"
    )


def _gunicorn_template(s: Settings) -> str:
    return (
        _environment(s.templates_dir)
        .get_template(GUNICORN_CONF + ".j2")
        .render(
            current_dir=s.current_dir,
            wsgi_app=s.wsgi_app,
            bind=str(s.gunicorn_bind),
            workers=s.gunicorn_workers,
            worker_class=s.gunicorn_worker_class,
            timeout=s.gunicorn_timeout,
            graceful_timeout=s.gunicorn_graceful_timeout,
            max_requests=s.gunicorn_max_requests,
            max_requests_jitter=s.gunicorn_max_requests_jitter,
            proc_name=s.python_app,
            script_name=s.python_mount,
            env_json=APP_ENV_JSON,
        )
    )


def render_ecosystem(s: Settings, venv: str) -> str:
    py = python_entry(s, venv)
    node = node_entry(s)
    return (
        _environment(s.templates_dir)
        .get_template(ECOSYSTEM + ".j2")
        .render(
            python_app=py["name"],
            gunicorn_script=py["script"],
            gunicorn_conf=py["args"][1],
            venv_python=py["interpreter"],
            current_dir=s.current_dir,
            python_kill_timeout_ms=py["kill_timeout"],
            python_env=py["env"],
            node_app=node["name"],
            node_script=node["script"],
            node_args=node["node_args"],
            node_instances=node["instances"],
            node_kill_timeout_ms=node["kill_timeout"],
            node_listen_timeout_ms=node["listen_timeout"],
            node_wait_ready=node["wait_ready"],
            node_env=node["env"],
            processes=[process_entry(s, proc, venv) for proc in s.processes],
        )
    )


def upstream_name(s: Settings, kind: str) -> str:
    """The site's upstream (or map variable) for `kind`: named after the site's file, unique to
    it."""
    return f"{nginx_site.upstream_for(s.nginx_site)}_{kind}"


routes_regex = nginx_site.routes_regex


SITE_HEADER = nginx_site.SITE_HEADER
SITE_ID_RE = re.compile(
    r'location = /\.signalcraft-deploy-site \{[^}]*return 200 "([0-9a-f]+)\\n";'
)


def written_by_us(text: str | None) -> bool:
    """Whether a file's text is one this tool rendered (its first line is our header)."""
    return bool(text and text.lstrip("\ufeff").startswith(SITE_HEADER))


def site_id(text: str) -> str | None:
    """The id a rendered site answers on /.signalcraft-deploy-site (None: not a site of ours)."""
    match = SITE_ID_RE.search(text or "")
    return match.group(1) if match else None


def site_description(
    s: Settings, python_address: str | None = None, node_address: str | None = None
) -> dict[str, Any]:
    """What root renders the site from (remote/nginx_site.py): the addresses override the apps' own
    while a handover runs."""
    return {
        "site": s.nginx_site,
        "upstream": nginx_site.upstream_for(s.nginx_site),
        "listen": [str(x) for x in s.nginx_listen],
        "tls_listen": [str(x) for x in s.tls_listen],
        "server_name": s.server_name,
        **({"table": s.site_table} if s.routes is not None else {"routes": list(s.py_routes)}),
        "python": python_address or str(s.gunicorn_bind),
        "node": node_address or f"127.0.0.1:{s.node_port}",
        "body_size": s.client_max_body_size or "",
        "tls": (
            {"cert": s.tls_cert, "key": s.tls_key, "redirect": s.tls_redirect} if s.tls else None
        ),
        "timeouts": nginx_timeouts(s),
        "streams": list(s.stream_routes or ()),
    }


NGINX_MARGIN = 5  # seconds Nginx waits beyond what an app itself allows


def nginx_timeouts(s: Settings) -> dict[str, int]:
    """Nginx's read and send timeouts for each app's locations: longer than the app's own, so the
    client gets the app's answer (or Gunicorn's 502 for a worker it killed), never Nginx's 504."""
    return {
        "python": s.gunicorn_timeout + NGINX_MARGIN,
        "nodejs": s.node_timeout + NGINX_MARGIN,
    }


def render_nginx_site(
    s: Settings, python_address: str | None = None, node_address: str | None = None
) -> str:
    """The Nginx site, as the root helper renders it from `site_description` (byte for byte: one
    renderer).

    The site answers `/.signalcraft-deploy-site` with its own id (a digest of the rest of the file),
    so a reload can be proven by asking Nginx; the header line marks the file as ours.
    """
    return nginx_site.render(site_description(s, python_address, node_address))


CERTBOT_LIVE = "/etc/letsencrypt/live/"


def certbot_hook_path(s: Settings) -> str | None:
    """Where certbot runs deploy hooks after a renewal, when TLS_CERT is one of certbot's (else
    None)."""
    if not s.tls_cert or not s.tls_cert.startswith(CERTBOT_LIVE):
        return None
    return f"/etc/letsencrypt/renewal-hooks/deploy/signalcraft-{s.app_name}"


def render_certbot_hook(s: Settings) -> str:
    """certbot's deploy hook: Nginx reads renewed certificates only when it reloads."""
    return (
        f"#!/bin/sh\n{SITE_HEADER} Reloads Nginx after certbot renews {s.tls_cert} (site"
        f" {s.nginx_site}).\n{s.nginx_test_cmd} && {s.nginx_reload_cmd}\n"
    )


def render_release_configs(s: Settings, venv: str, esm: bool = False) -> dict[str, str]:
    """The files rendered into each release directory, by name (PM2's file as .cjs in an ES module
    package)."""
    return {GUNICORN_CONF: render_gunicorn_conf(s), ecosystem_name(esm): render_ecosystem(s, venv)}


def node_modules_name(package_lock: str | None, package_json: str | None) -> str | None:
    """The folder under node_modules/ for a release's dependencies: by package-lock.json (`npm ci`),
    else by package.json (`npm install`, once per distinct package.json); None without a
    package.json."""
    if package_lock is not None:
        return digest(package_lock)[:16]
    if package_json is not None:
        return "pkg-" + digest("package.json", package_json)[:12]
    return None


LOGROTATE = "logrotate.conf.j2"
BOOT_UNIT = "pm2-boot.service.j2"
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_.-]*\$?")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")


def _root_template(name: str) -> Any:
    """A template for a file root installs: the bundled one, whatever TEMPLATES_DIR holds."""
    return _environment(None).get_template(name)


def _plain(names: tuple[str, ...], paths: tuple[str, ...]) -> None:
    for name in names:
        if not _PLAIN_NAME.fullmatch(name):
            raise ValueError(f"not a plain user or group name: {name!r}")
    for value in paths:
        if not _PLAIN_PATH.fullmatch(value) or "/../" in value + "/":
            raise ValueError(f"not a plain absolute path: {value!r}")


def render_logrotate(s: Settings, user: str, group: str, home: str, pm2: str, path: str) -> str:
    """The logrotate file for one user's PM2 logs (`setup` writes it to
    /etc/logrotate.d/pm2-<user>).

    `pm2` is PM2's absolute path and `path` the PATH it runs with (Node's directory first), as in
    the boot unit. Rendered from the bundled template only (root installs it), from validated plain
    names and paths; its postrotate script is fixed text that runs as `user` and gets these values
    as its arguments.
    """
    _plain((user, group), (home, pm2, *path.split(":")))
    home = home.rstrip("/")
    return _root_template(LOGROTATE).render(
        user=user,
        group=group,
        home=home,
        pm2_home=f"{home}/.pm2",
        pm2=pm2,
        path=path,
        size=s.log_rotate_size,
        count=s.log_rotate_count,
    )


def render_boot_unit(user: str, home: str, pm2: str, path: str) -> str:
    """The systemd unit that starts `user`'s PM2 at boot (`setup` writes
    /etc/systemd/system/pm2-<user>.service).

    The text `pm2 startup systemd -u USER --hp HOME` of PM2 7.0 writes from its systemd.tpl, with
    `path` (Node's directory first) for its %NODE_PATH%; rendered from the bundled template only,
    from validated values.
    """
    _plain((user,), (home, pm2, *path.split(":")))
    return _root_template(BOOT_UNIT).render(
        user=user, pm2_home=f"{home.rstrip('/')}/.pm2", pm2=pm2, path=path
    )
