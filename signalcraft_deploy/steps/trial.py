"""The trial run: the new release's apps under PM2 on spare ports, before anything is switched."""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.health import probe
from signalcraft_deploy.host.io import Background, fail, q, run, write_file_command
from signalcraft_deploy.host.pm2 import (
    GUNICORN_INFO,
    app_output,
    delete_command,
    output_excerpt,
    start_config_command,
)
from signalcraft_deploy.host.upkeep import forget_logs_command
from signalcraft_deploy.steps.faults import health_route_fault, setting_fault
from signalcraft_deploy.steps.handover import handover_entry


def trial_names(s: Settings) -> tuple[str, str]:
    return f"{s.app_name}-python-trial", f"{s.app_name}-nodejs-trial"


def run_trial(
    c: Any,
    s: Settings,
    release: str,
    release_dir: str,
    venv: str,
    tried: tuple[App, ...] = (App.PYTHON, App.NODEJS),
    present: set[str] | None = None,
    live: str | None = None,
) -> Background | None:
    """Trial run before any switch: the new release's apps under PM2, with their real entries, on
    spare ports.

    Started by PM2 exactly as they will be (same interpreter, script, environment), a commit that
    fails to import, crashes on start, crashes only under PM2, or answers its health route with an
    error is caught here, while the live release keeps serving. `tried` names the apps to try (an
    app about to be handed over is tried on the handover address instead); `present` is PM2's app
    names as last read, to skip deleting trial apps that are not there; `live` is the release
    serving now (None on a first deploy: the message then says nothing serves). A passed trial's
    apps are being stopped when this returns: the returned command is to be waited for.
    """
    py_port, node_port = probe(c, s, {"mode": "ports", "count": 2})["ports"]
    trials = []
    if App.PYTHON in tried:
        trials.append(python_trial(s, venv, release_dir, py_port))
    if App.NODEJS in tried:
        trials.append(nodejs_trial(s, venv, release_dir, node_port))
    if not trials:
        return None
    apps = [app for app, _, _ in trials]
    urls = [url for _, url, _ in trials]
    watch = [watched for _, _, watched in trials]
    names = [a["name"] for a in apps]
    started = run(
        c,
        as_app(c, s, start_trial_command(s, present)),
        stdin=json.dumps({"apps": apps}, indent=2),
        warn=True,
    )
    gate = gate_question(s, release, release_dir, urls, watch)
    problems: list[str] = probe(c, s, gate).get("problems", [])
    stop = as_app(
        c,
        s,
        f"{delete_command(s, *trial_names(s))} >/dev/null 2>&1;"
        f" {forget_logs_command(*trial_names(s))}; true",
    )
    if not problems:
        return Background(c, stop)
    own = dict(zip(trial_names(s), (s.python_app, s.node_app), strict=True))
    # The output of the apps that failed (each problem names its app), under the app's own name.
    failed = [name for name in names if any(own[name] in p for p in problems)] or names
    logs = {own[name]: app_output(c, s, name) for name in failed}
    run(c, stop, warn=True)
    pm2_said = started.stdout + "\n" + started.stderr
    raise trial_failed(s, problems, logs, pm2_said, live, health_route_fault(s, problems, urls))


Trial = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def python_trial(s: Settings, venv: str, release_dir: str, port: int) -> Trial:
    """The Python app's trial: its PM2 entry on `port` with one worker, its health URL, and what
    the gate watches."""
    py_name = trial_names(s)[0]
    py, _ = handover_entry(s, App.PYTHON, venv, release_dir)
    py.update(name=py_name, args=py["args"][:-1] + [f"127.0.0.1:{port}", "--workers", "1"])
    url = {
        "label": s.python_app,
        "url": f"http://127.0.0.1:{port}{s.health_py}",
        "expect_release": True,
        "setting": "HEALTH_PY",
    }
    return py, url, {"name": py_name, "workers": True}


def nodejs_trial(s: Settings, venv: str, release_dir: str, port: int) -> Trial:
    """The Node.js app's trial: its PM2 entry on `port` in fork mode, its health URL, and what the
    gate watches."""
    node_name = trial_names(s)[1]
    node, _ = handover_entry(s, App.NODEJS, venv, release_dir)
    # Fork mode: PM2 loses a cluster worker's start-up exception, and its message is what the
    # user needs.
    node.update(
        name=node_name,
        instances=1,
        exec_mode="fork",
        env={**node["env"], "PORT": str(port)},
    )
    health = s.app_path(
        App.NODEJS, s.health_node
    )  # asked directly: without the prefix Nginx strips
    url = {
        "label": s.node_app,
        "url": f"http://127.0.0.1:{port}{health}",
        "expect_release": True,
        "setting": "HEALTH_NODE",
    }
    return node, url, {"name": node_name}


def start_trial_command(s: Settings, present: set[str] | None) -> str:
    """The command that writes the trial apps' PM2 config (read from stdin) and starts them,
    clearing any trial apps and logs left from before."""
    # In the apps' account's home (its working folder through the app helper; the deploy user's own
    # otherwise).
    config = f".{s.app_name}-trial.config.json"
    leftovers = present is None or bool(set(trial_names(s)) & present)
    # The trial apps' log files go with them: a trial's excerpt shows only its own run.
    return (
        f"{write_file_command(config, '0600')} && "
        + (
            f"{{ {delete_command(s, *trial_names(s))} >/dev/null 2>&1; true; }} && "
            if leftovers
            else ""
        )
        + f"{forget_logs_command(*trial_names(s))} && "
        + start_config_command(s, q(config))
    )


def gate_question(
    s: Settings,
    release: str,
    release_dir: str,
    urls: list[dict[str, Any]],
    watch: list[dict[str, Any]],
) -> dict[str, Any]:
    """What the health gate is asked about the trial apps: their URLs and PM2 entries, failing on
    the first problem."""
    return {
        "mode": "gate",
        "timeout": s.health_timeout,
        "pm2": s.pm2,
        "pm2_rpc_js": host_facts.PM2_RPC_JS,
        "release": release,
        "release_dir": release_dir,
        "urls": urls,
        "apps": watch,
        "fail_fast": True,
    }


def still_serving(live: str | None) -> str:
    """What serves after a failure before the switch: the live release, or nothing on a first
    deploy."""
    return (
        f"the live release {live} keeps serving"
        if live
        else "nothing served before, and nothing serves now"
    )


def trial_failed(
    s: Settings,
    problems: list[str],
    logs: dict[str, str],
    pm2_said: str,
    live: str | None = None,
    health_fault: str | None = None,
) -> Exception:
    """The message of a failed trial: what failed, each failed app's own output under its name
    (Gunicorn's INFO lines left out), and the setting at fault if one is."""
    lines = [f"  {masked(s, p)}" for p in problems]
    for name, text in logs.items():
        kept = [
            line for line in text.splitlines() if not GUNICORN_INFO.match(line.strip())
        ] or text.splitlines()
        if kept:
            lines.append(
                f"  output of {name} (its trial run):\n    "
                + "\n    ".join(output_excerpt("\n".join(kept)))
            )
    fix = (
        setting_fault(s, "\n".join([masked(s, pm2_said), *logs.values()]))
        or health_fault
        or "Fix the app and deploy again."
    )
    return fail(
        "The new release failed its trial run, so nothing was switched and"
        f" {still_serving(live)}.\n" + "\n".join(lines) + "\n" + fix
    )
