"""Runs ON THE HOST as the deploy user (`python3 - FOLDER PM2 READS TOOL [check]`, text on stdin).

Brings back the processes takeover_record.py saved in FOLDER: starts the unmanaged server again with
its command line, directory and environment (output to FOLDER/legacy.log, 0600, in a new session),
and the old PM2 entry of the Node.js app (`PM2 start` of a 0600 config file). A record in a format
newer than READS (the newest that TOOL reads; a record without a format is format 1) is left alone:
exit 1 naming the version that wrote it, nothing changed. So is a record of another user's process.
A server of the apps' own account (the deploy user marked its record `ran_as`) is started again as
that account: this runs as it then, FOLDER relative to its home, where the deploy user copied the
record. Both are the running user's own processes: no root is involved (the old Nginx site is put
back by the root helper's takeover-restore, from root's own copy). The process gets a login's basics
(HOME, USER, LOGNAME, SHELL, PATH) under the variables it had. Prints one JSON line: {"pid": ...,
"alive": ...} a second after the start; nothing of the record is printed. With `check`, only the
record is read and checked (exit 0, nothing started) and the account it is started as is printed, so
the caller stops its apps only when the record can be restored. Standard library only.
"""

import json
import os
import pwd
import subprocess
import sys
import time
from typing import Any, Dict, List


def start_legacy(legacy: Dict[str, Any], log_path: str) -> "subprocess.Popen[bytes]":
    """Start the recorded process, detached from us."""
    user = pwd.getpwuid(os.getuid())
    base = {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": user.pw_shell or "/bin/sh",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log:
        return subprocess.Popen(
            legacy["argv"],
            cwd=legacy["cwd"],
            env={**base, **legacy["env"]},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_node(node: Dict[str, Any], folder: str, pm2: str) -> None:
    cfg = os.path.join(folder, "node.config.json")
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"apps": [node]}, fh)
    subprocess.run([pm2, "start", cfg], capture_output=True, timeout=120)


def check_format(record: Dict[str, Any], reads: int, tool: str) -> None:
    """Exit (nothing changed) if the record is in a format this version of the tool cannot read."""
    number = record.get("format", 1)
    if isinstance(number, int) and 1 <= number <= reads:
        return
    writer = record.get("tool", "a newer signalcraft-deploy")
    sys.exit(
        f"the takeover record is in format {number!r}, written by {writer}; this is {tool}, which"
        f" reads formats up to {reads}. Upgrade the tool (pip install -U signalcraft-deploy) and"
        " run again; nothing was changed."
    )


def owner(record: Dict[str, Any]) -> str:
    """The account the recorded process is started again as: `ran_as`, the deploy user's own mark on
    a record the apps' account made of its own server (the record's `user` is then that account's
    word, never trusted), else the record's user, which must be this user. Exit (nothing changed)
    otherwise."""
    me = pwd.getpwuid(os.getuid()).pw_name
    if "ran_as" in record:
        return str(record["ran_as"])
    user = (record.get("legacy") or {}).get("user")
    if user != me:
        sys.exit(
            f"the recorded process ran as {user!r}, not as this user: only the deploy user's own"
            " process is started again. Start it yourself as that user; nothing was changed."
        )
    return me


def main(argv: List[str]) -> None:
    folder, pm2, reads, tool = argv[:4]
    if not os.path.isabs(
        folder
    ):  # as the apps' own account: a folder of its home (its working folder), made here
        os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(os.path.join(folder, "legacy.json")) as fh:
        record = json.load(fh)
    check_format(record, int(reads), tool)
    account = owner(record)
    if argv[4:] == ["check"]:
        print(account)
        return
    if account != pwd.getpwuid(os.getuid()).pw_name:
        sys.exit(
            f"the recorded process is started again as {account!r}, not as this user; nothing was"
            " changed."
        )
    proc = start_legacy(record["legacy"], os.path.join(folder, "legacy.log"))
    if record.get("node"):
        start_node(record["node"], folder, pm2)
    time.sleep(1)
    print(json.dumps({"pid": proc.pid, "alive": proc.poll() is None}))


if __name__ == "__main__":
    main(sys.argv[1:])
