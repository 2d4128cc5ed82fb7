"""Runs ON THE HOST as `python3 -I -S -c <this file> list | delete NAME...`: PM2's daemon asked
from Python (pm2_socket.py), as the account whose PM2 it asks.

  list          prints the list `pm2 jlist` prints (the daemon's getMonitorData);
  delete NAME   stops and removes every process of each app NAME, as `pm2 delete NAME` does
                (exit 4 if there is none).
Exits 3 when it cannot (no daemon socket, no answer in time, an answer it cannot read): the caller
then asks through PM2's own client modules (pm2_rpc.js), and then PM2's CLI.
"""

import json
import os
import sys

from signalcraft_deploy.remote.pm2_socket import Pm2Socket, socket_path

CANNOT = 3
NO_APP = 4  # not 1, which a Python that cannot run this program also gives


def delete(daemon: Pm2Socket, names: list) -> int:
    """`pm2 delete NAME...`: every process of each app, one after another."""
    listed = daemon.call("getMonitorData", {})[0]
    ids = [p["pm_id"] for p in listed if p.get("name") in names]
    if not ids:
        print(f"no app named {', '.join(names)}")
        return NO_APP
    for pm_id in ids:
        daemon.call("deleteProcessId", pm_id)
    print(f"deleted {', '.join(names)}")
    return 0


def main(argv: list) -> int:
    op, names = (argv[0] if argv else "list"), argv[1:]
    if op not in ("list", "delete") or not os.path.exists(socket_path()):
        return CANNOT
    try:
        # A delete waits for the apps to exit (up to their kill_timeout); a list answers at once.
        daemon = Pm2Socket(socket_path(), 120 if op == "delete" else 5)
        if op == "list":
            listed = daemon.call("getMonitorData", {})[0]
            if not isinstance(listed, list):
                return CANNOT
            sys.stdout.write(json.dumps(listed, ensure_ascii=False, separators=(",", ":")))
            return 0
        return delete(daemon, names)
    except Exception:
        return CANNOT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
