"""Shared helpers for the unit tests: settings loaded in isolation, and real `nginx -t` / `node
--check` runs.

The external checkers are the real tools: a rendered file is only "valid" if the program that will
read it on the host accepts it. Nginx runs in a scratch prefix (its own pid, logs and temp paths),
so it needs no root and touches nothing outside the test's directory.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import pytest
from invoke import MockContext

from signalcraft_deploy.core.settings import Settings, load_settings
from signalcraft_deploy.host.io import InvokeRunner, use_transport

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
NODE = shutil.which("node")

LoadFn = Callable[..., Settings]


@pytest.fixture(autouse=True)
def root_helper_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mocked hosts have this version's root helper (tests of host/root.ensure give their own
    state)."""
    from signalcraft_deploy.core.facts import HelperState
    from signalcraft_deploy.host import root

    monkeypatch.setattr(
        root,
        "read_state",
        lambda c: HelperState(installed=root.digest(), full_sudo=True, allowed=True),
    )


@pytest.fixture
def load(tmp_path: Path) -> LoadFn:
    """`load_settings` with an empty environment and cwd=tmp_path unless a test passes its own."""

    def _load(
        overrides: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        env_file: str | None = None,
    ) -> Settings:
        return load_settings(
            env_file=env_file,
            overrides=dict(overrides or {}),
            environ=dict(environ or {}),
            cwd=str(tmp_path),
        )

    return _load


@dataclass
class CheckResult:
    ok: bool
    output: str


class NginxTester:
    """`nginx -t` of one site file inside a minimal http{} block, each run in a fresh scratch
    prefix."""

    def __init__(self, root: Path):
        self.root = root
        self._n = itertools.count()

    def check(self, site: str) -> CheckResult:
        if NGINX is None:
            pytest.skip("nginx is not installed")
        prefix = self.root / f"p{next(self._n)}"
        prefix.mkdir(parents=True)
        (prefix / "site.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            f"pid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log;\n"
            "events {}\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {prefix}/cb;\n"
            f"    proxy_temp_path {prefix}/px;\n"
            f"    fastcgi_temp_path {prefix}/fc;\n"
            f"    uwsgi_temp_path {prefix}/uw;\n"
            f"    scgi_temp_path {prefix}/sc;\n"
            f"    include {prefix}/site.conf;\n"
            "}\n"
        )
        # -e: the compiled-in error log (/var/log/nginx) is opened before nginx.conf is read; a
        # non-root user cannot open it, so point the start-up log into the prefix as well.
        proc = subprocess.run(
            [
                NGINX,
                "-t",
                "-p",
                str(prefix),
                "-e",
                str(prefix / "error.log"),
                "-c",
                str(prefix / "nginx.conf"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return CheckResult(proc.returncode == 0, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def nginx_tester(tmp_path_factory: pytest.TempPathFactory) -> NginxTester:
    return NginxTester(tmp_path_factory.mktemp("nginx"))


class NodeTester:
    """`node --check` on a file, and loading a CommonJS config with require() as PM2 does."""

    def __init__(self, root: Path):
        self.root = root
        self._n = itertools.count()

    def write(self, text: str, name: str = "ecosystem.config.js") -> Path:
        folder = self.root / f"n{next(self._n)}"
        folder.mkdir(parents=True)
        path = folder / name
        path.write_text(text)
        return path

    def check(self, text: str) -> CheckResult:
        if NODE is None:
            pytest.skip("node is not installed")
        path = self.write(text)
        proc = subprocess.run(
            [NODE, "--check", str(path)], capture_output=True, text=True, timeout=30
        )
        return CheckResult(proc.returncode == 0, proc.stdout + proc.stderr)

    def load(self, text: str) -> dict:
        if NODE is None:
            pytest.skip("node is not installed")
        path = self.write(text)
        proc = subprocess.run(
            [NODE, "-e", "console.log(JSON.stringify(require(process.argv[1])))", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def node_tester(tmp_path_factory: pytest.TempPathFactory) -> NodeTester:
    return NodeTester(tmp_path_factory.mktemp("node"))


def hook_program(spec: dict, cwd: Path) -> tuple[list[str], dict]:
    """Run remote/hook.py as the host runs it (spec on the command line, the program on stdin):
    the hook's output lines and its verdict."""
    from signalcraft_deploy import remote
    from signalcraft_deploy.host.hooks import VERDICT

    done = subprocess.run(
        [sys.executable, "-I", "-", json.dumps(spec)],
        input=remote.program("hook"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines and lines[-1].startswith(VERDICT), (
        done.stdout + done.stderr
    )
    return lines[:-1], json.loads(lines[-1][len(VERDICT) :])


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    if NGINX is None:
        pytest.skip("nginx is not installed")
    return NGINX


# Property tests may run beside the end-to-end tests at the lowest CPU priority (tests/run): no
# per-example deadline and no "too slow" health check, which would measure the machine's load rather
# than the code.
hypothesis.settings.register_profile(
    "beside", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("beside")


def mock_host(*args: object, **kwargs: object) -> MockContext:
    """invoke's MockContext as a host: the tool's commands go through its canned `run`
    (host.io.InvokeRunner)."""
    return use_transport(MockContext(*args, **kwargs), InvokeRunner())
