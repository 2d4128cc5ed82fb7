"""`install`: the current release's venv and node_modules, built only when missing."""

from __future__ import annotations

from typing import Any

from invoke import Collection, Context, task

from signalcraft_deploy.core.render import node_modules_name, venv_dir
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.install import ensure_node_modules, ensure_venv
from signalcraft_deploy.host.io import fail, q, run
from signalcraft_deploy.host.lock import task_lock


@task(iterable=["set_"], help={**HOST_HELP})
def install(
    c: Context,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Make sure the current release's venv (with Gunicorn >= 20.1) and node_modules are installed."""
    s = settings_for(env_file, set_, environment)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    with task_lock(c, s, "install"):
        install_live(c, s)


def install_live(c: Any, s: Settings) -> None:
    """The current release's venv and node_modules, under the deploy lock."""
    facts, release_dir = host_facts.live_release(c, s)
    requirements = run(c, f"cat {q(release_dir)}/requirements.txt", warn=True)
    if not requirements.ok:
        raise fail(
            f"{release_dir}/requirements.txt is missing: the app must list its Python requirements."
        )
    venv = venv_dir(s, requirements.stdout)
    name = venv.rsplit("/", 1)[-1]
    if name in facts.venvs_ready:
        print(f"Python environment {venv} is up to date: nothing to install.")
    else:
        version = ensure_venv(c, s, venv, f"{release_dir}/requirements.txt")
        print(f"Python environment {venv} built (gunicorn {version}).")
    lock = run(c, f"cat {q(release_dir)}/package-lock.json", warn=True)
    package = run(c, f"cat {q(release_dir)}/package.json", warn=True)
    modules = node_modules_name(
        lock.stdout if lock.ok else None, package.stdout if package.ok else None
    )
    shared = f"{s.node_modules_dir}/{modules}" if modules else None
    if shared and shared.rsplit("/", 1)[-1] in facts.node_modules_ready:
        print(f"Node.js dependencies {shared} are up to date: nothing to install.")
    else:
        ensure_node_modules(c, s, release_dir, shared)
        print("Node.js dependencies installed.")


ns = Collection(install)
