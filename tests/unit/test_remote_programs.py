"""The programs of signalcraft_deploy/remote/, run as the host runs them, against recorded input.

Each Python program is fed on stdin to `python3 -I -` (isolated: it cannot import this checkout,
so the text `remote.program` builds must stand alone), with a fake `pm2` (and `sudo`) first on
PATH printing a recorded `pm2 jlist` (tests/unit/fixtures/), sleeping child processes standing
in for the apps, and a loopback HTTP server for the health URLs.
"""

from __future__ import annotations

import getpass
import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from signalcraft_deploy import remote
from signalcraft_deploy.core import formats
from signalcraft_deploy.host.programs import waiting_command

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "s3cr3t-Zq9x-never-print-me"
PREAMBLE = (
    "[PM2] Spawning PM2 daemon with pm2_home=/home/ubuntu/.pm2\n[PM2] PM2 Successfully daemonized\n"
)
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
NODE = shutil.which("node")


def recorded_jlist() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "pm2_jlist.json").read_text())


class FakeHost:
    """A bin/ folder with fake `pm2` and `sudo` that log their arguments; pm2 prints
    `jlist.json`."""

    def __init__(self, root: Path):
        self.root, self.bin, self.log = root, root / "bin", root / "calls.log"
        self.bin.mkdir()
        self.jlist = root / "jlist.json"
        self._tool(
            "pm2",
            f"""
            echo "pm2 $*" >> {self.log}
            case "$1" in
              jlist) printf '%s' {json.dumps(PREAMBLE)}; cat {self.jlist} ;;
              start) cp "$2" {root}/started.json ;;
            esac""",
        )
        # sudo -u USER -H CMD...: run CMD as we are (the tests run as that user already).
        self._tool(
            "sudo",
            f"""
            echo "sudo $*" >> {self.log}
            while [ $# -gt 0 ]; do case "$1" in -u) shift 2 ;; -*) shift ;; *) break ;; esac; done
            exec "$@" """,
        )

    def _tool(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip() + "\n")
        path.chmod(0o755)

    @property
    def pm2(self) -> str:
        return str(self.bin / "pm2")

    def set_list(self, procs: list[dict[str, Any]]) -> None:
        self.jlist.write_text(json.dumps(procs))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.root),
        }


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


@pytest.fixture
def sleepers() -> Iterator[Any]:
    """Start sleeping processes (the apps PM2 would run); every one is killed, by its pid, at the
    end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(SLEEP, cwd=cwd, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def run_python(
    name: str, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-", *args],
        input=remote.program(name),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


# --- remote.program: the inlining
# -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "probe",
        "takeover_record",
        "takeover_restore",
        "pm2_list",
        "pm2_ask",
        "reload_nginx",
        "tls_check",
        "hook",
    ],
)
def test_every_program_is_one_text_without_imports_of_the_package(name: str) -> None:
    text = remote.program(name)
    compile(text, name, "exec")
    assert "signalcraft_deploy.remote." not in "\n".join(
        line for line in text.splitlines() if line.startswith(("from ", "import "))
    )


def test_a_dependency_is_inlined_once_where_it_was_imported() -> None:
    text = remote.program("probe")
    assert text.count("def pm2_processes(") == 1
    assert text.index("def pm2_processes(") < text.index("def pm2_state(")
    assert "from signalcraft_deploy" not in text


def test_an_import_that_cannot_be_inlined_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.py").write_text("import signalcraft_deploy.remote.pm2_list\n")
    (tmp_path / "pm2_list.py").write_text(remote.source("pm2_list.py"))
    monkeypatch.setattr(remote, "HERE", tmp_path)
    with pytest.raises(ValueError, match="cannot inline"):
        remote.program("bad")


# --- probe.py
# ---------------------------------------------------------------------------------------------------


class Health(http.server.BaseHTTPRequestHandler):
    """/ok answers 200 from release R1, /old 200 from release R0, /bad 500."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code, release = {"/ok": (200, "R1"), "/old": (200, "R0")}.get(self.path, (500, "R1"))
        self.send_response(code)
        self.send_header("X-Release", release)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def listed_as(
    procs: list[dict[str, Any]], pids: dict[str, int], status: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """The recorded list with each app's pid replaced by a live one (and some pm_ids' status
    changed)."""
    for p in procs:
        p["pid"] = pids[p["name"]]
        p["pm2_env"]["status"] = (status or {}).get(p["pm_id"], "online")
    return procs


def probe(host: FakeHost, spec: dict[str, Any]) -> dict[str, Any]:
    done = run_python("probe", json.dumps(spec), env=host.env(), cwd=host.root)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


def gate_spec(
    host: FakeHost, release_dir: Path, urls: list[dict[str, Any]], **over: Any
) -> dict[str, Any]:
    spec = {
        "mode": "gate",
        "timeout": 5,
        "pm2": host.pm2,
        "pm2_rpc_js": remote.source("pm2_rpc.js"),
        "release": "R1",
        "release_dir": str(release_dir),
        "urls": urls,
        "fail_fast": False,
        "apps": [{"name": "signalcraft-python", "workers": True}, {"name": "signalcraft-nodejs"}],
        "report": ["signalcraft-python", "signalcraft-nodejs"],
    }
    return {**spec, **over}


def test_probe_ports_are_distinct_free_loopback_ports(host: FakeHost) -> None:
    ports = probe(host, {"mode": "ports", "count": 3})["ports"]
    assert len(set(ports)) == 3 and all(1024 <= p <= 65535 for p in ports)


def test_probe_gate_passes_when_apps_answer_from_the_release(
    host: FakeHost, web: str, sleepers: Any, tmp_path: Path
) -> None:
    release = tmp_path / "releases" / "R1"
    release.mkdir(parents=True)
    py, node = sleepers(release), sleepers(release)
    host.set_list(
        listed_as(recorded_jlist(), {"signalcraft-python": py.pid, "signalcraft-nodejs": node.pid})
    )
    verdict = probe(
        host,
        gate_spec(host, release, [{"label": "app", "url": f"{web}/ok", "expect_release": True}]),
    )
    assert verdict == {
        "ok": True,
        "problems": [],
        "pm2": {
            "signalcraft-python": [
                {"pid": py.pid, "status": "online", "restarts": 3, "mode": "fork"}
            ],
            "signalcraft-nodejs": (
                [{"pid": node.pid, "status": "online", "restarts": 0, "mode": "cluster"}] * 2
            ),
        },
    }
    # pm2_rpc.js found no PM2 modules beside the fake pm2 (exit 3): the probe asked `pm2 jlist`.
    assert "pm2 jlist" in host.calls()


def test_probe_gate_names_each_problem_until_the_deadline(
    host: FakeHost, web: str, sleepers: Any, tmp_path: Path
) -> None:
    release, other = tmp_path / "releases" / "R1", tmp_path / "releases" / "R0"
    release.mkdir(parents=True)
    other.mkdir()
    py, node = sleepers(other), sleepers(release)
    host.set_list(
        listed_as(
            recorded_jlist(),
            {"signalcraft-python": py.pid, "signalcraft-nodejs": node.pid},
            {2: "launching"},
        )
    )
    urls = [
        {"label": "old", "url": f"{web}/old", "expect_release": True},
        {"label": "bad", "url": f"{web}/bad"},
    ]
    verdict = probe(host, gate_spec(host, release, urls, timeout=0.5))
    assert verdict == {
        "ok": False,
        "problems": [
            f"old {web}/old: answered by release R0, not R1",
            f"bad {web}/bad: 500",
            "PM2 app signalcraft-python: 1 process(es) still run from another release",
            "PM2 app signalcraft-nodejs is ['online', 'launching']",
        ],
    }


def test_probe_gate_fail_fast_stops_at_an_answer_from_the_app(
    host: FakeHost, web: str, tmp_path: Path
) -> None:
    host.set_list([])
    verdict = probe(
        host,
        gate_spec(
            host, tmp_path, [{"label": "trial", "url": f"{web}/bad"}], fail_fast=True, timeout=30
        ),
    )
    assert verdict == {"ok": False, "problems": [f"trial {web}/bad: 500"]}


def test_probe_status_reports_memory_and_answers(
    host: FakeHost, web: str, sleepers: Any, tmp_path: Path
) -> None:
    proc = sleepers(tmp_path)
    verdict = probe(
        host, {"mode": "status", "pids": [proc.pid], "urls": [{"label": "app", "url": f"{web}/ok"}]}
    )
    memory = verdict["memory"][str(proc.pid)]
    assert memory["master_kb"] > 0 and memory["workers"] == 0
    assert verdict["urls"] == {
        "app": {"url": f"{web}/ok", "status": 200, "release": "R1", "error": ""}
    }


def started_ahead(host: FakeHost, spec: dict[str, Any]) -> subprocess.Popen[str]:
    """probe.py started as host/programs.waiting_command starts it, its text sent first on its
    stdin."""
    command, text = waiting_command(
        SimpleNamespace(python=sys.executable), "probe.py", json.dumps(spec)
    )  # type: ignore[arg-type]
    proc = subprocess.Popen(
        ["bash", "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=host.env(),
        cwd=host.root,
    )
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.flush()
    return proc


def test_probe_gate_started_ahead_checks_only_when_told(
    host: FakeHost, web: str, sleepers: Any, tmp_path: Path
) -> None:
    release = tmp_path / "releases" / "R1"
    release.mkdir(parents=True)
    py, node = sleepers(release), sleepers(release)
    host.set_list(
        listed_as(recorded_jlist(), {"signalcraft-python": py.pid, "signalcraft-nodejs": node.pid})
    )
    proc = started_ahead(
        host,
        {
            **gate_spec(
                host, release, [{"label": "app", "url": f"{web}/ok", "expect_release": True}]
            ),
            "await_go": True,
        },
    )
    assert proc.stdin and proc.stdout
    assert proc.stdout.readline() == "ready\n"
    assert not [
        call for call in host.calls() if call.startswith("pm2 ")
    ]  # nothing asked before the word
    proc.stdin.write("go\n")
    proc.stdin.close()
    verdict = json.loads(proc.stdout.read().strip().splitlines()[-1])
    assert proc.wait(timeout=10) == 0
    assert verdict["ok"] is True and verdict["problems"] == []
    assert "pm2 jlist" in host.calls()


def test_probe_gate_started_ahead_and_never_told_checks_nothing(
    host: FakeHost, web: str, tmp_path: Path
) -> None:
    host.set_list([])
    proc = started_ahead(
        host,
        {**gate_spec(host, tmp_path, [{"label": "app", "url": f"{web}/ok"}]), "await_go": True},
    )
    assert proc.stdin and proc.stdout
    assert proc.stdout.readline() == "ready\n"
    proc.stdin.close()  # the deploy failed before its health step: the connection ends
    assert json.loads(proc.stdout.read()) == {
        "ok": False,
        "problems": ["the health gate was started but not asked to check"],
    }
    assert proc.wait(timeout=10) == 0 and host.calls() == []


# --- pm2_rpc.js
# -------------------------------------------------------------------------------------------------

FAKE_AXON = """
const { EventEmitter } = require('events');
const { appendFileSync } = require('fs');
exports.socket = () => {
  const s = new EventEmitter();
  s.connect = () => {
    if (process.env.CONNECTS) appendFileSync(process.env.CONNECTS, 'connect\\n');
    setImmediate(() => s.emit('connect'));
  };
  return s;
};
"""
FAKE_RPC = """
const fs = require('fs');
const { LIST, DELETED } = process.env;
exports.Client = class {
  call(method, arg, cb) {
    if (method === 'getMonitorData') return cb(null, JSON.parse(fs.readFileSync(LIST, 'utf8')));
    if (method === 'prepare') {
      fs.appendFileSync(DELETED, `prepare ${JSON.stringify(arg)}\n`);
      return cb(null, [{ pm2_env: { name: arg.name } }]);
    }
    fs.appendFileSync(DELETED, `${method} ${arg}\\n`);
    cb(null);
  }
};
"""


def rpc(
    pm2: Path, *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if NODE is None:
        pytest.skip("node is not installed")
    return subprocess.run(
        [NODE, "-e", remote.source("pm2_rpc.js"), str(pm2), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=30,
    )


@pytest.fixture
def pm2_install(tmp_path: Path) -> Path:
    """A PM2 laid out as npm installs it (<root>/bin/pm2), without its modules yet."""
    (tmp_path / "pm2" / "bin").mkdir(parents=True)
    pm2 = tmp_path / "pm2" / "bin" / "pm2"
    pm2.write_text("#!/bin/sh\n")
    return pm2


def add_fake_modules(pm2: Path) -> None:
    for name, text in (("pm2-axon", FAKE_AXON), ("pm2-axon-rpc", FAKE_RPC)):
        (pm2.parent.parent / "node_modules" / name).mkdir(parents=True)
        (pm2.parent.parent / "node_modules" / name / "index.js").write_text(text)


@pytest.mark.parametrize(
    "op", [["list"], ["delete", "signalcraft-nodejs"], ["start", "apps.config.json"]]
)
def test_pm2_rpc_exits_3_without_pm2s_modules(
    pm2_install: Path, tmp_path: Path, op: list[str]
) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "rpc.sock").write_text("")
    done = rpc(pm2_install, *op, env={"PM2_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"})
    assert (done.returncode, done.stdout) == (3, "")


def test_pm2_rpc_exits_3_without_a_daemon_socket(pm2_install: Path, tmp_path: Path) -> None:
    add_fake_modules(pm2_install)
    done = rpc(
        pm2_install, "list", env={"PM2_HOME": str(tmp_path / "no-daemon"), "PATH": "/usr/bin:/bin"}
    )
    assert (done.returncode, done.stdout) == (3, "")


@pytest.fixture
def daemon(pm2_install: Path, tmp_path: Path) -> dict[str, str]:
    """PM2's client modules (fakes answering from the recorded list) and a daemon socket file."""
    add_fake_modules(pm2_install)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "rpc.sock").write_text("")
    (tmp_path / "list.json").write_text(json.dumps(recorded_jlist()))
    return {
        "PM2_HOME": str(tmp_path / "home"),
        "PATH": "/usr/bin:/bin",
        "LIST": str(tmp_path / "list.json"),
        "DELETED": str(tmp_path / "deleted.log"),
    }


def test_pm2_rpc_list_prints_the_daemons_list(pm2_install: Path, daemon: dict[str, str]) -> None:
    done = rpc(pm2_install, "list", env=daemon)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == recorded_jlist()


def test_pm2_rpc_watch_answers_each_question_on_one_connection(
    pm2_install: Path, daemon: dict[str, str]
) -> None:
    if NODE is None:
        pytest.skip("node is not installed")
    watch = subprocess.Popen(
        [NODE, "-e", remote.source("pm2_rpc.js"), str(pm2_install), "watch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=daemon,
    )
    assert watch.stdin and watch.stdout
    watch.stdin.write("\n")
    watch.stdin.flush()
    assert json.loads(watch.stdout.readline()) == recorded_jlist()
    (Path(daemon["LIST"])).write_text("[]")  # the daemon's list changed: the next answer says so
    watch.stdin.write("\n\n")
    watch.stdin.close()  # questions asked just before the end are still answered
    assert [json.loads(line) for line in watch.stdout] == [[], []]
    assert watch.wait(timeout=10) == 0


def test_pm2_rpc_delete_removes_every_process_of_the_app(
    pm2_install: Path, daemon: dict[str, str]
) -> None:
    done = rpc(pm2_install, "delete", "signalcraft-nodejs", env=daemon)
    assert (done.returncode, done.stdout) == (0, "deleted signalcraft-nodejs\n")
    assert Path(daemon["DELETED"]).read_text() == "deleteProcessId 1\ndeleteProcessId 2\n"
    missing = rpc(pm2_install, "delete", "no-such-app", env=daemon)
    assert (missing.returncode, missing.stdout) == (1, "no app named no-such-app\n")


@pytest.fixture
def pm2_lib(pm2_install: Path, daemon: dict[str, str]) -> Path:
    """The fake daemon's PM2 with the real PM2's own modules (lib/, constants.js...) beside it, as
    `start` loads them to resolve apps as PM2's CLI does."""
    found = shutil.which("pm2")
    real = Path(found).resolve().parents[1] if found else None
    if real is None or not (real / "lib" / "Common.js").exists():
        pytest.skip("PM2 is not installed")
    for name in ("lib", "constants.js", "paths.js", "package.json"):  # not its client modules
        (pm2_install.parent.parent / name).symlink_to(real / name)
    return pm2_install


def prepared(daemon: dict[str, str]) -> list[dict[str, Any]]:
    """What the daemon was asked to `prepare` (launch), in order."""
    calls = Path(daemon["DELETED"])
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("prepare ")]


def write_apps(folder: Path, *apps: dict[str, Any]) -> None:
    (folder / "apps.config.json").write_text(json.dumps({"apps": list(apps)}))


def test_pm2_rpc_start_resolves_each_app_as_pm2s_cli_and_has_the_daemon_launch_it(
    pm2_lib: Path, daemon: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "server.js").write_text("")
    write_apps(
        tmp_path,
        {"name": "web", "script": "server.js", "cwd": str(tmp_path), "env": {"A": "1"}},
        {"name": "job", "script": "sh", "args": ["-c", "true"], "interpreter": "none"},
    )
    done = rpc(pm2_lib, "start", "apps.config.json", env=daemon, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "App [web] launched (1 instances)" in done.stdout
    web, job = prepared(daemon)
    home = daemon["PM2_HOME"]
    # PM2's Common.resolveAppAttributes: the script's path, the log files in PM2_HOME, PM2's
    # namespace, the environment the CLI gives (its own, PM2_HOME, the app's)
    assert (web["name"], web["pm_exec_path"], web["namespace"]) == (
        "web",
        str(tmp_path / "server.js"),
        "default",
    )
    assert (web["pm_out_log_path"], web["pm_err_log_path"]) == (
        f"{home}/logs/web-out.log",
        f"{home}/logs/web-error.log",
    )
    assert (web["env"]["A"], web["env"]["PM2_HOME"], web["env"]["PM2_USAGE"]) == ("1", home, "CLI")
    assert (job["name"], job["pm_exec_path"], job["args"]) == (
        "job",
        shutil.which("sh", path=daemon["PATH"]),
        ["-c", "true"],
    )


def test_pm2_rpc_start_only_starts_the_app_named(
    pm2_lib: Path, daemon: dict[str, str], tmp_path: Path
) -> None:
    write_apps(tmp_path, *({"name": n, "script": "sh", "interpreter": "none"} for n in "ab"))
    done = rpc(pm2_lib, "start", "apps.config.json", "b", env=daemon, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [app["name"] for app in prepared(daemon)] == ["b"]


def test_pm2_rpc_start_leaves_an_app_already_in_pm2_to_the_cli(
    pm2_lib: Path, daemon: dict[str, str], tmp_path: Path
) -> None:
    """`pm2 start` of an app in PM2's list restarts it: the CLI's to do (exit 3), nothing
    launched."""
    apps = (
        {"name": n, "script": "sh", "interpreter": "none"} for n in ("new", "signalcraft-nodejs")
    )
    write_apps(tmp_path, *apps)
    done = rpc(pm2_lib, "start", "apps.config.json", env=daemon, cwd=tmp_path)
    assert (done.returncode, prepared(daemon)) == (3, [])


def test_pm2_rpc_start_says_which_script_is_missing_and_fails_as_pm2_does(
    pm2_lib: Path, daemon: dict[str, str], tmp_path: Path
) -> None:
    write_apps(
        tmp_path,
        {"name": "lost", "script": "no-such-script.js", "cwd": str(tmp_path)},
        {"name": "fine", "script": "sh", "interpreter": "none"},
    )
    done = rpc(pm2_lib, "start", "apps.config.json", env=daemon, cwd=tmp_path)
    assert done.returncode == 1
    assert f"Error: Script not found: {tmp_path}/no-such-script.js" in done.stderr
    assert [app["name"] for app in prepared(daemon)] == ["fine"]  # PM2 starts the others


def test_probe_gate_asks_the_daemon_over_one_connection(
    host: FakeHost, web: str, sleepers: Any, tmp_path: Path
) -> None:
    """With PM2's client modules beside its binary and a daemon socket, the gate never starts the
    PM2 CLI."""
    if NODE is None:
        pytest.skip("node is not installed")
    release = tmp_path / "releases" / "R1"
    release.mkdir(parents=True)
    py, node = sleepers(release), sleepers(release)
    host.set_list(
        listed_as(recorded_jlist(), {"signalcraft-python": py.pid, "signalcraft-nodejs": node.pid})
    )
    add_fake_modules(Path(host.pm2))
    (host.root / ".pm2").mkdir()
    (host.root / ".pm2" / "rpc.sock").write_text("")
    connects = tmp_path / "connects.log"
    env = {
        **host.env(),
        "LIST": str(host.jlist),
        "DELETED": str(tmp_path / "deleted.log"),
        "CONNECTS": str(connects),
    }
    spec = gate_spec(host, release, [{"label": "app", "url": f"{web}/ok", "expect_release": True}])
    done = run_python("probe", json.dumps(spec), env=env, cwd=host.root)
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] is True, done.stderr
    assert not [call for call in host.calls() if call.startswith("pm2 ")]
    assert (
        connects.read_text() == "connect\n"
    )  # the baseline and the passing check: one Node.js start


class FakeDaemon:
    """A PM2 daemon's RPC socket at `path` speaking PM2's protocol (amp frames, axon-rpc calls):
    getMonitorData answers the list in `listed`; each call is logged in `calls`."""

    def __init__(self, path: Path, listed: Path) -> None:
        self.listed, self.calls = listed, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb")
        while head := stream.read(1):
            args = [stream.read(int.from_bytes(stream.read(4), "big")) for _ in range(head[0] & 15)]
            call = json.loads(args[0][2:])
            self.calls.append(call["method"])
            listed = json.loads(self.listed.read_text())
            reply = b"j:" + json.dumps({"args": [listed]}).encode()
            conn.sendall(
                bytes([0x12]) + b"".join(len(a).to_bytes(4, "big") + a for a in (reply, args[1]))
            )

    def close(self) -> None:
        self.server.close()


def test_probe_gate_asks_the_daemon_from_python_without_starting_node_or_pm2(
    host: FakeHost, web: str, sleepers: Any, tmp_path: Path
) -> None:
    release = tmp_path / "releases" / "R1"
    release.mkdir(parents=True)
    py, node = sleepers(release), sleepers(release)
    host.set_list(
        listed_as(recorded_jlist(), {"signalcraft-python": py.pid, "signalcraft-nodejs": node.pid})
    )
    (host.root / ".pm2").mkdir()
    daemon = FakeDaemon(host.root / ".pm2" / "rpc.sock", host.jlist)
    spec = gate_spec(host, release, [{"label": "app", "url": f"{web}/ok", "expect_release": True}])
    done = run_python("probe", json.dumps(spec), env=host.env(), cwd=host.root)
    daemon.close()
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] is True, done.stderr
    assert host.calls() == [] and set(daemon.calls) == {"getMonitorData"}


# --- takeover_record.py / takeover_restore.py
# -------------------------------------------------------------------

ME = pwd.getpwuid(os.getuid()).pw_name


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def record(host: FakeHost, pid: int, folder: Path) -> subprocess.CompletedProcess[str]:
    return run_python(
        "takeover_record",
        str(pid),
        str(folder),
        host.pm2,
        "signalcraft-nodejs",
        str(formats.TAKEOVER.current),
        formats.TOOL,
        env=host.env(),
        cwd=host.root,
    )


def restore(host: FakeHost, folder: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    return run_python(
        "takeover_restore",
        str(folder),
        host.pm2,
        str(formats.TAKEOVER.current),
        formats.TOOL,
        *mode,
        env=host.env(),
        cwd=host.root,
    )


@pytest.fixture
def legacy(tmp_path: Path, sleepers: Any) -> subprocess.Popen[bytes]:
    """The unmanaged `python app.py &`: a sleeper with a secret in its environment."""
    (tmp_path / "app").mkdir()
    return sleepers(tmp_path / "app", env={"SECRET_KEY": SECRET, "PORT": "8001"})


def test_record_saves_the_process_and_the_node_entry_privately(
    host: FakeHost, legacy: Any, tmp_path: Path
) -> None:
    """The deploy user's own record (the site is root's: the helper's takeover-record keeps its own
    copy)."""
    host.set_list(recorded_jlist())
    folder = tmp_path / "state" / "takeover"
    done = record(host, legacy.pid, folder)
    assert (done.returncode, done.stdout) == (0, "recorded\n"), done.stderr
    assert (
        mode(folder) == 0o700
        and os.listdir(folder) == ["legacy.json"]
        and mode(folder / "legacy.json") == 0o600
    )
    saved = json.loads((folder / "legacy.json").read_text())
    assert saved["legacy"] == {
        "argv": SLEEP,
        "cwd": str(tmp_path / "app"),
        "user": ME,
        "env": {"SECRET_KEY": SECRET, "PORT": "8001"},
    }
    assert saved["node"] == {
        "name": "signalcraft-nodejs",
        "script": "/home/ubuntu/signalcraft/current/server.js",
        "cwd": "/home/ubuntu/signalcraft/current",
        "exec_mode": "cluster",
        "instances": 2,
        "interpreter": "node",
        "args": [],
        "env": {
            "SECRET_KEY": SECRET,
            "DATABASE_URL": "postgres://app:hunter2-db-pass@db/app",
            "PATH": "/usr/bin:/bin",
            "unique_id": "6c1f8e0a-1b2c-4d5e-8f90-123456789abc",
        },
    }
    assert host.calls() == ["pm2 jlist"] and not any(
        call.startswith("sudo") for call in host.calls()
    )


def test_record_refuses_a_process_of_another_user_and_keeps_no_session_variable(
    host: FakeHost, sleepers: Any, tmp_path: Path
) -> None:
    host.set_list([])
    (tmp_path / "app").mkdir()
    mine = sleepers(
        tmp_path / "app",
        env={"PORT": "8001", "SSH_CONNECTION": "1.2.3.4 5 6.7.8.9 22", "SUDO_USER": "x"},
    )
    folder = tmp_path / "takeover"
    if os.getuid() != 0:  # init is never this user's (as root it is: nothing to refuse then)
        done = record(host, 1, folder)
        assert done.returncode == 1 and done.stdout == ""
        assert "pid 1 belongs to user root" in done.stderr and "nothing was recorded" in done.stderr
        assert os.listdir(folder) == [] and host.calls() == []
    assert record(host, mine.pid, folder).returncode == 0
    assert json.loads((folder / "legacy.json").read_text())["legacy"]["env"] == {"PORT": "8001"}


def test_restore_refuses_a_record_of_another_users_process(host: FakeHost, tmp_path: Path) -> None:
    folder = tmp_path / "takeover"
    folder.mkdir(mode=0o700)
    saved = {
        "format": formats.TAKEOVER.current,
        "tool": formats.TOOL,
        "node": None,
        "legacy": {
            "argv": ["/bin/false"],
            "cwd": "/",
            "user": "nobody" if ME != "nobody" else "root",
            "env": {},
        },
    }
    (folder / "legacy.json").write_text(json.dumps(saved))
    done = restore(host, folder)
    assert (
        done.returncode == 1 and done.stdout == "" and "only the deploy user's own" in done.stderr
    )
    assert host.calls() == [] and not (folder / "legacy.log").exists()


def test_a_second_record_keeps_the_first(host: FakeHost, legacy: Any, tmp_path: Path) -> None:
    host.set_list([])
    folder = tmp_path / "takeover"
    assert record(host, legacy.pid, folder).stdout == "recorded\n"
    first = (folder / "legacy.json").read_text()
    assert json.loads(first)["node"] is None
    host.set_list(recorded_jlist())
    assert record(host, legacy.pid, folder).stdout == "recorded\n"
    assert (folder / "legacy.json").read_text() == first and os.listdir(folder) == ["legacy.json"]


def test_the_record_carries_its_format_and_the_tool_that_wrote_it(
    host: FakeHost, legacy: Any, tmp_path: Path
) -> None:
    host.set_list([])
    folder = tmp_path / "takeover"
    assert record(host, legacy.pid, folder).returncode == 0
    saved = json.loads((folder / "legacy.json").read_text())
    assert (saved["format"], saved["tool"]) == (formats.TAKEOVER.current, formats.TOOL)


@pytest.mark.parametrize("number", [formats.TAKEOVER.current + 1, "2"])
def test_restore_refuses_a_record_it_cannot_read_and_changes_nothing(
    host: FakeHost, tmp_path: Path, number: Any
) -> None:
    folder = tmp_path / "takeover"
    folder.mkdir()
    legacy = {"argv": ["/bin/false"], "cwd": "/", "user": ME, "env": {}}
    (folder / "legacy.json").write_text(
        json.dumps(
            {
                "format": number,
                "tool": "signalcraft-deploy 9.0.0",
                "legacy": legacy,
                "node": {"name": "x"},
            }
        )
    )
    assert (
        restore(host, folder, "check").stderr == restore(host, folder).stderr
    )  # the check refuses as the restore does
    done = restore(host, folder)
    assert done.returncode == 1 and done.stdout == ""
    assert (
        f"format {number!r}, written by signalcraft-deploy 9.0.0; this is {formats.TOOL}"
        in done.stderr
    )
    assert (
        "pip install -U signalcraft-deploy" in done.stderr and "nothing was changed" in done.stderr
    )
    assert host.calls() == [] and not (folder / "legacy.log").exists()


def test_restore_starts_the_process_and_the_node_entry_again(
    host: FakeHost, legacy: Any, tmp_path: Path
) -> None:
    host.set_list(recorded_jlist())
    folder = tmp_path / "takeover"
    assert record(host, legacy.pid, folder).returncode == 0
    legacy.kill()
    calls = host.calls()
    checked = restore(
        host, folder, "check"
    )  # what the client asks before it stops its apps: nothing is started
    assert (checked.returncode, checked.stdout, checked.stderr) == (
        0,
        getpass.getuser() + "\n",
        "",
    )  # whose it starts
    assert host.calls() == calls and not (folder / "legacy.log").exists()
    done = restore(host, folder)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    try:
        assert state["alive"] is True
        assert Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")[:-1] == [
            a.encode() for a in SLEEP
        ]
        assert os.readlink(f"/proc/{state['pid']}/cwd") == str(tmp_path / "app")
        assert f"SECRET_KEY={SECRET}".encode() in Path(
            f"/proc/{state['pid']}/environ"
        ).read_bytes().split(b"\0")
    finally:
        os.kill(state["pid"], signal.SIGKILL)
    cfg = folder / "node.config.json"
    assert mode(cfg) == 0o600 and json.loads(cfg.read_text()) == {
        "apps": [json.loads((folder / "legacy.json").read_text())["node"]]
    }
    assert f"pm2 start {cfg}" in host.calls() and not any(
        call.startswith("sudo") for call in host.calls()
    )
    assert (tmp_path / "started.json").read_text() == cfg.read_text()


def test_restore_never_writes_through_a_link_left_in_the_folder(
    host: FakeHost, legacy: Any, tmp_path: Path
) -> None:
    host.set_list(recorded_jlist())
    folder = tmp_path / "takeover"
    assert record(host, legacy.pid, folder).returncode == 0
    legacy.kill()
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (folder / "node.config.json").symlink_to(target)
    done = restore(host, folder)
    assert done.returncode != 0 and target.read_text() == "keep\n"
    for pid in [
        json.loads(line)["pid"] for line in done.stdout.splitlines() if line.startswith("{")
    ]:
        os.kill(pid, signal.SIGKILL)


# --- the shell programs, and how run_program sends them
# ---------------------------------------------------------

SHELLS = [sh for sh in ("sh", "dash", "bash") if shutil.which(sh)]


def run_sh(shell: str, name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """As run_program sends it: the text read whole by `cat`, the arguments after the program's
    name."""
    return subprocess.run(
        [shell, "-c", remote.script(name), f"{name}.sh", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["stop_pid", "unlock"])
@pytest.mark.parametrize("shell", SHELLS)
def test_every_shell_program_parses(shell: str, name: str) -> None:
    done = subprocess.run(
        [shell, "-n"], input=remote.script(name), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_program_command_quotes_every_argument(load) -> None:
    from signalcraft_deploy.host.programs import program_command

    s = load()
    assert program_command(s, "stop_pid.sh", "12", "a b'c") == (
        """sh -c "$(cat)" stop_pid.sh 12 'a b'"'"'c'""",
        remote.script("stop_pid"),
    )
    assert program_command(s, "probe.py", '{"mode": "ports"}') == (
        """python3 -I -S - '{"mode": "ports"}'""",
        remote.program("probe"),
    )
    with pytest.raises(ValueError):
        program_command(s, "pm2_rpc.js")


def test_run_program_passes_the_arguments_through_the_shell(load, tmp_path: Path) -> None:
    from invoke import Context

    from signalcraft_deploy.host.programs import run_program

    proc = subprocess.Popen(SLEEP)
    try:
        done = run_program(
            Context(),
            load(),
            "stop_pid.sh",
            str(proc.pid),
            "30",
            f"{ME}; touch {tmp_path}/x",
            warn=True,
        )
        assert (
            done.exited == 3 and "left alone" in done.stderr and proc.poll() is None
        )  # one word: not a user
        assert not (tmp_path / "x").exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("shell", SHELLS)
def test_stop_pid_terms_then_kills(shell: str, tmp_path: Path) -> None:
    import time

    polite = subprocess.Popen(SLEEP)
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    reaper = threading.Thread(target=polite.wait)  # as init would: a zombie still answers `kill -0`
    reaper.start()
    try:
        assert stubborn.stdout and stubborn.stdout.readline() == "ready\n"
        started = time.monotonic()
        assert run_sh(shell, "stop_pid", str(polite.pid), "50", cwd=tmp_path).returncode == 0
        reaper.join(5)
        assert (
            polite.returncode == -signal.SIGTERM and time.monotonic() - started < 4
        )  # no wait once it is gone
        assert run_sh(shell, "stop_pid", str(stubborn.pid), "3", cwd=tmp_path).returncode == 0
        assert stubborn.wait(5) == -signal.SIGKILL
    finally:
        for proc in (polite, stubborn):
            proc.kill()
        reaper.join()
        stubborn.wait()


# remote/reload_nginx.py (the verified reload) is tested against a private Nginx in
# test_nginx_reload.py.


def test_stop_pid_leaves_a_process_of_another_user_alone(tmp_path: Path) -> None:
    proc = subprocess.Popen(SLEEP)
    try:
        other = "nobody" if ME != "nobody" else "root"
        done = run_sh("sh", "stop_pid", str(proc.pid), "3", other, cwd=tmp_path)
        assert (
            done.returncode == 3
            and f"is {ME}'s, not {other}'s: left alone" in done.stderr
            and proc.poll() is None
        )
        assert run_sh("sh", "stop_pid", str(proc.pid), "30", ME, cwd=tmp_path).returncode == 0
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("pid", ["0", "1", "", "-1", "12 13"])
def test_stop_pid_refuses_a_pid_that_would_signal_a_group_or_init(pid: str, tmp_path: Path) -> None:
    done = run_sh("sh", "stop_pid", pid, "3", cwd=tmp_path)
    assert done.returncode == 2 and "refusing to stop pid" in done.stderr


def test_a_record_marked_by_the_deploy_user_starts_as_the_account_it_names_whatever_the_record_says(
    tmp_path: Path,
) -> None:
    """A record the apps' account made of its own server says `user` itself: the deploy user's
    `ran_as` decides, so an account that wrote `user: ubuntu` into its record still has its server
    started as itself, never as the deploy user (a run as anyone else refuses)."""
    folder = tmp_path / "takeover"
    folder.mkdir()
    forged = {
        "format": 1,
        "legacy": {"argv": ["/bin/true"], "cwd": "/", "user": getpass.getuser(), "env": {}},
        "node": None,
        "ran_as": "someone-else",
    }
    (folder / "legacy.json").write_text(json.dumps(forged))
    text = remote.program("takeover_restore")
    checked = subprocess.run(
        [sys.executable, "-", str(folder), "pm2", "2", "t", "check"],
        input=text,
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert (checked.returncode, checked.stdout) == (0, "someone-else\n")
    started = subprocess.run(
        [sys.executable, "-", str(folder), "pm2", "2", "t"],
        input=text,
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert (
        started.returncode != 0
        and "started again as 'someone-else', not as this user" in started.stderr
    )
    assert not (folder / "legacy.log").exists()


def test_pm2_rpc_save_writes_pm2s_dump_and_keeps_the_old_one(
    pm2_install: Path, daemon: dict[str, str]
) -> None:
    home = Path(daemon["PM2_HOME"])
    (home / "dump.pm2").write_text("[]")
    listed = recorded_jlist()
    listed.append({"name": "pm2-logrotate", "pm2_env": {"pmx_module": True, "pm_id": 9}})
    Path(daemon["LIST"]).write_text(json.dumps(listed))
    done = rpc(pm2_install, "save", env=daemon)
    assert done.returncode == 0, done.stderr
    dump = json.loads((home / "dump.pm2").read_text())
    # PM2's own dump: each app's pm2_env without instances, pm_id, prev_restart_delay; no modules
    assert [e["name"] for e in dump] == [p["name"] for p in recorded_jlist()]
    assert not any(k in e for e in dump for k in ("instances", "pm_id", "prev_restart_delay"))
    assert (home / "dump.pm2.bak").read_text() == "[]"
    assert sorted(p.name for p in home.iterdir()) == ["dump.pm2", "dump.pm2.bak", "rpc.sock"]
