"""status and logs: what is live on the host, on one screen (or as JSON), and the apps' logs."""

from __future__ import annotations

import json
import time
from typing import Any

from invoke import Collection, task

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import upkeep
from signalcraft_deploy.host.connect import COMMON_HELP, open_host, settings_for
from signalcraft_deploy.host.health import probe
from signalcraft_deploy.host.io import run, target_name
from signalcraft_deploy.host.lock import read_audit, who_text
from signalcraft_deploy.host.pm2 import pm2


def health_urls(s: Settings) -> list[dict[str, Any]]:
    host = s.server_name.split()[0] if s.server_name != "_" else None
    nginx = f"http://127.0.0.1:{s.nginx_listen}"
    return [
        {"label": "Gunicorn", "url": f"http://{s.gunicorn_bind}{s.health_py}"},
        {"label": "Node.js", "url": f"http://127.0.0.1:{s.node_port}{s.health_node}"},
        {"label": "Nginx -> Gunicorn", "url": nginx + s.health_py, "host": host},
        {"label": "Nginx -> Node.js", "url": nginx + s.health_node, "host": host},
    ]


def collect(c: Any, s: Settings) -> dict[str, Any]:
    """Everything `status` shows, as plain data (no env values, no secrets)."""
    facts = host_facts.gather(c, s)
    procs = [p for p in facts.pm2 if p.name in (s.python_app, s.node_app)]
    probed = probe(c, s, {"mode": "status", "pids": [p.pid for p in procs if p.pid], "urls": health_urls(s)})
    nginx_ok = run(c, f"sudo -n {s.nginx_test_cmd}", warn=True).ok
    now_ms = int(time.time() * 1000)
    apps = []
    for p in procs:
        mem = probed["memory"].get(str(p.pid), {})
        apps.append({"name": p.name, "pm_id": p.pm_id, "pid": p.pid, "status": p.status, "mode": p.exec_mode,
                     "uptime_s": max(0, (now_ms - p.started_ms) // 1000) if p.started_ms else 0, "restarts": p.restarts,
                     "memory_master_mb": round(mem.get("master_kb", 0) / 1024, 1), "workers": mem.get("workers", 0),
                     "memory_workers_mb": round(mem.get("workers_kb", 0) / 1024, 1)})
    m = facts.manifest or {}
    return {
        "host": target_name(c),
        "current": {"release": facts.current_release, "sha": m.get("sha"), "deployed_at": m.get("deployed_at"),
                    "deployed_by": m.get("deployed_by")},
        "releases": [{"name": r, "current": r == facts.current_release, "bad": r in facts.bad_releases}
                     for r in reversed(facts.releases)],
        "apps": apps,
        "nginx_test_ok": nginx_ok,
        "health": probed["urls"],
        "recent": read_audit(c, s, 5),
        **host_life(c, s, facts),
    }


def host_life(c: Any, s: Settings, facts: host_facts.HostFacts) -> dict[str, Any]:
    """Whether both apps start at boot as they run now, free space, and the sizes of PM2's logs."""
    boot = upkeep.boot_state(c, s)
    room = upkeep.space(c, s)
    logs = room["parts"]["logs"]
    return {
        "boot": {"unit": boot["unit_path"], "enabled": boot["enabled"],
                 "problems": upkeep.boot_problems(boot, facts.pm2, (s.python_app, s.node_app))},
        "disk": {"free_mb": room["free_mb"], "path": room["path"], "min_free_mb": s.min_free_mb},
        "logs": {"files": room["app_logs"], "all_bytes": logs["bytes"], "all_files": logs["count"], "dir": logs["path"],
                 "rotation": boot["logrotate"]},
    }


def render_host_life(data: dict[str, Any]) -> list[str]:
    boot, disk, logs = data["boot"], data["disk"], data["logs"]
    lines = [f"boot      {boot['unit']} enabled; PM2's saved list matches what runs" if not boot["problems"] else
             "boot      the apps would NOT come back after a reboot: " + "; ".join(boot["problems"]) + "; run `setup`"
             + (" (then pm2 save, or deploy)" if any("saved" in p for p in boot["problems"]) else "")]
    low = disk["min_free_mb"] and disk["free_mb"] < disk["min_free_mb"]
    lines.append(f"disk      {disk['free_mb']} MB free on the filesystem of {disk['path']}"
                 f" (deploys need MIN_FREE_MB={disk['min_free_mb']}{': TOO LITTLE' if low else ''})")
    own = ", ".join(f"{name} {upkeep.mb(size)}" for name, size in sorted(logs["files"].items()))
    lines.append(f"logs      {own or 'none'}; {logs['dir']}: {upkeep.mb(logs['all_bytes'])} in {logs['all_files']} files; "
                 + (f"rotated by {logs['rotation']}" if logs["rotation"] else "NOT rotated: run `setup`"))
    return lines


def render_status(data: dict[str, Any]) -> str:
    cur = data["current"]
    lines = [f"{data['host']}",
             f"current   {cur['release'] or 'none'}  commit {str(cur['sha'] or '-')[:12]}  at {cur['deployed_at'] or '-'}"
             f"  by {cur['deployed_by'] or '-'}"]
    others = [r["name"] + (" (bad)" if r["bad"] else "") for r in data["releases"] if not r["current"]]
    lines.append("previous  " + (", ".join(others[:5]) or "none"))
    lines.append("")
    lines.append(f"{'app':<26} {'pid':>7} {'status':<9} {'mode':<8} {'uptime':>8} {'restarts':>8} {'master':>9} {'workers':>16}")
    for a in data["apps"]:
        workers = f"{a['workers']}: {a['memory_workers_mb']}MB" if a["workers"] else "-"
        lines.append(f"{a['name']:<26} {a['pid']:>7} {a['status']:<9} {a['mode']:<8} {a['uptime_s']:>7}s {a['restarts']:>8} "
                     f"{a['memory_master_mb']:>7}MB {workers:>16}")
    if not data["apps"]:
        lines.append("(no PM2 apps of this deploy)")
    lines.append("")
    lines.append(f"nginx -t  {'ok' if data['nginx_test_ok'] else 'FAILS'}")
    for label, h in data["health"].items():
        state = h["status"] or h["error"]
        lines.append(f"{label:<18} {h['url']:<44} {state}" + (f"  release {h['release']}" if h["release"] else ""))
    lines += render_host_life(data)
    lines.append("")
    lines.append("last deploys")
    for r in reversed(data["recent"]):
        by = who_text(r.get("by", {})) if isinstance(r.get("by"), dict) else r.get("by", "")
        lines.append(f"  {r.get('at', '?')}  {r.get('event', '?'):<8} {r.get('result', '?'):<22} {r.get('to', '')}  {by}")
    return "\n".join(lines)


@task(iterable=["set_"], help={**COMMON_HELP, "json": "print the status as JSON, for machines"})
def status(c, json_=False, env_file=None, set_=None):
    """Show the live release, both PM2 apps (memory), nginx -t, health, boot, free space, log sizes, recent deploys."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    data = collect(c, s)
    print(json.dumps(data, indent=2) if json_ else render_status(data))


@task(iterable=["set_"], help={**COMMON_HELP, "lines": "how many lines of each app's log (default 30)",
                               "follow": "keep following the logs (Ctrl-C to stop)"})
def logs(c, lines=30, follow=False, env_file=None, set_=None):
    """Print the last lines of both apps' PM2 logs; -f to follow."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    pattern = f"/^({s.python_app}|{s.node_app})$/"
    cmd = pm2(s, "logs", pattern, "--lines", str(int(lines))) + ("" if follow else " --nostream")
    c.run(cmd, pty=follow, warn=True, in_stream=None if follow else False)


ns = Collection(status, logs)
