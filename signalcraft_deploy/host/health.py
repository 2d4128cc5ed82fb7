"""Health: the probe program run on the host, and the gate every deploy passes after a switch."""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.io import Waiting, fail
from signalcraft_deploy.host.programs import run_program, start_waiting


def probe(c: Any, s: Settings, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the host-side probe (trial run or health gate) and return its JSON verdict."""
    return verdict_of(
        s, run_program(c, s, "probe.py", json.dumps(spec), warn=True, app=True)
    )  # it reads the apps' /proc


def verdict_of(s: Settings, result: Any) -> dict[str, Any]:
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        # Nothing on stderr (killed by a signal, say: no exit status): its exit status is all there
        # is to say.
        said = (
            masked(s, result.stderr.strip()[-500:])
            or f"it ended with exit status {result.exited} and no output"
        )
        raise fail(f"The health probe could not run on the host: {said}") from None


def gate_spec(
    s: Settings,
    release: str,
    release_dir: str,
    checked: dict[App, bool],
    report: bool = False,
    graceful: int | None = None,
) -> dict[str, Any]:
    """What the gate after a switch checks: the apps answer, directly and through Nginx, from
    `release`. `graceful`: Gunicorn's effective graceful_timeout, when it was read (else
    GUNICORN_GRACEFUL_TIMEOUT's)."""
    host = s.server_name.split()[0] if s.server_name != "_" else None
    nginx = s.nginx_url
    py, node = bool(checked.get(App.PYTHON)), bool(checked.get(App.NODEJS))
    # Only the apps just (re)loaded must answer from the new release; the others keep theirs.
    urls: list[dict[str, Any]] = [
        {
            "label": "Gunicorn",
            "url": f"http://{s.gunicorn_bind}{s.health_py}",
            "expect_release": py,
        },
        {
            "label": "Node.js",
            "url": f"http://127.0.0.1:{s.node_port}{s.app_path(App.NODEJS, s.health_node)}",
            "expect_release": node,
        },
        {
            "label": "Nginx -> Gunicorn",
            "url": nginx + s.health_py,
            "host": host,
            "expect_release": py,
        },
        {
            "label": "Nginx -> Node.js",
            "url": nginx + s.health_node,
            "host": host,
            "expect_release": node,
        },
    ]
    # Gunicorn's old workers may finish the requests they hold, up to GUNICORN_GRACEFUL_TIMEOUT.
    python = {
        "name": s.python_app,
        "workers": True,
        "drain": graceful or s.gunicorn_graceful_timeout,
        "port": s.gunicorn_bind.port,
    }
    apps = ([python] if py else []) + ([{"name": s.node_app}] if node else [])
    return spec_for(s, release, release_dir, urls, apps, report=report)


def spec_for(
    s: Settings,
    release: str,
    release_dir: str,
    urls: list[dict[str, Any]],
    apps: list[dict[str, Any]],
    fail_fast: bool = False,
    report: bool = False,
) -> dict[str, Any]:
    return {
        "mode": "gate",
        "timeout": s.health_timeout,
        "pm2": s.pm2,
        "pm2_rpc_js": host_facts.PM2_RPC_JS,
        "release": release,
        "release_dir": release_dir,
        "urls": urls,
        "apps": apps,
        "fail_fast": fail_fast,
        "report": [s.python_app, s.node_app] if report else [],
    }


def start_gate(
    c: Any,
    s: Settings,
    release: str,
    release_dir: str,
    checked: dict[App, bool],
    graceful: int | None = None,
) -> Waiting | None:
    """The gate after a switch, started ahead (Python and its PM2 connection up, nothing checked
    yet): pass it to `gate` as `started`. None where it cannot be started ahead."""
    spec = {
        **gate_spec(s, release, release_dir, checked, report=True, graceful=graceful),
        "await_go": True,
    }
    return start_waiting(c, s, "probe.py", json.dumps(spec), app=True)


def gate(
    c: Any,
    s: Settings,
    release: str,
    release_dir: str,
    checked: dict[App, bool],
    report: dict[str, Any] | None = None,
    started: Waiting | None = None,
    drained: dict[str, Any] | None = None,
    graceful: int | None = None,
) -> list[str]:
    """After a switch: wait until the apps answer, directly and through Nginx, from the new release.

    `report`, if given, receives PM2's state of both apps as the passing check saw it. `started` is
    the same gate from `start_gate`, for the same release and apps. `drained`, if given, receives
    how Gunicorn's old workers finished the requests they held (`drain_text` says it).
    """
    verdict = None
    if started is not None:
        try:
            verdict = verdict_of(s, started.go())
        except (
            OSError
        ):  # the channel broke or the program never said it was ready: ask the usual way
            started.drop()
    if verdict is None:
        spec = gate_spec(
            s, release, release_dir, checked, report=report is not None, graceful=graceful
        )
        verdict = probe(c, s, spec)
    if drained is not None:
        drained.update((verdict.get("drain") or {}).get(s.python_app) or {})
    return problems_of(s, verdict, report)


def drain_text(drained: dict[str, Any]) -> str:
    """How Gunicorn's old workers finished after a reload, in words ("" if they held nothing)."""
    if not drained:
        return ""
    requests = f"{drained['requests']} request{'s' if drained['requests'] != 1 else ''}"
    if not drained.get("left"):
        return f"old Gunicorn workers drained in {drained['seconds']} s ({requests})"
    return (
        f"{drained['left']} old Gunicorn worker(s) still finishing {requests} after"
        f" Gunicorn's graceful_timeout ({drained['limit']} s), not waited for: Gunicorn's master ends"
        " each GUNICORN_TIMEOUT seconds after its request began (its client gets a 500)"
    )


def gate_on(
    c: Any,
    s: Settings,
    release: str,
    release_dir: str,
    urls: list[dict[str, Any]],
    apps: list[dict[str, Any]],
    fail_fast: bool = False,
    report: dict[str, Any] | None = None,
) -> list[str]:
    verdict = probe(
        c,
        s,
        spec_for(
            s, release, release_dir, urls, apps, fail_fast=fail_fast, report=report is not None
        ),
    )
    return problems_of(s, verdict, report)


def problems_of(s: Settings, verdict: dict[str, Any], report: dict[str, Any] | None) -> list[str]:
    """A gate's problems, masked; PM2's state of the apps into `report` when one is given."""
    if report is not None:
        report.update(verdict.get("pm2") or {})
    return [masked(s, str(p)) for p in verdict.get("problems", [])]
