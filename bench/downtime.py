"""Downtime benchmark: failed requests per kind of deploy, the tool against the plan's own method.

Against the sandbox host (tests/host/up: the isolated test host h250 at 198.18.250.2, no route to a
package index), with a bounded load running through the host's Nginx at that address on a Python
route and on `/` (several client threads, no pauses; only test hosts' addresses, 198.18.0.0/15, or
loopback are accepted), this deploys each kind of change several times with `fab deploy --set
WHEELS=local` (in its settings file) and counts failed / total requests:

  code change, gunicorn.conf change, requirements change, Node code change, Nginx site change,
  and three broken commits: a Python commit that fails to import, a Node commit that crashes on
  start, a commit whose health route answers 500;
  plus "requirements change + code importing it": a new pin *and* app.py importing it, the usual
  shape of a new dependency (the plain requirements change adds a pin nothing imports);
  and "takeover": the first deploy on a host as the plan found it (Flask run bare as
  `python app.py` on the Gunicorn port, Node.js under PM2 in fork mode from a Node-only ecosystem
  file, a hand-made Nginx site), prepared afresh for each run under its own names, then `rollback`
  to that state (measured too, the extra row "takeover rollback"), then removed.

The kinds takeover-loopback and takeover-https (a site on `listen 127.0.0.1:<port>`) are
only measured when the sandbox host is this machine (loopback): on an isolated test host that
address is the host's own, which the load from this machine cannot reach, so they are refused there
and are not among the default kinds.

A broken commit must end the deploy with a non-zero exit and leave the previous release answering;
it is then reverted (a new commit restoring the good code, deployed but not counted).

In the same run, the same kinds are measured for the plan's own method (`git pull && npm install &&
pip install -r requirements.txt && (pm2 reload ecosystem.config.js --env production || pm2 start
...)`) on a separate app directory on the same host that the tool does not manage: the baseline. Its
pip and npm (and those of the takeover's 'before' state) read a local index
(bench.common.BaselineIndex: wheels and an npm cache made on this machine, copied to
<plan-dir>.index, named in the venv's pip.conf and the directory's .npmrc), as on a host with an
index mirror of its own; the commands are unchanged.

    python -m bench.downtime [--runs 3] [--threads 4] [--quick] [--kinds code,takeover,...]

Everything it creates on the host has its own names, ports and directories (see --help), and is
removed at the end, also on Ctrl-C. Exit status: 0 if every tool deploy dropped no request and
behaved as expected, 1 otherwise, 2 if the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    EXAMPLE_APP,
    REPO_ROOT,
    Answer,
    AppRepo,
    BaselineIndex,
    BenchError,
    Sandbox,
    Stamped,
    forget_sites_script,
    get,
    load_sandbox,
    plan_gunicorn_conf,
    run_stamped,
    ssh,
    upload_tree,
    wait_for,
)
from bench.legacy import bare_pids_script, legacy_site, node_only_ecosystem, start_script
from bench.legacy import site_script as legacy_site_script
from bench.loadgen import Load, Target
from bench.wsclient import WebSocketClient

WS_CLIENTS = 5  # the websocket kind's clients
LIVE_APP = REPO_ROOT / "tests" / "e2e" / "apps" / "live"  # the test kit's live app (issue 28)
MAX_FAILURES_KEPT = (
    5000  # per measurement; the load generator itself keeps only its first few samples
)


class TimedLoad(Load):
    """`Load` that also keeps the moment (seconds since it started) of every failed request, up to a
    bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failure_times: list[tuple[float, str, str]] = []  # (at, url, error)

    def _record(self, target: Target, status: int | None, release: str | None, error: str) -> None:
        super()._record(target, status, release, error)
        if (
            not (status is not None and 200 <= status < 400)
            and len(self.failure_times) < MAX_FAILURES_KEPT
        ):
            self.failure_times.append(
                (time.monotonic() - self._started, target.url, error or f"HTTP {status}")
            )


# ----------------------------------------------------------------------------- kinds of deploy


@dataclass(frozen=True)
class Kind:
    key: str
    title: str
    broken: bool = False
    tool_only: bool = False  # measured for the tool alone (the baseline's app lacks what it needs)


KINDS: tuple[Kind, ...] = (
    Kind("code", "code change"),
    Kind("gunicorn-conf", "gunicorn.conf change"),
    Kind("requirements", "requirements change"),
    Kind("requirements-import", "requirements change + code importing it"),
    Kind("node-code", "Node code change"),
    Kind("nginx-site", "Nginx site change"),
    Kind("py-import-error", "Python commit that fails to import", broken=True),
    Kind("node-crash", "Node commit that crashes on start", broken=True),
    Kind("health-500", "commit whose health route returns 500", broken=True),
    Kind("takeover", "takeover: first deploy over a bare python app.py"),
    # Issue 28: a code change (a Gunicorn HUP) while one request of LONG_REQUEST_SECONDS runs
    # through Nginx (tests/e2e/apps/live's /api/flask/slow, laid over the tool's app).
    Kind("long-request", "code change with a 25 s request in flight", tool_only=True),
    # Issue 13: the same 'before' state with the site on 127.0.0.1:<port>, and with an HTTPS server
    # beside it (a certificate made on the host with openssl); NGINX_LISTEN and SERVER_NAME are left
    # to the old site.
    Kind("takeover-loopback", "takeover of a site on listen 127.0.0.1:<port>"),
    Kind("takeover-https", "takeover of a site with an HTTPS server"),
    # Issue 28: a Node code change with WebSocket clients connected through Nginx to the test kit's
    # live_server.js (the example's server.js plus /live/ws): how each client's connection ended,
    # its longest silence, and whether a client connecting after the deploy reaches the new code.
    Kind("websocket", f"Node code change, {WS_CLIENTS} WebSocket clients open", tool_only=True),
)
TAKEOVER_SHAPES = {"takeover": "plain", "takeover-loopback": "loopback", "takeover-https": "https"}
# Kinds whose load goes to the host's own 127.0.0.1: measurable only when the sandbox host is this
# machine.
HOST_LOOPBACK_KINDS = ("takeover-loopback", "takeover-https")
# The local package index of the baseline and of the takeover's 'before' state (the hosts reach no
# index); set by main() when a kind needs it.
BASELINE_INDEX: BaselineIndex | None = None


def venv_script() -> str:
    """Shell, in an app directory: a venv, its pip and the directory's npm pointed at BASELINE_INDEX
    if there is one."""
    return "python3 -m venv venv" + (f" && {BASELINE_INDEX.script('.')}" if BASELINE_INDEX else "")


KIND_BY_KEY = {k.key: k for k in KINDS}  # what --kinds accepts
TAKEOVER_ROLLBACK = Kind(
    "takeover-rollback", "takeover rollback (to the bare python app.py)"
)  # a row, measured with takeover
TITLES = {k.key: k.title for k in (*KINDS, TAKEOVER_ROLLBACK)}

PY_PATH = (  # the Python route under load (not the health route: one kind breaks that)
    "/api/ai/bench"
)
EXTRA_ROUTE = "api/extra"  # the Python route the Nginx site change adds and removes
REQUIREMENT_PINS = ("", "six==1.16.0", "python-dotenv==1.2.2")  # small pure-Python pins, cycled
PIN_MODULES = {
    "six==1.16.0": "six",
    "python-dotenv==1.2.2": "dotenv",
}  # what app.py imports to use each pin
USES_MARK = "  # bench: uses the new requirement"
LONG_REQUEST_SECONDS = 25  # within GUNICORN_GRACEFUL_TIMEOUT's default (30)
# The health gate's word on Gunicorn's old workers (host/health.py drain_text)
DRAINED = re.compile(r"old Gunicorn workers drained in [\d.]+ s \(\d+ requests?\)")
LEAD_SECONDS = 1.0  # load runs this long before the deploy starts ...
TAIL_SECONDS = 1.0  # ... and this long after it returns
DEPLOY_TIMEOUT = 300.0


@dataclass
class Variant:
    """What the app and its settings look like now; each change moves one field."""

    py_version: int = 1
    node_version: int = 1
    timeout: int = 120
    requirements: int = 0  # index into REQUIREMENT_PINS
    extra_route: bool = False


def set_line(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise BenchError(f"the example app changed: no line matches {pattern!r}")
    return new


def set_py_version(repo: AppRepo, n: int) -> None:
    repo.write("app.py", set_line(repo.read("app.py"), r'^VERSION = ".*"$', f'VERSION = "{n}"'))


def set_node_version(repo: AppRepo, n: int) -> None:
    repo.write(
        "server.js",
        set_line(repo.read("server.js"), r'^const VERSION = ".*";$', f'const VERSION = "{n}";'),
    )


def set_requirements(repo: AppRepo, base: str, index: int) -> None:
    pin = REQUIREMENT_PINS[index]
    repo.write("requirements.txt", base + (f"{pin}\n" if pin else ""))


def set_requirement_import(repo: AppRepo, pin: str | None) -> None:
    """Make app.py import the module of `pin` (None: import nothing extra), as code needing a new
    dependency would."""
    lines = [line for line in repo.read("app.py").splitlines() if not line.endswith(USES_MARK)]
    if pin:
        at = lines.index("from flask import Flask, Response, jsonify") + 1
        lines.insert(at, f"import {PIN_MODULES[pin]}  # noqa: F401{USES_MARK}")
    repo.write("app.py", "\n".join(lines) + "\n")


def break_commit(repo: AppRepo, kind: Kind) -> None:
    """Make the broken commit of `kind` (the caller keeps the good files to revert to)."""
    if kind.key == "py-import-error":
        repo.write(
            "app.py",
            repo.read("app.py")
            + "\nimport does_not_exist_xyz  # bench: a commit that fails to import\n",
        )
    elif kind.key == "node-crash":
        repo.write(
            "server.js",
            set_line(
                repo.read("server.js"),
                r"^'use strict';$",
                "'use strict';\nthrow new Error(\"boom\");  // bench: a commit that crashes on"
                " start",
            ),
        )
    elif kind.key == "health-500":
        text = repo.read("app.py")
        old = (
            '    @app.get("/api/flask/health")\n    def health() -> Response:\n        return'
            " jsonify(_health())\n"
        )
        if old not in text:
            raise BenchError(
                "the example app changed: its /api/flask/health route is not where the benchmark"
                " expects it"
            )
        new = (
            '    @app.get("/api/flask/health")\n    def health() -> Response:\n        return'
            ' Response("bench: broken health route", status=500)  # bench: health answers 500\n'
        )
        repo.write("app.py", text.replace(old, new))
    else:
        raise ValueError(kind.key)


# ----------------------------------------------------------------------------- one measurement


@dataclass
class Measurement:
    method: str  # "tool" or "baseline"
    kind: str
    run: int
    failed: int = 0
    total: int = 0
    exit_code: int | None = None
    deploy_seconds: float = 0.0
    load_seconds: float = 0.0
    after: str = ""  # what answered afterwards, in words
    actions: str = ""  # what the deploy did (the tool's reload choices, or where it stopped)
    expected: bool = True  # the tool's deploy behaved as it must (exit code, release answering)
    # a failed request counts against the exit status (not for a takeover rollback: no target)
    zero_target: bool = True
    problems: list[str] = field(default_factory=list)
    per_url: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(
        default_factory=list
    )  # the first few, with the step then running
    failure_windows: list[str] = field(default_factory=list)  # every failure, grouped into bursts
    load_started_wall: str = ""  # UTC wall clock at load start, to line failures up with host logs
    host_log: str = (
        ""  # PM2 and Gunicorn events on the host during a tool deploy that failed requests
    )
    releases_seen: dict[str, dict[str, int]] = field(default_factory=dict)
    log: str = ""
    long_request: str = ""  # long-request: how the request in flight ended ("200 v3 after 25.0 s")
    websockets: str = ""  # the websocket kind: how the clients' connections ended, and after


def tool_actions(result: Stamped) -> str:
    """The tool's reload choices from its output ('py hup, node none, nginx reload'), or the step it
    stopped at."""
    steps = [
        m.groups()
        for _, line in result.lines
        if (m := re.match(r"^(ok|FAIL)\s+(.+?)\s+[\d.]+s(\s|$)", line))
    ]
    failed = [name for mark, name, _ in steps if mark == "FAIL"]
    if failed:
        rolled = any(name == "rollback" for _, name, _ in steps)
        return f"stopped at {failed[0]}" + ("; rolled back" if rolled else "")
    did = []
    for _, line in result.lines:
        match = re.match(r"^ok\s+reload apps\s+[\d.]+s\s+(.*)$", line)
        if match:
            for part in match.group(1).split(","):
                app, _, how = part.strip().partition(": ")
                how = how.split(" (", 1)[0]  # without "(closed N open connection(s) ...)"
                if how and how != "none":
                    did.append(("py " if app.endswith("-python") else "node ") + how)
    if any(name == "reload nginx" for _, name, _ in steps):
        did.append("nginx reload")
    if not did and any("Nothing to deploy" in line for _, line in result.lines):
        return "nothing to do"
    return ", ".join(did) or "no reload"


def describe_after(py: Answer, node: Answer) -> str:
    return f"py {py.describe()}, node {node.describe()}"


class Method:
    """One way of deploying (the tool, or the plan's script) with its own app, ports and
    directories."""

    name = ""

    def __init__(self, sandbox: Sandbox, work: Path, listen: int):
        self.sandbox = sandbox
        self.work = work
        self.listen = listen
        self.variant = Variant()
        self.repo: AppRepo | None = None
        self.base_requirements = ""
        self.good_files: dict[
            str, str
        ] = {}  # app.py and server.js before a broken commit, to revert to

    # URLs through Nginx
    @property
    def py_url(self) -> str:
        return f"http://{self.sandbox.host}:{self.listen}{PY_PATH}"

    @property
    def node_url(self) -> str:
        return f"http://{self.sandbox.host}:{self.listen}/"

    @property
    def extra_url(self) -> str:
        return f"http://{self.sandbox.host}:{self.listen}/{EXTRA_ROUTE}/bench"

    def answers(self) -> tuple[Answer, Answer]:
        return get(self.py_url), get(self.node_url)

    def setup(self) -> None:
        raise NotImplementedError

    def prepare(self, kind: Kind) -> None:
        """Bring the app to what `kind` needs before it is measured (not measured)."""

    def deploy(self, kind: Kind | None) -> Stamped:
        raise NotImplementedError

    def apply(self, kind: Kind) -> None:
        """Make the change of `kind`: a commit, or a setting for the next deploy."""
        assert self.repo is not None
        v = self.variant
        if kind.key in ("code", "long-request"):
            v.py_version += 1
            set_py_version(self.repo, v.py_version)
            self.repo.commit(f"bench: Python VERSION {v.py_version}")
        elif kind.key == "gunicorn-conf":
            v.timeout = 121 if v.timeout == 120 else 120
            self.change_gunicorn_conf()
        elif kind.key in ("requirements", "requirements-import"):
            v.requirements = (v.requirements + 1) % len(REQUIREMENT_PINS)
            if kind.key == "requirements-import" and not REQUIREMENT_PINS[v.requirements]:
                v.requirements += 1  # always a new package that the code imports
            pin = REQUIREMENT_PINS[v.requirements]
            set_requirements(self.repo, self.base_requirements, v.requirements)
            set_requirement_import(self.repo, pin if kind.key == "requirements-import" else None)
            self.repo.commit(
                f"bench: requirements {pin or 'as first committed'}"
                + (" and app.py importing it" if kind.key == "requirements-import" and pin else "")
            )
        elif kind.key in ("node-code", "websocket"):
            v.node_version += 1
            set_node_version(self.repo, v.node_version)
            self.repo.commit(f"bench: Node VERSION {v.node_version}")
        elif kind.key == "nginx-site":
            v.extra_route = not v.extra_route
            self.change_site()
        else:
            self.good_files = {name: self.repo.read(name) for name in ("app.py", "server.js")}
            break_commit(self.repo, kind)
            self.repo.commit(f"bench: broken commit ({kind.title})")

    def revert(self, kind: Kind) -> Stamped:
        """Restore the good code of before a broken commit as a new commit, and deploy it (not
        measured)."""
        assert self.repo is not None
        for name, text in self.good_files.items():
            self.repo.write(name, text)
        self.repo.commit(f"bench: revert the broken commit ({kind.title})")
        return self.deploy(None)

    def change_gunicorn_conf(self) -> None:
        raise NotImplementedError

    def change_site(self) -> None:
        raise NotImplementedError

    def check(
        self, kind: Kind, before: tuple[Answer, Answer], code: int | None, m: Measurement
    ) -> None:
        raise NotImplementedError

    def describe(self, kind: Kind, result: Stamped) -> str:
        """What the deploy did, in a few words (the table's "what it did")."""
        return "pm2 reload (both apps)"


# ----------------------------------------------------------------------------- the tool


@dataclass(frozen=True)
class ToolSettings:
    app_name: str = "bench"
    deploy_root: str = "/home/ubuntu/bench"
    gunicorn_bind: str = "127.0.0.1:8101"
    node_port: int = 3101
    nginx_listen: int = 8081
    nginx_site: str = "/etc/nginx/sites-available/bench"

    @property
    def nginx_link(self) -> str:
        site = Path(self.nginx_site)
        return (
            str(site.parent.parent / "sites-enabled" / site.name)
            if site.parent.name == "sites-available"
            else ""
        )


class Tool(Method):
    name = "tool"

    def __init__(
        self,
        sandbox: Sandbox,
        work: Path,
        settings: ToolSettings,
        extra: dict[str, str] | None = None,
    ):
        super().__init__(sandbox, work, settings.nginx_listen)
        self.s = settings
        self.extra = dict(extra or {})
        self.deploys = 0
        self.node_script_file: Path | None = None  # --node-script

    def env_text(self) -> str:
        v = self.variant
        routes = "api/ai,api/iot,api/lightweight-analyze,api/flask" + (
            f",{EXTRA_ROUTE}" if v.extra_route else ""
        )
        values = {
            "APP_NAME": self.s.app_name,
            "DEPLOY_ROOT": self.s.deploy_root,
            "GUNICORN_BIND": self.s.gunicorn_bind,
            "NODE_PORT": str(self.s.node_port),
            "NGINX_LISTEN": str(self.s.nginx_listen),
            "NGINX_SITE": self.s.nginx_site,
            "SERVER_NAME": "_",
            "PY_ROUTES": routes,
            "GUNICORN_TIMEOUT": str(v.timeout),
            "WSGI_APP": "live_app:create_app()",  # the example's app with a slow route beside
            "WHEELS": (
                "local"
            ),  # the host reaches no package index: this machine makes the wheels and ships them
            **self.extra,
        }
        return "".join(f"{k}={val}\n" for k, val in values.items())

    def settings_summary(self) -> str:
        """The settings of the first deploy (GUNICORN_TIMEOUT and PY_ROUTES then vary with the
        kinds)."""
        saved, self.variant = self.variant, Variant()
        try:
            return self.env_text().strip().replace("\n", " ")
        finally:
            self.variant = saved

    def setup(self) -> None:
        self.repo = AppRepo(self.work / "app")
        self.repo.write("live_app.py", (LIVE_APP / "live_app.py").read_text())
        self.repo.commit("bench: the live app's slow route beside the example's")
        self.base_requirements = self.repo.read("requirements.txt")
        if self.node_script_file:
            self.repo.write(self.node_script_file.name, self.node_script_file.read_text())
            self.repo.commit(f"bench: {self.node_script_file.name} as the Node.js server")
            self.extra["NODE_SCRIPT"] = self.node_script_file.name
        result = self.deploy(None)
        if result.code != 0:
            raise BenchError(
                "the first deploy (not measured) failed with exit"
                f" {result.code}:\n{result.text[-3000:]}"
            )
        answers = wait_for([self.py_url, self.node_url], 30)
        if not all(a.ok for a in answers.values()):
            raise BenchError(f"after the first deploy the site does not answer: {answers}")

    def deploy(self, kind: Kind | None) -> Stamped:
        if kind is not None and kind.key == "long-request":
            return self.deploy_with_long_request(kind)
        return self.deploy_now(kind)

    def deploy_with_long_request(self, kind: Kind) -> Stamped:
        """The deploy, with one request of LONG_REQUEST_SECONDS begun through Nginx a second
        before it; its answer is kept for `check`."""
        url = f"http://{self.sandbox.host}:{self.listen}/api/flask/slow?seconds={LONG_REQUEST_SECONDS}"
        answer: list[tuple[Answer, float]] = []

        def ask() -> None:
            began = time.monotonic()
            answer.append((get(url, timeout=LONG_REQUEST_SECONDS + 60), time.monotonic() - began))

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        time.sleep(1)
        result = self.deploy_now(kind)
        asking.join(LONG_REQUEST_SECONDS + 70)
        self.long_answer = answer[0] if answer else None
        return result

    def deploy_now(self, kind: Kind | None) -> Stamped:
        assert self.repo is not None
        self.deploys += 1
        env_file = self.work / f"tool-{self.deploys:03d}.env"
        env_file.write_text(self.env_text())
        argv = [
            sys.executable,
            "-m",
            "fabric",
            "-H",
            self.sandbox.target,
            "-i",
            self.sandbox.key,
            "deploy",
            "--known-hosts",
            self.sandbox.known_hosts,
            "--source-dir",
            str(self.repo.path),
            "--env-file",
            str(env_file),
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "FABRIC_", "INVOKE_")) and k != "ENV_FILE"
        }
        env.update(PYTHONUNBUFFERED="1", NO_COLOR="1")
        return run_stamped(argv, timeout=DEPLOY_TIMEOUT, env=env, cwd=str(REPO_ROOT))

    def prepare(self, kind: Kind) -> None:
        """For the websocket kind: the test kit's live_server.js (the example's server.js plus
        /live/ws) as NODE_SCRIPT, deployed once (not measured)."""
        if kind.key != "websocket" or self.extra.get("NODE_SCRIPT") == "live_server.js":
            return
        assert self.repo is not None
        self.repo.write("live_server.js", (LIVE_APP / "live_server.js").read_text())
        self.repo.commit("bench: the live app's WebSocket server")
        self.extra["NODE_SCRIPT"] = "live_server.js"
        result = self.deploy(None)
        if result.code != 0:
            raise BenchError(
                f"the deploy of live_server.js (not measured) failed:\n{result.text[-3000:]}"
            )

    def live_release(self) -> str:
        result = ssh(self.sandbox, f"readlink {self.s.deploy_root}/current || true", check=False)
        return result.stdout.strip().rsplit("/", 1)[-1]

    def apply(self, kind: Kind) -> None:
        self.live_before = self.live_release() if kind.broken else ""
        super().apply(kind)

    def describe(self, kind: Kind, result: Stamped) -> str:
        drained = next(
            (m.group(0) for _, line in result.lines if (m := DRAINED.search(line))), None
        )
        return tool_actions(result) + (f" ({drained})" if drained else "")

    def change_gunicorn_conf(self) -> None:
        # GUNICORN_TIMEOUT goes into the next deploy's settings and changes the rendered
        # gunicorn.conf.py
        pass

    def change_site(self) -> None:
        # PY_ROUTES goes into the next deploy's settings and changes only the rendered Nginx site
        pass

    def check(
        self, kind: Kind, before: tuple[Answer, Answer], code: int | None, m: Measurement
    ) -> None:
        py, node = self.answers()
        m.after = describe_after(py, node)
        problems = m.problems
        sha = self.repo.head()[:12] if self.repo else ""
        if not (py.ok and node.ok):
            problems.append(f"not answering after the deploy: {m.after}")
        if kind.broken:
            if code == 0:
                problems.append("the deploy of a broken commit exited 0")
            live = self.live_release()
            if live != self.live_before:
                problems.append(
                    f"`current` moved from {self.live_before} to {live}; it should stay on the"
                    " previous release"
                )
            # Gunicorn workers recycled by max_requests import through `current`, so the Python side
            # may name the live release rather than the one it named before; neither may be the
            # broken commit's.
            for app, answer in (("Python", py), ("Node.js", node)):
                if (answer.release or "").endswith(sha):
                    problems.append(
                        f"{app} answers from release {answer.release} of the broken commit"
                    )
            v = self.variant
            if (py.body or {}).get("version") != str(v.py_version) or (node.body or {}).get(
                "version"
            ) != str(v.node_version):
                problems.append(
                    f"expected the previous code (Python v{v.py_version}, Node v{v.node_version});"
                    f" got {m.after}"
                )
            if node.release != before[1].release:
                problems.append(
                    f"Node.js answered from {before[1].release} before and from {node.release}"
                    " after"
                )
            m.after = "previous release" if not problems else m.after
        else:
            if code != 0:
                problems.append(f"the deploy exited {code}")
            v = self.variant
            if (py.body or {}).get("version") != str(v.py_version) or (node.body or {}).get(
                "version"
            ) != str(v.node_version):
                problems.append(
                    f"expected Python v{v.py_version} and Node v{v.node_version}; got {m.after}"
                )
            if kind.key == "long-request":
                self.check_long_request(m)
            if kind.key in (
                "code",
                "long-request",
                "gunicorn-conf",
                "requirements",
                "requirements-import",
            ):
                if py.release == before[0].release or not (py.release or "").endswith(sha):
                    problems.append(
                        f"Python answers from release {py.release}, not a new release of {sha}"
                    )
            if kind.key in ("node-code", "websocket"):
                if node.release == before[1].release or not (node.release or "").endswith(sha):
                    problems.append(
                        f"Node.js answers from release {node.release}, not a new release of {sha}"
                    )
            if kind.key == "nginx-site":
                extra = get(self.extra_url)
                want = "flask" if self.variant.extra_route else "nodejs"
                if (extra.body or {}).get("app") != want:
                    problems.append(
                        f"/{EXTRA_ROUTE}/bench is served by {(extra.body or {}).get('app')},"
                        f" expected {want}"
                    )
            if not problems:
                m.after = "new release" if kind.key != "nginx-site" else "new site"
            if m.long_request:
                m.after += f"; the {LONG_REQUEST_SECONDS} s request: {m.long_request}"
        m.expected = not problems

    def check_long_request(self, m: Measurement) -> None:
        """The request begun before the deploy answered 200, from the code it began on; the row
        says how long it took and how long the health gate's drain was."""
        long = getattr(self, "long_answer", None)
        if long is None:
            m.problems.append(f"the {LONG_REQUEST_SECONDS} s request did not end")
            return
        answer, seconds = long
        m.long_request = f"{answer.describe()} after {seconds:.1f} s"
        if answer.status != 200:
            m.problems.append(
                f"the {LONG_REQUEST_SECONDS} s request begun before the deploy got {m.long_request}"
            )


# ----------------------------------------------------------------------------- the plan's method
# (baseline)


@dataclass(frozen=True)
class PlanSettings:
    directory: str = "/home/ubuntu/bench-plan"
    gunicorn_port: int = 8201
    node_port: int = 3201
    listen: int = 8082
    site: str = "/etc/nginx/sites-available/bench-plan"
    python_app: str = "bench-plan-python"
    node_app: str = "bench-plan-nodejs"

    @property
    def origin(self) -> str:
        return self.directory + ".git"

    @property
    def link(self) -> str:
        site = Path(self.site)
        return str(site.parent.parent / "sites-enabled" / site.name)


def plan_ecosystem(p: PlanSettings) -> str:
    # The plan's step 3, fixed only so that it starts at all (its `script: 'gunicorn'` is "Script
    # not found" to PM2): the venv's gunicorn by absolute path. Node in fork mode,
    # as in the plan.
    return f"""module.exports = {{
  apps: [
    {{ name: '{p.node_app}', script: 'server.js',
      env_production: {{ NODE_ENV: 'production', PORT: {p.node_port} }} }},
    {{ name: '{p.python_app}', script: '{p.directory}/venv/bin/gunicorn', args: '-c gunicorn.conf.py',
      interpreter: '{p.directory}/venv/bin/python',
      exec_mode: 'fork', autorestart: true, watch: false, max_memory_restart: '512M',
      env_production: {{}} }}
  ]
}};
"""


def plan_site(p: PlanSettings, extra_route: bool) -> str:
    routes = "api/ai|api/iot|api/lightweight-analyze|api/flask" + (
        f"|{EXTRA_ROUTE}" if extra_route else ""
    )
    return f"""# bench-plan: the plan's step 4 (written by bench/downtime.py, removed at its end)
server {{
    listen {p.listen};
    server_name _;
    location ~ ^/({routes}) {{
        proxy_pass http://127.0.0.1:{p.gunicorn_port};
    }}
    location / {{
        proxy_pass http://127.0.0.1:{p.node_port};
    }}
}}
"""


def plan_script(p: PlanSettings, then: str = "") -> str:
    """The plan's step 5, as the workflow would run it on the host (markers stamp each command);
    `then` runs after."""
    return "\n".join(
        [
            f"cd {p.directory} && echo '@@ git pull' && git pull &&",
            "  echo '@@ npm install' && npm install --no-audit --no-fund &&",
            (
                "  echo '@@ pip install' && venv/bin/pip install --disable-pip-version-check -r"
                " requirements.txt &&"
            ),
            "  echo '@@ pm2 reload || pm2 start' &&",
            (
                "  (pm2 reload ecosystem.config.js --env production || pm2 start"
                " ecosystem.config.js --env production)"
            ),
            "rc=$?",
            then,
            "echo '@@ done'",
            "exit $rc",
        ]
    )


def site_script(p: PlanSettings, text: str) -> str:
    return "\n".join(
        [
            "set -e",
            f"sudo -n tee {p.site} >/dev/null <<'BENCH_SITE_EOF'",
            text.rstrip("\n"),
            "BENCH_SITE_EOF",
            f"sudo -n ln -sfn {p.site} {p.link}",
            "echo '@@ nginx -t && nginx -s reload'",
            "sudo -n nginx -t 2>&1 && sudo -n nginx -s reload",
        ]
    )


class Plan(Method):
    name = "baseline"

    def __init__(self, sandbox: Sandbox, work: Path, settings: PlanSettings):
        super().__init__(sandbox, work, settings.listen)
        self.p = settings
        self.recoveries: list[str] = []

    def git_env(self) -> dict[str, str]:
        return {**os.environ, "GIT_SSH_COMMAND": f"ssh -F {self.sandbox.ssh_config}"}

    def push(self) -> None:
        assert self.repo is not None
        result = subprocess.run(
            ["git", "-C", str(self.repo.path), "push", "-q", f"sandbox:{self.p.origin}", "main"],
            capture_output=True,
            text=True,
            env=self.git_env(),
            timeout=60,
        )
        if result.returncode != 0:
            raise BenchError(
                f"git push to the host's {self.p.origin} failed: {result.stderr.strip()}"
            )

    def setup(self) -> None:
        p = self.p
        self.repo = AppRepo(
            self.work / "plan-app",
            extra_files={
                "gunicorn.conf.py": plan_gunicorn_conf(p.gunicorn_port, self.variant.timeout),
                "ecosystem.config.js": plan_ecosystem(p),
            },
        )
        self.base_requirements = self.repo.read("requirements.txt")
        ssh(
            self.sandbox,
            f"set -e\nrm -rf {p.origin} {p.directory}\ngit init -q --bare -b main {p.origin}\n",
        )
        self.push()
        ssh(
            self.sandbox,
            "\n".join(
                [
                    "set -e",
                    f"git clone -q {p.origin} {p.directory}",
                    f"cd {p.directory}",
                    venv_script(),
                    "venv/bin/pip install -q --disable-pip-version-check -r requirements.txt",
                ]
            ),
            timeout=300,
        )
        first = run_stamped(
            ["ssh", "-F", self.sandbox.ssh_config, "sandbox", "bash -s"],
            stdin=plan_script(p),
            timeout=DEPLOY_TIMEOUT,
        )
        if first.code != 0:
            raise BenchError(
                f"the plan's script did not start the baseline apps:\n{first.text[-3000:]}"
            )
        ssh(self.sandbox, site_script(p, plan_site(p, self.variant.extra_route)))
        answers = wait_for([self.py_url, self.node_url], 30)
        if not all(a.ok for a in answers.values()):
            raise BenchError(f"the baseline site does not answer after its set-up: {answers}")

    def deploy(self, kind: Kind | None) -> Stamped:
        then = ""
        if kind is not None and kind.key == "nginx-site":
            # The workflow ends by restarting Nginx; on this shared host it is reloaded (gracefully)
            # instead.
            then = (
                f"(\n{site_script(self.p, plan_site(self.p, self.variant.extra_route))}\n) || rc=1"
            )
        script = plan_script(self.p, then)
        return run_stamped(
            ["ssh", "-F", self.sandbox.ssh_config, "sandbox", "bash -s"],
            stdin=script,
            timeout=DEPLOY_TIMEOUT,
        )

    def apply(self, kind: Kind) -> None:
        super().apply(kind)
        # the workflow's `git pull` fetches what was pushed (not part of the measured deploy)
        self.push()

    def revert(self, kind: Kind) -> Stamped:
        assert self.repo is not None
        for name, text in self.good_files.items():
            self.repo.write(name, text)
        self.repo.commit(f"bench: revert the broken commit ({kind.title})")
        self.push()
        result = self.deploy(None)
        answers = wait_for([self.py_url, self.node_url], 30)
        if not all(a.ok for a in answers.values()):
            # PM2 may have given up on a crash-looping app: start both again so the next run starts
            # clean.
            self.recoveries.append(
                f"after reverting {kind.title}: the site did not answer "
                f"({describe_after(*answers.values())}); pm2 delete + start"
            )
            ssh(
                self.sandbox,
                f"cd {self.p.directory} && (pm2 delete {self.p.python_app} {self.p.node_app} ||"
                " true) && pm2 start ecosystem.config.js --env production",
                timeout=120,
                check=False,
            )
            wait_for([self.py_url, self.node_url], 30)
        return result

    def change_gunicorn_conf(self) -> None:
        assert self.repo is not None
        self.repo.write(
            "gunicorn.conf.py", plan_gunicorn_conf(self.p.gunicorn_port, self.variant.timeout)
        )
        self.repo.commit(f"bench: gunicorn timeout {self.variant.timeout}")

    def change_site(self) -> None:
        pass  # written as part of the deploy (the plan's site is not in the repository)

    def check(
        self, kind: Kind, before: tuple[Answer, Answer], code: int | None, m: Measurement
    ) -> None:
        py, node = self.answers()
        if py.ok and node.ok:
            v = self.variant
            current = (py.body or {}).get("version") == str(v.py_version) and (node.body or {}).get(
                "version"
            ) == str(v.node_version)
            m.after = (
                "yes" if current or kind.broken else f"yes, old code ({describe_after(py, node)})"
            )
        else:
            down = [f"py {py.describe()}"] if not py.ok else []
            down += [f"node {node.describe()}"] if not node.ok else []
            m.after = "NO: " + ", ".join(down)


# ----------------------------------------------------------------------------- takeover

BARE_COMMAND = (  # the plan's `nohup python app.py &`; see TakeoverSettings on the "./"
    "venv/bin/python ./app.py"
)


@dataclass(frozen=True)
class TakeoverSettings:
    """Names and ports of the takeover kind; its host state is made afresh for each run and removed
    after it.

    The bare server runs as `venv/bin/python ./app.py` rather than `... app.py`: the e2e takeover
    test (tests/e2e/test_takeover.py) kills every `python app.py` of the host's user and expects
    exactly one, so on a shared host the benchmark's must not match that pattern. The tool's
    LEGACY_MATCH still does.
    """

    app_name: str = "benchtk"
    gunicorn_port: int = 8131  # the tool's handover address is this + 1
    node_port: int = 3131  # the tool's Node.js handover port is this + 1
    listen: int = 8083
    plan_gunicorn_port: int = 8231
    plan_node_port: int = 3231
    plan_listen: int = 8079
    tls_listen: int = 8453  # the HTTPS server of the takeover-https kind (127.0.0.1 only)
    # plain: `listen <port>`; loopback: `listen 127.0.0.1:<port>`; https: loopback + an HTTPS server
    shape: str = "plain"

    @property
    def cert_dir(self) -> str:
        return f"/etc/ssl/{self.app_name}-bench"

    @property
    def deploy_root(self) -> str:
        return f"/home/ubuntu/{self.app_name}"

    @property
    def old_dir(self) -> str:
        return f"/home/ubuntu/{self.app_name}-old"

    @property
    def site(self) -> str:
        return f"/etc/nginx/sites-available/{self.app_name}"

    @property
    def tool(self) -> ToolSettings:
        return ToolSettings(
            self.app_name,
            self.deploy_root,
            f"127.0.0.1:{self.gunicorn_port}",
            self.node_port,
            self.listen,
            self.site,
        )

    @property
    def plan(self) -> PlanSettings:
        name = f"{self.app_name}-plan"
        return PlanSettings(
            f"/home/ubuntu/{name}",
            self.plan_gunicorn_port,
            self.plan_node_port,
            self.plan_listen,
            f"/etc/nginx/sites-available/{name}",
            f"{name}-python",
            f"{name}-nodejs",
        )


def old_site(
    listen: int,
    gunicorn_port: int,
    node_port: int,
    comment: str,
    tk: TakeoverSettings | None = None,
) -> str:
    """The hand-made Nginx site of before the plan (bench.legacy's). With `tk` of shape loopback or
    https: `listen 127.0.0.1:<port>`, and for https an HTTPS server beside it, as certbot leaves a
    site."""
    shape = tk.shape if tk else "plain"
    tls = ""
    if tk and shape == "https":
        tls = (
            f"    listen 127.0.0.1:{tk.tls_listen} ssl;\n    ssl_certificate"
            f" {tk.cert_dir}/cert.pem;\n    ssl_certificate_key {tk.cert_dir}/key.pem;"
        )
    return legacy_site(
        f"127.0.0.1:{listen}" if shape != "plain" else listen,
        gunicorn_port,
        node_port,
        comment,
        tls,
    )


def cert_script(tk: TakeoverSettings) -> str:
    """Shell: a self-signed certificate for 127.0.0.1 in tk.cert_dir (key 0600, root's), for the
    takeover-https kind."""
    d = shlex.quote(tk.cert_dir)
    return (
        f"sudo -n mkdir -p -m 0700 {d} && sudo -n openssl req -x509 -newkey rsa:2048 -nodes -keyout"
        f" {d}/key.pem -out {d}/cert.pem -days 30 -subj /CN=bench.test -addext"
        " subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"
    )


def before_state_script(directory: str, node_app: str, port: int, site: str, site_text: str) -> str:
    """Shell, run as the host's user in a copy of the app: a venv with the app's requirements (from
    the baseline's index), then bench.legacy's host: Node.js under PM2 (fork), the bare Python
    server, the hand-made site.
    """
    return "\n".join(
        [
            "set -e",
            f"cd {shlex.quote(directory)}",
            "rm -f REVISION",
            venv_script(),
            "venv/bin/pip install -q --disable-pip-version-check -r requirements.txt",
            start_script(directory, node_app, port, BARE_COMMAND),
            legacy_site_script(site, site_text, sudo="sudo -n "),
        ]
    )


def pm2_apps(sandbox: Sandbox, prefix: str) -> dict[str, list[tuple[str, str]]]:
    """PM2 apps of the host's user whose name starts with `prefix`: name -> [(status, exec_mode) per
    process]."""
    out = ssh(sandbox, "pm2 jlist", check=False).stdout
    start = out.find("[")
    try:
        items = json.loads(out[start:]) if start >= 0 else []
    except ValueError:
        return {"(pm2 jlist unreadable)": []}
    apps: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        if str(item.get("name", "")).startswith(prefix):
            env = item.get("pm2_env", {})
            apps.setdefault(item["name"], []).append(
                (env.get("status", "?"), env.get("exec_mode", "?"))
            )
    return apps


def before_state_answers(method: Method) -> str:
    """'' if the before-state answers as it should through Nginx (Flask bare, Node.js), else what is
    wrong."""
    answers = wait_for([method.py_url, method.node_url], 30)
    py, node = answers[method.py_url], answers[method.node_url]
    if (py.body or {}).get("app") != "flask" or (node.body or {}).get("app") != "nodejs":
        return f"the 'before' state does not answer as it should: {describe_after(py, node)}"
    return ""


class TakeoverTool(Tool):
    """The tool's first deploy on a host in the state a takeover finds, then `rollback` to it. One
    object per run."""

    def __init__(
        self,
        sandbox: Sandbox,
        work: Path,
        tk: TakeoverSettings,
        extra: dict[str, str] | None = None,
    ):
        super().__init__(sandbox, work, tk.tool, extra)
        self.tk = tk
        self.site_text = old_site(
            tk.listen,
            tk.gunicorn_port,
            tk.node_port,
            f"{tk.app_name}: the hand-made site of before the plan (bench/downtime.py, takeover)",
            tk,
        )
        self.bare_before: list[int] = []
        self.last: Stamped | None = None  # the last deploy (not rollback), for its output
        self.cafile: str | None = (
            None  # the takeover-https kind's certificate, which its load trusts
        )

    @property
    def https_urls(self) -> list[str]:
        return [
            f"https://127.0.0.1:{self.tk.tls_listen}{PY_PATH}",
            f"https://127.0.0.1:{self.tk.tls_listen}/",
        ]

    @property
    def load_urls(self) -> list[str]:
        return [self.py_url, self.node_url] + (self.https_urls if self.tk.shape == "https" else [])

    def env_text(self) -> str:
        """As the regular tool's, but a loopback or HTTPS takeover leaves NGINX_LISTEN and
        SERVER_NAME to the old site."""
        text = super().env_text()
        if self.tk.shape == "plain":
            return text
        return "".join(
            line
            for line in text.splitlines(keepends=True)
            if not line.startswith(("NGINX_LISTEN=", "SERVER_NAME="))
        )

    def setup(self) -> None:
        tk = self.tk
        self.work.mkdir(parents=True, exist_ok=True)
        if tk.shape == "https":
            ssh(self.sandbox, cert_script(tk))
            (self.work / "cert.pem").write_text(
                ssh(self.sandbox, f"sudo -n cat {tk.cert_dir}/cert.pem").stdout
            )
            self.cafile = str(self.work / "cert.pem")
        self.repo = AppRepo(
            self.work / "app"
        )  # what the first deploy ships: the example app as it is
        old = self.work / "old"
        shutil.copytree(
            EXAMPLE_APP,
            old,
            ignore=shutil.ignore_patterns(
                "node_modules", ".venv", "__pycache__", "*.pyc", "REVISION"
            ),
        )
        (old / "requirements.txt").write_text(
            "Flask==3.1.3\n"
        )  # before the plan's step 1 adds gunicorn
        (old / "ecosystem.config.js").write_text(
            node_only_ecosystem(f"{tk.app_name}-nodejs", tk.node_port)
        )
        upload_tree(self.sandbox, old, tk.old_dir)
        out = ssh(
            self.sandbox,
            before_state_script(
                tk.old_dir, f"{tk.app_name}-nodejs", tk.gunicorn_port, tk.site, self.site_text
            ),
            timeout=300,
        ).stdout
        wrong = before_state_answers(self)
        if wrong:
            raise BenchError(f"takeover: {wrong}\n{out[-1500:]}")
        self.bare_before = self.bare_pids()
        if len(self.bare_before) != 1:
            raise BenchError(
                f"takeover: expected one bare server in {tk.old_dir}, found pids {self.bare_before}"
            )

    def bare_pids(self) -> list[int]:
        return [
            int(x)
            for x in ssh(
                self.sandbox, bare_pids_script(self.tk.old_dir), check=False
            ).stdout.split()
        ]

    def apply(self, kind: Kind) -> None:
        pass  # the change is the whole 'before' state, made by setup()

    def deploy(self, kind: Kind | None) -> Stamped:
        if kind is None or kind.key != TAKEOVER_ROLLBACK.key:
            self.last = super().deploy(kind)
            return self.last
        self.deploys += 1
        env_file = self.work / f"tool-{self.deploys:03d}.env"
        env_file.write_text(self.env_text())
        argv = [
            sys.executable,
            "-m",
            "fabric",
            "-H",
            self.sandbox.target,
            "-i",
            self.sandbox.key,
            "rollback",
            "--known-hosts",
            self.sandbox.known_hosts,
            "--env-file",
            str(env_file),
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "FABRIC_", "INVOKE_")) and k != "ENV_FILE"
        }
        env.update(PYTHONUNBUFFERED="1", NO_COLOR="1")
        return run_stamped(argv, timeout=DEPLOY_TIMEOUT, env=env, cwd=str(REPO_ROOT))

    def describe(self, kind: Kind, result: Stamped) -> str:
        if kind.key == TAKEOVER_ROLLBACK.key:
            if result.code == 0 and any(
                "unmanaged server runs again" in line for _, line in result.lines
            ):
                return "restored the bare server, Node.js entry, site"
            return f"exit {result.code}"
        return tool_actions(result)

    def check(
        self, kind: Kind, before: tuple[Answer, Answer], code: int | None, m: Measurement
    ) -> None:
        problems = m.problems
        app = self.tk.app_name
        if code != 0:
            problems.append(
                f"the {'rollback' if kind.key == TAKEOVER_ROLLBACK.key else 'deploy'} exited {code}"
            )
        if kind.key == TAKEOVER_ROLLBACK.key:
            m.zero_target = False
            answers = wait_for(
                [self.py_url, self.node_url], 15
            )  # the restored bare server may take a moment
            py, node = answers[self.py_url], answers[self.node_url]
            m.after = describe_after(py, node)
            if (py.body or {}).get("app") != "flask" or py.release != "dev":
                problems.append(
                    "the Python routes should be answered by the bare server (release dev); got"
                    f" {m.after}"
                )
            if (node.body or {}).get("app") != "nodejs":
                problems.append(f"/ should be answered by Node.js; got {m.after}")
            bare = self.bare_pids()
            if len(bare) != 1:
                problems.append(
                    f"expected one bare server in {self.tk.old_dir} again, found pids {bare}"
                )
            apps = pm2_apps(self.sandbox, app + "-")
            if {name: {mode for _, mode in procs} for name, procs in apps.items()} != {
                f"{app}-nodejs": {"fork_mode"}
            }:
                problems.append(
                    f"PM2 should hold only {app}-nodejs in fork mode again; it holds {apps}"
                )
            site = ssh(self.sandbox, f"sudo -n cat {self.tk.site}", check=False).stdout
            if site != self.site_text:
                problems.append(f"{self.tk.site} is not the hand-made site again")
            if not problems:
                m.after = "before-state back"
        else:
            py, node = self.answers()
            m.after = describe_after(py, node)
            sha = self.repo.head()[:12] if self.repo else "?"
            if not any(
                "record takeover" in line for _, line in (self.last.lines if self.last else [])
            ):
                problems.append("the deploy did not record a takeover")
            for name, answer in (("Python", py), ("Node.js", node)):
                if not answer.ok or not (answer.release or "").endswith(sha):
                    problems.append(
                        f"{name} answers {answer.describe()} from release {answer.release}, not the"
                        f" new release of {sha}"
                    )
            bare = self.bare_pids()
            if bare:
                problems.append(f"the bare server still runs (pids {bare})")
            apps = pm2_apps(self.sandbox, app + "-")
            want = {f"{app}-python": {"fork_mode"}, f"{app}-nodejs": {"cluster_mode"}}
            if {name: {mode for _, mode in procs} for name, procs in apps.items()} != want or any(
                status != "online" for procs in apps.values() for status, _ in procs
            ):
                problems.append(
                    f"PM2 should hold {app}-python (fork) and {app}-nodejs (cluster), online; it"
                    f" holds {apps}"
                )
            problems += self.site_problems(sha)
            if not problems:
                m.after = "new release, both under PM2, bare server gone" + (
                    "; Nginx serves the new site" if self.tk.shape != "plain" else ""
                )
        m.expected = not problems

    def site_problems(self, sha: str) -> list[str]:
        """Loopback/HTTPS takeovers: the old listen kept, the running Nginx serving the new site,
        HTTPS answering."""
        if self.tk.shape == "plain":
            return []
        problems = []
        site = ssh(self.sandbox, f"sudo -n cat {self.tk.site}", check=False).stdout
        want = re.search(r'return 200 "([0-9a-f]{16})\\n";', site)
        conn = http.client.HTTPConnection("127.0.0.1", self.tk.listen, timeout=5)
        try:
            conn.request("GET", "/.signalcraft-deploy-site")
            running = conn.getresponse().read().decode("utf-8", "replace").strip()
        except OSError as err:
            running = f"no answer ({err})"
        finally:
            conn.close()
        if f"listen 127.0.0.1:{self.tk.listen}" not in site:
            problems.append(f"the new site does not keep listen 127.0.0.1:{self.tk.listen}")
        if not want or running != want.group(1):
            problems.append(
                f"the running Nginx answers {running[:60]!r} on /.signalcraft-deploy-site, not the"
                " new site's id"
            )
        if self.tk.shape == "https":
            for url in self.https_urls:
                with Load(
                    [url], threads=1, max_requests=1, max_seconds=10, cafile=self.cafile
                ) as probe:
                    probe.wait(10)
                answer = probe.result()
                if answer.failed or not any(r.endswith(sha) for r in answer.releases.get(url, {})):
                    problems.append(
                        f"{url} does not answer from the new release over HTTPS: {answer.summary()}"
                    )
        return problems


class TakeoverPlan(Plan):
    """The plan's method on the same 'before' state: its first deploy is the workflow with the old
    `pkill` kept (the bare server holds the port Gunicorn needs), then `pm2 reload
    ecosystem.config.js || pm2 start ...`.
    """

    def __init__(self, sandbox: Sandbox, work: Path, tk: TakeoverSettings):
        super().__init__(sandbox, work, tk.plan)
        self.tk = tk

    def setup(self) -> None:
        p = self.p
        self.work.mkdir(parents=True, exist_ok=True)
        self.repo = AppRepo(
            self.work / "plan-app",
            extra_files={
                "requirements.txt": "Flask==3.1.3\n",  # before the plan's step 1
                "ecosystem.config.js": node_only_ecosystem(p.node_app, p.node_port),
            },
        )
        ssh(
            self.sandbox,
            f"set -e\nrm -rf {p.origin} {p.directory}\ngit init -q --bare -b main {p.origin}\n",
        )
        self.push()
        ssh(self.sandbox, f"set -e\ngit clone -q {p.origin} {p.directory}\n")
        site = plan_site(p, False).replace(
            "the plan's step 4", "the hand-made site of before the plan, takeover"
        )
        out = ssh(
            self.sandbox,
            before_state_script(p.directory, p.node_app, p.gunicorn_port, p.site, site),
            timeout=300,
        ).stdout
        wrong = before_state_answers(self)
        if wrong:
            raise BenchError(f"takeover baseline: {wrong}\n{out[-1500:]}")

    def apply(self, kind: Kind) -> None:
        """The plan's commit: gunicorn pinned (step 1), gunicorn.conf.py (step 2), both apps in the
        PM2 file (step 3)."""
        assert self.repo is not None
        self.repo.write("requirements.txt", (EXAMPLE_APP / "requirements.txt").read_text())
        self.repo.write(
            "gunicorn.conf.py", plan_gunicorn_conf(self.p.gunicorn_port, self.variant.timeout)
        )
        self.repo.write("ecosystem.config.js", plan_ecosystem(self.p))
        self.repo.commit(
            "bench: the plan's steps 1-3 (gunicorn, gunicorn.conf.py, both apps in"
            " ecosystem.config.js)"
        )
        self.push()

    def deploy(self, kind: Kind | None) -> Stamped:
        p = self.p
        # The plan's `pkill -f "python.*app.py"`, kept for this first deploy; limited to the bare
        # servers running in this app's directory because the host is shared (it would kill the
        # tool's and the e2e tests' too).
        stop = f"for pid in $({bare_pids_script(p.directory)}); do kill $pid; done"
        script = "\n".join(
            [
                f"cd {p.directory} && echo '@@ git pull' && git pull &&",
                "  echo '@@ npm install' && npm install --no-audit --no-fund &&",
                (
                    "  echo '@@ pip install' && venv/bin/pip install --disable-pip-version-check -r"
                    " requirements.txt &&"
                ),
                f"  echo '@@ pkill -f \"python.*app.py\"' && {{ {stop}; true; }} &&",
                "  echo '@@ pm2 reload || pm2 start' &&",
                (
                    "  (pm2 reload ecosystem.config.js --env production || pm2 start"
                    " ecosystem.config.js --env production)"
                ),
                "rc=$?",
                "echo '@@ done'",
                "exit $rc",
            ]
        )
        return run_stamped(
            ["ssh", "-F", self.sandbox.ssh_config, "sandbox", "bash -s"],
            stdin=script,
            timeout=DEPLOY_TIMEOUT,
        )

    def describe(self, kind: Kind, result: Stamped) -> str:
        return "pkill + pm2 reload/start"

    def check(
        self, kind: Kind, before: tuple[Answer, Answer], code: int | None, m: Measurement
    ) -> None:
        py, node = self.answers()
        apps = pm2_apps(self.sandbox, self.p.python_app)
        under_pm2 = any(status == "online" for procs in apps.values() for status, _ in procs)
        if py.ok and node.ok:
            m.after = "yes" + (
                "" if under_pm2 else f", but {self.p.python_app} is not online in PM2"
            )
        else:
            down = [f"py {py.describe()}"] if not py.ok else []
            down += [f"node {node.describe()}"] if not node.ok else []
            m.after = "NO: " + ", ".join(down)


def cleanup_takeover(sandbox: Sandbox, tk: TakeoverSettings) -> None:
    """Remove every trace of the takeover kind on the host: PM2 apps, bare servers, sites,
    directories, logs."""
    p = tk.plan
    a = tk.app_name
    apps = [
        f"{a}-python",
        f"{a}-nodejs",
        f"{a}-python-handover",
        f"{a}-nodejs-handover",
        f"{a}-python-trial",
        f"{a}-nodejs-trial",
        p.python_app,
        p.node_app,
    ]
    sites = [
        tk.site + suffix
        for suffix in (
            "",
            ".signalcraft-prev",
            ".signalcraft-tmpprev",
            ".signalcraft-tmp",
            ".locations",
        )
    ]
    sites += [tk.tool.nginx_link, p.site, p.link]
    script = "\n".join(
        [f"pm2 delete {name} >/dev/null 2>&1 || true" for name in apps]
        + [
            f"for pid in $({bare_pids_script(d)}); do kill $pid; done"
            for d in (tk.old_dir, p.directory)
        ]
        + [
            'i=0; while [ $i -lt 50 ] && [ -n "$('
            + bare_pids_script(tk.old_dir)
            + "; "
            + bare_pids_script(p.directory)
            + ')" ]; do sleep 0.1; i=$((i+1)); done',
            (
                f"for pid in $({bare_pids_script(tk.old_dir)}; {bare_pids_script(p.directory)}); do"
                " kill -9 $pid; done"
            ),
            forget_sites_script(tk.site),
            "sudo -n rm -f " + " ".join(sites),
            f"sudo -n rm -rf {shlex.quote(tk.cert_dir)}",
            "sudo -n nginx -t >/dev/null 2>&1 && sudo -n nginx -s reload",
            f"rm -rf {tk.deploy_root} {tk.old_dir} {p.directory} {p.origin}",
            "rm -f " + " ".join(f"$HOME/.pm2/logs/{name}-*.log" for name in apps),
            "pm2 save --force >/dev/null 2>&1 || true",
        ]
    )
    ssh(sandbox, script, timeout=180, check=False)


def run_takeover(
    method_name: str,
    sandbox: Sandbox,
    work: Path,
    tk: TakeoverSettings,
    extra: dict[str, str],
    run: int,
    threads: int,
    logs: Path,
    keep: bool,
    info: dict[str, str],
    kind: Kind | None = None,
) -> list[Measurement]:
    """One takeover run: a fresh 'before' state, the measured first deploy (tool: then the measured
    rollback), clean up. The loopback and HTTPS kinds measure the first deploy only (the tool; the
    plan's method has no such kind).
    """
    kind = kind or KIND_BY_KEY["takeover"]
    tk = replace(tk, shape=TAKEOVER_SHAPES[kind.key])
    cleanup_takeover(sandbox, tk)
    results = []
    if method_name == "tool":
        tool = TakeoverTool(sandbox, work / f"takeover-tool-{kind.key}-{run}", tk, extra)
        tool.setup()
        results.append(measure(tool, kind, run, threads, logs))
        if "gunicorn" not in info:  # the versions on the host, while the takeover's venv exists
            info.update(machine_info(sandbox, [tk.deploy_root]))
        if kind.key == "takeover":
            results.append(measure(tool, TAKEOVER_ROLLBACK, run, threads, logs))
    elif kind.key != "takeover":
        return []
    else:
        plan = TakeoverPlan(sandbox, work / f"takeover-plan-{run}", tk)
        plan.setup()
        results.append(measure(plan, kind, run, threads, logs))
    if not keep:
        cleanup_takeover(sandbox, tk)
    return results


# ----------------------------------------------------------------------------- running it


def tool_host_events(method: Method, since: str, seconds: float) -> str:
    """PM2's events for the tool's apps and Gunicorn's start/stop/error lines, from `since` for
    `seconds` (UTC)."""
    assert isinstance(method, Tool)
    start = datetime.fromisoformat(since)
    end = start.timestamp() + seconds + 2
    apps = f"{method.s.app_name}-python|{method.s.app_name}-nodejs"
    script = "\n".join(
        [
            f"grep -E '({apps})' ~/.pm2/pm2.log | tail -n 400",
            "echo '@@gunicorn'",
            (
                f"cat ~/.pm2/logs/{method.s.app_name}-python*-error.log"
                f" ~/.pm2/logs/{method.s.app_name}-python*-out.log 2>/dev/null | grep -E"
                " '^\\[20|Error|Reason' | grep -vE 'Autorestarting|Worker exiting|Booting worker|"
                " \"GET ' | tail -n 400"
            ),
            f"echo '@@nginx error.log (requests to {method.sandbox.host}:{method.listen})'",
            (
                "sudo -n tail -n 50000 /var/log/nginx/error.log | grep -F 'host:"
                f' "{method.sandbox.host}:{method.listen}"\' | tail -n 20000'
            ),
        ]
    )
    out = ssh(method.sandbox, script, check=False).stdout
    keep, inside = [], False
    for line in out.splitlines():
        stamp = re.match(
            r"^\[?(\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d:\d\d)", line
        )  # PM2, Gunicorn, Nginx (host in UTC)
        # a line without a time stamp (a traceback's last line) goes with the stamped line before it
        if stamp:
            at = (
                datetime.fromisoformat(stamp.group(1).replace(" ", "T").replace("/", "-"))
                .replace(tzinfo=UTC)
                .timestamp()
            )
            inside = start.timestamp() - 1 <= at <= end
        if inside or line.startswith("@@"):
            keep.append(line)
    return "\n".join(squeeze_nginx(keep)) + "\n"


def squeeze_nginx(lines: list[str]) -> list[str]:
    """Nginx error lines counted per second, error and upstream ('... 37x connect() failed (111:
    ...), upstream ...')."""
    out: list[str | tuple[str, str, str]] = []
    counts: dict[tuple[str, str, str], int] = {}
    for line in lines:
        m = re.match(
            r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] [\d#]+: \*\d+ (.*?), client: .*?"
            r"(?:, upstream: \"(http://[^/\"]+)[^\"]*\")?, host: ",
            line,
        )
        if not m:
            out.append(line)
            continue
        key = (m.group(1), f"[{m.group(2)}] {m.group(3)}", m.group(4) or "")
        if key not in counts:
            out.append(key)
        counts[key] = counts.get(key, 0) + 1
    return [
        (
            item
            if isinstance(item, str)
            else f"{item[0]} nginx: {counts[item]}x {item[1]}"
            + (f", upstream {item[2]}" if item[2] else "")
        )
        for item in out
    ]


def bursts(
    failures: list[tuple[float, str, str]], t0: float, result: Stamped, gap: float = 0.5
) -> list[str]:
    """Failures grouped into bursts (a gap of more than `gap` s starts a new one), timed from the
    deploy's start."""
    out: list[str] = []
    group: list[tuple[float, str, str]] = []

    def flush() -> None:
        if not group:
            return
        first, last = group[0][0] + t0 - result.started, group[-1][0] + t0 - result.started
        urls = sorted({u.rsplit(":", 1)[-1].split("/", 1)[-1] or "/" for _, u, _ in group})
        errors = sorted({e.split(":")[0] for _, _, e in group})
        out.append(
            f"+{first:.2f}..+{last:.2f} s: {len(group)} failed"
            f" ({', '.join('/' + u.lstrip('/') for u in urls)}; {', '.join(errors)}) during:"
            f" {result.step_at(group[0][0] + t0)}"
        )

    for item in sorted(failures):
        if group and item[0] - group[-1][0] > gap:
            flush()
            group = []
        group.append(item)
    flush()
    return out


def ws_url(method: Method) -> str:
    return f"ws://{method.sandbox.host}:{method.listen}/live/ws"


def open_ws_clients(method: Method) -> list[WebSocketClient]:
    """WS_CLIENTS clients of /live/ws through the method's Nginx, each past its hello."""
    clients = [WebSocketClient(ws_url(method)) for _ in range(WS_CLIENTS)]
    for ws in clients:
        if ws.wait_for(lambda body: body.get("type") == "hello", 10) is None:
            raise BenchError(f"{ws_url(method)}: no hello within 10 s (ending: {ws.ending})")
    return clients


def longest_silence(ws: WebSocketClient, since: float, until: float) -> float:
    """The longest time between two messages (or `since`/`until` and the nearest one) that a client
    received in [since, until]: the tick comes every second while its process serves it."""
    times = [since] + [m.at for m in list(ws.messages) if since <= m.at <= until]
    if ws.open:
        times.append(until)
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def ws_outcome(
    clients: list[WebSocketClient], method: Method, since: float
) -> tuple[str, list[str]]:
    """How the clients' connections ended (waiting a few seconds for each), their longest silence,
    and what a client connecting now reaches: a summary and the problems (a cut connection, an old
    process still holding one, a new client reaching old code)."""
    deadline = time.monotonic() + 5
    for ws in clients:
        ws.wait_closed(max(0.0, deadline - time.monotonic()))
    now = time.monotonic()
    endings: dict[str, int] = {}
    for ws in clients:
        ending = "cut" if ws.ending.startswith("cut") else ws.ending
        endings[ending] = endings.get(ending, 0) + 1
    silence = max(longest_silence(ws, since, now) for ws in clients)
    want = str(method.variant.node_version)
    reached: dict[str, int] = {}
    for _ in clients:
        with WebSocketClient(ws_url(method)) as again:
            hello = again.wait_for(lambda body: body.get("type") == "hello", 10)
            got = f"v{hello.body.get('version')}" if hello else "no hello"
        reached[got] = reached.get(got, 0) + 1
    problems = [
        f"{n} connection(s) cut without a close frame" for e, n in endings.items() if e == "cut"
    ]
    if endings.get("open"):
        problems.append(f"{endings['open']} connection(s) still open on an old process")
    if set(reached) != {f"v{want}"}:
        problems.append(f"new clients reached {reached}, not only v{want}")
    text = (
        ", ".join(f"{n} {e}" for e, n in sorted(endings.items()))
        + f"; longest silence {silence:.1f} s; new clients: "
        + ", ".join(f"{n} {v}" for v, n in sorted(reached.items()))
    )
    return text, problems


def measure(method: Method, kind: Kind, run: int, threads: int, logs: Path) -> Measurement:
    m = Measurement(method=method.name, kind=kind.key, run=run)
    method.prepare(kind)
    before_answers = wait_for([method.py_url, method.node_url], 30)
    before = (before_answers[method.py_url], before_answers[method.node_url])
    if not (before[0].ok and before[1].ok):
        m.problems.append(f"not answering before the deploy: {describe_after(*before)}")
    method.apply(kind)
    urls = getattr(method, "load_urls", None) or [method.py_url, method.node_url]
    load = TimedLoad(
        urls,
        threads=threads,
        max_requests=50_000_000,
        max_seconds=DEPLOY_TIMEOUT + LEAD_SECONDS + TAIL_SECONDS + 10,
        cafile=getattr(method, "cafile", None),
    )
    clients = open_ws_clients(method) if kind.key == "websocket" else []
    t0 = time.monotonic()
    m.load_started_wall = datetime.now(UTC).isoformat(timespec="milliseconds")
    with load:
        time.sleep(LEAD_SECONDS)
        result = method.deploy(kind)
        time.sleep(TAIL_SECONDS)
    load_result = load.result()
    ws_problems: list[str] = []
    if clients:
        m.websockets, ws_problems = ws_outcome(clients, method, t0)
    m.failed, m.total = load_result.failed, load_result.total
    m.exit_code, m.deploy_seconds, m.load_seconds = (
        result.code,
        round(result.seconds, 2),
        round(load_result.seconds, 2),
    )
    m.per_url = {url: f"{c.failed}/{c.total}" for url, c in load_result.per_url.items()}
    m.releases_seen = load_result.releases
    for f in load_result.samples:
        moment = t0 + f.at
        m.failures.append(
            {
                "url": f.url,
                "error": f.error,
                "at_load_s": round(f.at, 3),
                "at_deploy_s": round(moment - result.started, 3),
                "during": result.step_at(moment),
            }
        )
    m.failure_windows = bursts(load.failure_times, t0, result)
    m.actions = method.describe(kind, result)
    log = logs / f"{method.name}-{run}-{kind.key}.log"
    log.write_text(
        "\n".join(f"{at - result.started:8.3f}  {line}" for at, line in result.lines) + "\n"
    )
    m.log = str(log)
    if method.name == "tool" and m.failed:
        host_log = logs / f"{method.name}-{run}-{kind.key}-host.log"
        host_log.write_text(tool_host_events(method, m.load_started_wall, load_result.seconds))
        m.host_log = str(host_log)
    method.check(kind, before, result.code, m)
    if ws_problems:
        m.problems += ws_problems
        m.expected = False
    if kind.broken:
        revert = method.revert(kind)
        (logs / f"{method.name}-{run}-{kind.key}-revert.log").write_text(revert.text + "\n")
        if method.name == "tool" and revert.code != 0:
            m.problems.append(f"the revert deploy exited {revert.code} (see its log)")
            m.expected = False
    return m


def machine_info(sandbox: Sandbox, roots: list[str]) -> dict[str, str]:
    script = "\n".join(
        [
            "echo nproc=$(nproc)",
            'echo os=$(. /etc/os-release && echo "$PRETTY_NAME")',
            "echo kernel=$(uname -sr)",
            "echo pm2=$(pm2 --version 2>/dev/null | tail -n 1)",
            "echo nginx=$(sudo -n nginx -v 2>&1 | sed 's/^nginx version: //')",
            "echo node=$(node --version)",
            "echo python=$(python3 --version 2>&1)",
            (
                f"g=$(ls -d {' '.join(f'{r}/venvs/*/bin/gunicorn' for r in roots)} 2>/dev/null |"
                " head -n 1)"
            ),
            '[ -n "$g" ] && echo gunicorn=$($g --version 2>&1 | head -n 1)',
            (
                '[ -n "$g" ] && echo flask=$($(dirname $g)/python -c \'import importlib.metadata as'
                ' m; print(m.version("flask"))\')'
            ),
            "true",
        ]
    )
    out = ssh(sandbox, script, check=False).stdout
    info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    tool_commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(REPO_ROOT),
            "status",
            "--porcelain",
            "--",
            "signalcraft_deploy",
            "tasks",
            "fabfile.py",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    info["signalcraft-deploy"] = tool_commit + (
        " (with uncommitted changes in signalcraft_deploy/ or tasks/)" if dirty else ""
    )
    info["client python"] = platform.python_version()
    return info


def cleanup(sandbox: Sandbox, tool: ToolSettings, plan: PlanSettings) -> None:
    """Remove everything the benchmark made on the host: PM2 apps, Nginx sites, directories,
    logs."""
    apps = [
        f"{tool.app_name}-python",
        f"{tool.app_name}-nodejs",
        f"{tool.app_name}-python-handover",
        f"{tool.app_name}-nodejs-handover",
        f"{tool.app_name}-python-trial",
        f"{tool.app_name}-nodejs-trial",
        plan.python_app,
        plan.node_app,
    ]
    sites = [
        tool.nginx_site + suffix
        for suffix in ("", ".signalcraft-prev", ".signalcraft-tmpprev", ".signalcraft-tmp")
    ]
    sites += [tool.nginx_link, plan.site, plan.link]
    script = "\n".join(
        [f"pm2 delete {a} >/dev/null 2>&1 || true" for a in apps]
        + [
            forget_sites_script(tool.nginx_site),
            "sudo -n rm -f " + " ".join(s for s in sites if s),
            "sudo -n nginx -t >/dev/null 2>&1 && sudo -n nginx -s reload",
            f"rm -rf {tool.deploy_root} {plan.directory} {plan.origin} {plan.directory}.index",
            "rm -f " + " ".join(f"$HOME/.pm2/logs/{a}-*.log" for a in apps),
            "pm2 save --force >/dev/null 2>&1 || true",
        ]
    )
    ssh(sandbox, script, timeout=180, check=False)


# ----------------------------------------------------------------------------- report


def ratio(ms: list[Measurement]) -> str:
    return f"{sum(m.failed for m in ms)}/{sum(m.total for m in ms)}"


def summarize_after(ms: list[Measurement], attr: str = "after") -> str:
    seen: dict[str, int] = {}
    for m in ms:
        seen[getattr(m, attr)] = seen.get(getattr(m, attr), 0) + 1
    return "; ".join(
        text if n == 1 and len(ms) == 1 else f"{text} ×{n}" for text, n in seen.items()
    )


def table(kinds: list[Kind], results: list[Measurement]) -> str:
    head = (
        "| kind of deploy | tool: failed/total per run | tool: sum | tool: exit codes | tool:"
        " deploy s | tool: what it did | tool: answering after | baseline: failed/total per run |"
        " baseline: sum | baseline: answering after |"
    )
    rows = [
        head,
        "| " + " | ".join(["---"] + ["---:"] * 4 + ["---"] * 2 + ["---:"] * 2 + ["---"]) + " |",
    ]
    for kind in kinds:
        tool = [m for m in results if m.method == "tool" and m.kind == kind.key]
        base = [m for m in results if m.method == "baseline" and m.kind == kind.key]
        no_base = (
            "n/a (the plan has no rollback)"
            if kind.key == TAKEOVER_ROLLBACK.key and any(m.method == "baseline" for m in results)
            else "-"
        )
        tool_after = (
            summarize_after(tool)
            if all(m.expected for m in tool)
            else "NOT AS EXPECTED in run(s) "
            + ", ".join(str(m.run) for m in tool if not m.expected)
            + " (see below)"
        )
        rows.append(
            "| "
            + " | ".join(
                [
                    kind.title,
                    ", ".join(f"{m.failed}/{m.total}" for m in tool) or "-",
                    ratio(tool) if tool else "-",
                    ", ".join(str(m.exit_code) for m in tool) or "-",
                    ", ".join(f"{m.deploy_seconds:.1f}" for m in tool) or "-",
                    summarize_after(tool, "actions") if tool else "-",
                    tool_after if tool else "-",
                    ", ".join(f"{m.failed}/{m.total}" for m in base) or no_base,
                    ratio(base) if base else no_base,
                    summarize_after(base) if base else no_base,
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def failure_details(results: list[Measurement]) -> str:
    out = []
    for m in results:
        if m.method == "tool" and (m.failed or not m.expected):
            out.append(
                f"tool, {TITLES[m.kind]}, run {m.run}: {m.failed}/{m.total} failed "
                f"(per URL: {m.per_url}), exit {m.exit_code}; deploy log {m.log}"
                + (f"; host events {m.host_log}" if m.host_log else "")
                + (
                    "; no zero target, not counted in the exit status"
                    if m.expected and not m.zero_target
                    else ""
                )
            )
            for p in m.problems:
                out.append(f"  problem: {p}")
            out.append(
                f"  load started {m.load_started_wall}, {LEAD_SECONDS:.0f} s before the deploy;"
                " failures by burst:"
            )
            for w in m.failure_windows:
                out.append(f"    {w}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    t, p, tk = ToolSettings(), PlanSettings(), TakeoverSettings()
    ap = argparse.ArgumentParser(
        prog="python -m bench.downtime",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--runs", type=int, default=3, help="deploys of each kind, per method")
    ap.add_argument("--threads", type=int, default=4, help="load generator client threads")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 run per kind, 2 threads")
    ap.add_argument(
        "--kinds",
        default=",".join(k.key for k in KINDS if k.key not in HOST_LOOPBACK_KINDS),
        help=(
            "comma-separated kinds to measure (takeover also measures its rollback;"
            " takeover-loopback and takeover-https only when the sandbox host is this machine)"
        ),
    )
    ap.add_argument("--no-baseline", action="store_true", help="measure the tool only")
    ap.add_argument(
        "--node-script",
        help=(
            "a Node.js server file copied into the tool's app and run as NODE_SCRIPT (e.g."
            " bench/apps/simple_server.js: how a reload treats a server without the example's"
            " shutdown handshake); it answers / as the example does, its VERSION read from"
            " server.js"
        ),
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="leave the apps, sites and directories on the host (debugging)",
    )
    ap.add_argument(
        "--out",
        default="",
        help="directory for the results JSON and the deploy logs (empty: a new temp directory)",
    )
    g = ap.add_argument_group(
        "the tool's app on the host (kept apart from the default 'signalcraft' one)"
    )
    g.add_argument("--app-name", default=t.app_name)
    g.add_argument("--deploy-root", default=t.deploy_root)
    g.add_argument(
        "--gunicorn-bind", default=t.gunicorn_bind, help="the handover address is its port + 1"
    )
    g.add_argument(
        "--node-port", type=int, default=t.node_port, help="the handover port is this + 1"
    )
    g.add_argument("--nginx-listen", type=int, default=t.nginx_listen)
    g.add_argument("--nginx-site", default=t.nginx_site)
    g.add_argument(
        "--tool-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "another setting for every deploy of the tool (repeatable), e.g."
            " GUNICORN_MAX_REQUESTS=50"
        ),
    )
    b = ap.add_argument_group("the baseline's app on the host (not managed by the tool)")
    b.add_argument(
        "--plan-dir", default=p.directory, help="its git clone (the origin is <plan-dir>.git)"
    )
    b.add_argument("--plan-gunicorn-port", type=int, default=p.gunicorn_port)
    b.add_argument("--plan-node-port", type=int, default=p.node_port)
    b.add_argument("--plan-listen", type=int, default=p.listen)
    b.add_argument("--plan-site", default=p.site)
    k = ap.add_argument_group(
        "the takeover kind (its 'before' state is made and removed in each run)",
        "directories /home/ubuntu/<name>, <name>-old and <name>-plan(.git), Nginx sites <name> and "
        "<name>-plan, PM2 apps <name>-* and <name>-plan-*",
    )
    k.add_argument(
        "--takeover-runs", type=int, default=0, help="runs of the takeover kind (0: as --runs)"
    )
    k.add_argument("--takeover-app-name", default=tk.app_name)
    k.add_argument(
        "--takeover-gunicorn-port",
        type=int,
        default=tk.gunicorn_port,
        help="the bare server's port, then Gunicorn's (the handover port is this + 1)",
    )
    k.add_argument(
        "--takeover-node-port", type=int, default=tk.node_port, help="the handover port is this + 1"
    )
    k.add_argument("--takeover-listen", type=int, default=tk.listen)
    k.add_argument("--takeover-plan-gunicorn-port", type=int, default=tk.plan_gunicorn_port)
    k.add_argument("--takeover-plan-node-port", type=int, default=tk.plan_node_port)
    k.add_argument("--takeover-plan-listen", type=int, default=tk.plan_listen)
    k.add_argument(
        "--takeover-tls-listen",
        type=int,
        default=tk.tls_listen,
        help="the HTTPS port of the takeover-https kind",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.threads = 1, min(args.threads, 2)
    if args.runs < 1 or args.threads < 1 or args.takeover_runs < 0:
        ap.error("--runs and --threads must be at least 1, --takeover-runs at least 0")
    args.takeover_runs = args.takeover_runs or args.runs
    unknown = [k for k in args.kinds.split(",") if k not in KIND_BY_KEY]
    if unknown:
        ap.error(f"unknown kind(s) {unknown}; known: {', '.join(KIND_BY_KEY)}")
    # The host is shared with tests using the tool's defaults: never touch those.
    clashes = {
        "--app-name": args.app_name == "signalcraft",
        "--deploy-root": args.deploy_root.rstrip("/") == "/home/ubuntu/signalcraft",
        "--nginx-site": args.nginx_site == "/etc/nginx/sites-available/signalcraft",
        "--nginx-listen/--plan-listen": 80 in (args.nginx_listen, args.plan_listen),
    }
    gunicorn_port = int(args.gunicorn_bind.rsplit(":", 1)[1])
    # The tool's handover addresses default to port + 1 for Gunicorn and for Node.js.
    ports = [
        gunicorn_port,
        gunicorn_port + 1,
        args.node_port,
        args.node_port + 1,
        args.nginx_listen,
        args.plan_gunicorn_port,
        args.plan_node_port,
        args.plan_listen,
    ]
    if any(k.startswith("takeover") for k in args.kinds.split(",")):
        ports += [
            args.takeover_gunicorn_port,
            args.takeover_gunicorn_port + 1,
            args.takeover_node_port,
            args.takeover_node_port + 1,
            args.takeover_listen,
            args.takeover_plan_gunicorn_port,
            args.takeover_plan_node_port,
            args.takeover_plan_listen,
            args.takeover_tls_listen,
        ]
        clashes["--takeover-app-name"] = not re.fullmatch(
            r"[a-z][a-z0-9-]{1,30}", args.takeover_app_name
        ) or args.takeover_app_name in ("signalcraft", "tk", args.app_name)
    clashes["ports"] = bool({8001, 8002, 3000, 80} & set(ports)) or len(set(ports)) != len(ports)
    for path in (args.deploy_root, args.plan_dir):
        clashes[f"directory {path}"] = not re.fullmatch(
            r"/home/[a-z_][a-z0-9_-]*/[A-Za-z0-9._-]+", path.rstrip("/")
        )
    for pair in args.tool_set:
        key, sep, _ = pair.partition("=")
        if not sep or key in (
            "APP_NAME",
            "DEPLOY_ROOT",
            "GUNICORN_BIND",
            "GUNICORN_HANDOVER_BIND",
            "NODE_PORT",
            "NGINX_LISTEN",
            "NGINX_SITE",
            "PY_ROUTES",
            "GUNICORN_TIMEOUT",
            "SERVER_NAME",
        ):
            ap.error(
                f"--tool-set {pair!r}: expected KEY=VALUE for a setting the benchmark does not set"
                " itself"
            )
    bad = [name for name, clash in clashes.items() if clash]
    if bad:
        ap.error(
            "refusing settings that clash with the host's default app or each other:"
            f" {', '.join(bad)}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tool_settings = ToolSettings(
        args.app_name,
        args.deploy_root.rstrip("/"),
        args.gunicorn_bind,
        args.node_port,
        args.nginx_listen,
        args.nginx_site,
    )
    plan_settings = PlanSettings(
        args.plan_dir.rstrip("/"),
        args.plan_gunicorn_port,
        args.plan_node_port,
        args.plan_listen,
        args.plan_site,
    )
    takeover_settings = TakeoverSettings(
        args.takeover_app_name,
        args.takeover_gunicorn_port,
        args.takeover_node_port,
        args.takeover_listen,
        args.takeover_plan_gunicorn_port,
        args.takeover_plan_node_port,
        args.takeover_plan_listen,
        args.takeover_tls_listen,
    )
    kinds = [KIND_BY_KEY[k] for k in args.kinds.split(",")]
    regular = [
        k for k in kinds if k.key not in TAKEOVER_SHAPES
    ]  # kinds measured on the long-lived app of each method
    takeover = len(regular) != len(kinds)
    try:
        sandbox = load_sandbox()
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    unreachable = [k.key for k in kinds if k.key in HOST_LOOPBACK_KINDS]
    if unreachable and not sandbox.host.startswith("127."):
        print(
            f"error: --kinds {','.join(unreachable)}: their sites listen on the host's own"
            f" 127.0.0.1, which this machine cannot reach on the isolated test host {sandbox.host};"
            " measure them against a sandbox on this machine",
            file=sys.stderr,
        )
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="bench-downtime-"))
    out = Path(args.out) if args.out else work
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    results: list[Measurement] = []
    notes: list[str] = []
    info: dict[str, str] = {}
    code = 0
    runs_text = f"{args.runs} run(s)" + (
        f" ({args.takeover_runs} for takeover)"
        if takeover and args.takeover_runs != args.runs
        else ""
    )
    print(
        f"downtime benchmark: {runs_text} x {len(kinds)} kind(s), {args.threads} client threads, "
        f"against {sandbox.target}; logs in {logs}",
        flush=True,
    )
    extra = dict(pair.split("=", 1) for pair in args.tool_set)
    tool = Tool(sandbox, work, tool_settings, extra)
    tool.node_script_file = Path(args.node_script) if args.node_script else None
    plan = Plan(sandbox, work, plan_settings)

    def show(m: Measurement) -> None:
        flag = "" if m.expected else "  << " + "; ".join(m.problems)
        print(
            f"  {m.method:<8} run {m.run}  {TITLES[m.kind]:<44} {m.failed:>5}/{m.total:<6} failed "
            f" exit {m.exit_code}  {m.deploy_seconds:5.1f} s  did: {m.actions}  after:"
            f" {m.after}{flag}",
            flush=True,
        )
        if m.websockets:
            print(f"           websockets: {m.websockets}", flush=True)

    try:
        cleanup(sandbox, tool_settings, plan_settings)  # leftovers of an interrupted run
        if takeover:
            cleanup_takeover(sandbox, takeover_settings)
        methods: list[Method] = [tool] + ([] if args.no_baseline else [plan])
        if (regular and not args.no_baseline) or takeover:
            global BASELINE_INDEX
            print(
                "setting up: the baseline's local package index (wheels, npm cache; not"
                " measured) ...",
                flush=True,
            )
            index = BaselineIndex(plan_settings.directory + ".index")
            index.make(
                sandbox,
                work,
                [
                    *(EXAMPLE_APP / "requirements.txt").read_text().splitlines(),
                    "Flask==3.1.3",
                    *(pin for pin in REQUIREMENT_PINS if pin),
                ],
                [(EXAMPLE_APP / "package-lock.json").read_text()],
            )
            BASELINE_INDEX = index
        if regular:
            print("setting up: first deploy of the tool's app (not measured) ...", flush=True)
            tool.setup()
            if not args.no_baseline:
                print(
                    "setting up: the plan's app (git clone, venv, pm2 start, Nginx site) ...",
                    flush=True,
                )
                plan.setup()
        info = machine_info(sandbox, [tool_settings.deploy_root, takeover_settings.deploy_root])
        for method in methods:
            for run in range(1, max(args.runs, args.takeover_runs if takeover else 0) + 1):
                for kind in kinds:
                    if kind.key in TAKEOVER_SHAPES:
                        if run > args.takeover_runs or (
                            method.name != "tool" and kind.key != "takeover"
                        ):
                            continue
                        print(
                            f"  {method.name:<8} run {run}  takeover: making the 'before' state"
                            " (not measured) ...",
                            flush=True,
                        )
                        for m in run_takeover(
                            method.name,
                            sandbox,
                            work,
                            takeover_settings,
                            extra,
                            run,
                            args.threads,
                            logs,
                            args.keep,
                            info,
                            kind,
                        ):
                            results.append(m)
                            show(m)
                    elif run <= args.runs and (method.name == "tool" or not kind.tool_only):
                        m = measure(method, kind, run, args.threads, logs)
                        results.append(m)
                        show(m)
        notes += plan.recoveries
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        code = 130
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    finally:
        if args.keep:
            print(
                "--keep: leaving the benchmark's apps, sites and directories on the host",
                file=sys.stderr,
            )
        else:
            cleanup(sandbox, tool_settings, plan_settings)
            if takeover:
                cleanup_takeover(sandbox, takeover_settings)
    if not results:
        return code or 2
    print()
    print(
        f"Downtime per kind of deploy ({started:%Y-%m-%d %H:%M} UTC; {runs_text} per kind; load:"
        f" {args.threads} threads looping GET {PY_PATH} and / through Nginx, from"
        f" {LEAD_SECONDS:.0f} s before each deploy to {TAIL_SECONDS:.0f} s after it)"
    )
    print()
    rows = [r for k in kinds for r in ((k, TAKEOVER_ROLLBACK) if k.key == "takeover" else (k,))]
    print(table(rows, results))
    print()
    for m in results:
        if m.websockets:
            print(f"websocket clients, {m.method} run {m.run}: {m.websockets}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"tool settings: {tool.settings_summary()} (then GUNICORN_TIMEOUT 120/121 and PY_ROUTES"
        f" +/-{EXTRA_ROUTE} vary with the kinds)"
    )
    print(
        f"baseline: {plan_settings.directory} (origin {plan_settings.origin}), PM2 apps"
        f" {plan_settings.python_app} (fork, 127.0.0.1:{plan_settings.gunicorn_port}) and"
        f" {plan_settings.node_app} (fork, :{plan_settings.node_port}), Nginx"
        f" :{plan_settings.listen} ({plan_settings.site})"
    )
    if takeover:
        tk, tkp = takeover_settings, takeover_settings.plan
        print(
            f"takeover: 'before' state in {tk.old_dir} (bare `{BARE_COMMAND}` on"
            f" 127.0.0.1:{tk.gunicorn_port}, PM2 {tk.app_name}-nodejs fork on :{tk.node_port},"
            f" Nginx :{tk.listen} {tk.site}), then the tool's first deploy with APP_NAME"
            f" {tk.app_name}, DEPLOY_ROOT {tk.deploy_root}; baseline: the same state in"
            f" {tkp.directory} (:{tkp.gunicorn_port}, {tkp.node_app} :{tkp.node_port}, Nginx"
            f" :{tkp.listen}), then git pull, npm install, pip install, the plan's pkill (limited"
            " to that directory), pm2 reload ecosystem.config.js || pm2 start"
        )
    for note in notes:
        print(f"baseline note: {note}")
    details = failure_details(results)
    if details:
        print()
        print("Tool deploys that failed requests or did not behave as expected:")
        print(details)
    (out / "results.json").write_text(
        json.dumps(
            {
                "started": started.isoformat(timespec="seconds"),
                "argv": sys.argv,
                "runs": args.runs,
                "threads": args.threads,
                "machine": info,
                "tool_settings": asdict(tool_settings),
                "plan_settings": asdict(plan_settings),
                "takeover_settings": asdict(takeover_settings) if takeover else None,
                "takeover_runs": args.takeover_runs if takeover else 0,
                "notes": notes,
                "results": [asdict(m) for m in results],
            },
            indent=2,
        )
    )
    print(f"\nresults: {out / 'results.json'}; deploy logs: {logs}")
    if code:
        return code
    bad = [
        m
        for m in results
        if m.method == "tool" and ((m.failed and m.zero_target) or not m.expected)
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
