"""Install: the app's Python environment and Node.js dependencies, built once per requirements set.

A venv lives at <DEPLOY_ROOT>/venvs/<hash of PYTHON + requirements.txt> and is marked complete
with `.ok`; a new requirements set builds a new venv beside the live one, so a failed install
never touches what is serving. node_modules are shared the same way, keyed by package-lock.json
(`npm ci`) or, without one, by package.json (`npm install`).
"""

from __future__ import annotations

from typing import Any

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import Background, fail, q, run
from signalcraft_deploy.host.wheels import NO_INDEX, NO_INDEX_HINT

MIN_GUNICORN = (20, 1)
GUNICORN_CHECK = (
    "import sys\ntry:\n    import gunicorn\nexcept ImportError:\n    sys.exit(3)\n"
    "v = tuple(int(x) for x in gunicorn.__version__.split('.')[:2])\nprint(gunicorn.__version__)\n"
    f"sys.exit(0 if v >= {MIN_GUNICORN!r} else 4)\n"
)


def venv_script(
    s: Settings, venv: str, requirements_path: str, find_links: str | None = None
) -> str:
    v, req = q(venv), q(requirements_path)
    index = (
        f" --no-index --find-links {q(find_links)}" if find_links else ""
    )  # WHEELS=local: the shipped wheelhouse
    return "\n".join(
        [
            "set -e",
            f"if [ ! -e {v}/.ok ]; then",
            f"  rm -rf {v}",
            f"  {q(s.python)} -m venv {v}",
            f"  {v}/bin/python -m pip install --quiet --disable-pip-version-check{index} -r {req}",
            "  built=1",
            "fi",
            f"set +e; {v}/bin/python -c {q(GUNICORN_CHECK)}; code=$?; set -e",
            f"[ $code = 0 ] && touch {v}/.ok",
            "exit $code",
        ]
    )


def ensure_venv(
    c: Any, s: Settings, venv: str, requirements_path: str, find_links: str | None = None
) -> str:
    """Build the venv unless a complete one exists; return the Gunicorn version in it."""
    run(c, f"mkdir -p {q(s.venvs_dir)}")
    result = run(c, venv_script(s, venv, requirements_path, find_links), warn=True)
    if result.exited == 3:
        raise fail(
            f"Gunicorn is not in {requirements_path}: add it (run `invoke freeze` in the app, which"
            " pins gunicorn==x.y.z) and deploy again."
        )
    if result.exited == 4:
        raise fail(
            f"Gunicorn {result.stdout.strip()} is too old: wsgi_app = 'module:factory()' needs 20.1"
            " or later. Raise the pin in requirements.txt."
        )
    if not result.ok:
        err = (result.stderr or result.stdout).strip()[-1500:]
        if not find_links and NO_INDEX.search(err):
            raise fail(
                f"Installing {requirements_path} into {venv} failed; the live release is untouched."
                f" {NO_INDEX_HINT}\npip said: {err.splitlines()[-1] if err else ''}"
            )
        raise fail(
            f"Installing {requirements_path} into {venv} failed; the live release is"
            f" untouched.\n{err}\nCheck the requirements, and that {s.python} can create a venv"
            " (apt install python3-venv)."
        )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


NPM_FLAGS = "--omit=dev --no-audit --no-fund --loglevel=error"
HAS_DEPENDENCIES = (
    "const p=require('./package.json');process.exit(Object.keys(p.dependencies||{}).length?0:1)"
)


def node_modules_script(
    s: Settings, release_dir: str, shared: str | None, cache: str | None = None
) -> str:
    """Shell that links the release's node_modules from node_modules/<key>/, built there once: `npm
    ci` with a package-lock.json, else `npm install` (once per distinct package.json; nothing to run
    without dependencies). With `cache` (WHEELS=local), npm installs offline from that shipped
    cache."""
    r = q(release_dir)
    if shared is None:
        return "true"  # no package.json: nothing to install
    n = q(shared)
    flags = NPM_FLAGS + (
        f" --offline --cache {q(cache)}" if cache else ""
    )  # WHEELS=local: the shipped npm cache
    install = (
        f"  if [ -f {r}/package-lock.json ]; then cp {r}/package-lock.json {n}/ && (cd {n} && npm"
        f" ci {flags})\n  elif (cd {n} && node -e {q(HAS_DEPENDENCIES)}); then (cd {n} && npm"
        f" install {flags})\n  fi"
    )
    return "\n".join(
        [
            "set -e",
            f"if [ ! -e {n}/.ok ]; then",
            f"  rm -rf {n} && mkdir -p {n}",
            f"  cp {r}/package.json {n}/",
            install,
            f"  mkdir -p {n}/node_modules && touch {n}/.ok",
            "fi",
            # A release that ships its own node_modules keeps them.
            (
                f"if [ ! -d {r}/node_modules ] || [ -L {r}/node_modules ]; then ln -sfn"
                f" {n}/node_modules {r}/node_modules; fi"
            ),
        ]
    )


def ensure_node_modules(
    c: Any, s: Settings, release_dir: str, shared: str | None, cache: str | None = None
) -> None:
    check_node_modules(run(c, node_modules_script(s, release_dir, shared, cache), warn=True), cache)


def start_node_modules(
    c: Any, s: Settings, release_dir: str, shared: str | None, cache: str | None = None
) -> Background:
    """`ensure_node_modules` started now, to overlap the venv's build (both wait mostly on the
    network); `check_node_modules(started.wait(), cache)` finishes it."""
    return Background(c, f"sh -c {q(node_modules_script(s, release_dir, shared, cache))}")


def check_node_modules(result: Any, cache: str | None) -> None:
    if not result.ok:
        err = (result.stderr or result.stdout).strip()[-1500:]
        if not cache and NO_INDEX.search(err):
            raise fail(
                "Installing Node.js dependencies failed; the live release is untouched."
                f" {NO_INDEX_HINT}\nnpm said: {err.splitlines()[-1] if err else ''}"
            )
        raise fail(f"Installing Node.js dependencies failed; the live release is untouched.\n{err}")
