"""Health: the probe program run on the host, and the gate every deploy passes after a switch."""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.io import fail
from signalcraft_deploy.host.programs import run_program


def probe(c: Any, s: Settings, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the host-side probe (canary or gate) and return its JSON verdict."""
    result = run_program(c, s, "probe.py", json.dumps(spec), warn=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise fail(f"The health probe could not run on the host: {masked(s, result.stderr.strip()[-500:])}") from None


def gate(c: Any, s: Settings, release: str, release_dir: str, checked: dict[str, bool],
         report: dict[str, Any] | None = None) -> list[str]:
    """After a switch: wait until the apps answer, directly and through Nginx, from the new release.

    `report`, if given, receives PM2's state of both apps as the passing check saw it.
    """
    host = s.server_name.split()[0] if s.server_name != "_" else None
    nginx = s.nginx_url
    py, node = bool(checked.get("python")), bool(checked.get("nodejs"))
    # Only the apps just (re)loaded must answer from the new release; the others keep theirs.
    urls = [
        {"label": "Gunicorn", "url": f"http://{s.gunicorn_bind}{s.health_py}", "expect_release": py},
        {"label": "Node.js", "url": f"http://127.0.0.1:{s.node_port}{s.health_node}", "expect_release": node},
        {"label": "Nginx -> Gunicorn", "url": nginx + s.health_py, "host": host, "expect_release": py},
        {"label": "Nginx -> Node.js", "url": nginx + s.health_node, "host": host, "expect_release": node},
    ]
    apps = ([{"name": s.python_app, "workers": True}] if py else []) + ([{"name": s.node_app}] if node else [])
    return gate_on(c, s, release, release_dir, urls, apps, report=report)


def gate_on(c: Any, s: Settings, release: str, release_dir: str, urls: list[dict[str, Any]], apps: list[dict[str, Any]],
            fail_fast: bool = False, report: dict[str, Any] | None = None) -> list[str]:
    spec = {"mode": "gate", "timeout": s.health_timeout, "pm2": s.pm2, "pm2_rpc_js": host_facts.PM2_RPC_JS, "release": release,
            "release_dir": release_dir, "urls": urls, "apps": apps, "fail_fast": fail_fast,
            "report": [s.python_app, s.node_app] if report is not None else []}
    verdict = probe(c, s, spec)
    if report is not None:
        report.update(verdict.get("pm2") or {})
    return [masked(s, str(p)) for p in verdict.get("problems", [])]
