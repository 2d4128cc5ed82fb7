"""What `init` reads from an app's own files: its WSGI app, Flask routes, health route, Node.js
entry and prefixes.

Pure: every function takes file texts (by path relative to the app's folder) and returns what it
found and how, so init can write each value with a `# found: <how>` comment, or leave the key empty
and say nothing was found. Nothing here imports or runs the app; `remote/url_map.py` does that in
the app's own venv, and `routes_from_url_map` reads its output. Python is read with `ast` (never
executed), JavaScript by regex.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.source import node_package

# Folders whose files are not the app's own source: venvs, installed packages, the tool's own
# output.
SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        "env",
        "node_modules",
        "__pycache__",
        "rendered",
        "deploy-templates",
        "build",
        "dist",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "site-packages",
    }
)
# The module names a WSGI app is usually in, first to last; any other module comes after, shallowest
# first.
WSGI_MODULES = ("wsgi", "app", "main", "application", "server")
HEALTH_RE = re.compile(r"(^|/)(health|healthz|healthcheck|ping|status|livez|readyz)$")
# Where Node.js goes when Flask owns `/` and no prefix of Node.js's own is found: a deploy works,
# and the note asks for the real one (a table without Node.js could not route its health check).
NODE_PLACEHOLDER = "/node"
NO_HEALTH = "no health route found: a route that answers 200 without the database is better"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROUTE_DECORATORS = {
    "route": None,
    "get": "GET",
    "post": "POST",
    "put": "PUT",
    "delete": "DELETE",
    "patch": "PATCH",
}
# Express (or a router) mounting or answering a path: app.use('/chat', ...), router.get("/api/x",
# ...).
_EXPRESS_RE = re.compile(
    r"\b[A-Za-z_$][\w$]*\.(use|get|post|put|delete|patch|all|route)\(\s*(['\"`])(/[^'\"`]*)\2"
)
_JS_SUFFIXES = (".js", ".mjs", ".cjs", ".ts")


@dataclass(frozen=True)
class Found:
    """One setting's value read from the app (None: nothing found) and how it was found, or why
    not."""

    value: str | None
    how: str


@dataclass(frozen=True)
class Route:
    """One Flask URL rule: its path as Flask writes it, its methods, and where it was read."""

    rule: str
    methods: frozenset[str]
    where: str

    @property
    def has_arguments(self) -> bool:
        return "<" in self.rule


def is_source(path: str) -> bool:
    """Whether a file (relative path) is the app's own, not a venv's, installed packages' or the
    tool's output."""
    parts = path.split("/")
    return not any(part in SKIPPED_DIRS for part in parts[:-1])


def module_name(path: str) -> str | None:
    """The module a .py file is imported as from the app's folder (None: it cannot be: a name that
    is not one)."""
    if not path.endswith(".py"):
        return None
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(_IDENT.match(p) for p in parts) else None


def _wsgi_order(path: str) -> tuple[int, int, str]:
    module = module_name(path) or ""
    last = module.rsplit(".", 1)[-1]
    known = WSGI_MODULES.index(last) if last in WSGI_MODULES else len(WSGI_MODULES)
    return (module.count("."), known, path)


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _called_name(node: ast.AST) -> str:
    """`Flask` for `Flask(...)` and `flask.Flask(...)`; '' for anything else."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
    return ""


def _assigned(stmt: ast.stmt) -> tuple[str, ast.expr] | None:
    """(name, value) of a module-level `name = value` or `name: T = value`."""
    if (
        isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
    ):
        return stmt.targets[0].id, stmt.value
    if (
        isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and stmt.value is not None
    ):
        return stmt.target.id, stmt.value
    return None


def _callable_without_arguments(fn: ast.FunctionDef) -> bool:
    args = fn.args
    return len(args.defaults) == len(args.posonlyargs) + len(args.args) and all(
        d is not None for d in args.kw_defaults
    )


def _wsgi_in(module: str, path: str, tree: ast.Module) -> Found | None:
    """A module-level Flask object (or one a factory made) first, else a `create_app` factory
    Gunicorn can call."""
    factory = None
    for stmt in tree.body:
        pair = _assigned(stmt)
        if pair and _called_name(pair[1]) in ("Flask", "create_app", "make_app"):
            return Found(
                f"{module}:{pair[0]}",
                f"{path}:{stmt.lineno} `{pair[0]} = {_called_name(pair[1])}(...)`",
            )
        if (
            isinstance(stmt, ast.FunctionDef)
            and stmt.name == "create_app"
            and _callable_without_arguments(stmt)
        ):
            factory = factory or Found(
                f"{module}:create_app()", f"{path}:{stmt.lineno} `def create_app()`, a factory"
            )
    return factory


def find_wsgi(sources: Mapping[str, str]) -> Found:
    """WSGI_APP from the app's Python files ({path: text}), read with ast in the order of
    WSGI_MODULES."""
    candidates = sorted((p for p in sources if is_source(p) and module_name(p)), key=_wsgi_order)
    for path in candidates:
        tree = _parse(sources[path])
        found = _wsgi_in(str(module_name(path)), path, tree) if tree else None
        if found:
            return found
    looked = (
        ", ".join(candidates[:6]) + (", ..." if len(candidates) > 6 else "")
        if candidates
        else "no .py file"
    )
    return Found(
        None,
        f"no module-level `app = Flask(...)` and no `def create_app()` in {looked}; "
        "set it as module:attribute or module:factory()",
    )


# --- Flask routes
# ----------------------------------------------------------------------------------------------


def _string(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _last_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _methods(call: ast.Call, fixed: str | None) -> frozenset[str]:
    if fixed:
        return frozenset({fixed})
    listed = _keyword(call, "methods")
    if isinstance(listed, (ast.List, ast.Tuple, ast.Set)):
        names = {s.upper() for s in (_string(e) for e in listed.elts) if s}
        return frozenset(names or {"GET"})
    return frozenset({"GET"})


def _join(prefix: str, rule: str) -> str:
    return (prefix.rstrip("/") + "/" + rule.lstrip("/")) if prefix else rule


@dataclass
class _SourceRoutes:
    rules: list[tuple[str, str, str, frozenset[str]]]  # (owner variable, rule, where, methods)
    prefixes: dict[str, str]  # blueprint variable -> url_prefix


def _routes_in(path: str, tree: ast.Module, found: _SourceRoutes) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr in _ROUTE_DECORATORS
                ):
                    rule = _string(deco.args[0]) if deco.args else _string(_keyword(deco, "rule"))
                    if rule is not None:
                        methods = _methods(deco, _ROUTE_DECORATORS[deco.func.attr])
                        found.rules.append(
                            (_last_name(deco.func.value), rule, f"{path}:{deco.lineno}", methods)
                        )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_url_rule"
        ):
            rule = _string(node.args[0]) if node.args else _string(_keyword(node, "rule"))
            if rule is not None:
                found.rules.append(
                    (
                        _last_name(node.func.value),
                        rule,
                        f"{path}:{node.lineno}",
                        _methods(node, None),
                    )
                )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "register_blueprint"
        ):
            prefix = _string(_keyword(node, "url_prefix"))
            if node.args and prefix is not None:
                found.prefixes[_last_name(node.args[0])] = prefix
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            pair = _assigned(node)
            if pair and _called_name(pair[1]) == "Blueprint":
                prefix = (
                    _string(_keyword(pair[1], "url_prefix"))
                    if isinstance(pair[1], ast.Call)
                    else None
                )
                found.prefixes.setdefault(pair[0], prefix or "")


def routes_from_source(sources: Mapping[str, str]) -> list[Route]:
    """Flask routes read from decorators (`@x.route/get/post(...)`), `add_url_rule`, and blueprints'
    url_prefix (the Blueprint's own, or register_blueprint's, which wins). Routes added in loops or
    by plugins are missed.
    """
    found = _SourceRoutes([], {})
    for path in sorted(p for p in sources if p.endswith(".py") and is_source(p)):
        tree = _parse(sources[path])
        if tree:
            _routes_in(path, tree, found)
    return [
        Route(_join(found.prefixes.get(owner, ""), rule), methods, where)
        for owner, rule, where, methods in found.rules
    ]


def routes_from_url_map(output: str) -> list[Route]:
    """The routes `remote/url_map.py` printed: a JSON list of {rule, methods, endpoint}. ValueError
    if it is not."""
    data = json.loads(output)
    if not isinstance(data, list):
        raise ValueError("expected a JSON list")
    routes = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("rule"), str):
            raise ValueError("expected objects with a rule")
        methods = frozenset(str(m).upper() for m in item.get("methods") or ["GET"])
        routes.append(Route(item["rule"], methods, f"endpoint {item.get('endpoint', '?')}"))
    return routes


def find_health(routes: Iterable[Route], how: str) -> Found:
    """HEALTH_PY: the first GET rule without arguments that looks like a health route; else the
    first GET rule without arguments (with a note that a health route is better); else nothing."""
    plain = [r for r in routes if "GET" in r.methods and not r.has_arguments]
    for route in plain:
        if HEALTH_RE.search(route.rule.rstrip("/")):
            return Found(route.rule, f"{route.where}, Flask's routes from {how}")
    if plain:
        return Found(plain[0].rule, f"{plain[0].where}, Flask's routes from {how}; {NO_HEALTH}")
    return Found(
        None,
        f"no GET route without arguments in Flask's routes from {how}; set the path of one that"
        " answers 200",
    )


# --- Node.js
# -----------------------------------------------------------------------------------------------------


def find_node(package_json: str | None, has: Callable[[str], bool]) -> Found:
    """NODE_SCRIPT the way the deploy finds it (package.json's start script or main), so init and
    deploy agree."""
    package = node_package(package_json, has)
    if package.script:
        return Found(package.script, package.why)
    if package_json is None:
        return Found(
            None,
            "no package.json; set the Node.js entry point (the deploy would look for server.js)",
        )
    return Found(
        None, "package.json names no entry that exists (main, or a start script 'node <file>')"
    )


_READY_RE = re.compile(r"""process\.send\s*\(\s*(['"`])ready\1\s*\)""")


def find_wait_ready(sources: Mapping[str, str]) -> Found | None:
    """NODE_WAIT_READY=true when the app's own JavaScript tells PM2 it is ready
    (`process.send('ready')`); None when it does not (PM2 then waits for the port to listen)."""
    for path in sorted(p for p in sources if p.endswith(_JS_SUFFIXES) and is_source(p)):
        if _browser_side(path):
            continue
        match = _READY_RE.search(sources[path])
        if match:
            line = sources[path].count("\n", 0, match.start()) + 1
            return Found("true", f"{path}:{line} sends process.send('ready')")
    return None


def node_prefixes(sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """(prefix, where) of the first path segments Express-style calls answer (`app.use('/chat',
    ...)`), in order."""
    seen: dict[str, str] = {}
    for path in sorted(
        p for p in sources if p.endswith(_JS_SUFFIXES) and is_source(p) and not _browser_side(p)
    ):
        for match in _EXPRESS_RE.finditer(sources[path]):
            first = match.group(3).strip("/").split("/", 1)[0]
            if first and re.fullmatch(r"[A-Za-z0-9._~-]+", first):
                line = sources[path].count("\n", 0, match.start()) + 1
                seen.setdefault("/" + first, f"{path}:{line}")
    return list(seen.items())


def _browser_side(path: str) -> bool:
    """A script the browser runs (Flask's static/ and templates/, a public/ folder): its
    axios.get('/x') is a client."""
    return any(part in ("static", "templates", "public") for part in path.split("/")[:-1])


# --- The route table
# ---------------------------------------------------------------------------------------------


def _first_segments(routes: Iterable[Route]) -> list[str]:
    segments: list[str] = []
    for route in routes:
        first = route.rule.strip("/").split("/", 1)[0]
        if first and "<" not in first and first not in segments:
            segments.append(first)
    return segments


UNMOUNTED = (
    "each app's routes carry their prefixes (found in its code): every path goes to it as the"
    " client sent it"
)


def route_table(
    routes: list[Route], node: list[tuple[str, str]], how: str
) -> tuple[Found, Found, Found]:
    """ROUTES (prefix=app pairs, one `/`), HEALTH_NODE and MOUNTS.

    Flask has a `/` rule: it owns `/`, Node.js the prefixes its code answers (passed as they are);
    none found: a placeholder prefix the Node.js app is mounted under (it sees paths without it),
    with a note asking to name it. Else Flask's first path segments are Python's and Node.js owns
    `/`."""
    root = next((r for r in routes if r.rule == "/"), None)
    if not root:
        return _node_owns_root(routes, how)
    prefixes = [p for p, _ in node if p not in {"/" + s for s in _first_segments(routes)}]
    if not prefixes:
        return _node_under_placeholder(root, how)
    where = ", ".join(f"{p} ({w})" for p, w in node if p in prefixes)
    table = ",".join([f"/={App.PYTHON}", *(f"{p}={App.NODEJS}" for p in prefixes)])
    return (
        Found(table, f"Flask's `/` rule ({root.where}, from {how}); Node.js's prefixes: {where}"),
        Found(prefixes[0], f"Node.js's prefix in ROUTES, {prefixes[0]}"),
        Found("", UNMOUNTED),
    )


def _node_under_placeholder(root: Route, how: str) -> tuple[Found, Found, Found]:
    """Flask owns `/` and no prefix of Node.js's own is found: Node.js is mounted under
    NODE_PLACEHOLDER, with a note asking to name its prefix."""
    return (
        Found(
            f"/={App.PYTHON},{NODE_PLACEHOLDER}={App.NODEJS}",
            f"Flask's `/` rule ({root.where}, from {how}); no prefix of Node.js's own in"
            f" its code (app.use('/x', ...)): {NODE_PLACEHOLDER} is a placeholder, name"
            " Node.js's own (e.g. /chat)",
        ),
        Found(
            NODE_PLACEHOLDER,
            f"Node.js's prefix in ROUTES, {NODE_PLACEHOLDER} (a placeholder)",
        ),
        Found(
            NODE_PLACEHOLDER,
            "Node.js's code answers no prefix of its own: it is mounted under"
            f" {NODE_PLACEHOLDER} and gets each path without it (X-Forwarded-Prefix"
            " names it)",
        ),
    )


def _node_owns_root(routes: list[Route], how: str) -> tuple[Found, Found, Found]:
    """Flask has no `/` rule: its routes' first path segments are Python's, Node.js owns `/`."""
    segments = _first_segments(routes)
    if not segments:
        return (
            Found(
                None,
                f"no Flask route in {how}; name the prefixes Flask serves, e.g."
                " ROUTES=/api=python,/=nodejs",
            ),
            Found("/", "Node.js owns / in ROUTES"),
            Found("", "nothing is mounted"),
        )
    table = ",".join([*(f"/{s}={App.PYTHON}" for s in segments), f"/={App.NODEJS}"])
    return (
        Found(
            table, f"the first path segments of Flask's routes (from {how}); Node.js owns the rest"
        ),
        Found("/", "Node.js owns / in ROUTES"),
        Found("", UNMOUNTED),
    )


# --- Everything init writes from the app
# ---------------------------------------------------------------------------


def app_name(folder: str) -> Found:
    """APP_NAME from the app's folder name, made a valid one (lower-case letters, digits, '-', a
    letter first)."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:40].rstrip("-")
    if not name:
        return Found(
            None,
            f"the folder's name ({folder!r}) makes no name; set one (lower-case letters, digits,"
            " '-')",
        )
    return Found(name, f"the app's folder name ({folder})")


@dataclass(frozen=True)
class RoutesRead:
    """Flask's routes and how they were read (the app's url_map in its venv, or the source, and
    why)."""

    routes: list[Route]
    how: str


def findings(
    folder: str, paths: Iterable[str], texts: Mapping[str, str], routes: RoutesRead
) -> dict[str, Found]:
    """Every key init writes from the app: {key: Found}."""
    names = set(paths)
    name = app_name(folder)
    root = (
        Found(
            f"/home/ubuntu/{name.value}",
            "/home/ubuntu/ + APP_NAME (the home of the deploy user `ubuntu`)",
        )
        if name.value
        else Found(None, "no APP_NAME to name it after")
    )
    table, health_node, mounts = route_table(routes.routes, node_prefixes(texts), routes.how)
    ready = find_wait_ready(texts)
    return {
        "APP_NAME": name,
        "DEPLOY_ROOT": root,
        "WSGI_APP": find_wsgi({p: t for p, t in texts.items() if p.endswith(".py")}),
        "NODE_SCRIPT": find_node(texts.get("package.json"), names.__contains__),
        "ROUTES": table,
        "MOUNTS": mounts,
        "HEALTH_PY": find_health(routes.routes, routes.how),
        "HEALTH_NODE": health_node,
        **({"NODE_WAIT_READY": ready} if ready else {}),
    }


# Node.js packages of a queue consumer or a scheduler: a process the Procfile would run.
_NODE_WORKER_PACKAGES = ("bullmq", "bull", "bee-queue", "agenda", "node-cron", "node-schedule")


def _celery_apps(path: str, tree: ast.Module) -> list[str]:
    """`module:name` of each module-level `name = Celery(...)` in one file."""
    module = module_name(path)
    apps = []
    for stmt in tree.body:
        pair = _assigned(stmt)
        if module and pair and _called_name(pair[1]) == "Celery":
            apps.append(f"{module}:{pair[0]}")
    return apps


def _imports(tree: ast.Module, package: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == package for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == package:
            return True
    return False


def _python_workers(texts: Mapping[str, str]) -> list[str]:
    suggestions: list[str] = []
    rq_in = ""
    for path in sorted(p for p in texts if p.endswith(".py")):
        tree = _parse(texts[path])
        if tree is None:
            continue
        for app in _celery_apps(path, tree):
            scheduled = "beat_schedule" in texts[path] or "add_periodic_task" in texts[path]
            suggestions.append(f"`worker: celery -A {app} worker` (a Celery app in {path})")
            if scheduled:
                suggestions.append(
                    f"`beat: celery -A {app} beat --schedule shared/celerybeat-schedule` (its"
                    " periodic tasks; `shared` in SHARED_PATHS keeps the schedule across releases)"
                )
        if not rq_in and _imports(tree, "rq"):
            rq_in = path
    if rq_in:
        suggestions.append(
            f"`worker: rq worker --url $REDIS_URL` (RQ imported in {rq_in}; REDIS_URL from"
            " APP_ENV_FILE)"
        )
    return suggestions


def _node_workers(package_json: str | None) -> list[str]:
    try:
        package = json.loads(package_json) if package_json else {}
    except ValueError:
        return []
    deps: dict[str, object] = {}
    for field in ("dependencies", "devDependencies"):
        if isinstance(package, dict) and isinstance(package.get(field), dict):
            deps.update(package[field])
    return [
        f"`worker: node <its consumer script>.js` (package.json depends on {name})"
        for name in _NODE_WORKER_PACKAGES
        if name in deps
    ]


def find_workers(texts: Mapping[str, str]) -> list[str]:
    """Procfile lines an app's source suggests (Celery apps and their beat, RQ, a Node.js queue or
    scheduler package), each with where it was found; init shows them and never writes them."""
    return [*_python_workers(texts), *_node_workers(texts.get("package.json"))]
