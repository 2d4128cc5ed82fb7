"""Planning: pure functions from (settings, source, host facts) to what a deploy will do.

This is where the reload decision is made (docs/deploy.md says what each change reloads). The same `Plan` is printed
by `deploy --dry-run` and carried out by `deploy`, so the two cannot disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from signalcraft_deploy.core import formats, procfile
from signalcraft_deploy.core.apps import App as App  # re-exported: `core.plan.App` still works
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.render import (
    ECOSYSTEM,
    digest,
    ecosystem_name,
    node_entry,
    node_modules_name,
    python_entry,
    render_nginx_site,
    render_release_configs,
    templates_digest,
    venv_dir,
    written_by_us,
)
from signalcraft_deploy.core.secrets import visible
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.core.source import readers, tool_files

# Settings that only matter on the deploying machine: the same commit from another checkout
# is the same release.
LOCAL_ONLY = Settings.LOCAL_ONLY  # declared in core/settings.py: key(..., local=True)


@dataclass(frozen=True)
class Manifest:
    """What a release is made of; stored in <release>/.signalcraft/manifest.json."""

    release: str
    key: str
    sha: str
    tree: str
    python_code: str
    node_code: str
    requirements: str
    venv: str
    package_lock: str | None
    node_modules: str | None
    python_entry: str
    node_entry: str
    gunicorn_conf: str
    deployed_at: str
    deployed_by: str
    # The releases each app is meant to run once this deploy is done (an unchanged app keeps its
    # own).
    python_release: str = ""
    node_release: str = ""
    inputs: str = ""  # digest of everything the release is made from (see release_inputs)
    site: str = ""  # digest of the Nginx site this deploy wants
    # Fields a manifest of an older version lacks (read as "unknown": the app is reloaded).
    # digest of the release's own .env (APP_ENV_FILE, or carried from the live release); "" none
    app_env: str = ""
    node_script: str = ""  # the Node.js entry point, as resolved (NODE_SCRIPT or package.json)
    ecosystem: str = ECOSYSTEM  # PM2's file in the release (.cjs for an ES module package)
    node_install: str = ""  # "npm ci", "npm install" or "" (no package.json)
    # The Procfile processes (core/procfile.py Process records), each with the release and venv it
    # runs (an unchanged process keeps its own).
    processes: list[dict[str, Any]] = field(default_factory=list)
    # Whether this host runs the singletons (a fleet's first host; any single host): what a later
    # `pm2-reload` or a failed `remove` starts again, run on this host alone, must know.
    singleton_host: bool = True
    # The Gunicorn master serving this release was started by this version, or HUPed by it only
    # after Gunicorn's own reading of its configuration showed no preload_app (see _master_why).
    gunicorn_checked: bool = False
    # The environment (--environment) this release was deployed as; "" none.
    environment: str = ""
    # NODE_INSTANCES as this release ran it (1 for a session-bound app by default); 0: not recorded
    node_instances: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest as read from a host; fields it lacks (an older version wrote it) take their
        defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return (
            json.dumps(formats.stamp(formats.MANIFEST, self.__dict__), indent=2, sort_keys=True)
            + "\n"
        )


def release_settings(s: Settings, manifest: dict[str, Any] | None) -> Settings:
    """The settings for acting on a release already on the host: its Node.js entry point and
    instances as its manifest records them, when NODE_SCRIPT and NODE_INSTANCES are unset."""
    recorded = (manifest or {}).get("processes") or ()
    s = replace(s, processes=tuple(procfile.Process.from_record(r) for r in recorded))
    instances = (manifest or {}).get("node_instances")
    if instances and s.origins.get("NODE_INSTANCES", "default") == "default":
        s = replace(
            s,
            node_instances=int(instances),
            origins={**s.origins, "NODE_INSTANCES": "the release's manifest"},
        )
    script = (manifest or {}).get("node_script")
    if s.node_script or not script:
        return s
    return replace(
        s, node_script=script, origins={**s.origins, "NODE_SCRIPT": "the release's manifest"}
    )


# The app_env of a release whose .env was carried over from a release that recorded none (an older
# version's).
CARRIED = "carried"


class PlanError(ValueError):
    """The host is in a state a deploy must not touch (a port held by a stranger, say); the message
    says why."""


class How(StrEnum):
    """How an app is brought to the new release; the values are the words the plan and the summary
    show."""

    NONE = "none"
    START = "start"
    HUP = "hup"
    NEW_MASTER = "new-master"
    TAKEOVER = "takeover"
    RELOAD = "reload"
    HANDOVER = "handover"
    WRITE_AND_RELOAD = "write-and-reload"
    # Procfile processes (core/procfile.py)
    OVERLAP = "overlap"
    STOP_FIRST = "stop-first"
    STOP = "stop"
    ELSEWHERE = "elsewhere"

    @property
    def description(self) -> str:
        return _HOW_TEXT[self]

    @property
    def runs_new_code_in_place(self) -> bool:
        """The app's own processes load the new release: it is tried on spare ports first (the trial
        run)."""
        return self in (How.START, How.HUP, How.RELOAD, How.TAKEOVER)

    @property
    def hands_over(self) -> bool:
        """New processes take over from the old ones through an Nginx switch (a handover); Python's
        `current` moves only once the old ones are idle."""
        return self in (How.NEW_MASTER, How.TAKEOVER, How.HANDOVER)


_HOW_TEXT = {
    How.NONE: "leave as is",
    How.START: "pm2 start --only",
    How.HUP: "pm2 sendSignal SIGHUP (graceful)",
    How.NEW_MASTER: "new Gunicorn master on the handover address, Nginx switch, old master drains",
    How.TAKEOVER: (
        "record the unmanaged server, start Gunicorn on the handover address, Nginx switch, stop it"
    ),
    How.RELOAD: "pm2 reload --only --update-env (rolling, cluster mode)",
    How.HANDOVER: "new processes on the handover port, Nginx switch, old ones stopped",
    How.WRITE_AND_RELOAD: "write site, nginx -t, graceful reload",
    How.OVERLAP: "new instances start, then the old ones get the stop signal and finish their job",
    How.STOP_FIRST: "singleton: the old one stops (finishing its job), then the new one starts",
    How.STOP: "stop signal, its job finished, removed from PM2",
    How.ELSEWHERE: "runs on the fleet's first host only",
}


@dataclass(frozen=True)
class Action:
    app: App
    how: How
    why: str
    pid: int | None = None  # the unmanaged server a takeover replaces
    # its processes run under the deploy user's own PM2: the new ones start under APP_USER's
    moves: bool = False
    # the unmanaged server a takeover replaces is the apps' own account's, not the deploy user's
    apps_own: bool = False
    # open connections (WebSockets, streams) to the processes this action replaces, when counted
    closes: int | None = None
    # PM2's entry changes in a way `pm2 reload` does not apply (mode, instances, script)
    entry_changes: bool = False

    @property
    def shown(self) -> str:
        """`app: how` as the plan step and the summary say it, with the connections it closes."""
        closes = (
            f" (closes {self.closes} open connection(s): WebSockets, streams; clients reconnect"
            " to the new code)"
            if self.closes
            else ""
        )
        return f"{self.app}: {self.how}{closes}"


@dataclass(frozen=True)
class ProcessAction:
    """How one Procfile process moves to the new release (or stops: gone from the Procfile)."""

    name: str
    how: How
    why: str


@dataclass
class Plan:
    manifest: Manifest
    configs: dict[str, str]
    site: str
    actions: list[Action] = field(default_factory=list)
    new_release: bool = True
    build_venv: bool = False
    build_node_modules: bool = False
    notes: list[str] = field(default_factory=list)
    processes: list[ProcessAction] = field(default_factory=list)  # the Procfile's, by name
    changed: list[str] | None = None  # paths that differ from the live release, when known
    extras: str | None = (
        None  # location blocks kept from a site taken over (written beside ours), as shown
    )
    extras_lines: tuple[
        int, ...
    ] = ()  # where they start in that site: root copies them from its own copy
    site_defaults: dict[str, str] = field(
        default_factory=dict
    )  # settings a site taken over implied, kept on the host

    @property
    def nothing_to_do(self) -> bool:
        hows = [a.how for a in self.actions] + [p.how for p in self.processes]
        return not self.new_release and all(how in (How.NONE, How.ELSEWHERE) for how in hows)

    def action(self, app: App | str) -> Action:
        return next(a for a in self.actions if a.app == app)

    @property
    def tried(self) -> tuple[App, ...]:
        """The apps whose own processes will load new code: tried on spare ports before anything is
        switched. Python handed over (new-master) is tried by its handover copy instead."""
        # Node.js is tried before a handover too: its handover copy runs in cluster mode, where PM2
        # loses a worker's start-up error (the trial runs it in fork mode, which keeps it).
        return tuple(
            a.app
            for a in self.actions
            if a.app is not App.NGINX and (a.how.runs_new_code_in_place or a.how is How.HANDOVER)
        )


def release_key(
    s: Settings, tree: str, requirements: str, package_lock: str | None, app_env_digest: str | None
) -> str:
    public = {k: v for k, v in s.public().items() if k not in LOCAL_ONLY}
    return digest(
        tree,
        json.dumps(public, sort_keys=True),
        requirements,
        package_lock or "",
        app_env_digest or "",
    )


def release_inputs(
    s: Settings, tree: str, requirements: str, package_lock: str | None, app_env_digest: str | None
) -> str:
    """Everything a release's files are made from (code, settings, requirements, templates, this
    tool's rendering code), as one digest that needs no rendering."""
    return digest(
        release_key(s, tree, requirements, package_lock, app_env_digest),
        templates_digest(s.templates_dir),
    )


def make_manifest(
    s: Settings,
    *,
    sha: str,
    tree: str,
    python_code: str,
    node_code: str,
    requirements: str,
    package_lock: str | None,
    app_env_digest: str | None,
    who: str,
    now: datetime | None = None,
    package_json: str | None = None,
    esm: bool = False,
) -> tuple[Manifest, dict[str, str]]:
    """The manifest and rendered configs of the release this source would become."""
    now = now or datetime.now(UTC)
    venv = venv_dir(s, requirements)
    configs = render_release_configs(s, venv, esm)
    lock_digest = digest(package_lock)[:16] if package_lock is not None else None
    modules = node_modules_name(package_lock, package_json)
    manifest = Manifest(
        release=f"{now.strftime('%Y%m%dT%H%M%SZ')}-{sha[:12]}",
        key=digest(
            release_key(s, tree, requirements, package_lock, app_env_digest), *configs.values()
        ),
        sha=sha,
        tree=tree,
        python_code=python_code,
        node_code=node_code,
        requirements=digest(requirements),
        venv=venv,
        package_lock=lock_digest,
        node_modules=f"{s.node_modules_dir}/{modules}" if modules else None,
        python_entry=digest(json.dumps(python_entry(s, venv), sort_keys=True)),
        node_entry=digest(json.dumps(node_entry(s), sort_keys=True)),
        gunicorn_conf=digest(configs["gunicorn.conf.py"]),
        deployed_at=now.isoformat(timespec="seconds"),
        deployed_by=who,
        environment=s.environment or "",
        inputs=release_inputs(s, tree, requirements, package_lock, app_env_digest),
        app_env=app_env_digest[:16] if app_env_digest is not None else "",
        node_script=node_entry(s)["script"].removeprefix(s.current_dir + "/"),
        node_instances=s.node_instances,
        ecosystem=ecosystem_name(esm),
        node_install=(
            "npm ci"
            if package_lock is not None
            else ("npm install" if package_json is not None else "")
        ),
    )
    return replace(manifest, processes=process_records(s, manifest)), configs


def as_recorded_host(s: Settings, manifest: dict[str, Any] | None) -> Settings:
    """`s` for a task on this host alone: it runs the singletons as RUN_SINGLETONS says, or (auto)
    only if the live release's deploy made it run them (a task on one host of a fleet cannot tell
    its place in the fleet otherwise; a host with no record runs them)."""
    if s.run_singletons != "auto":
        return replace(s, singleton_host=s.run_singletons == "yes")
    return replace(s, singleton_host=bool((manifest or {}).get("singleton_host", True)))


def process_records(s: Settings, m: Manifest) -> list[dict[str, Any]]:
    return [{**p.record(), "release": m.release, "venv": m.venv} for p in s.processes]


def _stranger_on(facts: HostFacts, port: int, ours: set[int]) -> tuple[int, str] | None:
    """A process other than ours (or Nginx/PM2) listening on `port`: (pid, command)."""
    for listener in facts.listening_on(port):
        for pid, name in zip(listener.pids, listener.names, strict=False):
            if pid not in ours:
                return pid, facts.commands.get(pid, name)
    return None


def _takeover(s: Settings, facts: HostFacts, pid: int, command: str) -> Action:
    """The unmanaged server on GUNICORN_BIND is taken over only if it is the deploy user's own or
    the apps' own account's (APP_USER), its command matches LEGACY_MATCH and it runs from the app's
    folder (one that holds WSGI_APP's module). Anything else is refused, and left running: another
    user's process is never signalled, and its command line (which may hold that user's secrets) is
    not shown."""
    owner, me, bind = facts.owners.get(pid), facts.user or "the deploy user", s.gunicorn_bind
    command = visible(
        command
    )  # its owner's to choose (a process title): shown, never obeyed by the terminal
    if owner is None:
        raise PlanError(
            f"GUNICORN_BIND {bind} is in use by pid {pid}, whose owner could not be read (it may"
            " have just exited): deploy again, or stop it, or set another GUNICORN_BIND."
        )
    apps_own = (
        owner.uid != facts.uid
        and owner.user == s.app_user
        and bool(facts.user)
        and facts.user != s.app_user
    )
    if owner.uid != facts.uid and not apps_own:
        raise PlanError(
            f"GUNICORN_BIND {bind} is in use by pid {pid} of user {owner.user}, not of the deploy"
            f" user {me} or the apps' account {s.app_user}: a deploy takes over only their own"
            f" processes, so it was left running. Stop it (as {owner.user} or root), or restart it"
            f" as {s.app_user} and deploy again, or set another GUNICORN_BIND."
        )
    if not re.search(s.legacy_match, command):
        raise PlanError(
            f"GUNICORN_BIND {bind} is in use by pid {pid} ({command[:80]}), which is not ours and"
            f" does not match LEGACY_MATCH {s.legacy_match!r}: stop it, set another GUNICORN_BIND,"
            " or set LEGACY_MATCH so that the deploy takes it over."
        )
    if not owner.holds_app:
        module = s.wsgi_app.split(":", 1)[0]
        raise PlanError(
            f"GUNICORN_BIND {bind} is in use by pid {pid} ({command[:80]}), which runs from"
            f" {visible(owner.cwd) or 'a folder that could not be read'}, not from the app's folder"
            f" (one holding WSGI_APP's module {module!r}): it is not taken over. Stop it, or set"
            " another GUNICORN_BIND."
        )
    return Action(
        App.PYTHON,
        How.TAKEOVER,
        f"an unmanaged server holds {bind} (pid {pid}: {command[:80]})",
        pid,
        apps_own=apps_own,
    )


def _moving(s: Settings, facts: HostFacts) -> str:
    return (
        f"it runs under {facts.user or 'the deploy user'}'s own PM2; it moves to {s.app_user}'s"
        " (APP_USER)"
    )


def _python_action(
    s: Settings,
    m: Manifest,
    facts: HostFacts,
    old: dict[str, Any] | None,
    changed: list[str] | None = None,
) -> Action:
    if facts.to_move(s.python_app):
        return Action(App.PYTHON, How.NEW_MASTER, _moving(s, facts), moves=True)
    procs = facts.apps(s.python_app)
    if not procs or not facts.online(s.python_app):
        state = procs[0].status if procs else "not in PM2"
        stranger = _stranger_on(facts, s.gunicorn_bind.port, {p.pid for p in procs})
        if stranger:
            return _takeover(s, facts, *stranger)
        return Action(App.PYTHON, How.START, f"{s.python_app} is {state}")
    running = procs[0]
    if running.exec_path != f"{m.venv}/bin/gunicorn" or (
        old and old.get("python_entry") != m.python_entry
    ):
        return Action(
            App.PYTHON,
            How.NEW_MASTER,
            "the Python environment or the PM2 entry changed; a HUP cannot load them",
        )
    if not old:
        return Action(App.PYTHON, How.HUP, "no record of the running release")
    if env_changed(m, old):
        # gunicorn.conf.py reads the release's env.json, and a HUP reads gunicorn.conf.py again
        return Action(App.PYTHON, How.HUP, f"{env_why(old)}; a HUP reads it again")
    if code_changed(s, App.PYTHON, old.get("python_code") != m.python_code, changed):
        return Action(App.PYTHON, How.HUP, files_why(s, App.PYTHON, changed))
    if old.get("gunicorn_conf") != m.gunicorn_conf:
        return Action(App.PYTHON, How.HUP, "gunicorn.conf.py changed")
    return Action(App.PYTHON, How.NONE, "unchanged")


# Settings a HUP does not apply: the listening sockets stay the master's (reuse_port), or are made
# again in place (bind), where a new master takes over through Nginx.
_LISTENER_SETTINGS = ("bind", "reuse_port")


def _master_why(old: dict[str, Any] | None, facts: HostFacts) -> str | None:
    """Why a HUP cannot bring the running Gunicorn master to the new release, from Gunicorn's own
    reading of both configurations (facts.gunicorn; None: not read, nothing to say). A preloaded
    app (preload_app, now or when the master started) is imported by the master, and every worker
    a HUP forks inherits that old code."""
    read = facts.gunicorn
    if read is None:
        return None
    if "error" in read or "live" not in read or "new" not in read:
        return f"Gunicorn's effective configuration could not be read ({read.get('error')})"
    if not (old or {}).get("gunicorn_checked"):
        return (
            "no record of how the running Gunicorn master was started (an earlier version may have"
            " HUPed a master that preloads the app, which keeps serving its old code)"
        )
    if read["live"].get("preload_app"):
        return "the running Gunicorn master preloads the app (preload_app): a HUP keeps its code"
    if read["new"].get("preload_app"):
        return "the new gunicorn.conf.py preloads the app (preload_app), which a HUP cannot start"
    for name in _LISTENER_SETTINGS:
        if read["live"].get(name) != read["new"].get(name):
            return f"Gunicorn's {name} changes, which a HUP does not apply to its listening socket"
    return None


def env_changed(m: Manifest, old: dict[str, Any] | None) -> bool:
    """The app's environment (.env) differs from the live release's, or is not known there (an older
    manifest)."""
    if not old:
        return False
    if (
        "app_env" not in old
    ):  # an older version's release: its .env, if any, is the one carried over
        return bool(m.app_env) and m.app_env != CARRIED
    return old["app_env"] != m.app_env


def env_why(old: dict[str, Any] | None) -> str:
    if old and "app_env" not in old:
        return "no record of the live release's environment (.env)"
    return "the app's environment (.env from APP_ENV_FILE) changed"


def code_changed(s: Settings, app: App, digest_differs: bool, changed: list[str] | None) -> bool:
    """Whether a file `app` reads changed. With the changed paths known, PY_FILES/NODE_FILES as set
    now decide (so setting them does not itself reload an app); without them, the digests recorded
    in the manifests do.
    """
    if changed is None:
        return digest_differs
    tool = tool_files(s)
    return any(app in readers(p, s.py_files, s.node_files, tool) for p in changed)


def files_why(s: Settings, app: App, changed: list[str] | None, limit: int = 4) -> str:
    """Why an app is reloaded for its files: the changed files it reads, by name."""
    key = "PY_FILES" if app is App.PYTHON else "NODE_FILES"
    tool = tool_files(s)
    mine = [p for p in changed or () if app in readers(p, s.py_files, s.node_files, tool)]
    if not mine:
        return (
            f"the files it reads changed ({key}"
            f" {'set' if getattr(s, key.lower()) else 'unset: every file it may read'})"
        )
    shown = ", ".join(mine[:limit]) + (
        f" and {len(mine) - limit} more" if len(mine) > limit else ""
    )
    return f"files it reads changed: {shown}"


def _node_action(
    s: Settings,
    m: Manifest,
    facts: HostFacts,
    old: dict[str, Any] | None,
    changed: list[str] | None = None,
) -> Action:
    if facts.to_move(s.node_app):
        return Action(App.NODEJS, How.HANDOVER, _moving(s, facts), moves=True)
    procs = facts.apps(s.node_app)
    if not procs or not facts.online(s.node_app):
        state = procs[0].status if procs else "not in PM2"
        stranger = _stranger_on(facts, s.node_port, {p.pid for p in procs})
        if stranger:
            raise PlanError(
                f"NODE_PORT {s.node_port} is in use by pid {stranger[0]}"
                f" ({visible(stranger[1][:80])}), which is not {s.node_app}: stop it or set another"
                " NODE_PORT."
            )
        return Action(App.NODEJS, How.START, f"{s.node_app} is {state}")
    if (
        any(p.exec_mode != "cluster" for p in procs)
        or len(procs) != s.node_instances
        or any(p.exec_path != node_entry(s)["script"] for p in procs)
    ):
        return Action(
            App.NODEJS,
            How.HANDOVER,
            "its PM2 mode, instances or script changed, which `pm2 reload` does not apply",
            entry_changes=True,
        )
    if not old or old.get("node_entry") != m.node_entry:
        return Action(App.NODEJS, How.RELOAD, "its PM2 settings changed")
    if env_changed(m, old):
        return Action(App.NODEJS, How.RELOAD, f"{env_why(old)}; its processes are replaced with it")
    if old.get("package_lock") != m.package_lock or old.get("node_modules") != m.node_modules:
        return Action(
            App.NODEJS, How.RELOAD, f"its dependencies changed ({m.node_install or 'none now'})"
        )
    if code_changed(s, App.NODEJS, old.get("node_code") != m.node_code, changed):
        return Action(App.NODEJS, How.RELOAD, files_why(s, App.NODEJS, changed))
    if old.get("ecosystem", ECOSYSTEM) != m.ecosystem:
        return Action(App.NODEJS, How.RELOAD, f"PM2's file is now {m.ecosystem}")
    return Action(App.NODEJS, How.NONE, "unchanged")


def _node_reload_kind(s: Settings, node: Action) -> Action:
    """A change that reaches running Node.js processes is carried by NODE_RELOAD: a handover
    (Nginx moves to new processes first, so no old process gets a connection while it closes), or
    PM2's rolling reload."""
    if node.how is How.RELOAD and s.node_reload == "handover":
        return replace(node, how=How.HANDOVER)
    return node


def site_digest(site_text: str) -> str:
    return digest(site_text.rstrip("\n"))


def _drift(
    s: Settings, facts: HostFacts, old: dict[str, Any] | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """The releases each app should run, and why it does not (an earlier deploy cut short), if it
    does not."""
    want_py = (old or {}).get("python_release") or (old or {}).get("release")
    want_node = (old or {}).get("node_release") or (old or {}).get("release")
    running_py = facts.releases_running(s.python_app, s.releases_dir, workers=True)
    running_node = facts.releases_running(s.node_app, s.releases_dir)
    drift_py = drift_node = None
    if want_py and running_py and running_py != {want_py}:
        drift_py = (
            f"Gunicorn runs {', '.join(sorted(running_py))}, not {want_py}: an earlier deploy was"
            " cut short"
        )
    if want_node and running_node and running_node != {want_node}:
        drift_node = (
            f"Node.js runs {', '.join(sorted(running_node))}, not {want_node}: an earlier deploy"
            " was cut short"
        )
    return want_py, want_node, drift_py, drift_node


def unchanged(s: Settings, inputs: str, facts: HostFacts) -> bool:
    """The common no-op, decided from digests without rendering a file: the live release was made
    from these same inputs, its Nginx site is in place unchanged, and both apps run it as recorded.
    Conservative: any doubt is False, and `make_plan` decides."""
    old = facts.manifest
    if not old or not facts.current_release or not old.get("inputs") or old.get("inputs") != inputs:
        return False
    if not (
        facts.site_enabled
        and facts.site_text is not None
        and old.get("site") == site_digest(facts.site_text)
    ):
        return False
    try:
        recorded = Manifest(
            **{
                f.name: old[f.name]
                for f in fields(Manifest)
                if f.name in old or f.default is MISSING
            }
        )
        actions = (_python_action(s, recorded, facts, old), _node_action(s, recorded, facts, old))
    except (KeyError, TypeError, PlanError):
        return False
    _, _, drift_py, drift_node = _drift(s, facts, old)
    steady = all(a.how == How.NONE for a in actions) and not drift_py and not drift_node
    return steady and processes_steady(s, facts, old)


def processes_steady(s: Settings, facts: HostFacts, old: dict[str, Any]) -> bool:
    """Every recorded Procfile process runs (online), and none that should not (a singleton off the
    fleet's first host)."""
    for record in old.get("processes") or ():
        running = process_running(s, facts, record["name"])
        if record.get("singleton") and not s.singleton_host:
            if running:
                return False
        elif not running or any(p.status != "online" for p in running):
            return False
    return True


def _check_listen(s: Settings, facts: HostFacts) -> None:
    """Refuse a listen address that only a restart of Nginx could apply, or one held by another
    program."""
    wanted = [("NGINX_LISTEN", x) for x in s.nginx_listen] + (
        [("TLS_LISTEN", x) for x in s.tls_listen] if s.tls else []
    )
    for key, want in wanted:
        for listener in facts.listening_on(want.port):
            strangers = [
                (pid, name)
                for pid, name in zip(listener.pids, listener.names, strict=False)
                if "nginx" not in name
            ]
            if strangers:
                raise PlanError(
                    f"{key} {want} is held by pid {strangers[0][0]} ({strangers[0][1]}), not Nginx:"
                    f" stop it or set another {key}."
                )
        if want.wildcard:
            held = [
                lst
                for lst in facts.listening_on(want.port)
                if lst.host not in ("0.0.0.0", "*", "::")
                and (":" in lst.host) == (want.family == 6)
            ]
            wild = [
                lst
                for lst in facts.listening_on(want.port)
                if lst.host in (("::",) if want.family == 6 else ("0.0.0.0", "*"))
            ]
            if held and not wild:
                addresses = ",".join(
                    f"[{h.host}]:{h.port}" if ":" in h.host else f"{h.host}:{h.port}" for h in held
                )
                raise PlanError(
                    f"{key} {want} means every address, but Nginx holds port {want.port} on"
                    f" {addresses} only; Linux refuses a wildcard bind on a port the same process"
                    " holds on one address, so a reload cannot apply it (Nginx would keep its old"
                    f" configuration, and every later reload would fail). Set {key}={addresses} to"
                    f" keep the address Nginx has (at a takeover, leaving {key} unset keeps the old"
                    " site's own listen lines)."
                )


FORMER_DEFAULT_SITE = (  # NGINX_SITE's default for every app before 0.4.0
    "/etc/nginx/sites-available/signalcraft"
)


def _check_former_default_site(s: Settings, facts: HostFacts) -> None:
    """A live release whose site is not at NGINX_SITE's default (<APP_NAME> now): it was served by
    the former default file, which a new site beside it would clash with. Refused before anything
    changes, naming the key.
    """
    if s.origins.get("NGINX_SITE", "default") != "default" or s.nginx_site == FORMER_DEFAULT_SITE:
        return
    if facts.current_release and facts.manifest and facts.site_text is None:
        raise PlanError(
            f"NGINX_SITE now defaults to {s.nginx_site} (named after APP_NAME), and this host's"
            " live release is not served by that file: an earlier version wrote its site to"
            f" {FORMER_DEFAULT_SITE}. Nothing was changed. Set NGINX_SITE={FORMER_DEFAULT_SITE} in"
            " the settings file to keep that site, or set NGINX_SITE to the file that serves this"
            " app."
        )


def _check_same_environment(s: Settings, old: dict[str, Any] | None) -> None:
    """A DEPLOY_ROOT whose live release was deployed as another environment (staging's deploy into
    production's, say: its file left without a DEPLOY_ROOT of its own): refused before anything
    changes."""
    live = (old or {}).get("environment") or ""
    if live and s.environment and live != s.environment:
        raise PlanError(
            f"DEPLOY_ROOT {s.deploy_root} holds the live release of the environment {live!r}, not"
            f" of {s.environment!r}. Give {s.environment_file or 'its settings file'} its own"
            f" DEPLOY_ROOT, APP_NAME and ports (see docs/environments.md), or deploy with"
            f" --environment {live}."
        )


def make_plan(
    s: Settings,
    manifest: Manifest,
    configs: dict[str, str],
    facts: HostFacts,
    changed: list[str] | None = None,
) -> Plan:
    """Decide what to build and what to reload, from what changed (`changed`: the paths that differ
    from the live release, when known, to name them in the reasons)."""
    old = facts.manifest
    _check_former_default_site(s, facts)
    _check_same_environment(s, old)
    site = render_nginx_site(s)
    manifest = _manifest_with_site_and_env(manifest, site, facts)
    same_release = (
        old is not None and old.get("key") == manifest.key and facts.current_release is not None
    )
    plan = Plan(
        manifest=manifest, configs=configs, site=site, new_release=not same_release, changed=changed
    )
    if old is not None and same_release:
        # Keep the release that is live; only bring stopped apps back and repair the site.
        plan.manifest = _live_release_manifest(manifest, facts, old)
    venv_name = manifest.venv.rsplit("/", 1)[-1]
    plan.build_venv = venv_name not in facts.venvs_ready
    if manifest.node_modules:
        plan.build_node_modules = (
            manifest.node_modules.rsplit("/", 1)[-1] not in facts.node_modules_ready
        )
    py = _python_action(s, manifest, facts, old, changed)
    node = _node_action(s, manifest, facts, old, changed)
    if same_release and py.how in (How.HUP, How.NEW_MASTER) and not py.moves:
        py = Action(App.PYTHON, How.NONE, "unchanged")
    if same_release and node.how == How.RELOAD:
        node = Action(App.NODEJS, How.NONE, "unchanged")
    nginx = _nginx_action(facts, site)
    _check_listen(s, facts)
    _check_site_is_ours(s, facts, py)
    want_py, want_node, py, node = _converge(s, facts, old, py, node)
    node = _node_reload_kind(s, node)
    if node.how in (How.RELOAD, How.HANDOVER) and facts.node_connections is not None:
        node = replace(node, closes=facts.node_connections)
    release = plan.manifest.release
    plan.manifest = replace(
        plan.manifest,
        python_release=release if py.how != How.NONE else (want_py or release),
        node_release=release if node.how != How.NONE else (want_node or release),
    )
    plan.actions = [py, node, nginx]
    plan.processes, records = process_actions(s, plan.manifest, facts, old, changed, same_release)
    plan.manifest = replace(
        plan.manifest,
        processes=records,
        singleton_host=s.singleton_host,
        gunicorn_checked=py.how in (How.START, How.NEW_MASTER, How.TAKEOVER)
        or bool((old or {}).get("gunicorn_checked")),
    )
    plan.notes.extend(s.procfile_notes)
    return plan


def _converge(
    s: Settings, facts: HostFacts, old: dict[str, Any] | None, py: Action, node: Action
) -> tuple[str | None, str | None, Action, Action]:
    """The releases each app should run, and the actions with what the running processes need: an
    interrupted deploy can leave an app running another release than the one recorded (a HUP or a
    rolling reload loads what `current` holds); a Gunicorn master a HUP cannot reload gets a new
    one."""
    want_py, want_node, drift_py, drift_node = _drift(s, facts, old)
    if py.how == How.NONE and drift_py:
        py = Action(App.PYTHON, How.HUP, drift_py)
    if node.how == How.NONE and drift_node:
        node = Action(App.NODEJS, How.RELOAD, drift_node)
    if py.how is How.HUP and (master_why := _master_why(old, facts)):
        py = Action(App.PYTHON, How.NEW_MASTER, master_why)
    return want_py, want_node, py, node


def process_pm2_names(s: Settings, name: str) -> tuple[str, str]:
    """A process's two PM2 names: its own, and the twin its new instances take while the old ones
    finish."""
    return s.process_name(name), s.process_name(name) + procfile.TWIN_SUFFIX


def process_running(s: Settings, facts: HostFacts, name: str) -> list[Any]:
    """The PM2 processes of a Procfile process, under either of its names."""
    return [p for n in process_pm2_names(s, name) for p in facts.apps(n)]


def process_actions(
    s: Settings,
    m: Manifest,
    facts: HostFacts,
    old: dict[str, Any] | None,
    changed: list[str] | None,
    same_release: bool,
) -> tuple[list[ProcessAction], list[dict[str, Any]]]:
    """How each Procfile process moves, and the records the manifest keeps (an unchanged process
    keeps the release and venv it runs)."""
    before = {r["name"]: r for r in (old or {}).get("processes") or ()}
    actions, records = [], []
    for proc in s.processes:
        record = {**proc.record(), "release": m.release, "venv": m.venv}
        how, why = _process_how(s, proc, m, facts, old, before.get(proc.name), changed)
        if how is How.NONE or (same_release and how in (How.OVERLAP, How.STOP_FIRST)):
            how, why = How.NONE, "unchanged"
            record = {**record, **{k: before[proc.name][k] for k in ("release", "venv")}}
        actions.append(ProcessAction(proc.name, how, why))
        records.append(record)
    for name in sorted(set(before) - {p.name for p in s.processes}):
        if process_running(s, facts, name):
            actions.append(ProcessAction(name, How.STOP, "no longer in the Procfile"))
    return actions, records


def _process_how(
    s: Settings,
    proc: procfile.Process,
    m: Manifest,
    facts: HostFacts,
    old: dict[str, Any] | None,
    before: dict[str, Any] | None,
    changed: list[str] | None,
) -> tuple[How, str]:
    running = process_running(s, facts, proc.name)
    if proc.singleton and not s.singleton_host:
        if running:
            return How.STOP, "a singleton runs on the fleet's first host only"
        return How.ELSEWHERE, "a singleton runs on the fleet's first host only"
    if not running or any(p.status != "online" for p in running):
        state = ",".join(sorted({p.status for p in running})) or "not in PM2"
        return How.START, f"{s.process_name(proc.name)} is {state}"
    move = How.STOP_FIRST if proc.singleton else How.OVERLAP
    why = _process_reached(s, proc, m, old, before, changed)
    if why is None and before is not None:
        runs = {p.cwd.rstrip("/").rsplit("/", 1)[-1] for p in running}
        if runs != {before["release"]}:
            why = f"it runs {', '.join(sorted(runs))}, not {before['release']}"
    return (move, why) if why else (How.NONE, "unchanged")


def _process_reached(
    s: Settings,
    proc: procfile.Process,
    m: Manifest,
    old: dict[str, Any] | None,
    before: dict[str, Any] | None,
    changed: list[str] | None,
) -> str | None:
    """Why a change reaches a running process (None: none does): its Procfile line or settings, its
    runtime's files and dependencies, the app's environment."""
    if not old or before is None:
        return "no record of the running release's processes"
    if {k: v for k, v in before.items() if k not in ("release", "venv")} != proc.record():
        return "its Procfile line or PROCESS_* settings changed"
    if env_changed(m, old):
        return env_why(old)
    app = App.PYTHON if proc.app == "python" else App.NODEJS
    if app is App.PYTHON and before.get("venv") != m.venv:
        return "the Python environment changed (requirements.txt or PYTHON)"
    if app is App.NODEJS and old.get("node_modules") != m.node_modules:
        return f"its dependencies changed ({m.node_install or 'none now'})"
    code = "python_code" if app is App.PYTHON else "node_code"
    if code_changed(s, app, old.get(code) != getattr(m, code), changed):
        return files_why(s, app, changed)
    return None


def _manifest_with_site_and_env(manifest: Manifest, site: str, facts: HostFacts) -> Manifest:
    """The manifest with the site's digest, and the live release's .env carried over when no
    APP_ENV_FILE gives one."""
    old = facts.manifest
    manifest = replace(manifest, site=site_digest(site))
    if not manifest.app_env and old and facts.current_release:
        # No APP_ENV_FILE: the live release's .env is carried over (one an older version linked from
        # shared/ too).
        carried = old.get("app_env") or (CARRIED if "app_env" not in old and facts.live_env else "")
        manifest = replace(manifest, app_env=carried)
    return manifest


def _live_release_manifest(manifest: Manifest, facts: HostFacts, old: dict[str, Any]) -> Manifest:
    """The manifest of a deploy that keeps the live release: its name, when and by whom it was
    deployed."""
    return Manifest(
        **{
            **manifest.__dict__,
            "release": facts.current_release,
            "deployed_at": old.get("deployed_at", ""),
            "deployed_by": old.get("deployed_by", ""),
        }
    )


def _nginx_action(facts: HostFacts, site: str) -> Action:
    """Nginx's part: nothing when the site as rendered is installed and enabled, else write it and
    reload."""
    site_same = facts.site_text is not None and facts.site_text.rstrip("\n") == site.rstrip("\n")
    if site_same and facts.site_enabled:
        return Action(App.NGINX, How.NONE, "site unchanged")
    why = "site changed" if facts.site_text is not None else "site not installed yet"
    if site_same:
        why = "site not enabled"
    return Action(App.NGINX, How.WRITE_AND_RELOAD, why)


def _check_site_is_ours(s: Settings, facts: HostFacts, py: Action) -> None:
    """NGINX_SITE is ours to write: our header on its first line, or a takeover replaces it."""
    if (
        facts.complete
        and facts.site_text is not None
        and not written_by_us(facts.site_text)
        and py.how is not How.TAKEOVER
    ):
        raise PlanError(
            f"NGINX_SITE {s.nginx_site} exists and was not written by signalcraft-deploy (its first"
            " line is not our header), and no unmanaged server on GUNICORN_BIND is being taken"
            " over with it: this tool writes over no one's file. Move that file away, or set"
            " NGINX_SITE to a file of its own."
        )


def manifest_from(data: dict[str, Any], where: str) -> Manifest:
    """A manifest as a host holds it, in any format this version reads (`formats.FormatError` for a
    newer one; TypeError when a field is missing)."""
    record = formats.read(formats.MANIFEST, data, where)
    return Manifest(**{f.name: record[f.name] for f in fields(Manifest) if f.name in record})
