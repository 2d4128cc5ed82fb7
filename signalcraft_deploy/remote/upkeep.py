"""Runs ON THE HOST (sent over stdin to `python3 -`): disk space, pruning, boot state, the apps'
account's side.

Standard library only. Reads one JSON argument, prints one JSON line. Never prints environment
values: PM2's dump (which holds every app's env, secrets included) is parsed here and only
names, paths and arguments leave the host.

Run as the deploy user:
mode "space": free space on the deploy root's filesystem and what takes space there (releases,
venvs, node_modules, shared/); the user it ran as and the filesystem's device number.

mode "prune": remove the venvs and node_modules that no kept release names in its manifest and
no process runs from (this user's, and the words `in_use` the apps' account reported).

Run as the apps' own account (APP_USER; through the app helper, which sets PM2_HOME):
mode "apps": who runs the apps (name, uid, PM2 home), PM2's logs there (sizes, device), the sizes
of the apps' own log files, and the paths under the deploy root its processes run from (`in_use`).

mode "settle": after a deploy, rollback or pm2-reload, each of our apps' PM2 restart count by pm_id
(`status` counts crashes from it: PM2 counts every reload as a restart), and the per-pm_id log files
of processes PM2 no longer has (a cluster's <name>-out-<pm_id>.log, rotated ones too) removed.

mode "boot": whether PM2 starts at boot for this user (the systemd unit `setup` writes, enabled
by its multi-user.target.wants link) and what PM2's saved list (dump.pm2) would start.
"""

import json
import os
import pwd
import re
import shutil
import subprocess
import sys

from signalcraft_deploy.remote.pm2_list import pm2_process, pm2_processes
from signalcraft_deploy.remote.pm2_socket import daemon_list

UNIT_DIR = "/etc/systemd/system"


def size_of(path):
    """Bytes used under a path (files and links counted once, not followed)."""
    total = 0
    seen = set()
    for folder, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def existing_parent(path):
    while not os.path.exists(path) and path not in ("", "/"):
        path = os.path.dirname(path)
    return path or "/"


def children_of(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def space(spec):
    root = spec["root"]
    base = existing_parent(root)
    usage = shutil.disk_usage(base)
    parts = {}
    for name in ("releases", "venvs", "node_modules", "shared"):
        path = os.path.join(root, name)
        entries = [e for e in children_of(path) if not e.startswith(".")]
        parts[name] = {
            "path": path,
            "bytes": size_of(path) if entries else 0,
            "count": len(entries),
        }
    return {
        "free_mb": usage.free // 2**20,
        "total_mb": usage.total // 2**20,
        "path": base,
        "dev": os.stat(base).st_dev,
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "parts": parts,
        "unused": sorted(unused_environments(root, spec.get("in_use", []))),
    }


def pm2_logs(pm2_home, apps):
    """PM2's logs folder (size, files, device) and the sizes of the apps' own log files and of
    pm2.log."""
    logs = os.path.join(pm2_home, "logs")
    log_files = children_of(logs)
    part = {
        "path": logs,
        "bytes": size_of(logs) if log_files else 0,
        "count": len(log_files),
        "dev": os.stat(logs).st_dev if os.path.exists(logs) else None,
    }
    app_logs = {}
    names = "|".join(re.escape(a) for a in apps)
    own = re.compile(f"^({names})-(out|error)(-[0-9]+)?[.]log$")
    for name in log_files:
        if own.match(name):
            try:
                app_logs[name] = os.path.getsize(os.path.join(logs, name))
            except OSError:
                pass
    pm2_log = os.path.join(pm2_home, "pm2.log")
    if os.path.exists(pm2_log):
        app_logs["pm2.log"] = os.path.getsize(pm2_log)
    return part, app_logs


def apps(spec):
    """The apps' account's side: who it is, its PM2 home and logs, and what its processes use under
    the deploy root."""
    me = pwd.getpwuid(os.getuid())
    logs, app_logs = pm2_logs(spec["pm2_home"], spec.get("apps", []))
    envs = tuple(os.path.join(spec["root"], kind) + "/" for kind in ("venvs", "node_modules"))
    in_use = sorted({w for w in in_use_by_processes() if w.startswith(envs)})
    return {
        "user": me.pw_name,
        "uid": me.pw_uid,
        "pm2_home": spec["pm2_home"],
        "logs": logs,
        "app_logs": app_logs,
        "in_use": in_use,
    }


def manifest_of(release_dir):
    try:
        with open(os.path.join(release_dir, ".signalcraft", "manifest.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def in_use_by_processes():
    """What this user's processes run from: each command-line word and working directory."""
    words = []
    uid = os.getuid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                words += fh.read().decode("utf-8", "replace").split("\0")
            words.append(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
    return words


def unused_environments(root, in_use=()):
    """venvs/<hash> and node_modules/<hash> that no release on the host names and no process uses
    (this user's, and the paths `in_use` another account's processes run from)."""
    named: set[str] = set()  # (local: never evaluated, Python 3.8 too)
    releases = os.path.join(root, "releases")
    for release in children_of(releases):
        m = manifest_of(os.path.join(releases, release))
        named.update(p.rstrip("/") for p in (m.get("venv"), m.get("node_modules")) if p)
    used = in_use_by_processes() + [w for w in in_use if isinstance(w, str)]
    unused = []
    for kind in ("venvs", "node_modules"):
        for name in children_of(os.path.join(root, kind)):
            path = os.path.join(root, kind, name)
            if path not in named and not any(w == path or w.startswith(path + "/") for w in used):
                unused.append(path)
    return unused


def prune(spec):
    removed = []
    for path in sorted(unused_environments(spec["root"], spec.get("in_use", []))):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return {"removed": removed}


def settle(spec):
    """Our apps' restart counts by pm_id, and the log files of pm_ids PM2 no longer has removed.
    Nothing is removed when PM2 cannot be asked (over its socket, else `pm2 jlist`)."""
    listed = daemon_list()
    try:
        text = (
            json.dumps(listed)
            if listed is not None
            else subprocess.run(
                [spec.get("pm2", "pm2"), "jlist"], capture_output=True, text=True, timeout=60
            ).stdout
        )
    except (OSError, subprocess.SubprocessError):
        text = ""
    procs = pm2_processes(text)
    if procs is None:
        return {"restarts": None, "removed": []}
    apps = spec.get("apps", [])
    restarts: dict[str, dict[str, int]] = {}
    for proc in procs:
        if proc["name"] in apps:
            restarts.setdefault(proc["name"], {})[str(proc["pm_id"])] = proc["restarts"]
    live = {(proc["name"], proc["pm_id"]) for proc in procs}
    logs = os.path.join(spec["pm2_home"], "logs")
    names = "|".join(re.escape(a) for a in apps)
    retired = re.compile(f"^({names})-(out|error)-([0-9]+)[.]log") if apps else None
    removed = []
    for name in children_of(logs):
        found = retired.match(name) if retired else None
        if found and (found.group(1), int(found.group(3))) not in live:
            try:
                os.remove(os.path.join(logs, name))
                removed.append(name)
            except OSError:
                pass
    return {"restarts": restarts, "removed": removed}


def read_unit(path):
    unit: dict = {}  # User, ExecStart, PIDFile: text; env: a dict
    try:
        with open(path) as fh:
            for line in fh:
                key, sep, value = line.strip().partition("=")
                if sep and key in ("User", "ExecStart", "PIDFile"):
                    unit[key] = value
                elif sep and key == "Environment":
                    name, _, val = value.partition("=")
                    unit.setdefault("env", {})[name] = val
    except OSError:
        return None
    return unit


def dump_entries(pm2_home, apps):
    """PM2's saved list for these apps: name -> [{exec, cwd, args, interpreter}] (never env
    values)."""
    try:
        with open(os.path.join(pm2_home, "dump.pm2")) as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return None
    out: dict[str, list[dict]] = {}
    for env in saved if isinstance(saved, list) else []:
        if isinstance(env, dict) and env.get("name") in apps:
            proc = pm2_process({"name": env["name"], "pm2_env": env})
            out.setdefault(proc["name"], []).append(
                {
                    "exec": proc["exec_path"],
                    "cwd": proc["cwd"],
                    "args": proc["args"],
                    "interpreter": proc["interpreter"],
                }
            )
    return out


def daemon_unit(pm2_home):
    """Under a running systemd, the unit whose cgroup holds this user's PM2 daemon (its pid file's,
    if the process is this user's): "" when it runs outside any service (started by a command of an
    SSH session); None when no daemon runs or systemd does not run."""
    if not os.path.isdir("/run/systemd/system"):
        return None
    try:
        with open(os.path.join(pm2_home, "pm2.pid")) as fh:
            pid = int(fh.read().strip())
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        with open(f"/proc/{pid}/cgroup") as fh:
            lines = fh.read().splitlines()
    except (OSError, ValueError):
        return None
    path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "")
    found = re.search(r"/([^/]+[.]service)$", path)
    return found.group(1) if found else ""


def boot(spec):
    user = spec.get("user") or pwd.getpwuid(os.getuid()).pw_name
    unit_path = os.path.join(UNIT_DIR, f"pm2-{user}.service")
    link = os.path.join(UNIT_DIR, "multi-user.target.wants", f"pm2-{user}.service")
    unit = read_unit(unit_path)
    target = os.readlink(link) if os.path.islink(link) else None
    tools = {
        name: os.path.realpath(shutil.which(cmd) or "") if shutil.which(cmd) else ""
        for name, cmd in (("pm2", spec.get("pm2", "pm2")), ("node", "node"))
    }
    rotation = f"/etc/logrotate.d/pm2-{user}"
    return {
        "user": user,
        "uid": os.getuid(),
        "pm2_home": spec["pm2_home"],
        "unit_path": unit_path,
        "unit": unit,
        "enabled": target == unit_path and unit is not None,
        "dump": dump_entries(spec["pm2_home"], spec.get("apps", [])),
        **tools,
        "daemon_unit": daemon_unit(spec["pm2_home"]),
        "logrotate": rotation if os.path.exists(rotation) else None,
    }


def main(argv):
    spec = json.loads(argv[0])
    spec.setdefault("pm2_home", os.environ.get("PM2_HOME") or os.path.expanduser("~/.pm2"))
    modes = {"space": space, "prune": prune, "boot": boot, "apps": apps, "settle": settle}
    print(json.dumps(modes[spec["mode"]](spec)))


if __name__ == "__main__":
    main(sys.argv[1:])
