"""WHEELS=local: the app's Python wheels (and npm packages) made on this machine, shipped with the
release.

Hosts in a private subnet often have no route to PyPI or the npm registry. With `WHEELS=local`
the deploying machine makes a wheelhouse for the host's Python (version, libc and machine, read
with the host's facts) once per requirements set, sends it to <DEPLOY_ROOT>/wheels/<key>/ unless
the host has it, and the host builds its venv with `pip install --no-index --find-links` (still one
content-addressed venv per requirements set). When this machine's Python has the host's version
and platform, `pip wheel` is used (it builds sdists too); otherwise `pip download --only-binary`
for the host's platform tags.

For Node.js the npm cache is shipped, not a node_modules tree: the host still runs `npm ci`
(`--offline`), which checks package-lock.json's integrity hashes and runs install scripts for the
host's own platform; the cache holds only the registry's tarballs, which do not depend on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from signalcraft_deploy.core.render import digest
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import exists, fail, q, run, upload

# What pip and npm print when the host has no route to an index (no egress, no DNS).
NO_INDEX = re.compile(
    r"Network is unreachable|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|No route to host|ENETUNREACH|EAI_AGAIN|ENOTFOUND|"
    r"ECONNREFUSED|ETIMEDOUT|Could not fetch URL"
)
NO_INDEX_HINT = (
    "The host cannot reach the package index. Set WHEELS=local (in .env or --set WHEELS=local): "
    "this machine then makes the wheels (and npm packages) and ships them with the release."
)
_building = (
    threading.Lock()
)  # one build per wheelhouse, also when a fleet installs on every host at once


@contextmanager
def one_builder(out: Path) -> Iterator[None]:
    """Held while `out` is made: by one thread here (a fleet's hosts), and by one process (two
    deploys at once)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _building, open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "signalcraft-deploy"


def wheel_key(requirements: str, python: tuple[str, str, str]) -> str:
    return digest(requirements, " ".join(python))[:16]


def platform_tags(python: tuple[str, str, str]) -> list[str]:
    """The platform tags a glibc Linux host with this libc and machine accepts (newest first)."""
    _, libc, machine = python
    tags = []
    if re.fullmatch(r"2\.\d+", libc):
        tags += [
            f"manylinux_2_{minor}_{machine}" for minor in range(int(libc.split(".")[1]), 4, -1)
        ]
        tags += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags + [f"linux_{machine}"]


def same_python(python: tuple[str, str, str]) -> bool:
    version, libc, machine = python
    here_libc = platform.libc_ver()[1]
    return (
        sys.platform == "linux"
        and f"{sys.version_info[0]}.{sys.version_info[1]}" == version
        and platform.machine() == machine
        and _version(here_libc) >= _version(libc) > (0,)
    )


def _version(text: str) -> tuple[int, ...]:
    return (
        tuple(int(x) for x in text.split(".")) if re.fullmatch(r"\d+(\.\d+)*", text or "") else (0,)
    )


def pip_command(requirements_file: str, out: str, python: tuple[str, str, str]) -> list[str]:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if same_python(python):
        return pip + ["wheel", "-r", requirements_file, "-w", out]
    abi = "cp" + python[0].replace(".", "")
    tags = [arg for tag in platform_tags(python) for arg in ("--platform", tag)]
    return pip + [
        "download",
        "--only-binary=:all:",
        "--python-version",
        python[0],
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        *tags,
        "-r",
        requirements_file,
        "-d",
        out,
    ]


def wheelhouse(requirements: str, python: tuple[str, str, str]) -> Path:
    """This machine's folder holding every wheel `requirements` needs on the host's Python; made
    once."""
    out = cache_dir() / "wheels" / wheel_key(requirements, python)
    with one_builder(out):
        if (out / ".ok").exists():
            return out
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
            req.write(requirements)
            req.flush()
            done = subprocess.run(
                pip_command(req.name, str(out), python), capture_output=True, text=True
            )
        if done.returncode != 0:
            raise fail(
                f"WHEELS=local: this machine could not make the wheels for Python {python[0]}"
                f" ({python[2]}, glibc"
                f" {python[1]}):\n{(done.stderr or done.stdout).strip()[-1500:]}\nCheck"
                " requirements.txt and this machine's access to the package index."
            )
        (out / ".ok").touch()
    return out


def ship_dir(c: Any, s: Settings, local: Path, remote: str) -> bool:
    """Send a local folder to `remote` on the host unless it is there (marked .ok); True if sent."""
    if exists(c, f"{remote}/.ok"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = os.path.join(tmp, "ship.tar")
        with tarfile.open(tar_path, "w") as tar:
            for path in sorted(local.rglob("*")):
                if path.name != ".ok":
                    tar.add(path, arcname=str(path.relative_to(local)), recursive=False)
        run(c, f"mkdir -p {q(os.path.dirname(remote))}")
        upload(c, tar_path, f"{remote}.tar")
    run(
        c,
        f"rm -rf {q(remote)} && mkdir -p {q(remote)} && tar -xf {q(remote + '.tar')} -C {q(remote)}"
        f" && rm -f {q(remote + '.tar')} && touch {q(remote)}/.ok",
    )
    return True


def ship_wheels(c: Any, s: Settings, requirements: str, python: tuple[str, str, str] | None) -> str:
    """Make (or reuse) the wheelhouse and put it on the host; return its folder there."""
    if python is None:
        raise fail(
            f"WHEELS=local: could not read the version of {s.python} on the host; check PYTHON."
        )
    local = wheelhouse(requirements, python)
    remote = f"{s.deploy_root}/wheels/{local.name}"
    ship_dir(c, s, local, remote)
    return remote


def lock_packages(package_lock: str | None) -> dict[str, Any]:
    """The packages package-lock.json pins (beside the root), or {} when there are none."""
    try:
        packages = json.loads(package_lock or "{}").get("packages", {})
    except ValueError:
        return {}
    return {path: meta for path, meta in packages.items() if path and not meta.get("link")}


def npm_cache(package_lock: str) -> Path:
    """An npm cache holding every tarball package-lock.json pins, made here with `npm ci` once per
    lock."""
    out = cache_dir() / "npm" / digest(package_lock)[:16]
    with one_builder(out):
        if (out / ".ok").exists():
            return out
        root = json.loads(package_lock)["packages"][""]
        manifest = {
            k: v
            for k, v in root.items()
            if k in ("name", "version", "dependencies", "optionalDependencies")
        }
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "package.json").write_text(json.dumps(manifest))
            Path(tmp, "package-lock.json").write_text(package_lock)
            done = subprocess.run(
                [
                    "npm",
                    "ci",
                    "--omit=dev",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--cache",
                    str(out),
                ],
                cwd=tmp,
                capture_output=True,
                text=True,
            )
        if done.returncode != 0:
            raise fail(
                "WHEELS=local: this machine could not fetch the npm packages of"
                f" package-lock.json:\n{(done.stderr or done.stdout).strip()[-1500:]}"
            )
        (out / ".ok").touch()
    return out


def ship_npm_cache(c: Any, s: Settings, package_lock: str | None) -> str | None:
    """Put the npm cache on the host; None when the lock pins no package (npm ci needs nothing
    then)."""
    if not lock_packages(package_lock):
        return None
    assert package_lock is not None
    local = npm_cache(package_lock)
    remote = f"{s.deploy_root}/npm-cache/{local.name}"
    ship_dir(c, s, local, remote)
    return remote
