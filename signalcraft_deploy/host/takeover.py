"""Takeover: the first deploy on a host where Python still runs as a bare `python app.py &`.

Before anything changes, `record` saves on the host (in <DEPLOY_ROOT>/.deploy/takeover/, mode
0600, never printed) what is needed to return to exactly that state: the unmanaged server's
command line, working directory, user and environment, the PM2 entries of the app's Node.js
process, and the Nginx site file. The deploy then moves traffic to Gunicorn under PM2 without
refusing a connection (`steps.handover.handover` with `stop_unmanaged`). `restore` (used by `rollback` and
by a failed takeover) brings the bare process, the old PM2 entry and the old site back.
"""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import fail, q, run, sudo
from signalcraft_deploy.host.nginx import reload_nginx

# Runs on the host as root (sudo), with the pid and paths as arguments; Python standard library only.
RECORD_SCRIPT = r"""
import json, os, pwd, subprocess, sys
pid, folder, pm2, node_app, site, owner = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
os.makedirs(folder, exist_ok=True)
os.chmod(folder, 0o700)
if not os.path.exists(os.path.join(folder, "legacy.json")):
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    env = dict(line.split(b"=", 1) for line in open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in line)
    uid = os.stat(f"/proc/{pid}").st_uid
    legacy = {"argv": [a.decode() for a in argv], "cwd": os.readlink(f"/proc/{pid}/cwd"),
              "user": pwd.getpwuid(uid).pw_name, "env": {k.decode(): v.decode() for k, v in env.items()}}
    out = subprocess.run(["sudo", "-u", owner, "-H", pm2, "jlist"], capture_output=True, text=True).stdout
    start = out.find("[")
    apps = json.loads(out[start:]) if start >= 0 else []
    entries = [a for a in apps if a.get("name") == node_app]
    node = None
    if entries:
        e = entries[0]["pm2_env"]
        node = {"name": node_app, "script": e.get("pm_exec_path"), "cwd": e.get("pm_cwd"),
                "exec_mode": e.get("exec_mode", "fork_mode").replace("_mode", ""), "instances": len(entries),
                "interpreter": e.get("exec_interpreter", "node"), "args": e.get("args") or [],
                "env": {k: str(v) for k, v in (e.get("env") or {}).items() if isinstance(v, (str, int, float))}}
    record = {"legacy": legacy, "node": node, "site_existed": os.path.exists(site)}
    if os.path.exists(site):
        with open(site, "rb") as src, open(os.path.join(folder, "nginx-site"), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(folder, "legacy.json"), "w") as fh:
        json.dump(record, fh)
for name in os.listdir(folder):
    os.chmod(os.path.join(folder, name), 0o600)
    os.chown(os.path.join(folder, name), pwd.getpwnam(owner).pw_uid, -1)
os.chown(folder, pwd.getpwnam(owner).pw_uid, -1)
print("recorded")
"""

RESTORE_SCRIPT = r"""
import json, os, pwd, subprocess, sys, time
folder, pm2, site, owner, site_link = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
record = json.load(open(os.path.join(folder, "legacy.json")))
legacy = record["legacy"]
user = pwd.getpwnam(legacy["user"])
def demote():
    os.setgid(user.pw_gid)
    os.initgroups(user.pw_name, user.pw_gid)
    os.setuid(user.pw_uid)
log = open(os.path.join(folder, "legacy.log"), "ab")
proc = subprocess.Popen(legacy["argv"], cwd=legacy["cwd"], env=legacy["env"], stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=demote)
if record.get("node"):
    cfg = os.path.join(folder, "node.config.json")
    with open(cfg, "w") as fh:
        json.dump({"apps": [record["node"]]}, fh)
    os.chown(cfg, pwd.getpwnam(owner).pw_uid, -1)
    os.chmod(cfg, 0o600)
    subprocess.run(["sudo", "-u", owner, "-H", pm2, "start", cfg], capture_output=True)
if record.get("site_existed"):
    with open(os.path.join(folder, "nginx-site"), "rb") as src, open(site, "wb") as dst:
        dst.write(src.read())
else:
    for path in (site, site_link):
        if path and os.path.lexists(path):
            os.remove(path)
time.sleep(1)
print(json.dumps({"pid": proc.pid, "alive": proc.poll() is None}))
"""


def folder(s: Settings) -> str:
    return f"{s.state_dir}/takeover"


def recorded(c: Any, s: Settings) -> bool:
    return run(c, f"test -e {q(folder(s))}/legacy.json", warn=True).ok


def record(c: Any, s: Settings, pid: int) -> None:
    """Save what `restore` needs, once (a second takeover attempt keeps the first, true 'before' record)."""
    owner = run(c, "id -un").stdout.strip()
    args = [str(pid), folder(s), s.pm2, s.node_app, s.nginx_site, owner]
    result = run(c, sudo(f"{q(s.python)} - " + " ".join(q(a) for a in args)), stdin=RECORD_SCRIPT, warn=True)
    if not result.ok:
        raise fail(f"Could not record the unmanaged server (pid {pid}) before taking it over: {result.stderr.strip()[-400:]}")


def restore(c: Any, s: Settings) -> str:
    """Return the host to its state before the takeover: bare Python server, old Node.js entry, old site."""
    from signalcraft_deploy.host import pm2 as pm2_ops

    for name in (s.python_app, s.handover_app, s.node_app, s.node_handover_app):
        pm2_ops.delete(c, s, name)
    owner = run(c, "id -un").stdout.strip()
    parked = f"{s.state_dir}/nginx-default-site.link"
    args = [folder(s), s.pm2, s.nginx_site, owner, s.nginx_enabled_link]
    result = run(c, sudo(f"{q(s.python)} - " + " ".join(q(a) for a in args)), stdin=RESTORE_SCRIPT, warn=True)
    if not result.ok:
        raise fail(f"Could not restore the state before the takeover: {result.stderr.strip()[-400:]}")
    default_link = "/etc/nginx/sites-enabled/default"
    unpark = f'if [ -e {q(parked)} ]; then ln -sfn "$(cat {q(parked)})" {q(default_link)} && rm -f {q(parked)}; fi'
    run(c, sudo(f"sh -c {q(unpark)}"), warn=True)
    test = run(c, sudo(s.nginx_test_cmd), warn=True)
    if test.ok:
        reload_nginx(c, s)
    run(c, f"rm -f {q(s.current_dir)}", warn=True)
    pm2_ops.save(c, s)
    state = json.loads(result.stdout.strip().splitlines()[-1])
    return f"the unmanaged server runs again (pid {state['pid']})" + ("" if state["alive"] else " — but it exited at once")
