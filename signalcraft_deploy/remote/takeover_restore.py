"""Runs ON THE HOST as root (`sudo python3 - FOLDER PM2 SITE OWNER SITE_LINK`, text on stdin).

Brings back what takeover_record.py saved in FOLDER: starts the unmanaged server again as its
user, with its command line, directory and environment (output to FOLDER/legacy.log, in a new
session); starts the old PM2 entry of the Node.js app (`sudo -u OWNER -H PM2 start`, from a 0600
config file owned by OWNER); puts the old Nginx site SITE back, or removes SITE and SITE_LINK if
there was none. Prints one JSON line: {"pid": ..., "alive": ...} a second after the start.
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

    log = open(log_path, "ab")
    return subprocess.Popen(legacy["argv"], cwd=legacy["cwd"], env=legacy["env"], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=demote)


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


def main(argv: List[str]) -> None:
    folder, pm2, site, owner, site_link = argv
    with open(os.path.join(folder, "legacy.json")) as fh:
        record = json.load(fh)
    proc = start_legacy(record["legacy"], os.path.join(folder, "legacy.log"))
    if record.get("node"):
        start_node(record["node"], folder, pm2, owner)
    put_site_back(record, folder, site, site_link)
    time.sleep(1)
    print(json.dumps({"pid": proc.pid, "alive": proc.poll() is None}))


if __name__ == "__main__":
    main(sys.argv[1:])
