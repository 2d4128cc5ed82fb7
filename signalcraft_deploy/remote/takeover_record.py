"""Runs ON THE HOST as root (`sudo python3 - PID FOLDER PM2 NODE_APP SITE OWNER FORMAT TOOL`, text on stdin).

Saves, once, what takeover_restore.py needs to bring back the state before a takeover: the
unmanaged server's command line, working directory, user and environment (from /proc/PID), the
PM2 entry of the Node.js app NODE_APP (from `sudo -u OWNER -H PM2 jlist`, env values included:
restoring needs them), and the Nginx site file SITE. A second run keeps the first record (the true
'before'), stamped with its FORMAT and the TOOL that wrote it. FOLDER is mode 0700 and its files
0600, owned by OWNER; nothing recorded is printed: the only output is "recorded". Standard library
only; pm2_list.py is inlined when it is sent.
"""

import json
import os
import pwd
import subprocess
import sys
from typing import Any, Dict, List, Optional

from signalcraft_deploy.remote.pm2_list import pm2_processes


def legacy_process(pid: str) -> Dict[str, Any]:
    """What is needed to start the process again: argv, cwd, user, environment."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")[:-1]
    with open(f"/proc/{pid}/environ", "rb") as fh:
        env = dict(line.split(b"=", 1) for line in fh.read().split(b"\0") if b"=" in line)
    uid = os.stat(f"/proc/{pid}").st_uid
    return {"argv": [a.decode() for a in argv], "cwd": os.readlink(f"/proc/{pid}/cwd"),
            "user": pwd.getpwuid(uid).pw_name, "env": {k.decode(): v.decode() for k, v in env.items()}}


def node_entry(procs: List[Dict[str, Any]], node_app: str) -> Optional[Dict[str, Any]]:
    """The PM2 app entry that starts `node_app` again as it ran (None if PM2 has no such app)."""
    entries = [p for p in procs if p["name"] == node_app]
    if not entries:
        return None
    e = entries[0]
    return {"name": node_app, "script": e["exec_path"] or None, "cwd": e["cwd"] or None,
            "exec_mode": e["exec_mode"] or "fork", "instances": len(entries),
            "interpreter": e["interpreter"] or "node", "args": e["args"], "env": e["env"]}


def read_pm2(pm2: str, owner: str, node_app: str) -> List[Dict[str, Any]]:
    """PM2's processes as `owner` sees them, env values of `node_app` only (no list printed: none)."""
    out = subprocess.run(["sudo", "-u", owner, "-H", pm2, "jlist"], capture_output=True, text=True).stdout
    return pm2_processes(out, env_for=[node_app]) or []


def record(pid: str, folder: str, pm2: str, node_app: str, site: str, owner: str, stamp: Dict[str, Any]) -> None:
    legacy = legacy_process(pid)
    node = node_entry(read_pm2(pm2, owner, node_app), node_app)
    saved = {**stamp, "legacy": legacy, "node": node, "site_existed": os.path.exists(site)}
    if os.path.exists(site):
        with open(site, "rb") as src, open(os.path.join(folder, "nginx-site"), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(folder, "legacy.json"), "w") as fh:
        json.dump(saved, fh)


def secure(folder: str, owner: str) -> None:
    """Every file 0600 and the folder, all owned by `owner` (the group is left as it is)."""
    uid = pwd.getpwnam(owner).pw_uid
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.islink(path):  # never through a link the owner left there: root would change its target
            continue
        os.chmod(path, 0o600)
        os.chown(path, uid, -1, follow_symlinks=False)
    os.chown(folder, uid, -1, follow_symlinks=False)


def main(argv: List[str]) -> None:
    pid, folder, pm2, node_app, site, owner, number, tool = argv
    os.makedirs(folder, exist_ok=True)
    if os.path.islink(folder):
        sys.exit(f"{folder} is a symlink: not recorded")
    os.chmod(folder, 0o700)
    if not os.path.exists(os.path.join(folder, "legacy.json")):
        record(pid, folder, pm2, node_app, site, owner, {"format": int(number), "tool": tool})
    secure(folder, owner)
    print("recorded")


if __name__ == "__main__":
    main(sys.argv[1:])
