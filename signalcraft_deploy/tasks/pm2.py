"""`pm2-reload`: bring both PM2 apps and the Procfile's processes to the current release without a
deploy."""

from __future__ import annotations

from typing import Any

from invoke import Collection, Context, task

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.plan import as_recorded_host, release_settings
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.health import gate
from signalcraft_deploy.host.io import fail
from signalcraft_deploy.host.lock import task_lock
from signalcraft_deploy.host.pm2 import hup_python, reload_node, save, start
from signalcraft_deploy.host.upkeep import settle
from signalcraft_deploy.steps.processes import converge, wanted
from signalcraft_deploy.steps.trial import run_trial


@task(iterable=["set_"], help={**HOST_HELP})
def pm2_reload(
    c: Context,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Bring the apps and Procfile processes to the current release: start what is stopped, HUP, roll, save."""
    s = settings_for(env_file, set_, environment)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    with task_lock(c, s, "pm2-reload"):
        reload_live(c, s)


def reload_live(c: Any, s: Settings) -> None:
    """Trial run, then each app brought to the current release, under the deploy lock."""
    facts, release_dir = host_facts.live_release(c, s)
    release = facts.current_release
    assert release is not None  # live_release stops on a host without one
    s = release_settings(s, facts.manifest)
    venv = (facts.manifest or {}).get("venv")
    if not venv:
        raise fail(f"{s.current_dir} has no manifest; run `deploy` to make a release.")
    trial_stop = run_trial(c, s, release, release_dir, venv, live=release)
    if trial_stop:
        trial_stop.wait()
    checked = {App.PYTHON: True, App.NODEJS: True}
    if facts.online(s.python_app):
        hup_python(c, s)
        print(f"{s.python_app}: graceful reload (SIGHUP)")
    else:
        start(c, s, s.python_app)
        print(f"{s.python_app}: started")
    if facts.online(s.node_app):
        reload_node(c, s)
        print(f"{s.node_app}: rolling reload")
    else:
        start(c, s, s.node_app)
        print(f"{s.node_app}: started")
    recorded = (facts.manifest or {}).get("processes") or ()
    if (
        recorded
    ):  # the Procfile's processes: those not running as recorded start (no singleton twice)
        here = as_recorded_host(s, facts.manifest)
        moved = converge(c, here, wanted(here, recorded), {r["name"] for r in recorded})
        print(f"processes: {moved}")
    problems = gate(c, s, release, release_dir, checked)
    if problems:
        raise fail("Apps are not healthy after the reload:\n  " + "\n  ".join(problems))
    save(c, s)
    settle(c, s)  # PM2 counted each reload as a restart: `status` counts crashes from here
    print("pm2 save: done")


pm2_reload.__name__ = "pm2-reload"


ns = Collection(pm2_reload)
