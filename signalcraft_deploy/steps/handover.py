"""Handover: replace an app's processes without refusing a connection, through Nginx."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.render import (
    node_entry,
    python_entry,
    render_nginx_site,
    site_description,
)
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.health import gate, gate_on
from signalcraft_deploy.host.io import Background, fail, q, run, write_file_command
from signalcraft_deploy.host.nginx import install_site, reload_nginx
from signalcraft_deploy.host.pm2 import (
    app_output,
    delete,
    delete_command,
    error_output,
    output_excerpt,
    start,
    start_config_command,
)
from signalcraft_deploy.host.programs import run_program
from signalcraft_deploy.host.upkeep import forget_logs_command
from signalcraft_deploy.steps.faults import setting_fault
from signalcraft_deploy.steps.report import Reporter


def handover_entry(
    s: Settings, app: App, venv: str, release_dir: str
) -> tuple[dict[str, Any], str]:
    """The PM2 entry of the temporary app that serves while `app`'s processes are replaced, and its
    address.

    It runs straight from the release directory (not `current`), so `current` can be switched only
    once the old processes get no more traffic.
    """
    if app == App.PYTHON:
        entry = python_entry(s, venv)
        address = str(s.gunicorn_handover_bind)
        entry.update(
            name=s.handover_app,
            cwd=release_dir,
            exec_mode="fork",
            args=[
                "-c",
                f"{release_dir}/gunicorn.conf.py",
                "--chdir",
                release_dir,
                "--bind",
                address,
            ],
            env={**entry["env"], "SIGNALCRAFT_CHDIR": release_dir},
        )
    else:
        entry = node_entry(s, release_dir)  # its script and env.cjs: the release's own
        address = f"127.0.0.1:{s.node_handover_port}"
        entry.update(
            name=s.node_handover_app,
            exec_mode="cluster",
            env={**entry["env"], "PORT": str(s.node_handover_port)},
        )
    # One log file per temporary app (a cluster app's instances would each get one named by a new
    # pm_id), removed with the app.
    entry.update(autorestart=False, merge_logs=True)
    return entry, address


def wait_drained(c: Any, port: int, seconds: int = 10) -> int:
    """Wait (bounded) until no connection to a local port is open: nothing is in flight there any
    more. Returns how many were still open then (WebSockets and streams do not end by themselves)."""
    established = f"ss -tnH state established '( sport = :{port} )'"
    # Bounded by the clock (timeout), not by a count of polls: under load each poll (ss, grep)
    # takes far longer than its sleep, and 500 polls "of 20 ms" took 30 s.
    poll = f"while {established} | grep -q .; do sleep 0.05; done"
    wait = f"timeout {seconds} sh -c {q(poll)}; " if seconds > 0 else ""
    result = run(c, f"{wait}{established} | wc -l", warn=True)
    count = result.stdout.strip().rsplit("\n", 1)[-1].strip()
    return int(count) if count.isdigit() else 0


def drain_seconds(s: Settings, app: App) -> int:
    """How long old processes keep their connections once Nginx sends new ones elsewhere: a Gunicorn
    request may take up to GUNICORN_GRACEFUL_TIMEOUT to finish before it is cut; Node.js's may be
    WebSockets that never end (NODE_WS_DRAIN_SECONDS)."""
    return s.gunicorn_graceful_timeout if app == App.PYTHON else s.node_ws_drain_seconds


def say_left(reporter: Reporter, s: Settings, name: str, left: int) -> None:
    """What the old Node.js processes still held when they were told to stop."""
    reporter.say(
        f"     {name}: {left} open connection(s) left after {s.node_ws_drain_seconds} s"
        " (NODE_WS_DRAIN_SECONDS) get SIGINT with their processes: the app closes them (a"
        f" WebSocket close frame), or PM2 kills it after NODE_KILL_TIMEOUT {s.node_kill_timeout} s"
    )


def handover(
    c: Any,
    s: Settings,
    app: App,
    release: str,
    release_dir: str,
    venv: str,
    reporter: Reporter,
    stop_old: Callable[[], None] | None = None,
    switch: Callable[[], None] | None = None,
    present: set[str] | None = None,
) -> Background | None:
    """Replace an app's processes without refusing a connection: a second copy takes the traffic
    meanwhile.

    1. start the new release as a temporary PM2 app on the handover address, check it;
    2. point Nginx's upstream at it (nginx -t, graceful reload that waits for the old workers);
    3. switch `current` (if asked), wait until the old processes have no connection left, stop them;
    4. start the app under its own name and address from `current`, check it;
    5. point Nginx back, graceful reload, and start stopping the temporary app: that stop is
       returned, to be waited for (`.wait()`) before PM2's list is saved.
    If step 4 fails, Nginx stays on the temporary app (the new release, healthy) and the error is
    raised: the caller brings the previous release back and then calls `end_handover`.
    """
    entry, address = handover_entry(s, app, venv, release_dir)
    name = app.pm2_name(s)
    health = s.app_path(
        app, s.health_py if app == App.PYTHON else s.health_node
    )  # asked directly, not through Nginx
    run(
        c,
        start_temporary_command(c, s, app, entry["name"], present),
        stdin=json.dumps({"apps": [entry]}, indent=2),
    )
    # autorestart is off for this app, so a crash shows as stopped/errored at once: fail fast.
    problems = gate_on(
        c,
        s,
        release,
        release_dir,
        [{"label": "handover", "url": f"http://{address}{health}", "expect_release": True}],
        [{"name": entry["name"], "workers": app == App.PYTHON}],
        fail_fast=True,
    )
    if problems:
        output = app_output(c, s, entry["name"])
        run(c, stop_temporary_command(c, s, entry["name"]), warn=True)
        raise temporary_failed(s, name, address, problems, output)
    reporter.say(f"     {name}: new processes answer on {address}; Nginx moves to them")
    site_for = {"python_address": address} if app == App.PYTHON else {"node_address": address}
    move_nginx(c, s, site_for, entry["name"])
    if switch:
        switch()
    # PM2 stops apps with SIGINT (it has no per-app kill signal), Gunicorn's quick shutdown:
    # harmless only once nothing is in flight, which Nginx's drained reload and this wait make sure
    # of.
    left = wait_drained(
        c, s.gunicorn_bind.port if app == App.PYTHON else s.node_port, drain_seconds(s, app)
    )
    if app == App.NODEJS and left:
        say_left(reporter, s, name, left)
    (stop_old or (lambda: delete(c, s, name)))()
    start(c, s, name)
    problems = gate(c, s, release, release_dir, {app: True})
    if problems:
        raise own_address_failed(s, name, problems, error_output(c, s, name))
    return end_handover(c, s, app, background=True, reporter=reporter)


def start_temporary_command(
    c: Any, s: Settings, app: App, temporary: str, present: set[str] | None
) -> str:
    """Shell that writes the temporary app's PM2 config (read from stdin) and starts it, as the
    apps' own account; `present`: PM2's app names as last read (None: not known)."""
    config = (  # in the apps' account's home, its working folder
        f".{s.app_name}-handover-{app}.config.json"
    )
    # A temporary app left by an interrupted deploy goes first; `pm2 start` on a running app would
    # restart it.
    leftover = present is None or temporary in present
    return as_app(
        c,
        s,
        write_file_command(config, "0600")
        + (f" && {{ {delete_command(s, temporary)} >/dev/null 2>&1; true; }}" if leftover else "")
        + f" && {forget_logs_command(temporary)} && {start_config_command(s, q(config))}",
    )


def temporary_failed(
    s: Settings, name: str, address: str, problems: list[str], output: str
) -> Exit:
    """The message when the new processes fail on the handover address: what failed, their output,
    and the setting at fault if one is."""
    shown = (
        f"\n  output of {name} (its new processes):\n    " + "\n    ".join(output_excerpt(output))
        if output.strip()
        else ""
    )
    return fail(
        f"The new {name} did not come up on the handover address {address}: "
        + masked(s, "; ".join(problems))
        + shown
        + ("\n" + fault if (fault := setting_fault(s, output)) else "")
    )


def own_address_failed(s: Settings, name: str, problems: list[str], output: str) -> Exit:
    """The message when the app, started under its own name from `current`, fails its check."""
    return fail(
        f"{name} did not come up on its own address after the handover: "
        + masked(s, "; ".join(problems))
        + (f"\n  output of {name}:\n    " + output.replace("\n", "\n    ") if output else "")
    )


class NotMoved(Exit):
    """Nginx did not take the site pointing at the new processes: the old ones still serve,
    untouched."""


def move_nginx(c: Any, s: Settings, addresses: dict[str, str], temporary: str) -> None:
    """Point Nginx at the temporary app (`addresses`: site_description's overrides), proven by a
    verified reload. If the reload does not take, nothing was stopped: remove the temporary app, put
    our site back, raise `NotMoved`.
    """
    install_site(c, s, site_description(s, **addresses), backup=False)
    try:
        reload_nginx(c, s, render_nginx_site(s, **addresses))
    except Exit as err:
        delete(c, s, temporary)
        install_site(c, s, site_description(s), backup=False)  # Nginx still runs the previous site
        raise NotMoved(
            f"{err.message}\nNothing was stopped: the previous processes still serve."
        ) from None


def end_handover(
    c: Any,
    s: Settings,
    app: App,
    background: bool = False,
    reporter: Reporter | None = None,
) -> Background | None:
    """Point Nginx back at the apps' own addresses and stop the temporary app once it is drained
    (bounded as the old processes were: WebSockets on it are closed with it).

    With `background`, the stop (0.5 s: PM2 waits for Gunicorn to exit) is left running and
    returned; the caller overlaps it with the health check and waits before `pm2 save`.
    """
    install_site(c, s, site_description(s), backup=False)
    reload_nginx(c, s, render_nginx_site(s))
    left = wait_drained(
        c,
        s.gunicorn_handover_bind.port if app == App.PYTHON else s.node_handover_port,
        drain_seconds(s, app),
    )
    if app == App.NODEJS and reporter is not None and left:
        say_left(reporter, s, s.node_handover_app, left)
    stop = stop_temporary_command(
        c, s, s.handover_app if app == App.PYTHON else s.node_handover_app
    )
    if background:
        return Background(c, stop)
    run(c, stop, warn=True)
    return None


def stop_temporary_command(c: Any, s: Settings, name: str) -> str:
    """Shell that deletes a temporary app (trial, handover) and its log files, as the apps' own
    account."""
    return as_app(
        c, s, f"{delete_command(s, name)} >/dev/null 2>&1; {forget_logs_command(name)}; true"
    )


def stop_unmanaged(c: Any, s: Settings, pid: int, apps_own: bool = False) -> Callable[[], None]:
    """Stop a server PM2 does not know (a bare `python app.py &` found at a takeover) once Nginx no longer
    sends to it: as its owner, the deploy user or the apps' own account (remote/stop_pid.sh leaves
    any other user's alone).
    """
    owner = s.app_user if apps_own else ""

    def stop() -> (
        None
    ):  # kill(2) refuses others' processes; OWNER also names whose it must still be
        run_program(
            c,
            s,
            "stop_pid.sh",
            str(pid),
            str(s.gunicorn_graceful_timeout * 10),
            *([owner] if owner else []),
            warn=True,
            app=apps_own,
        )

    return stop
