"""status and logs: what is live on the host, on one screen (or as JSON), and the apps' logs."""

from __future__ import annotations

import json
import time
from typing import Any

from invoke import Collection, Context, task

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.facts import HostFacts, Pm2Process
from signalcraft_deploy.core.plan import process_pm2_names
from signalcraft_deploy.core.secrets import masker_for
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import tls as tls_ops
from signalcraft_deploy.host import upkeep
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.fleet_hosts import fleet_aware, fleet_hosts
from signalcraft_deploy.host.health import probe
from signalcraft_deploy.host.io import q, run, target_name
from signalcraft_deploy.host.lock import read_audit, who_text
from signalcraft_deploy.host.nginx import draining_status, test_nginx
from signalcraft_deploy.host.nginx import drift as nginx_drift
from signalcraft_deploy.host.pm2 import pm2
from signalcraft_deploy.host.releases import live_site_settings
from signalcraft_deploy.steps.fleet import status_fleet
from signalcraft_deploy.steps.one_host import host_settings


def health_urls(s: Settings) -> list[dict[str, Any]]:
    host = s.server_name.split()[0] if s.server_name != "_" else None
    nginx = s.nginx_url
    return [
        {"label": "Gunicorn", "url": f"http://{s.gunicorn_bind}{s.health_py}"},
        {
            "label": "Node.js",
            "url": f"http://127.0.0.1:{s.node_port}{s.app_path(App.NODEJS, s.health_node)}",
        },
        {"label": "Nginx -> Gunicorn", "url": nginx + s.health_py, "host": host},
        {"label": "Nginx -> Node.js", "url": nginx + s.health_node, "host": host},
    ]


def collect(c: Any, s: Settings) -> dict[str, Any]:
    """Everything `status` shows, as plain data (no env values, no secrets)."""
    facts = host_facts.gather(c, s)
    s = live_site_settings(
        c,
        host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json"),
        facts.current_release,
    )
    procs = [p for p in facts.pm2 if p.name in app_names(s, facts.manifest)]
    probed = probe(
        c, s, {"mode": "status", "pids": [p.pid for p in procs if p.pid], "urls": health_urls(s)}
    )
    nginx_ok = test_nginx(c, s).ok
    now_ms = int(time.time() * 1000)
    recorded = upkeep.recorded_restarts(c, s)
    apps = [app_row(p, probed["memory"].get(str(p.pid), {}), recorded, now_ms) for p in procs]
    m = facts.manifest or {}
    return {
        "host": target_name(c),
        "current": {
            "release": facts.current_release,
            "sha": m.get("sha"),
            "deployed_at": m.get("deployed_at"),
            "deployed_by": m.get("deployed_by"),
        },
        "releases": ordered_releases(facts.releases, facts.current_release, facts.bad_releases),
        "apps": apps,
        "nginx_test_ok": nginx_ok,
        "maintenance": facts.maintenance,
        "nginx_drift": nginx_drift(c, s, facts.site_text),
        "nginx_draining": draining_status(c, s),
        "tls": tls_status(c, s),
        "health": probed["urls"],
        "recent": read_audit(c, s, 5),
        "shared": shared_sizes(c, s),
        "warnings": [w for w in (host_facts.node_public_warning(s, facts),) if w],
        **host_life(c, s, facts),
    }


def app_names(s: Settings, manifest: dict[str, Any] | None) -> list[str]:
    """The PM2 names of the deploy's apps: both web apps, and each Procfile process the live
    release records (under either of its two names)."""
    recorded = (manifest or {}).get("processes") or ()
    return [
        s.python_app,
        s.node_app,
        *(n for r in recorded for n in process_pm2_names(s, r["name"])),
    ]


def live_manifest(c: Any, s: Settings) -> dict[str, Any] | None:
    """The live release's manifest (None when there is none, or it cannot be read)."""
    raw = run(c, f"cat {q(s.current_dir)}/.signalcraft/manifest.json 2>/dev/null", warn=True)
    try:
        data = json.loads(raw.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def app_row(
    p: Pm2Process, mem: dict[str, Any], recorded: dict[str, dict[str, int]] | None, now_ms: int
) -> dict[str, Any]:
    """One PM2 app as `status` shows it: its state, uptime, crashes apart from restarts, memory."""
    return {
        "name": p.name,
        "pm_id": p.pm_id,
        "pid": p.pid,
        "status": p.status,
        "mode": p.exec_mode,
        "uptime_s": max(0, (now_ms - p.started_ms) // 1000) if p.started_ms else 0,
        "restarts": p.restarts,
        "crashes": upkeep.crashes(p.restarts, p.pm_id, p.name, recorded),
        "memory_master_mb": round(mem.get("master_kb", 0) / 1024, 1),
        "workers": mem.get("workers", 0),
        "memory_workers_mb": round(mem.get("workers_kb", 0) / 1024, 1),
    }


def ordered_releases(names: list[str], current: str | None, bad: set[str]) -> list[dict[str, Any]]:
    """The releases as `status` lists them: the current one; the good ones before it, newest first (the first is
    what `rollback` returns to); good ones deployed after it (a rollback left them); then the bad
    ones.
    """
    newest_first = sorted(names, reverse=True)
    good = [r for r in newest_first if r != current and r not in bad]
    older = [r for r in good if current is None or r < current]
    newer = [r for r in good if r not in older]
    listed = (
        ([current] if current in names else [])
        + older
        + newer
        + [r for r in newest_first if r in bad and r != current]
    )
    return [
        {
            "name": r,
            "current": r == current,
            "bad": r in bad,
            "newer": r in newer,
            "rollback": bool(older) and r == older[0],
        }
        for r in listed
    ]


def shared_sizes(c: Any, s: Settings) -> dict[str, int | None]:
    """Bytes held by each of SHARED_PATHS under shared/ (None: not there yet)."""
    if not s.shared_paths:
        return {}
    names = [p.rstrip("/") for p in s.shared_paths]
    script = "; ".join(
        f"du -sb -- {q(s.shared_dir + '/' + n)} 2>/dev/null | cut -f1 || true; echo @"
        for n in names
    )
    parts = run(c, script, warn=True).stdout.split("@")
    return {
        path: int(v.strip()) if v.strip().isdigit() else None
        for path, v in zip(s.shared_paths, parts, strict=False)
    }


def human(size: int | None) -> str:
    if size is None:
        return "not there yet"
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def tls_status(c: Any, s: Settings) -> dict[str, Any] | None:
    """The certificate's days left, its problems and a warning under 14 days (None: TLS off)."""
    if not s.tls:
        return None
    verdict = tls_ops.inspect(c, s)
    return {
        "cert": s.tls_cert,
        "days_left": verdict.get("days_left"),
        "not_after": verdict.get("not_after"),
        "problems": verdict.get("problems", []),
        "warning": tls_ops.expiry_warning(verdict.get("days_left")),
    }


def host_life(c: Any, s: Settings, facts: HostFacts) -> dict[str, Any]:
    """Who the apps run as, whether both apps start at boot as they run now, free space, and the sizes of PM2's
    logs. The apps' account's part (its boot unit, saved list, PM2 home and logs) is read as that
    account.
    """
    boot = upkeep.boot_state(c, s)
    apps = upkeep.app_side(c, s)
    room = upkeep.space(c, s, apps)
    logs = room["parts"]["logs"]
    same = apps["user"] == room["user"]
    return {
        "runs_as": {
            "user": apps["user"],
            "uid": apps["uid"],
            "pm2_home": apps["pm2_home"],
            "deploy_user": room["user"],
            "deploy_user_saved": [] if same else upkeep.deploy_user_dump(c, s),
            "unit": boot["unit_path"].rsplit("/", 1)[-1],
            "daemon_unit": boot.get("daemon_unit"),
        },
        "boot": {
            "unit": boot["unit_path"],
            "enabled": boot["enabled"],
            "problems": upkeep.boot_problems(boot, facts.pm2, (s.python_app, s.node_app)),
        },
        "disk": {"free_mb": room["free_mb"], "path": room["path"], "min_free_mb": s.min_free_mb},
        "logs": {
            "files": room["app_logs"],
            "all_bytes": logs["bytes"],
            "all_files": logs["count"],
            "dir": logs["path"],
            "rotation": boot["logrotate"],
        },
    }


def runs_as_warnings(runs: dict[str, Any]) -> list[str]:
    """What `status` warns about the account the apps run as: the deploy user itself, or its PM2
    still saving ours."""
    user, deploy = runs["user"], runs["deploy_user"]
    if user == deploy:
        return [
            f"the apps run as the deploy user {deploy}: code running inside them can do all"
            f" {deploy} can (rewrite the releases, add a key to ~{deploy}/.ssh, use its sudo rule"
            " for the root helper, read .deploy/); set APP_USER to an account of their own (the"
            " default, APP_NAME), run setup, and deploy"
        ]
    warnings = []
    saved = runs.get("deploy_user_saved") or []
    if saved:
        warnings.append(
            f"{deploy}'s own PM2 saved list still holds {', '.join(saved)}: its boot unit would"
            f" start them beside {user}'s at boot (deploy again to move them, or `pm2 delete` them"
            f" as {deploy} and `pm2 save --force`)"
        )
    outside, unit = runs.get("daemon_unit"), runs.get("unit")
    if outside is not None and outside != unit:
        warnings.append(
            f"{user}'s PM2 daemon runs outside {unit}"
            f" ({outside or 'started by a command over SSH'}): systemd would not restart it if it"
            f" died; the next boot, or `sudo systemctl restart {unit}` (which restarts the apps),"
            " puts it there"
        )
    return warnings


def render_host_life(data: dict[str, Any]) -> list[str]:
    runs, boot, disk, logs = data["runs_as"], data["boot"], data["disk"], data["logs"]
    lines = [
        f"apps run as {runs['user']} (uid {runs['uid']}), PM2 home {runs['pm2_home']}"
        + (
            " (the deploy user)"
            if runs["user"] == runs["deploy_user"]
            else f"; deployed by {runs['deploy_user']}"
        )
    ]
    lines += [f"WARNING   {w}" for w in runs_as_warnings(runs)]
    lines.append(
        f"boot      {boot['unit']} enabled; PM2's saved list matches what runs"
        if not boot["problems"]
        else "boot      the apps would NOT come back after a reboot: "
        + "; ".join(boot["problems"])
        + "; run `setup`"
        + (" (then pm2 save, or deploy)" if any("saved" in p for p in boot["problems"]) else "")
    )
    low = disk["min_free_mb"] and disk["free_mb"] < disk["min_free_mb"]
    lines.append(
        f"disk      {disk['free_mb']} MB free on the filesystem of {disk['path']}"
        f" (deploys need MIN_FREE_MB={disk['min_free_mb']}{': TOO LITTLE' if low else ''})"
    )
    own = ", ".join(f"{name} {upkeep.mb(size)}" for name, size in sorted(logs["files"].items()))
    lines.append(
        f"logs      {own or 'none'}; {logs['dir']}: {upkeep.mb(logs['all_bytes'])} in"
        f" {logs['all_files']} files; "
        + (f"rotated by {logs['rotation']}" if logs["rotation"] else "NOT rotated: run `setup`")
    )
    return lines


def render_releases(releases: list[dict[str, Any]], shown: int = 5) -> list[str]:
    """`previous`: the good releases before the current one, newest first, the first marked as rollback's; `newer`:
    good ones after it; `bad`: the ones that failed (never picked by rollback)."""
    previous = [
        r["name"] + (" (rollback returns here)" if r["rollback"] else "")
        for r in releases
        if not r["current"] and not r["bad"] and not r.get("newer")
    ]
    newer = [r["name"] for r in releases if r.get("newer")]
    bad = [r["name"] for r in releases if r["bad"] and not r["current"]]
    lines = ["previous  " + (", ".join(previous[:shown]) or "none")]
    if newer:
        lines.append(
            "newer     "
            + ", ".join(newer[:shown])
            + " (after the current one: `rollback --to NAME` returns there)"
        )
    if bad:
        lines.append("bad       " + ", ".join(bad[:shown]))
    return lines


def render_status(data: dict[str, Any]) -> str:
    lines = render_current(data)
    lines.append("")
    lines += render_apps(data["apps"])
    if data.get("shared"):
        lines.append(
            "shared    "
            + ", ".join(f"{path} {human(size)}" for path, size in data["shared"].items())
        )
    lines.append("")
    lines += render_site(data)
    lines += render_health(data["health"])
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    lines += render_host_life(data)
    lines.append("")
    lines += render_recent(data["recent"])
    return "\n".join(lines)


def render_current(data: dict[str, Any]) -> list[str]:
    """The host, the current release (commit, when, by whom) and the other releases."""
    cur = data["current"]
    lines = [
        f"{data['host']}",
        (
            f"current   {cur['release'] or 'none'}  commit {str(cur['sha'] or '-')[:12]}  at"
            f" {cur['deployed_at'] or '-'}  by {cur['deployed_by'] or '-'}"
        ),
    ]
    return lines + render_maintenance(data.get("maintenance")) + render_releases(data["releases"])


def render_maintenance(m: dict[str, Any] | None) -> list[str]:
    """MAINTENANCE ON (since when, by whom, its Retry-After and message), or nothing when it is
    off."""
    if m is None:
        return []
    if not m["on"]:
        return [
            "maintenance off, but its record says on since"
            f" {m.get('since') or '?'} (Nginx serves the site: `maintenance off` clears the record)"
        ]
    if not m["recorded"]:
        return ["MAINTENANCE ON: every path but the open ones answers 503 (no record of who)"]
    by = who_text(m["by"]) if isinstance(m.get("by"), dict) else "?"
    return [
        f"MAINTENANCE ON since {m.get('since')} by {by}: 503 with Retry-After"
        f" {m.get('retry_after')} s; message: {m.get('message')!r}"
    ]


def render_apps(apps: list[dict[str, Any]]) -> list[str]:
    """The table of the deploy's PM2 apps, with what its crashes column counts."""
    # PM2 counts every reload as a restart: crashes are the restarts since the tool last (re)loaded
    # the apps.
    lines = [
        f"{'app':<26} {'pid':>7} {'status':<9} {'mode':<8} {'uptime':>8} {'crashes':>8}"
        f" {'restarts':>8} {'master':>9} {'workers':>16}"
    ]
    for a in apps:
        workers = f"{a['workers']}: {a['memory_workers_mb']}MB" if a["workers"] else "-"
        crashes = "?" if a.get("crashes") is None else a["crashes"]
        lines.append(
            f"{a['name']:<26} {a['pid']:>7} {a['status']:<9} {a['mode']:<8} {a['uptime_s']:>7}s"
            f" {crashes:>8} {a['restarts']:>8} {a['memory_master_mb']:>7}MB {workers:>16}"
        )
    if not apps:
        return [*lines, "(no PM2 apps of this deploy)"]
    unknown = any(a.get("crashes") is None for a in apps)
    return [
        *lines,
        "(crashes: PM2's restarts since the last deploy, rollback or pm2-reload, which PM2"
        " counts as restarts" + ("; ?: none recorded yet" if unknown else "") + ")",
    ]


def render_site(data: dict[str, Any]) -> list[str]:
    """Nginx's configuration test, the site's drift from the settings, and the certificate."""
    lines = [f"nginx -t  {'ok' if data['nginx_test_ok'] else 'FAILS'}"]
    if data.get("nginx_drift"):
        lines.append(f"WARNING   {data['nginx_drift']}")
    if data.get("nginx_draining"):
        lines.append(f"draining  {data['nginx_draining']}")
    tls = data.get("tls")
    if tls:
        lines.append(
            f"TLS       {tls['cert']}  expires {tls['not_after'] or '?'} (in {tls['days_left']}"
            " days)"
        )
        for note in ([tls["warning"]] if tls["warning"] else []) + tls["problems"]:
            lines.append(f"WARNING   {note}")
    return lines


def render_health(health: dict[str, dict[str, Any]]) -> list[str]:
    """Each health URL's answer, and the release it names."""
    lines = []
    for label, h in health.items():
        state = h["status"] or h["error"]
        lines.append(
            f"{label:<18} {h['url']:<44} {state}"
            + (f"  release {h['release']}" if h["release"] else "")
        )
    return lines


def render_recent(recent: list[dict[str, Any]]) -> list[str]:
    """The last entries of the audit log, newest first."""
    lines = ["last deploys"]
    for r in reversed(recent):
        by = who_text(r.get("by", {})) if isinstance(r.get("by"), dict) else r.get("by", "")
        lines.append(
            f"  {r.get('at', '?')}  {r.get('event', '?'):<8} {r.get('result', '?'):<22}"
            f" {r.get('to', '')}  {by}"
        )
    return lines


@fleet_aware
@task(iterable=["set_"], help={**HOST_HELP, "json": "print the status as JSON, for machines"})
def status(
    c: Context,
    json_: bool = False,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Show the live release, both PM2 apps (memory), nginx -t, health, boot, free space, log sizes, recent deploys."""
    s = settings_for(env_file, set_, environment)
    if len(hosts := fleet_hosts(c)) > 1:
        return status_fleet(hosts, s, collect, render_status, json_, known_hosts, accept_new_host)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    data = collect(c, s)
    print(json.dumps(data, indent=2) if json_ else render_status(data))


@task(
    iterable=["set_"],
    help={
        **HOST_HELP,
        "lines": "how many lines of each app's log (default 30)",
        "follow": "keep following the logs (Ctrl-C to stop)",
    },
)
def logs(
    c: Context,
    lines: int = 30,
    follow: bool = False,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Print the last lines of the apps' PM2 logs, Procfile processes too (.env values masked); -f to follow."""
    s = settings_for(env_file, set_, environment)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    pattern = f"/^({'|'.join(app_names(s, live_manifest(c, s)))})$/"
    cmd = (
        pm2(s, "logs", pattern, "--lines", str(int(lines)))
        + ("" if follow else " --nostream")
        + " 2>&1"
    )
    mask = masker_for(
        s
    )  # the apps write their own log files: what they wrote is masked as it is printed
    try:
        run(c, as_app(c, s, cmd), warn=True, on_line=lambda line: print(mask(line), flush=True))
    except KeyboardInterrupt:  # -f ends with Ctrl-C
        pass


ns = Collection(status, logs)
