"""The host's life between deploys: free space, unused environments, the temporary apps' logs, boot
state.

The programs run on the host are remote/upkeep.py (space, prune, boot, apps) and small shell lines
here. What belongs to the apps' own account (APP_USER: its PM2 home, saved list, logs and processes)
is read as that account, through the app helper (host/app_user.as_app); what belongs to the deploy
user (the deploy root) as the deploy user.
"""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.facts import HostFacts, Pm2Process
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import fail, q, run
from signalcraft_deploy.host.programs import run_program

PM2_LOGS = '"${PM2_HOME:-$HOME/.pm2}/logs"'


def upkeep(c: Any, s: Settings, mode: str, app: bool = False, **spec: Any) -> dict[str, Any]:
    """remote/upkeep.py's answer in `mode`: run as the deploy user, or with `app` as the apps' own
    account."""
    result = run_program(c, s, "upkeep.py", json.dumps({"mode": mode, **spec}), warn=True, app=app)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise fail(
            f"Could not read the host's {mode} ({(result.stderr or result.stdout).strip()[-300:]})"
        ) from None


def app_side(c: Any, s: Settings) -> dict[str, Any]:
    """As the apps' own account: its name, uid and PM2 home, PM2's logs, what its processes use
    under DEPLOY_ROOT."""
    return upkeep(c, s, "apps", app=True, root=s.deploy_root, apps=[s.python_app, s.node_app])


def space(c: Any, s: Settings, apps: dict[str, Any] | None = None) -> dict[str, Any]:
    """Free space and what takes it: DEPLOY_ROOT's parts (read as the deploy user) and PM2's logs
    (the apps' own account's, read as it; `apps` when already read)."""
    apps = app_side(c, s) if apps is None else apps
    data = upkeep(c, s, "space", root=s.deploy_root, in_use=apps["in_use"])
    logs = apps["logs"]
    data["parts"]["logs"] = {
        "path": logs["path"],
        "bytes": logs["bytes"],
        "count": logs["count"],
        "same_fs": logs["dev"] is not None and logs["dev"] == data["dev"],
    }
    data["app_logs"] = apps["app_logs"]
    return data


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


def space_report(data: dict[str, Any]) -> str:
    """What takes the space, largest first: releases, venvs, node_modules, shared/, PM2's logs, the
    rest."""
    parts, unused = data["parts"], data["unused"]
    ours = [p for name, p in parts.items() if name != "logs" or p.get("same_fs")]
    used = (data["total_mb"] - data["free_mb"]) * 2**20
    rows = []
    for name, p in parts.items():
        if not p["count"] or not p["bytes"]:
            continue
        extra = ""
        if name in ("venvs", "node_modules"):
            idle = [u for u in unused if u.startswith(p["path"] + "/")]
            extra = f", {len(idle)} used by no release" if idle else ""
        where = "" if name != "logs" or p.get("same_fs") else ", another filesystem"
        rows.append(
            (
                p["bytes"],
                (
                    f"{name if name != 'logs' else 'PM2 logs'} {mb(p['bytes'])}"
                    f" ({p['count']}{extra}{where})"
                ),
            )
        )
    rows.append(
        (
            used - sum(p["bytes"] for p in ours),
            f"other files {mb(max(0, used - sum(p['bytes'] for p in ours)))}",
        )
    )
    return ", ".join(text for _, text in sorted(rows, reverse=True))


def require_space(c: Any, s: Settings, facts: HostFacts) -> None:
    """Refuse to start a deploy on a filesystem with less free space than MIN_FREE_MB; say what
    takes it."""
    if not s.min_free_mb or facts.free_mb is None or facts.free_mb >= s.min_free_mb:
        return
    data = space(c, s)
    raise fail(
        f"Only {data['free_mb']} MB free on the filesystem of {data['path']}, below"
        f" MIN_FREE_MB={s.min_free_mb} ({s.origins.get('MIN_FREE_MB', 'default')}); nothing was"
        f" changed.\n  What takes space: {space_report(data)}.\n  Free some space (fewer"
        f" KEEP_RELEASES, old rotated logs in {data['parts']['logs']['path']}, files of your own)"
        " or lower MIN_FREE_MB, and deploy again."
    )


def prune_environments(c: Any, s: Settings) -> list[str]:
    """Remove the venvs and node_modules no release on the host names and no process runs from (the
    deploy user's, and the apps' own account's, asked as it: the deploy user cannot read where that
    account's processes run).
    """
    in_use = app_side(c, s)["in_use"]
    return list(upkeep(c, s, "prune", root=s.deploy_root, in_use=in_use).get("removed", []))


RESTARTS = (  # in DEPLOY_ROOT/.deploy: PM2's restart counts when the tool last (re)loaded the apps
    "restarts.json"
)


def settle(c: Any, s: Settings) -> list[str]:
    """After the tool (re)loaded the apps: record PM2's restart counts by pm_id (every reload counts
    as one, so `status` counts crashes from here), and remove the log files of pm_ids PM2 no longer
    has. Returns those files.
    """
    data = upkeep(c, s, "settle", app=True, apps=[s.python_app, s.node_app], pm2=s.pm2)
    if data.get("restarts") is not None:
        run(
            c,
            f"umask 077 && cat > {q(s.state_dir + '/' + RESTARTS)}",
            stdin=json.dumps(data["restarts"]) + "\n",
            warn=True,
        )
    return list(data.get("removed", []))


def recorded_restarts(c: Any, s: Settings) -> dict[str, dict[str, int]] | None:
    """The restart counts `settle` recorded (None: never recorded, as by an older version)."""
    text = run(c, f"cat {q(s.state_dir + '/' + RESTARTS)} 2>/dev/null", warn=True).stdout
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def crashes(
    restarts: int, pm_id: int, name: str, recorded: dict[str, dict[str, int]] | None
) -> int | None:
    """PM2's restarts of one process since the tool last (re)loaded the apps: crashes (a process PM2
    started since counts from 0). None when nothing was recorded."""
    if recorded is None:
        return None
    return max(0, restarts - int((recorded.get(name) or {}).get(str(pm_id), 0)))


def forget_logs_command(*names: str) -> str:
    """Shell that removes the PM2 log files of apps that are gone (the trial and handover apps),
    rotated ones too."""
    files = " ".join(
        f'"$D"/{q(n)}-out.log* "$D"/{q(n)}-error.log* "$D"/{q(n)}-out-[0-9]*.log*'
        f' "$D"/{q(n)}-error-[0-9]*.log*'
        for n in names
    )
    return f"{{ D={PM2_LOGS}; rm -f {files}; }}"


def boot_state(c: Any, s: Settings) -> dict[str, Any]:
    """Read as the apps' own account: its boot unit (present, enabled, its paths), its PM2's saved
    list for our apps, its log rotation, and who it is (name, uid, PM2 home)."""
    return upkeep(c, s, "boot", app=True, apps=[s.python_app, s.node_app], pm2=s.pm2)


def deploy_user_dump(c: Any, s: Settings) -> list[str]:
    """Our apps in the deploy user's own PM2 saved list (its dump.pm2), which its boot unit would
    start too."""
    dump = upkeep(c, s, "boot", apps=[s.python_app, s.node_app], pm2=s.pm2).get("dump") or {}
    return sorted(dump)


def boot_problems(
    boot: dict[str, Any], running: list[Pm2Process], names: tuple[str, ...]
) -> list[str]:
    """Why the apps would not come back after a reboot as they run now (empty: they would)."""
    unit = boot.get("unit")
    if unit is None:
        return [f"no boot unit ({boot['unit_path']})"]
    problems = [] if boot["enabled"] else [f"{boot['unit_path']} is not enabled"]
    if boot.get("pm2") and unit.get("ExecStart", "").split(" ")[0] != boot["pm2"]:
        problems.append(
            f"the unit starts {unit.get('ExecStart', '?').split(' ')[0]}, not the installed PM2"
            f" {boot['pm2']}"
        )
    node_dir = (boot.get("node") or "").rsplit("/", 1)[0]
    if node_dir and node_dir not in unit.get("env", {}).get("PATH", "").split(":"):
        problems.append(f"the unit's PATH lacks {node_dir}, where Node.js is now")
    return problems + dump_in_step(boot.get("dump"), running, names)


def dump_in_step(
    dump: dict[str, list[dict[str, Any]]] | None, running: list[Pm2Process], names: tuple[str, ...]
) -> list[str]:
    """How PM2's saved list differs from what runs, for our apps (empty: in step)."""
    if dump is None:
        return ["no saved list (pm2 save has never run)"]
    problems = []
    for name in names:
        now = sorted((p.exec_path, p.cwd, list(p.args)) for p in running if p.name == name)
        saved = sorted((d["exec"], d["cwd"], d["args"]) for d in dump.get(name, []))
        if not now and not saved:
            continue
        if not saved:
            problems.append(f"{name} runs but is not in the saved list")
        elif not now:
            problems.append(f"{name} is in the saved list but does not run")
        elif now != saved:
            problems.append(
                f"{name} runs {len(now)} process(es) unlike the {len(saved)} saved (script,"
                " directory or arguments)"
            )
    return problems
