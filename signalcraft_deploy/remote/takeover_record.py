"""Runs ON THE HOST as the deploy user (`python3 - PID FOLDER PM2 NODE_APP FORMAT TOOL`, text on
stdin).

Saves, once, what takeover_restore.py needs to bring back the state before a takeover: the
unmanaged server's command line, working directory, user and environment (from /proc/PID), and
the PM2 entry of the Node.js app NODE_APP (from `PM2 jlist`, env values included: restoring needs
them). A second run keeps the first record (the true 'before'), stamped with its FORMAT and the
TOOL that wrote it. The Nginx site is not here: root keeps its own copy (the helper's
takeover-record), and only that copy is ever put back.

With FOLDER `-` it runs as the apps' own account (APP_USER) instead, for a server of that account,
and prints the record as one JSON line for the deploy user to keep (nothing else is printed then).

Only the running user's own process is recorded (exit with its user and pid named otherwise):
everything here is the deploy user's own, so no root is involved. The environment kept is the
process's own variables, less those of the login session it was started from (SESSION_VARS: the
SSH connection, sudo's, the terminal's), which a restart would get anew or must not get: the app's
own settings (PORT, its secrets) are what it needs to come back as it was. FOLDER is 0700, its
files 0600. Nothing recorded is printed: the only output is "recorded". Standard library only;
pm2_list.py is inlined when it is sent.
"""

import json
import os
import pwd
import subprocess
import sys
from typing import Any, Dict, List, Optional

from signalcraft_deploy.remote.pm2_list import pm2_processes

# Variables of the session a process was started from, not of the process: not kept (a restart gets
# its own).
SESSION_VARS = frozenset(
    {
        "SSH_AUTH_SOCK",
        "SSH_AGENT_PID",
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_TTY",
        "SUDO_COMMAND",
        "SUDO_USER",
        "SUDO_UID",
        "SUDO_GID",
        "TERM",
        "TERMCAP",
        "COLORTERM",
        "DISPLAY",
        "XAUTHORITY",
        "MAIL",
        "OLDPWD",
        "SHLVL",
        "_",
        "LS_COLORS",
        "XDG_SESSION_ID",
        "XDG_RUNTIME_DIR",
        "XDG_SESSION_TYPE",
        "XDG_SESSION_CLASS",
        "DBUS_SESSION_BUS_ADDRESS",
        "STY",
        "TMUX",
        "TMUX_PANE",
        "WINDOW",
    }
)


def refuse_other_user(pid: str) -> None:
    """Exit unless the process is this user's own: a takeover touches only the deploy user's
    processes."""
    uid = os.stat(f"/proc/{pid}").st_uid
    if uid != os.getuid():
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        sys.exit(
            f"pid {pid} belongs to user {user}, not to {pwd.getpwuid(os.getuid()).pw_name}: a"
            " takeover touches only the deploy user's own processes; nothing was recorded"
        )


def legacy_process(pid: str) -> Dict[str, Any]:
    """What is needed to start the process again: argv, cwd, user, environment (less the
    session's)."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")[:-1]
    with open(f"/proc/{pid}/environ", "rb") as fh:
        env = dict(line.split(b"=", 1) for line in fh.read().split(b"\0") if b"=" in line)
    uid = os.stat(f"/proc/{pid}").st_uid
    return {
        "argv": [a.decode() for a in argv],
        "cwd": os.readlink(f"/proc/{pid}/cwd"),
        "user": pwd.getpwuid(uid).pw_name,
        "env": {k.decode(): v.decode() for k, v in env.items() if k.decode() not in SESSION_VARS},
    }


def node_entry(procs: List[Dict[str, Any]], node_app: str) -> Optional[Dict[str, Any]]:
    """The PM2 app entry that starts `node_app` again as it ran (None if PM2 has no such app)."""
    entries = [p for p in procs if p["name"] == node_app]
    if not entries:
        return None
    e = entries[0]
    return {
        "name": node_app,
        "script": e["exec_path"] or None,
        "cwd": e["cwd"] or None,
        "exec_mode": e["exec_mode"] or "fork",
        "instances": len(entries),
        "interpreter": e["interpreter"] or "node",
        "args": e["args"],
        "env": e["env"],
    }


def read_pm2(pm2: str, node_app: str) -> List[Dict[str, Any]]:
    """PM2's processes of this user, env values of `node_app` only (no list printed: none)."""
    out = subprocess.run([pm2, "jlist"], capture_output=True, text=True, timeout=60).stdout
    return pm2_processes(out, env_for=[node_app]) or []


def record(pid: str, folder: str, pm2: str, node_app: str, stamp: Dict[str, Any]) -> None:
    legacy = legacy_process(pid)
    node = node_entry(read_pm2(pm2, node_app), node_app)
    write_private(
        os.path.join(folder, "legacy.json"),
        json.dumps({**stamp, "legacy": legacy, "node": node}).encode(),
    )


def write_private(path: str, data: bytes) -> None:
    """Write a 0600 file, never through a symbolic link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def main(argv: List[str]) -> None:
    pid, folder, pm2, node_app, number, tool = argv
    if (
        folder == "-"
        # as the apps' own account, whose process it is: the record goes to the deploy user, who keeps
        # it
    ):
        refuse_other_user(pid)
        legacy = legacy_process(pid)
        node = node_entry(read_pm2(pm2, node_app), node_app)
        print(json.dumps({"format": int(number), "tool": tool, "legacy": legacy, "node": node}))
        return
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "legacy.json")):
        refuse_other_user(pid)
        record(pid, folder, pm2, node_app, {"format": int(number), "tool": tool})
    print("recorded")


if __name__ == "__main__":
    main(sys.argv[1:])
