"""Runs ON THE HOST as `python3 -I -S -c <this file> list | delete NAME... | save`: PM2's daemon
asked from Python (pm2_socket.py), as the account whose PM2 it asks.

  list          prints the list `pm2 jlist` prints (the daemon's getMonitorData);
  delete NAME   stops and removes every process of each app NAME, as `pm2 delete NAME` does
                (exit 4 if there is none);
  save          writes the list to $PM2_HOME/dump.pm2 as `pm2 save --force` does (the same
                text, the old dump kept as dump.pm2.bak), through a temporary file and a rename.
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


def save(daemon: Pm2Socket) -> int:
    """PM2's own dump (lib/API/Startup.js `dump`), as pm2_rpc.js `save` writes it: each process's
    pm2_env without instances, pm_id and prev_restart_delay, PM2's modules left out, in
    JSON.stringify's text with an indent of 2."""
    listed = daemon.call("getMonitorData", {})[0]
    drop = ("instances", "pm_id", "prev_restart_delay")
    entries = [
        {k: v for k, v in p["pm2_env"].items() if k not in drop}
        for p in listed
        if p.get("pm2_env") and not p["pm2_env"].get("pmx_module")
    ]
    text = json.dumps(entries, indent=2, ensure_ascii=False, allow_nan=False)
    # Both write a float as its shortest repr, but in exponent form from other bounds (Python
    # 1e-05, JavaScript 0.00001): such a float leaves the dump to pm2_rpc.js.
    if any(isinstance(v, float) and v and not 1e-4 <= abs(v) < 1e16 for v in numbers(entries)):
        return CANNOT
    dump = os.path.join(os.path.dirname(socket_path()), "dump.pm2")
    if os.path.exists(dump):
        import shutil  # here: a list or delete (most asks) does without its 5 ms import

        shutil.copyfile(dump, dump + ".bak")
    temporary = f"{dump}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
    os.rename(temporary, dump)
    print(f"saved {len(entries)} process(es) in {dump}")
    return 0


def numbers(value: object) -> list:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def main(argv: list) -> int:
    op, names = (argv[0] if argv else "list"), argv[1:]
    if op not in ("list", "delete", "save") or not os.path.exists(socket_path()):
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
        return save(daemon) if op == "save" else delete(daemon, names)
    except Exception:
        return CANNOT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
