"""What the host looks like now, as values: `HostFacts` and its parts, with their pure helpers.

host/facts.py reads them over SSH (one command, parsed); core/plan.py decides from them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HelperState:
    """The root helper as the host has it (host/root.py reads it and compares the digest)."""

    installed: str  # digest of the installed files
    full_sudo: bool  # `sudo -n true` works: the user may install the helper itself
    allowed: bool  # sudo lets this user run the helper without a password (drop-in or full sudo)


@dataclass(frozen=True)
class Pm2Process:
    """One PM2 process (a cluster app has one per instance). Env values are never kept."""

    name: str
    pm_id: int
    pid: int
    status: str
    restarts: int
    started_ms: int
    exec_mode: str
    exec_path: str
    cwd: str
    interpreter: str
    args: tuple[str, ...]
    memory: int
    pid_path: str = ""  # where PM2 keeps this process's pid


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket and the processes holding it (from `ss -ltnp`)."""

    host: str
    port: int
    pids: tuple[int, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class Owner:
    """A process listening on one of our ports: its user, and (for the deploy user's own) where it
    runs from."""

    uid: int
    user: str
    cwd: str = ""  # "" when it cannot be read (another user's process)
    holds_app: bool = False  # cwd holds WSGI_APP's module: the app's folder


@dataclass
class HostFacts:
    uid: int | None = None
    current_release: str | None = None
    releases: list[str] = field(default_factory=list)
    bad_releases: set[str] = field(default_factory=set)
    manifest: dict[str, Any] | None = None
    configs: dict[str, str] = field(default_factory=dict)  # the current release's rendered files
    site_text: str | None = None
    site_enabled: bool = False
    venvs_ready: set[str] = field(default_factory=set)
    node_modules_ready: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)
    pm2: list[Pm2Process] = field(default_factory=list)
    pm2_readable: bool = False
    listeners: list[Listener] = field(default_factory=list)
    commands: dict[int, str] = field(
        default_factory=dict
    )  # cmdline of processes listening on our ports
    owners: dict[int, Owner] = field(
        default_factory=dict
    )  # who the processes listening on our ports are
    user: str = ""  # the deploy user's name
    procs: dict[int, tuple[int, str]] = field(
        default_factory=dict
    )  # this user's processes: pid -> (ppid, cwd)
    complete: bool = True  # False for a quick read (no tools, listeners or their commands)
    python: tuple[str, str, str] | None = (
        None  # PYTHON's version, glibc version and machine ("3.11", "2.36", "x86_64")
    )
    live_env: bool = False  # the current release has a .env (the app's secrets)
    site_defaults: dict[str, str] = field(
        default_factory=dict
    )  # settings kept from a site taken over
    free_mb: int | None = None  # free space on the deploy root's filesystem (None: not read)
    helper: HelperState | None = None  # the root helper as installed (None: not read)
    # The deploy user's own PM2 (when the apps have an account of their own): our apps still there
    # have not moved yet.
    deploy_pm2: list[Pm2Process] = field(default_factory=list)
    app_reaches_root: bool = (
        True  # the apps' account can reach DEPLOY_ROOT (False: a folder above it is closed to it)
    )
    # Gunicorn's effective configuration, live and new (host/gunicorn.py), read when a HUP is
    # planned; None: not read.
    gunicorn: dict[str, Any] | None = None
    # Open connections to NODE_PORT (WebSockets, streams, requests in flight); None: not read
    node_connections: int | None = None
    # Maintenance mode (host/maintenance.py parse_record): None when it is off
    maintenance: dict[str, Any] | None = None

    def apps(self, name: str) -> list[Pm2Process]:
        return [p for p in self.pm2 if p.name == name]

    def releases_running(self, name: str, releases_dir: str, workers: bool = False) -> set[str]:
        """Which releases an app's processes (or, with `workers`, its Gunicorn workers) run from."""
        pids = [p.pid for p in self.apps(name) if p.pid]
        if workers:
            pids = [pid for pid, (ppid, _) in self.procs.items() if ppid in pids] or pids
        prefix = releases_dir.rstrip("/") + "/"
        return {
            self.procs[pid][1][len(prefix) :].split("/")[0]
            for pid in pids
            if pid in self.procs and self.procs[pid][1].startswith(prefix)
        }

    def listening_on(self, port: int) -> list[Listener]:
        return [lst for lst in self.listeners if lst.port == port]

    def beyond_loopback(self, port: int) -> list[str]:
        """The addresses other than loopback that something listens on at `port` (e.g. '*:3000',
        '0.0.0.0:3000')."""
        out = []
        for lst in self.listening_on(port):
            try:
                loopback = ipaddress.ip_address(lst.host.split("%")[0]).is_loopback
            except ValueError:
                loopback = lst.host == "localhost"
            if not loopback:
                out.append(f"{'[' + lst.host + ']' if ':' in lst.host else lst.host}:{port}")
        return sorted(set(out))

    def online(self, name: str) -> bool:
        procs = self.apps(name)
        return bool(procs) and all(p.status == "online" for p in procs)

    def to_move(self, name: str) -> bool:
        """The app runs under the deploy user's own PM2 (as it did before APP_USER), not under its
        account's."""
        procs = [p for p in self.deploy_pm2 if p.name == name]
        return bool(procs) and all(p.status == "online" for p in procs) and not self.online(name)
