"""The sockets a process holds open, read from /proc: the one reader, for the health gate's drain
(probe.py, as the apps' account) and Nginx's reload check (reload_nginx.py, as root).

Standard library only, Python 3.8+, nothing run at import: programs sent to the host get this
file inlined (see `signalcraft_deploy.remote.program`).
"""

import os


def socket_inodes(pid: int) -> "set[str]":
    """The inodes of the sockets process `pid` holds open (empty when its fds cannot be read)."""
    found: set[str] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found
