"""Deploy speed: wall time and remote commands per kind of deploy, the tool against the plan's own
method.

Against the sandbox host (tests/host/up: the isolated test host h250, sshd on 198.18.250.2:22, user
ubuntu, no route to a package index), this deploys the example app several times for each kind of
change and records, per deploy, the wall time and the number of remote commands:

  no change          the same commit again
  code change        VERSION bumped in app.py (Gunicorn HUP)
  gunicorn.conf      GUNICORN_TIMEOUT 120 <-> 121
  requirements       six==1.16.0 added to / removed from requirements.txt
  Node dependency    is-number@7.0.0 added to / removed from package.json and package-lock.json

The tool is driven through its front door, `fab -H ubuntu@198.18.250.2:22 -i KEY deploy --source-dir
REPO --set WHEELS=local --set ...`, as a subprocess timed with time.monotonic() (WHEELS=local: this
machine makes the wheels and the npm cache and ships them, since the host reaches no index). The
plan's own method runs on the same host in the same run, interleaved with the tool's deploys, in a
directory the tool does not manage: a git clone with a venv, PM2 apps from an ecosystem.config.js of
the plan's shape, and one SSH session per deploy running

  cd DIR && git pull -q && npm install --no-audit --no-fund \\
         && venv/bin/pip install -q -r requirements.txt && pm2 reload ecosystem.config.js --env production

Its pip and npm read a local index (bench.common.BaselineIndex: a wheelhouse and an npm cache made
on this machine, copied to the host, named in the baseline's venv/pip.conf and .npmrc), as on a host
with an index mirror of its own; the commands are unchanged.

Remote commands. The timed deploys run Fabric's own `fab` program (`fabric.main.program.run()`, all
the `fab` script does) in a Python that first wraps paramiko's `Channel.exec_command` and
`Transport.open_session` and Fabric's `Transfer.put`, and prints the counts at exit: "remote
commands" = exec requests (each `run`, and the deploy lock's held command) + files put over SFTP;
"channels" = SSH channels opened. The counts come from the very deploys that are timed, and not from
the tool's own `signalcraft_deploy.host.io.command_log(c)`, which loses counts (it stores the log as
an attribute of the invoke Context, whose Config keeps a copy). The wrapper also times each remote
command, for the "slowest remote commands" part of the report. A row "no change, `fab` script" times
the installed `fab` executable itself, to show the wrapper costs nothing. For the plan the figure is
the number of commands in its script (cd, git pull, npm install, pip install, pm2 reload: 5), all
sent over one SSH channel.

    python -m bench.deploy_speed [--runs 5] [--quick] [--kinds no-change,code] [--json out.json]
                                 [--tool-dir DIR] [--keep]

Everything it creates on the host has its own names (APP_NAME=speed, PM2 apps speed-*,
speed-plan-*), ports (8701/8702, 3701, 8087; 8801, 3801) and directories (/home/ubuntu/speed,
/home/ubuntu/speed-plan, /home/ubuntu/speed-plan.git, /home/ubuntu/speed-plan.index), and is removed
at the end, also on an error or Ctrl-C. It never runs `pm2 kill` or `pm2 delete all`: other apps
share the PM2 daemon. It only talks to test hosts (198.18.0.0/15, tests/host/testhost) or loopback:
the sandbox's Nginx at its address, and the baseline's apps (bound to the host's 127.0.0.1) with
curl on the host itself.

Exit status: 0 if every target is met, 1 if one is not (or a deploy failed), 2 if the benchmark
could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BaselineIndex, forget_sites_script, host_get, plan_gunicorn_conf, test_host
from bench.common import BenchError as CommonBenchError
from bench.loadgen import loopback_target

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = REPO_ROOT / "examples" / "signalcraft"

# The tool's profile on the shared sandbox host (other benchmarks and tests use other names and
# ports).
TOOL = {
    "APP_NAME": "speed",
    "DEPLOY_ROOT": "/home/ubuntu/speed",
    "GUNICORN_BIND": "127.0.0.1:8701",
    "GUNICORN_HANDOVER_BIND": "127.0.0.1:8702",
    "NODE_PORT": "3701",
    "NGINX_LISTEN": "8087",
    "NGINX_SITE": "/etc/nginx/sites-available/speed",
    "WHEELS": (
        "local"
    ),  # the host reaches no package index: this machine makes the wheels and ships them
}
TOOL_APPS = (
    "speed-python",
    "speed-nodejs",
    "speed-python-handover",
    "speed-python-trial",
    "speed-nodejs-trial",
)

# The plan's method: its own directory, ports and PM2 names.
PLAN_DIR = "/home/ubuntu/speed-plan"
PLAN_ORIGIN = PLAN_DIR + ".git"
PLAN_INDEX = PLAN_DIR + ".index"  # the baseline's local package index (BaselineIndex)
PLAN_PY_PORT = 8801
PLAN_NODE_PORT = 3801
PLAN_APPS = ("speed-plan-python", "speed-plan-nodejs")
PLAN_STEPS = ("git pull", "npm install", "pip install", "pm2 reload")
PLAN_COMMANDS = 5  # cd, git pull, npm install, pip install, pm2 reload

EXTRA_REQUIREMENT = "six==1.16.0"
EXTRA_NODE_DEP = "is-number@7.0.0"
TIMEOUTS = (120, 121)
DEPLOY_TIMEOUT = 600

KINDS = {
    "no-change": "no change",
    "code": "code change",
    "gunicorn-conf": "gunicorn.conf change",
    "requirements": "requirements change",
    "node-deps": "Node dependency change",
}

# Fabric's `fab` program, counting at the SSH level what the deploy sends to the host: every exec
# request (a remote command on its own channel), every file put over SFTP, and every channel opened.
# Each command's duration (from the call to its exit status) is appended to $BENCH_TRACE, one JSON
# line each.
COUNTING_FAB = r"""
import atexit, json, os, sys, time
sys.path.insert(0, {repo!r})
import paramiko
from fabric import Connection
from fabric.transfer import Transfer
try:
    from signalcraft_deploy.host import io as hostio
except ImportError:  # a tool from before the package (tasks/hostio.py)
    from tasks import hostio
counts = {{"exec": 0, "put": 0, "channels": 0}}
trace = os.environ.get("BENCH_TRACE")
def _wrap(owner, name, key=None, label=None):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if key:
            counts[key] += 1
        if not (label and trace):
            return original(*args, **kwargs)
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            command = args[1] if len(args) > 1 else kwargs.get("command")
            what = " -> ".join(str(a) for a in args[1:3]) if label == "upload" else str(command)
            with open(trace, "a") as fh:
                what = what if len(what) <= 600 else what[:300] + " ... " + what[-300:]  # head and tail
                seconds = round(time.monotonic() - start, 3)
                fh.write(json.dumps({{"what": label, "seconds": seconds, "command": what}}) + "\n")
    setattr(owner, name, wrapper)
_wrap(paramiko.Channel, "exec_command", key="exec")
_wrap(paramiko.Transport, "open_session", key="channels")
_wrap(Transfer, "put", key="put", label="upload")
_wrap(Connection, "run", label="run")
_inner = [_name for _name in ("_run_direct", "_run_with_stdin") if hasattr(hostio, _name)]
for _name in _inner or ["run"]:  # the tool's own command path (its name differs across versions; now io.run itself)
    _wrap(hostio, _name, label="run")
@atexit.register
def _report():
    sys.stderr.write("@@remote-commands %(exec)d %(put)d %(channels)d\n" % counts)
    sys.stderr.flush()
from fabric.main import program
sys.argv[0] = "fab"
sys.exit(program.run())
"""

STEP_LINE = re.compile(r"^(?:ok  |FAIL) (.+?)\s+(\d+\.\d+)s(?:  |$)")


class BenchError(RuntimeError):
    """Set-up or tear-down failed; the message says what."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so the host is cleaned up."""


# ----------------------------------------------------------------------------- the sandbox host


@dataclass(frozen=True)
class Sandbox:
    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    ssh_config: str

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def load_sandbox() -> Sandbox:
    env_file = REPO_ROOT / ".sandbox" / "env"
    if not env_file.is_file():
        raise BenchError(
            f"{env_file} is missing: bring the sandbox host up first with `sudo tests/host/up`."
        )
    values = dict(line.split("=", 1) for line in env_file.read_text().split() if "=" in line)
    try:
        sb = Sandbox(
            values["SANDBOX_HOST"],
            int(values["SANDBOX_PORT"]),
            values.get("SANDBOX_USER", "ubuntu"),
            values["SANDBOX_KEY"],
            values["SANDBOX_KNOWN_HOSTS"],
            values["SANDBOX_SSH_CONFIG"],
        )
    except (KeyError, ValueError) as err:
        raise BenchError(f"{env_file} lacks {err}: run `sudo tests/host/up` again.") from None
    try:
        test_host(sb.host)  # load only to test hosts (198.18.0.0/15) or loopback
    except CommonBenchError as err:
        raise BenchError(str(err)) from None
    return sb


def ssh(
    sb: Sandbox, script: str, *, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a bash script on the host as its user (sent on stdin: no quoting)."""
    result = subprocess.run(
        ["ssh", "-F", sb.ssh_config, "sandbox", "bash -s"],
        input=script,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise BenchError(
            f"on the host, this failed (exit {result.returncode}):\n{script}\n--- output ---\n"
            f"{(result.stdout + result.stderr).strip()[-3000:]}"
        )
    return result


def http_json(
    url: str, timeout: float = 3, sb: Sandbox | None = None
) -> tuple[int | None, dict[str, Any]]:
    """GET a test host's (or loopback) URL from here; with `sb`, a URL of the host's own 127.0.0.1,
    made on the host."""
    if sb is not None:
        status, text = host_get(sb, url, timeout)  # type: ignore[arg-type]
        try:
            return status, (json.loads(text) if text.startswith("{") else {})
        except ValueError:
            return status, {}
    loopback_target(url)  # raises ValueError for anything but a test host's address or loopback
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read().decode()
            return resp.status, (json.loads(body) if body.startswith("{") else {})
    except urllib.error.HTTPError as err:
        return err.code, {}
    except (OSError, ValueError):
        return None, {}


def wait_for(
    url: str, want: dict[str, str] | None = None, seconds: float = 30, sb: Sandbox | None = None
) -> tuple[int | None, dict[str, Any]]:
    """Poll a URL (see http_json) until it answers 200 (with the wanted JSON fields), or give up."""
    deadline = time.monotonic() + seconds
    while True:
        status, body = http_json(url, sb=sb)
        if status == 200 and all(str(body.get(k)) == v for k, v in (want or {}).items()):
            return status, body
        if time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


# ----------------------------------------------------------------------------- local app
# repositories


class AppRepo:
    """A throwaway git repository holding a copy of the example app, changed commit by commit."""

    ENV = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }

    def __init__(self, path: Path, extra_files: dict[str, str] | None = None):
        self.path = path
        shutil.copytree(
            EXAMPLE_APP,
            path,
            ignore=shutil.ignore_patterns(
                "REVISION", ".venv", "node_modules", "__pycache__", ".env"
            ),
        )
        for name, text in (extra_files or {}).items():
            (path / name).write_text(text)
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-qm", "example app")

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **self.ENV, **(env or {})},
        )
        if result.returncode != 0:
            raise BenchError(f"git {' '.join(args)} in {self.path} failed: {result.stderr.strip()}")
        return result.stdout

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def write(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-qm", message)
        return self.git("rev-parse", "HEAD").strip()


def node_dep_files(work: Path) -> dict[str, str]:
    """package.json and package-lock.json with EXTRA_NODE_DEP added (npm, lock file only: nothing is
    installed here)."""
    scratch = work / "npm-scratch"
    scratch.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(EXAMPLE_APP / name, scratch / name)
    result = subprocess.run(
        [
            "npm",
            "install",
            "--package-lock-only",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            EXTRA_NODE_DEP,
        ],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise BenchError(
            f"npm install --package-lock-only {EXTRA_NODE_DEP} failed (is the npm registry"
            f" reachable?):\n{(result.stdout + result.stderr).strip()[-2000:]}"
        )
    files = {name: (scratch / name).read_text() for name in ("package.json", "package-lock.json")}
    if EXTRA_NODE_DEP.split("@")[0] not in files["package-lock.json"]:
        raise BenchError(f"npm did not add {EXTRA_NODE_DEP} to package-lock.json")
    return files


# ----------------------------------------------------------------------------- the plan's method


def plan_ecosystem() -> str:
    # The plan's ecosystem.config.js, fixed only so that it starts (`script: 'gunicorn'` is not
    # found unless the venv is on PATH): the venv's gunicorn and python by absolute path. Node in
    # fork mode.
    return f"""module.exports = {{
  apps: [
    {{ name: '{PLAN_APPS[1]}', script: 'server.js',
      env_production: {{ NODE_ENV: 'production', PORT: {PLAN_NODE_PORT} }} }},
    {{ name: '{PLAN_APPS[0]}', script: '{PLAN_DIR}/venv/bin/gunicorn', args: '-c gunicorn.conf.py',
      interpreter: '{PLAN_DIR}/venv/bin/python',
      exec_mode: 'fork', autorestart: true, watch: false, max_memory_restart: '512M',
      env_production: {{}} }}
  ]
}};
"""


def plan_script() -> str:
    """The plan's deploy, one SSH session; bash's $EPOCHREALTIME (no extra process) stamps each
    command."""
    return "\n".join(
        [
            "t0=$EPOCHREALTIME",
            (
                f"cd {PLAN_DIR} && git pull -q && t1=$EPOCHREALTIME"
                " && npm install --no-audit --no-fund && t2=$EPOCHREALTIME"
                " && venv/bin/pip install -q -r requirements.txt && t3=$EPOCHREALTIME"
                " && pm2 reload ecosystem.config.js --env production && t4=$EPOCHREALTIME"
            ),
            "rc=$?",
            'echo "@@plan-times $t0 $t1 $t2 $t3 $t4"',
            "exit $rc",
        ]
    )


# ----------------------------------------------------------------------------- measurements


@dataclass
class Run:
    kind: str
    method: str  # "tool", "plan" or "fab-script"
    n: int
    seconds: float
    ok: bool
    commands: int | None = None  # exec requests + files put over SFTP
    channels: int | None = None  # SSH channels opened (one per exec request, plus the SFTP session)
    steps: dict[str, float] = field(default_factory=dict)
    remote: list[dict[str, Any]] = field(
        default_factory=list
    )  # each remote command: seconds, command (tool only)
    load: float | None = None  # the host's 1-minute load average just before the deploy
    note: str = ""


def load_average() -> float | None:
    """This machine's 1-minute load average (the sandbox host is a test host on this machine,
    sharing its CPUs)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def parse_steps(output: str) -> dict[str, float]:
    steps: dict[str, float] = {}
    for line in output.splitlines():
        match = STEP_LINE.match(line)
        if match:
            steps[match.group(1).strip()] = steps.get(match.group(1).strip(), 0.0) + float(
                match.group(2)
            )
    return steps


class Bench:
    def __init__(self, sb: Sandbox, work: Path, runs: int, tool_dir: Path = REPO_ROOT):
        self.sb = sb
        self.tool_dir = tool_dir
        self.work = work
        self.runs = runs
        self.timeout = TIMEOUTS[0]
        self.version = 1
        self.with_six = False
        self.with_node_dep = False
        self.results: list[Run] = []
        self.notes: list[str] = []
        self.tool_repo: AppRepo | None = None
        self.plan_repo: AppRepo | None = None
        self.base_requirements = (EXAMPLE_APP / "requirements.txt").read_text()
        self.base_node = {
            name: (EXAMPLE_APP / name).read_text() for name in ("package.json", "package-lock.json")
        }
        self.node_dep: dict[str, str] = {}
        fab_next_to_python = Path(sys.executable).parent / "fab"
        self.fab = (
            str(fab_next_to_python)
            if fab_next_to_python.exists()
            else (shutil.which("fab") or "fab")
        )

    # -- the tool

    def fab_args(self) -> list[str]:
        assert self.tool_repo is not None
        args = [
            "-H",
            f"{self.sb.user}@{self.sb.host}:{self.sb.port}",
            "-i",
            self.sb.key,
            "deploy",
            "--source-dir",
            str(self.tool_repo.path),
        ]
        for key, value in {**TOOL, "GUNICORN_TIMEOUT": str(self.timeout)}.items():
            args += ["--set", f"{key}={value}"]
        return args

    def tool_deploy(self, kind: str, n: int, *, front_door: bool = False) -> Run:
        """One timed deploy; `front_door` runs the installed `fab` script instead of the counting
        one."""
        cmd = (
            [self.fab]
            if front_door
            else [sys.executable, "-c", COUNTING_FAB.format(repo=str(self.tool_dir))]
        )
        trace = self.work / f"trace-{kind}-{n}-{'fab' if front_door else 'tool'}.jsonl"
        trace.unlink(missing_ok=True)
        env = {**os.environ, "KNOWN_HOSTS": self.sb.known_hosts, "BENCH_TRACE": str(trace)}
        env.pop("GITHUB_ACTIONS", None)
        # As on a user's machine, Python may cache the tool's compiled modules (__pycache__): a
        # workplace that sets PYTHONDONTWRITEBYTECODE makes every run compile them anew (0.03 s).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        load = load_average()
        start = time.monotonic()
        result = subprocess.run(
            cmd + self.fab_args(),
            capture_output=True,
            text=True,
            cwd=str(self.tool_dir),
            env=env,
            timeout=DEPLOY_TIMEOUT,
        )
        seconds = time.monotonic() - start
        match = re.search(r"^@@remote-commands (\d+) (\d+) (\d+)$", result.stderr, re.M)
        run = Run(
            kind=kind,
            method="fab-script" if front_door else "tool",
            n=n,
            seconds=seconds,
            ok=result.returncode == 0,
            steps=parse_steps(result.stdout),
            load=load,
        )
        if match:
            execs, puts, run.channels = (int(x) for x in match.groups())
            run.commands = execs + puts
        if trace.exists():
            run.remote = [
                json.loads(line) for line in trace.read_text().splitlines() if line.strip()
            ]
        out = (result.stdout + result.stderr).strip()
        if not run.ok:
            run.note = f"exit {result.returncode}: " + out[-1500:]
        elif kind == "no-change" and "Nothing to deploy" not in result.stdout:
            run.ok, run.note = False, "expected 'Nothing to deploy':\n" + out[-1500:]
        elif kind != "no-change" and "Nothing to deploy" in result.stdout:
            run.ok, run.note = False, "the change was not deployed ('Nothing to deploy')"
        if run.ok and kind == "code":
            status, body = http_json(
                f"http://{self.sb.host}:{TOOL['NGINX_LISTEN']}/api/flask/health"
            )
            if status != 200 or body.get("version") != str(self.version):
                run.ok, run.note = (
                    False,
                    (
                        f"after the deploy Flask answers {status} {body}, expected version"
                        f" {self.version}"
                    ),
                )
        self.results.append(run)
        if not run.ok:
            self.notes.append(f"tool, {KINDS.get(kind, kind)} run {n}: FAILED: {run.note}")
        return run

    # -- the plan's method

    def plan_git_env(self) -> dict[str, str]:
        return {"GIT_SSH_COMMAND": f"ssh -F {shlex.quote(self.sb.ssh_config)}"}

    def plan_push(self) -> None:
        assert self.plan_repo is not None
        self.plan_repo.git("push", "-q", f"sandbox:{PLAN_ORIGIN}", "main", env=self.plan_git_env())

    def plan_setup(self) -> None:
        self.plan_repo = AppRepo(
            self.work / "plan-app",
            extra_files={
                "gunicorn.conf.py": plan_gunicorn_conf(PLAN_PY_PORT, self.timeout),
                "ecosystem.config.js": plan_ecosystem(),
            },
        )
        ssh(
            self.sb,
            f"set -e\nrm -rf {PLAN_ORIGIN} {PLAN_DIR}\ngit init -q --bare -b main {PLAN_ORIGIN}\n",
        )
        self.plan_push()
        index = BaselineIndex(PLAN_INDEX)
        try:
            index.make(
                self.sb,
                self.work,
                [*self.base_requirements.splitlines(), EXTRA_REQUIREMENT],  # type: ignore[arg-type]
                [self.base_node["package-lock.json"], self.node_dep["package-lock.json"]],
            )
        except CommonBenchError as err:
            raise BenchError(str(err)) from None
        ssh(
            self.sb,
            "\n".join(
                [
                    "set -e",
                    f"git clone -q {PLAN_ORIGIN} {PLAN_DIR}",
                    f"cd {PLAN_DIR}",
                    "python3 -m venv venv",
                    index.script(PLAN_DIR),
                    "venv/bin/pip install -q --disable-pip-version-check -r requirements.txt",
                    "npm install --no-audit --no-fund --loglevel=error",
                    "pm2 start ecosystem.config.js --env production",
                ]
            ),
            timeout=600,
        )
        self.plan_check("set-up")

    def plan_check(self, what: str) -> bool:
        """After a plan deploy (untimed): both apps answer, Flask with the committed VERSION."""
        py = wait_for(
            f"http://127.0.0.1:{PLAN_PY_PORT}/api/flask/health",
            {"version": str(self.version)},
            sb=self.sb,
        )
        node = wait_for(f"http://127.0.0.1:{PLAN_NODE_PORT}/", sb=self.sb)
        if py[0] == 200 and node[0] == 200:
            return True
        self.notes.append(
            f"plan, {what}: not answering afterwards (Flask {py[0]} {py[1]}, Node.js {node[0]}); "
            "pm2 delete + start to go on"
        )
        ssh(
            self.sb,
            f"cd {PLAN_DIR} && (pm2 delete {' '.join(PLAN_APPS)} || true) && pm2 start"
            " ecosystem.config.js --env production",
            check=False,
        )
        wait_for(f"http://127.0.0.1:{PLAN_PY_PORT}/api/flask/health", sb=self.sb)
        return False

    def plan_deploy(self, kind: str, n: int) -> Run:
        for attempt in range(4):
            load = load_average()
            start = time.monotonic()
            result = subprocess.run(
                ["ssh", "-F", self.sb.ssh_config, "sandbox", "bash -s"],
                input=plan_script(),
                capture_output=True,
                text=True,
                timeout=DEPLOY_TIMEOUT,
            )
            seconds = time.monotonic() - start
            out = result.stdout + result.stderr
            if result.returncode != 0 and "Reload already in progress" in out and attempt < 3:
                # PM2's CLI-wide reload lock, held by someone else's `pm2 reload` on the shared
                # daemon: not ours to count.
                self.notes.append(
                    f"plan, {KINDS[kind]} run {n}: PM2 said 'Reload already in progress' (another"
                    " user of the daemon); run repeated"
                )
                time.sleep(5)
                continue
            break
        run = Run(
            kind=kind,
            method="plan",
            n=n,
            seconds=seconds,
            ok=result.returncode == 0,
            commands=PLAN_COMMANDS,
            load=load,
        )
        match = re.search(r"^@@plan-times (.*)$", result.stdout, re.M)
        if match:
            stamps = [float(x) for x in match.group(1).split()] if match else []
            for name, (a, b) in zip(
                PLAN_STEPS, zip(stamps, stamps[1:], strict=False), strict=False
            ):
                run.steps[name] = b - a
        if not run.ok:
            run.note = f"exit {result.returncode}: {out.strip()[-1500:]}"
            self.notes.append(f"plan, {KINDS[kind]} run {n}: FAILED: {run.note}")
        elif not self.plan_check(f"{KINDS[kind]} run {n}"):
            run.note = "apps not answering afterwards"
        self.results.append(run)
        return run

    # -- the changes

    def apply(self, kind: str) -> None:
        """Make the next change of this kind in both repositories (and push the plan's: not
        timed)."""
        tool, plan = self.tool_repo, self.plan_repo
        assert tool is not None and plan is not None
        if kind == "no-change":
            return
        if kind == "code":
            old = f'VERSION = "{self.version}"'
            self.version += 1
            for repo in (tool, plan):
                text = repo.read("app.py")
                assert old in text, f"{old} not in app.py"
                repo.write("app.py", text.replace(old, f'VERSION = "{self.version}"', 1))
            message = f"bench: VERSION {self.version}"
        elif kind == "gunicorn-conf":
            self.timeout = TIMEOUTS[1] if self.timeout == TIMEOUTS[0] else TIMEOUTS[0]
            plan.write("gunicorn.conf.py", plan_gunicorn_conf(PLAN_PY_PORT, self.timeout))
            message = f"bench: gunicorn timeout {self.timeout}"
        elif kind == "requirements":
            self.with_six = not self.with_six
            text = self.base_requirements + (EXTRA_REQUIREMENT + "\n" if self.with_six else "")
            for repo in (tool, plan):
                repo.write("requirements.txt", text)
            message = f"bench: {'add' if self.with_six else 'remove'} {EXTRA_REQUIREMENT}"
        elif kind == "node-deps":
            self.with_node_dep = not self.with_node_dep
            files = self.node_dep if self.with_node_dep else self.base_node
            for repo in (tool, plan):
                for name, text in files.items():
                    repo.write(name, text)
            message = f"bench: {'add' if self.with_node_dep else 'remove'} {EXTRA_NODE_DEP}"
        else:
            raise ValueError(kind)
        if (
            kind != "gunicorn-conf"
        ):  # the tool's gunicorn.conf.py is rendered from --set GUNICORN_TIMEOUT
            tool.commit(message)
        plan.commit(message)
        self.plan_push()

    # -- the whole run

    def setup(self) -> None:
        self.node_dep = node_dep_files(self.work)
        self.tool_repo = AppRepo(self.work / "tool-app")
        print(
            "set-up: the tool's first deploy (venv, node_modules, PM2 apps, Nginx site) ...",
            flush=True,
        )
        first = self.tool_deploy("first", 0)
        if not first.ok:
            raise BenchError(f"the tool's first deploy failed:\n{first.note}")
        self.results.remove(first)
        print(f"        {first.seconds:.1f} s, {first.commands} remote commands", flush=True)
        print("set-up: the plan's app (git clone, venv, npm install, pm2 start) ...", flush=True)
        self.plan_setup()

    def measure(self, kinds: list[str]) -> None:
        for kind in kinds:
            for n in range(1, self.runs + 1):
                self.apply(kind)
                tool = self.tool_deploy(kind, n)
                plan = self.plan_deploy(kind, n)
                extra = ""
                if "install dependencies" in tool.steps and kind == "requirements":
                    extra = f" (install {tool.steps['install dependencies']:.2f} s)"
                print(
                    f"  {KINDS[kind]:<24} run {n}/{self.runs}: tool {tool.seconds:6.2f} s{extra},"
                    f" {tool.commands} commands/{tool.channels}"
                    f" channels{'' if tool.ok else ' FAILED'} | plan {plan.seconds:6.2f}"
                    f" s{'' if plan.ok else ' FAILED'}",
                    flush=True,
                )
            if kind == "no-change":
                for n in range(1, self.runs + 1):
                    run = self.tool_deploy(kind, n, front_door=True)
                    print(
                        f"  {'no change, fab script':<24} run {n}/{self.runs}: tool"
                        f" {run.seconds:6.2f} s{'' if run.ok else ' FAILED'}",
                        flush=True,
                    )


def cleanup(sb: Sandbox) -> None:
    """Remove everything this benchmark made on the host (only its own names; never `pm2
    kill`/`delete all`).

    Ctrl-C and SIGTERM are ignored meanwhile (and by the ssh it runs), so a second Ctrl-C cannot
    leave half of it.
    """
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _cleanup(sb)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cleanup(sb: Sandbox) -> None:
    root, site = TOOL["DEPLOY_ROOT"], TOOL["NGINX_SITE"]
    link = "/etc/nginx/sites-enabled/" + site.rsplit("/", 1)[-1]
    script = "\n".join(
        [f"pm2 delete {name} >/dev/null 2>&1 || true" for name in TOOL_APPS + PLAN_APPS]
        + [
            "pm2 save --force >/dev/null 2>&1 || true",
            'logs="${PM2_HOME:-$HOME/.pm2}/logs"',
            "rm -f "
            + " ".join(
                f'"$logs"/{name}-out*.log "$logs"/{name}-error*.log'
                for name in TOOL_APPS + PLAN_APPS
            ),
            (
                f"sudo -n rm -f {link} {site} {site}.signalcraft-prev {site}.signalcraft-tmpprev"
                f" {site}.signalcraft-tmp"
            ),
            forget_sites_script(site),
            "sudo -n nginx -t >/dev/null 2>&1 && sudo -n nginx -s reload",
            f"rm -rf {root} {PLAN_DIR} {PLAN_ORIGIN} {PLAN_INDEX}",
        ]
    )
    ssh(sb, script, check=False, timeout=120)


# ----------------------------------------------------------------------------- the report


def median_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def describe(entry: dict[str, Any]) -> str:
    """A remote command, short: its first line, with the probe's mode and the facts script named."""
    command = entry.get("command", "")
    if entry.get("what") == "upload":
        return "upload " + command.split(" -> ")[-1].rsplit("/", 1)[-1]
    mode = re.search(r'"mode": "(\w+)"', command)
    if mode:
        return f"health probe on the host ({mode.group(1)}: python3 -)"
    if command.strip() == "sh -s":
        return "read host facts (sh -s: tools, who listens on our ports)"
    rpc = re.search(r"node -e .*?\"\$P\" (list|delete)((?: [\w.'-]+)*?) 2>/dev/null", command, re.S)
    if rpc:
        return f"pm2 {rpc.group(1)}{rpc.group(2)} (over PM2's socket, pm2_rpc.js)"
    first = next(
        (line for line in command.splitlines() if line.strip() and line.strip() != "set -e"),
        command,
    )
    if "cat > " in command and "nginx" in command:
        return "install the Nginx site + nginx -t"
    first = re.sub(r"\s+", " ", first).strip()
    return first if len(first) <= 70 else first[:67] + "..."


def spread(values: list[int | None]) -> str:
    """'17', or '17–18' when runs differ."""
    known = sorted({v for v in values if v is not None})
    return "-" if not known else (str(known[0]) if len(known) == 1 else f"{known[0]}–{known[-1]}")


def tool_version(tool_dir: Path) -> str:
    """The tool's commit (and whether its package has uncommitted changes), or just the
    directory."""
    head = subprocess.run(
        ["git", "-C", str(tool_dir), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
    )
    if (
        head.returncode != 0
        or Path(
            subprocess.run(
                ["git", "-C", str(tool_dir), "rev-parse", "--show-toplevel"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        != tool_dir
    ):
        return str(tool_dir)
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(tool_dir),
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
    return f"{tool_dir} at {head.stdout.strip()}" + (
        " with uncommitted changes in signalcraft_deploy/ or tasks/" if dirty else ""
    )


def machine_info(sb: Sandbox) -> dict[str, str]:
    out = ssh(
        sb,
        "\n".join(
            [
                "echo nproc=$(nproc)",
                "echo python=$(python3 --version 2>&1)",
                "echo pm2=$(pm2 --version 2>/dev/null | tail -1)",
                "echo nginx=$(sudo -n nginx -v 2>&1)",
                "echo node=$(node --version)",
                "echo npm=$(npm --version)",
                "echo kernel=$(uname -sr)",
                "echo os=$(. /etc/os-release && echo $PRETTY_NAME)",
                "echo load=$(cut -d' ' -f1-3 /proc/loadavg)",
            ]
        ),
        check=False,
    ).stdout
    info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    info["local python"] = platform.python_version()
    info["cpu"] = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.machine(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.machine()
    )
    return info


def report(bench: Bench, kinds: list[str], info: dict[str, str], started: str) -> bool:
    res = bench.results

    def runs(kind: str, method: str) -> list[Run]:
        return [r for r in res if r.kind == kind and r.method == method and r.ok]

    def secs(kind: str, method: str) -> list[float]:
        return [r.seconds for r in runs(kind, method)]

    print()
    print(f"Deploy speed, {started}, {bench.runs} runs per kind, sandbox host {bench.sb.target}")
    print(f"tool: {info.get('tool', '?')}")
    print(
        f"machine: {info.get('os', '?')}, {info.get('nproc', '?')} CPUs ({info.get('cpu', '?')}),"
        f" host {info.get('python', '?')}, pm2 {info.get('pm2', '?')}, {info.get('nginx', '?')},"
        f" node {info.get('node', '?')}, npm {info.get('npm', '?')}, kernel"
        f" {info.get('kernel', '?')}; local Python {info.get('local python', '?')}"
    )
    print(
        f"load average at start {info.get('load', '?')}, at end {info.get('load end', '?')} (the"
        " sandbox host is a test host sharing this machine's CPUs; 'load avg' below: this"
        " machine's 1-minute load average, median over each kind's runs)"
    )
    print()
    print(
        "| kind | tool median s (min–max) | tool remote commands | plan median s (min–max) | plan"
        " remote commands | speed-up | load avg |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in kinds:
        tool, plan = secs(kind, "tool"), secs(kind, "plan")
        count = spread([r.commands for r in runs(kind, "tool")])
        channels = spread([r.channels for r in runs(kind, "tool")])
        if channels != "-":
            count += f" ({channels} channels)"
        speed = (
            f"{statistics.median(plan) / statistics.median(tool):.1f}×" if tool and plan else "-"
        )
        failed = sum(1 for r in res if r.kind == kind and r.method in ("tool", "plan") and not r.ok)
        label = KINDS[kind] + (f" ({failed} failed)" if failed else "")
        loads = [r.load for r in res if r.kind == kind and r.load is not None]
        load = f"{statistics.median(loads):.1f}" if loads else "-"
        print(
            f"| {label} | {median_range(tool)} | {count} | {median_range(plan)} | {PLAN_COMMANDS}"
            f" (1 channel) | {speed} | {load} |"
        )
        if kind == "no-change" and secs(kind, "fab-script"):
            loads = [r.load for r in res if r.method == "fab-script" and r.load is not None]
            print(
                "| no change, `fab` script (front-door check) |"
                f" {median_range(secs(kind, 'fab-script'))} | - | | | |"
                f" {statistics.median(loads) if loads else '-'} |"
            )
    print()

    # Where the time goes: the tool's own step lines, and the plan's per-command stamps.
    print(
        "Where the tool's time goes (median seconds per step; 'outside steps' = wall time minus the"
        " steps:"
    )
    print(
        "Python start-up and imports, reading the local git commit, the deploy lock, the summary):"
    )
    names: list[str] = []
    for r in res:
        if r.method == "tool":
            names += [n for n in r.steps if n not in names]
    print("| kind | " + " | ".join(names) + " | outside steps |")
    print("| --- |" + " ---: |" * (len(names) + 1))
    for kind in kinds:
        rs = runs(kind, "tool")
        if not rs:
            continue
        cells = [
            (
                f"{statistics.median([r.steps.get(n, 0.0) for r in rs]):.2f}"
                if any(n in r.steps for r in rs)
                else ""
            )
            for n in names
        ]
        outside = statistics.median([r.seconds - sum(r.steps.values()) for r in rs])
        print(f"| {KINDS[kind]} | " + " | ".join(cells) + f" | {outside:.2f} |")
    print()
    print(
        "The tool's remote commands, slowest first (the run with the median wall time of each kind;"
        " seconds from"
    )
    print("the call to the command's exit status, SSH round trip included):")
    for kind in kinds:
        rs = sorted(runs(kind, "tool"), key=lambda r: r.seconds)
        if not rs or not rs[len(rs) // 2].remote:
            continue
        r = rs[len(rs) // 2]
        total = sum(e["seconds"] for e in r.remote)
        print(
            f"  {KINDS[kind]} (run {r.n}, {r.seconds:.2f} s wall, {len(r.remote)} commands/uploads"
            f" taking {total:.2f} s):"
        )
        for e in sorted(r.remote, key=lambda e: -e["seconds"])[:8]:
            print(f"    {e['seconds']:6.2f}  {describe(e)}")
    print()
    print(
        "Where the plan's time goes (median seconds per command; 'ssh' = wall time minus the"
        " commands):"
    )
    print("| kind | " + " | ".join(PLAN_STEPS) + " | ssh |")
    print("| --- |" + " ---: |" * (len(PLAN_STEPS) + 1))
    for kind in kinds:
        rs = [r for r in runs(kind, "plan") if len(r.steps) == len(PLAN_STEPS)]
        if rs:
            cells = [f"{statistics.median([r.steps[n] for r in rs]):.2f}" for n in PLAN_STEPS]
            ssh_cost = statistics.median([r.seconds - sum(r.steps.values()) for r in rs])
            print(f"| {KINDS[kind]} | " + " | ".join(cells) + f" | {ssh_cost:.2f} |")
    print()

    ok = True
    checks: list[tuple[bool, str]] = []
    if "no-change" in kinds:
        tool, plan = secs("no-change", "tool"), secs("no-change", "plan")
        if tool and plan:
            t, p = statistics.median(tool), statistics.median(plan)
            checks.append(
                (
                    t < 1.5 and p / t >= 5,
                    (
                        f"no-op redeploy: median {t:.2f} s (target < 1.5 s), {p / t:.1f}× faster "
                        f"than the plan's {p:.2f} s (target ≥ 5×)"
                    ),
                )
            )
    if "code" in kinds and secs("code", "tool"):
        t = statistics.median(secs("code", "tool"))
        checks.append((t < 4, f"code-only deploy (Gunicorn HUP): median {t:.2f} s (target < 4 s)"))
    if "requirements" in kinds and runs("requirements", "tool"):
        rs = runs("requirements", "tool")
        rest = [r.seconds - r.steps.get("install", 0.0) for r in rs]
        installs = [r.steps.get("install", 0.0) for r in rs]
        checks.append(
            (
                statistics.median(rest) < 3,
                (
                    f"requirements change: median total − install {statistics.median(rest):.2f} s"
                    f" ({min(rest):.2f}–{max(rest):.2f}; target < 3 s); install step"
                    f" {median_range(installs)} s"
                ),
            )
        )
    for passed, text in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
        ok = ok and passed
    failed = [r for r in res if not r.ok]
    if failed:
        ok = False
        print(f"FAIL  {len(failed)} deploy(s) failed (see notes)")
    if bench.notes:
        print("\nnotes:")
        for note in bench.notes:
            print("  - " + note.replace("\n", "\n    "))
    return ok


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.deploy_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="deploys per kind and method (default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="2 runs per kind")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    parser.add_argument(
        "--tool-dir",
        type=Path,
        default=REPO_ROOT,
        help=(
            "the checkout of signalcraft-deploy whose fabfile deploys (default: this one), e.g. an"
            " export of a commit: git archive HEAD | tar -x -C DIR"
        ),
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the apps on the host at the end (for debugging)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 2
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    if not (args.tool_dir / "fabfile.py").is_file():
        parser.error(f"--tool-dir {args.tool_dir}: no fabfile.py there")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    try:
        sb = load_sandbox()
        for tool in ("ssh", "git", "npm"):
            if not shutil.which(tool):
                raise BenchError(f"{tool} is not installed on this machine")
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine_info(sb)
    info["tool"] = tool_version(args.tool_dir.resolve())
    ok = False
    with tempfile.TemporaryDirectory(prefix="deploy-speed-") as tmp:
        bench = Bench(sb, Path(tmp), args.runs, args.tool_dir.resolve())
        try:
            cleanup(sb)  # leftovers of an interrupted run
            bench.setup()
            print(
                f"measuring {', '.join(KINDS[k] for k in args.kinds)}: {args.runs} runs each, tool"
                " then plan",
                flush=True,
            )
            bench.measure(args.kinds)
            info["load end"] = (
                " ".join(Path("/proc/loadavg").read_text().split()[:3])
                if Path("/proc/loadavg").exists()
                else "?"
            )
            ok = report(bench, args.kinds, info, started)
        except BenchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted: cleaning up the host ...", file=sys.stderr)
            return 130
        finally:
            if args.json:
                Path(args.json).write_text(
                    json.dumps(
                        {
                            "started": started,
                            "machine": info,
                            "runs": args.runs,
                            "results": [asdict(r) for r in bench.results],
                            "notes": bench.notes,
                        },
                        indent=2,
                    )
                    + "\n"
                )
            if args.keep:
                print(
                    "--keep: the speed* apps, the site and /home/ubuntu/speed* are left on the"
                    " host",
                    file=sys.stderr,
                )
            else:
                cleanup(sb)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
