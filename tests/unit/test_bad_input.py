"""Bad input through the front door, with no host: `fab -H ... deploy` checks its settings, files
and source before it connects, so each bad value ends in exit status 2 and one line that names the
key, where the value came from and what is expected. The host given is an address that reaches
nothing (TEST-NET-1): a run that got as far as connecting would end otherwise. That a real host is
left as it was is tests/e2e/test_security.py's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from signalcraft_deploy.core.settings import KEY_NAMES

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "signalcraft"
NOWHERE = "ubuntu@192.0.2.1"
FAB = str(Path(sys.executable).with_name("fab"))  # this venv's, as `fab` is when it is activated
# A first deploy's settings, as a user passes them.
SETTINGS = {
    "APP_NAME": "bad",
    "DEPLOY_ROOT": "/home/ubuntu/bad",
    "GUNICORN_BIND": "127.0.0.1:8911",
    "NODE_PORT": "3911",
    "NGINX_LISTEN": "8091",
    "NGINX_SITE": "/etc/nginx/sites-available/bad",
    "WHEELS": "local",
}


@dataclass
class Bad:
    id: str
    key: str  # the key the message must name (or the file, for a missing settings file)
    origin: str  # where the value came from, as the message must say it ('{env}' = the .env file)
    expected: str  # a phrase of what is expected
    sets: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    env_lines: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    repo: str = "app"  # "app" or "no-requirements"


BAD = [
    Bad(
        "port out of range",
        "NODE_PORT",
        "flag --set",
        "a whole number from 1 to 65535",
        sets={"NODE_PORT": "70000"},
    ),
    Bad(
        "same port twice",
        "NODE_PORT",
        "{env}:2",
        "a port of its own",
        env_lines=["# ports", "NODE_PORT=8911"],
    ),
    Bad(
        "route with ;",
        "PY_ROUTES",
        "environment",
        "comma-separated path prefixes",
        environ={"PY_ROUTES": "api/ai;reboot"},
    ),
    Bad(
        "deploy root /",
        "DEPLOY_ROOT",
        "flag --set",
        "a directory of its own",
        sets={"DEPLOY_ROOT": "/"},
    ),
    Bad(
        "WSGI_APP without attribute",
        "WSGI_APP",
        "{env}:1",
        "module:attribute or module:factory()",
        env_lines=["WSGI_APP=app"],
    ),
    Bad(
        "unknown key in .env",
        "NODE_PROT",
        "{env}:1",
        "Did you mean NODE_PORT?",
        env_lines=["NODE_PROT=3000"],
    ),
    Bad(
        "named env file missing",
        "/nonexistent/deploy.env",
        "--env-file",
        "does not exist",
        args=["--env-file", "/nonexistent/deploy.env"],
    ),
    Bad(
        "source without requirements.txt",
        "SOURCE_DIR",
        "flag --set",
        "requirements.txt",
        repo="no-requirements",
    ),
    Bad(
        "NODE_SCRIPT not in the commit",
        "NODE_SCRIPT",
        "environment",
        "Node.js entry point",
        environ={"NODE_SCRIPT": "bin/www.js"},
    ),
    Bad(
        "WSGI module missing",
        "WSGI_APP",
        "flag --set",
        "wsgi.py or wsgi/__init__.py",
        sets={"WSGI_APP": "wsgi:app"},
    ),
    Bad(
        "APP_ENV_FILE missing",
        "APP_ENV_FILE",
        "{env}:1",
        "cannot read",
        env_lines=["APP_ENV_FILE=/nonexistent/app.env"],
    ),
    Bad(
        "public bind from environment",
        "GUNICORN_BIND",
        "environment",
        "a loopback address",
        environ={"GUNICORN_BIND": "0.0.0.0:8911"},
    ),
    Bad(
        "site outside /etc/nginx",
        "NGINX_SITE",
        "flag --set",
        "a file of a plain name under /etc/nginx/",
        sets={"NGINX_SITE": "/home/ubuntu/evil.conf"},
    ),
]


def git_repo(path: Path, *, requirements: bool = True) -> Path:
    """A git repository holding a copy of the example app (without requirements.txt if asked)."""
    shutil.copytree(
        EXAMPLE,
        path,
        ignore=shutil.ignore_patterns("REVISION", ".venv", "node_modules", "__pycache__"),
    )
    if not requirements:
        (path / "requirements.txt").unlink()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "example app"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, env=env)
    return path


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Every bad input at once: fab's exit status, what it printed, and the .env file the case
    wrote."""
    base = tmp_path_factory.mktemp("bad")
    repos = {
        "app": git_repo(base / "app"),
        "no-requirements": git_repo(base / "no-req", requirements=False),
    }
    environ = {
        k: v for k, v in os.environ.items() if k not in {"ENV_FILE", "KNOWN_HOSTS", *KEY_NAMES}
    }
    procs = {}
    for case in BAD:
        settings = {
            k: v
            for k, v in SETTINGS.items()
            if k not in case.environ
            and not any(line.startswith(k + "=") for line in case.env_lines)
        }
        settings.update(case.sets)
        cmd = [FAB, "--connect-timeout", "5", "-H", NOWHERE, "deploy"]
        if case.repo == "app":
            cmd += ["--source-dir", str(repos["app"])]
        else:
            settings["SOURCE_DIR"] = str(repos[case.repo])
        for key, value in settings.items():
            cmd += ["--set", f"{key}={value}"]
        env_path = base / f"{re.sub(r'[^a-z0-9]+', '-', case.id)}.env"
        if case.env_lines:
            env_path.write_text("\n".join(case.env_lines) + "\n")
            cmd += ["--env-file", str(env_path)]
        cmd += case.args
        procs[case.id] = (
            subprocess.Popen(
                cmd,
                cwd=str(REPO),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**environ, **case.environ},
            ),
            env_path,
        )
    results = {}
    for name, (proc, env_path) in procs.items():
        out, _ = proc.communicate(timeout=120)
        results[name] = (proc.returncode, out, env_path)
    return results


@pytest.mark.parametrize("case", BAD, ids=[b.id for b in BAD])
def test_bad_input_exits_2_with_one_line_naming_the_key_where_it_came_from_and_what_is_expected(
    bad_runs, case: Bad
) -> None:
    code, out, env_path = bad_runs[case.id]
    assert code == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert case.key in line, line
    assert case.origin.replace("{env}", str(env_path)) in line, line
    assert case.expected in line, line
