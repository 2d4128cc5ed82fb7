"""Runs ON THE HOST as root (`sudo python3 - FOLDER PM2 SITE OWNER SITE_LINK READS TOOL`, text on stdin).

Brings back what takeover_record.py saved in FOLDER: starts the unmanaged server again as its
user, with its command line, directory and environment (output to FOLDER/legacy.log, in a new
session); starts the old PM2 entry of the Node.js app (`sudo -u OWNER -H PM2 start`, from a 0600
config file owned by OWNER); puts the old Nginx site SITE back, or removes SITE and SITE_LINK if
there was none. A record in a format newer than READS (the newest that TOOL reads; a record
without a format is format 1) is left alone: exit 1 naming the version that wrote it, nothing
changed. So is a record root cannot trust: one not owned by the user this runs as (root), or a
link, or one whose process was not OWNER's (root starts only the deploy user's own process again).
The process gets a login's basics for its user (HOME, USER, LOGNAME, SHELL, PATH) under the
variables it had. Its output goes to FOLDER/legacy.log, mode 0600. Prints one JSON line:
{"pid": ..., "alive": ...} a second after the start; nothing of the record is printed.
Standard library only.
"""

import json
import os
import pwd
import subprocess
import sys
import time
from typing import Any, Dict, List


def start_legacy(legacy: Dict[str, Any], log_path: str) -> "subprocess.Popen[bytes]":
    """Start the recorded process as its user (groups, then uid), detached from us."""
    user = pwd.getpwnam(legacy["user"])

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.initgroups(user.pw_name, user.pw_gid)
        os.setuid(user.pw_uid)

    base = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": user.pw_shell or "/bin/sh",
            "PATH": "/usr/local/bin:/usr/bin:/bin"}
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an older version's log was 0644
    with os.fdopen(fd, "ab") as log:
        return subprocess.Popen(legacy["argv"], cwd=legacy["cwd"], env={**base, **legacy["env"]}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=demote)


def start_node(node: Dict[str, Any], folder: str, pm2: str, owner: str) -> None:
    cfg = os.path.join(folder, "node.config.json")
    with open(cfg, "w") as fh:
        json.dump({"apps": [node]}, fh)
    os.chown(cfg, pwd.getpwnam(owner).pw_uid, -1)
    os.chmod(cfg, 0o600)
    subprocess.run(["sudo", "-u", owner, "-H", pm2, "start", cfg], capture_output=True)


def put_site_back(record: Dict[str, Any], folder: str, site: str, site_link: str) -> None:
    if record.get("site_existed"):
        with open(os.path.join(folder, "nginx-site"), "rb") as src, open(site, "wb") as dst:
            dst.write(src.read())
        return
    for path in (site, site_link):
        if path and os.path.lexists(path):
            os.remove(path)


def check_format(record: Dict[str, Any], reads: int, tool: str) -> None:
    """Exit (nothing changed) if the record is in a format this version of the tool cannot read."""
    number = record.get("format", 1)
    if isinstance(number, int) and 1 <= number <= reads:
        return
    writer = record.get("tool", "a newer signalcraft-deploy")
    sys.exit(f"the takeover record is in format {number!r}, written by {writer}; this is {tool}, which reads formats "
             f"up to {reads}. Upgrade the tool (pip install -U signalcraft-deploy) and run again; nothing was changed.")


def check_trusted(folder: str, record: Dict[str, Any], owner: str) -> None:
    """Exit (nothing changed) unless the record is root's own and its process was OWNER's."""
    path = os.path.join(folder, "legacy.json")
    for where in (folder, path):
        info = os.lstat(where)
        if os.path.islink(where) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            sys.exit(f"{where} is not root's own (owner uid {info.st_uid}, mode {oct(info.st_mode & 0o777)}): it may have "
                     "been edited since the takeover, or an older version wrote it. Check it, make it root's "
                     f"(sudo chown -R root: {folder} && sudo chmod 0600 {path}) and run again; nothing was changed.")
    user = (record.get("legacy") or {}).get("user")
    if user != owner:
        sys.exit(f"the recorded process ran as {user!r}, not as {owner}: root starts again only the deploy user's own "
                 "process. Start it yourself as that user; nothing was changed.")


def main(argv: List[str]) -> None:
    folder, pm2, site, owner, site_link, reads, tool = argv
    with open(os.path.join(folder, "legacy.json")) as fh:
        record = json.load(fh)
    check_format(record, int(reads), tool)
    check_trusted(folder, record, owner)
    proc = start_legacy(record["legacy"], os.path.join(folder, "legacy.log"))
    if record.get("node"):
        start_node(record["node"], folder, pm2, owner)
    put_site_back(record, folder, site, site_link)
    time.sleep(1)
    print(json.dumps({"pid": proc.pid, "alive": proc.poll() is None}))


if __name__ == "__main__":
    main(sys.argv[1:])
