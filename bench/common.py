"""Shared helpers for the benchmarks that run against the sandbox host (tests/host/up).

The sandbox host is an isolated test host (tests/host/testhost, h250 at 198.18.250.2): its own
network namespace, files and processes on this machine, reached over a veth pair, with no route to a
package index. Every request a benchmark sends goes to a test host's address (198.18.0.0/15, the
range tests/host/testhost uses) or to loopback: `test_host` and `get` refuse anything else.

- `Sandbox`: the host's address, key and ssh config, read from ``.sandbox/env``.
- `ssh`: run a shell script on the host as its user (the script goes over stdin, so no quoting).
- `upload_tree`: copy a local directory to the host as its user (a tar stream over one ssh).
- `run_stamped`: run a local command with a time bound, keeping each output line with the moment
  it arrived, so a benchmark can tell which step of a deploy was running when a request failed.
- `AppRepo`: a throwaway git repository holding a copy of an app, changed commit by commit.
- `get`: one GET on a test host's or a loopback URL (refused for anything else), with status,
  X-Release and body.
- `host_get`: one GET on a URL of the host's own loopback (an app bound to 127.0.0.1 there), run on
  the host.
- `BaselineIndex`: a package index for the plan's method on a host that reaches none (a wheelhouse
  and an npm cache made on this machine, read through the baseline's own `venv/pip.conf` and
  `.npmrc`).

Standard library only (plus `bench.loadgen` for the test-host rule).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import loopback_target

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = REPO_ROOT / "examples" / "signalcraft"


class BenchError(RuntimeError):
    """Set-up or tear-down of a benchmark failed; the message says what and how to fix it."""


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


def load_sandbox(state_dir: Path | None = None) -> Sandbox:
    """Read ``.sandbox/env`` (written by tests/host/up)."""
    state = state_dir or REPO_ROOT / ".sandbox"
    env_file = state / "env"
    if not env_file.is_file():
        raise BenchError(
            f"{env_file} is missing: bring the sandbox host up first with `sudo tests/host/up`."
        )
    values: dict[str, str] = {}
    for line in env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            parts = shlex.split(value)
            values[key.strip()] = parts[0] if parts else ""
    try:
        sandbox = Sandbox(
            host=values["SANDBOX_HOST"],
            port=int(values["SANDBOX_PORT"]),
            user=values["SANDBOX_USER"],
            key=values["SANDBOX_KEY"],
            known_hosts=values["SANDBOX_KNOWN_HOSTS"],
            ssh_config=values["SANDBOX_SSH_CONFIG"],
        )
    except (KeyError, ValueError) as err:
        raise BenchError(
            f"{env_file}: missing or bad value ({err}); run `sudo tests/host/up` again."
        ) from None
    test_host(sandbox.host)  # the sandbox must be a test host (or this machine)
    return sandbox


def test_host(address: str) -> str:
    """`address` if it is a test host's (198.18.0.0/15, tests/host/testhost) or loopback; else
    BenchError."""
    try:
        loopback_target(f"http://{address}/")
    except ValueError:
        raise BenchError(
            f"the sandbox host is {address}: the benchmarks only send load to test hosts "
            "(198.18.0.0/15, tests/host/testhost) or loopback; refused"
        ) from None
    return address


def ssh(
    sandbox: Sandbox, script: str, *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a bash script on the sandbox host (sent on stdin); raise BenchError on failure if
    `check`."""
    argv = ["ssh", "-F", sandbox.ssh_config, "sandbox", "bash -s"]
    try:
        result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"ssh command timed out after {timeout:.0f} s:\n{script.strip()[:500]}"
        ) from None
    if check and result.returncode != 0:
        raise BenchError(
            f"ssh command failed (exit {result.returncode}):\n{script.strip()[:500]}\n"
            f"stderr: {result.stderr.strip()[-1500:]}\nstdout: {result.stdout.strip()[-800:]}"
        )
    return result


def upload_tree(sandbox: Sandbox, local: Path, remote: str, *, timeout: float = 120) -> None:
    """Copy the directory `local` to `remote` on the host (replacing it), owned by the host's
    user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(local), arcname=".")
    where = shlex.quote(remote)
    argv = [
        "ssh",
        "-F",
        sandbox.ssh_config,
        "sandbox",
        f"rm -rf {where} && mkdir -p {where} && tar -xf - -C {where}",
    ]
    try:
        result = subprocess.run(argv, input=buf.getvalue(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"copying {local} to the host's {remote} timed out after {timeout:.0f} s"
        ) from None
    if result.returncode != 0:
        raise BenchError(
            f"copying {local} to the host's {remote} failed (exit {result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()[-800:]}"
        )


@dataclass
class Stamped:
    """A finished command: exit code (None if it was killed at its time bound), output lines with
    arrival times."""

    argv: list[str]
    code: int | None
    started: float  # time.monotonic() at start
    seconds: float
    lines: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, line)

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def step_at(self, moment: float) -> str:
        """The output line that came first at or after `moment` (the step then running), or '(after
        exit)'."""
        for at, line in self.lines:
            if at >= moment and line.strip():
                return line.strip()
        return "(after the command had exited)"


def run_stamped(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: str | None = None,
) -> Stamped:
    """Run `argv` (stdout and stderr merged), stamping each line; kill its process group at
    `timeout`."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
        bufsize=1,
    )
    lines: list[tuple[float, str]] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if stdin is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    code: int | None
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        code = None
        lines.append((time.monotonic(), f"[bench] killed after {timeout:.0f} s"))
    except (
        BaseException
    ):  # Ctrl-C: the child got SIGINT too only if it shared our group; make sure it ends
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    thread.join(timeout=5)
    return Stamped(
        argv=argv, code=code, started=started, seconds=time.monotonic() - started, lines=lines
    )


GIT_IDENTITY = [
    "-c",
    "user.name=bench",
    "-c",
    "user.email=bench@localhost",
    "-c",
    "commit.gpgsign=false",
]


class AppRepo:
    """A throwaway git repository holding a copy of an app; each change is a new commit."""

    def __init__(
        self, path: Path, source: Path = EXAMPLE_APP, extra_files: dict[str, str] | None = None
    ):
        self.path = path
        shutil.copytree(
            source,
            path,
            ignore=shutil.ignore_patterns("node_modules", ".venv", "__pycache__", "*.pyc"),
        )
        for name, text in (extra_files or {}).items():
            (path / name).write_text(text)
        self.git("init", "-q", "-b", "main")
        self.commit("bench: initial copy of the example app")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *GIT_IDENTITY, "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise BenchError(f"git {' '.join(args)} in {self.path} failed: {result.stderr.strip()}")
        return result.stdout

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def write(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)

    def commit(self, message: str) -> str:
        """Commit everything (an empty commit if nothing changed); return the new HEAD sha."""
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer at all
    release: str | None
    body: dict | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        version = (self.body or {}).get("version")
        return f"{self.status}" + (f" v{version}" if version else "")


def get(url: str, timeout: float = 5.0) -> Answer:
    """One GET on a test host's (198.18.0.0/15) or a loopback URL (any other host raises
    ValueError)."""
    target = loopback_target(url)
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("GET", target.path, headers={"Connection": "close"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return Answer(
            resp.status, resp.getheader("X-Release"), body if isinstance(body, dict) else None
        )
    except Exception as exc:  # refused, reset, timeout
        return Answer(None, None, None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def wait_for(urls: list[str], seconds: float) -> dict[str, Answer]:
    """Poll until every URL answers 2xx/3xx or `seconds` pass; return the last answers."""
    deadline = time.monotonic() + seconds
    while True:
        answers = {url: get(url, timeout=3.0) for url in urls}
        if all(a.ok for a in answers.values()) or time.monotonic() >= deadline:
            return answers
        time.sleep(0.3)


def plan_gunicorn_conf(port: int, timeout: int) -> str:
    """The plan's gunicorn.conf.py (step 2), on a port of the benchmark's choosing."""
    return (
        "import multiprocessing\n"
        f'bind = "127.0.0.1:{port}"          # internal socket for Nginx\n'
        "workers = multiprocessing.cpu_count() * 2 + 1\n"
        'worker_class = "sync"\n'
        'accesslog = "-"                  # logs to stdout so PM2 manages them\n'
        'errorlog = "-"\n'
        f"timeout = {timeout}\n"
        'wsgi_app = "app:create_app()"    # the create_app() factory in app.py\n'
    )


ROOT_STATE = "/var/lib/signalcraft-deploy"


def forget_sites_script(*sites: str) -> str:
    """Shell (the sandbox user, full sudo) that drops the root helper's records of sites a benchmark
    removed behind the tool's back: their claims, and the stock default site one of them parked
    (linked again)."""
    claims = " ".join(
        shlex.quote(f"{ROOT_STATE}/sites/{s.rsplit('/', 2)[-2]}--{s.rsplit('/', 1)[-1]}.json")
        for s in sites
        if s
    )
    parked, names = f"{ROOT_STATE}/parked-default.json", json.dumps([s for s in sites if s])
    relink = (
        "import json, os, sys; p = json.load(open(sys.argv[1]))\n"
        "if p.get('site') in json.loads(sys.argv[2]):\n"
        "    os.path.lexists('/etc/nginx/sites-enabled/default') or os.symlink(p['target'], "
        "'/etc/nginx/sites-enabled/default')\n    os.remove(sys.argv[1])"
    )
    return (
        f"sudo -n rm -f {claims}; sudo -n test -e {parked} && "
        f"sudo -n python3 -c {shlex.quote(relink)} {parked} {shlex.quote(names)}; true"
    )


def host_get(sandbox: Sandbox, url: str, timeout: float = 3.0) -> tuple[int | None, str]:
    """One GET, made on the sandbox host itself, of a URL on its own loopback (e.g. a Gunicorn bound
    to 127.0.0.1 there, which this machine cannot reach): (status or None, body). Any other URL
    raises ValueError.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(
            f"{url!r}: host_get is for the host's own loopback (http://127.0.0.1:PORT/...) only"
        )
    script = f"curl -s -m {timeout:g} -w '\\n@@status %{{http_code}}' {shlex.quote(url)}"
    try:
        out = ssh(sandbox, script, timeout=timeout + 15, check=False).stdout
    except BenchError:
        return None, ""
    body, _, status = out.rpartition("\n@@status ")
    code = int(status) if status.strip().isdigit() and int(status) else None
    return code, body


class BaselineIndex:
    """The package index of the plan's method on a host that reaches none (the test hosts have no
    route out).

    The tool deploys with WHEELS=local. The plan's commands (`pip install -r requirements.txt`, `npm
    install`) are kept as they are, and read a local index instead, as on a host with an index
    mirror of its own: this machine makes a wheelhouse of every requirement the benchmark uses (`pip
    wheel`) and an npm cache of every package lock it uses (`npm ci --cache`), copies both to
    `remote` on the host, and `script(directory)` points the baseline's venv (`venv/pip.conf`:
    no-index, find-links) and app directory (`.npmrc`: cache, offline) at them. Nothing outside the
    benchmark's directories is configured; `remote` goes with the benchmark's clean-up.
    """

    def __init__(self, remote: str):
        self.remote = remote

    def make(
        self, sandbox: Sandbox, work: Path, requirements: list[str], package_locks: list[str]
    ) -> None:
        local = work / "baseline-index"
        (local / "npm").mkdir(parents=True, exist_ok=True)
        req = work / "baseline-index-requirements.txt"
        req.write_text("".join(line.strip() + "\n" for line in requirements if line.strip()))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--disable-pip-version-check",
                "-q",
                "wheel",
                "-r",
                str(req),
                "-w",
                str(local / "wheels"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise BenchError(
                "the baseline's wheelhouse (pip wheel)"
                f" failed:\n{(done.stderr or done.stdout).strip()[-1500:]}"
            )
        for n, lock in enumerate(package_locks):
            packages = {k: v for k, v in json.loads(lock).get("packages", {}).items() if k}
            if not packages:
                continue
            scratch = work / f"baseline-index-npm-{n}"
            scratch.mkdir()
            root = json.loads(lock)["packages"][""]
            (scratch / "package.json").write_text(
                json.dumps(
                    {k: v for k, v in root.items() if k in ("name", "version", "dependencies")}
                )
            )
            (scratch / "package-lock.json").write_text(lock)
            done = subprocess.run(
                [
                    "npm",
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--cache",
                    str(local / "npm"),
                ],
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise BenchError(
                    "the baseline's npm cache (npm ci)"
                    f" failed:\n{(done.stderr or done.stdout).strip()[-1500:]}"
                )
        upload_tree(sandbox, local, self.remote)

    def script(self, directory: str) -> str:
        """Shell: point `directory`'s venv (made already) and npm at the index."""
        d, r = shlex.quote(directory), self.remote
        return (
            f"printf '[global]\\nno-index = true\\nfind-links = {r}/wheels\\n' > {d}/venv/pip.conf"
            f" && printf 'cache={r}/npm\\noffline=true\\n' > {d}/.npmrc"
        )
