"""Runs ON THE HOST as root (`sudo python3 - SPEC`): reload Nginx and prove that the reload took.

`nginx -s reload` only signals the master and exits 0 whatever happens next. When the master
cannot apply the new configuration (a port it cannot bind, a certificate it cannot read, ...) it
logs `[emerg]`, keeps its old workers and serves the old configuration. So a reload counts as
taken only when:

- the master named by Nginx's pid file (the `pid` directive of its main configuration, else the
  build's default) has new worker processes, and each worker it had before is gone or told to
  quit (its title says "shutting down": the master only does that once the new configuration is
  in place). An old worker that still holds connections (a WebSocket, a stream, a long request)
  is never waited for: it finishes them, or Nginx closes them after `worker_shutdown_timeout`;
  the connections from clients it holds are counted from /proc (pids this program found itself,
  as children of the master);
- no `[emerg]` line was added to its main error log since the reload;
- if asked, `GET <marker url>` through Nginx answers the new site's id (only the new
  configuration can).

Only the children of that master are watched: other Nginx instances on the machine do not count.

SPEC is JSON: {"cmd": NGINX_RELOAD_CMD, "wait": seconds, "marker": {"url", "host", "expect"} or
null, "conf": main configuration file (optional; default: the build's --conf-path)}. Prints one JSON
line: {"ok", "why", "master", "new", "draining" (old workers still running), "held" (client
connections they hold), "seconds"}; exits 0 if the reload took, 65 if it
did not ("why" quotes Nginx), 66 if Nginx's master could not be found. Standard library only, Python
3.8+.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from typing import Dict, Set

from signalcraft_deploy.remote.proc_sockets import socket_inodes

NGINX_SAYS = re.compile(r"\[(emerg|alert|crit)\].*")


def build_paths():
    """(conf, pid file, error log, prefix) from `nginx -V`'s configure arguments."""
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=30).stderr

    def arg(name, default):
        match = re.search(rf"--{name}=(\S+)", out)
        return match.group(1) if match else default

    prefix = arg("prefix", "/usr/share/nginx")
    return (
        arg("conf-path", "/etc/nginx/nginx.conf"),
        arg("pid-path", "/run/nginx.pid"),
        arg("error-log-path", ""),
        prefix,
    )


def main_directives(conf):
    """The `pid` and first `error_log` of the main context of nginx.conf (outside every block)."""
    found: Dict[str, str] = {}
    depth = 0
    try:
        with open(conf) as fh:
            text = fh.read()
    except OSError:
        return found
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        if depth == 0:
            match = re.match(r"\s*(pid|error_log)\s+([^;\s]+)", code)
            if match and match.group(1) not in found:
                found[match.group(1)] = match.group(2)
        depth += code.count("{") - code.count("}")
    return found


def nginx_paths(conf_override=None):
    conf, pid_file, error_log, prefix = build_paths()
    conf = conf_override or conf
    main = main_directives(conf)
    pid_file, error_log = main.get("pid", pid_file), main.get("error_log", error_log)

    def absolute(path):
        return path if not path or path.startswith("/") else os.path.join(prefix, path)

    plain_file = error_log and not error_log.startswith(("syslog:", "memory:", "stderr"))
    return absolute(pid_file), absolute(error_log) if plain_file else ""


def master_pid(pid_file):
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"nginx: master process" in fh.read():
                return pid
    except (OSError, ValueError):
        pass
    return None


def children(pid):
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def log_size(path):
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def log_since(path, offset):
    """What Nginx logged since `offset` (from the start if the log was rotated meanwhile)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(offset if fh.tell() >= offset else 0)
            return fh.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Root asks one loopback URL and nothing it is sent on to: a redirect is an answer, not a place
    to go."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirects)


def ask_marker(marker):
    req = urllib.request.Request(
        marker["url"], headers={"Host": marker["host"]} if marker.get("host") else {}
    )
    try:
        with OPENER.open(req, timeout=2) as resp:
            return resp.read(200).decode("utf-8", "replace").strip()
    except Exception as err:
        return f"{type(err).__name__}: {err}"


def said(text, levels=("emerg",)):
    return [m.group(0) for m in NGINX_SAYS.finditer(text) if m.group(1) in levels]


def settle(log, offset, deadline):
    """After an [emerg]: wait until the master has given up on this reload (it retries a failed
    bind() for about 2 s, then logs "still could not bind()"), so that a reload after this one
    starts clean.
    """
    size, quiet_since = log_size(log), time.monotonic()
    while time.monotonic() < deadline:
        text = log_since(log, offset)
        if "still could not bind()" in text:
            break
        if log_size(log) != size:
            size, quiet_since = log_size(log), time.monotonic()
        elif time.monotonic() - quiet_since > 0.6:
            break
        time.sleep(0.05)
    return list(
        dict.fromkeys(
            re.sub(r"^\[(\w+)\] [0-9#]+: ", r"[\1] ", m) for m in said(log_since(log, offset))
        )
    )


def retiring(pid):
    """True when an old child is gone, or was told to quit (Nginx titles it "... is shutting
    down")."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"shutting down" in fh.read()
    except OSError:
        return True


def wait_for_workers(master, old, log, offset, deadline):
    """Poll until new workers run and every old one is gone or shutting down, or Nginx logs [emerg];
    returns (new, why)."""
    new: Set[int] = set()
    while True:
        if said(log_since(log, offset)):
            return new, "; ".join(settle(log, offset, deadline + 3)[-3:])
        new = children(master) - old
        if (new and all(retiring(p) for p in old)) or time.monotonic() > deadline:
            return new, ""
        time.sleep(0.02)


def tcp_sockets(pid):
    """(state, local port, inode) of every TCP socket in the network namespace of `pid`."""
    rows = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9:
                rows.append((fields[3], int(fields[1].rsplit(":", 1)[1], 16), fields[9]))
    return rows


def held_connections(master, pids):
    """Client connections the processes `pids` hold: established, on a port the master listens on
    (a worker told to quit has closed its listening sockets; its connections to the apps are on
    other ports)."""
    inodes = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    if not inodes:
        return 0
    rows = tcp_sockets(master)
    ours = socket_inodes(master)
    listening = {port for state, port, inode in rows if state == "0A" and inode in ours}
    return len(
        {
            inode
            for state, port, inode in rows
            if state == "01" and port in listening and inode in inodes
        }
    )


def reload(spec):
    started = time.monotonic()
    pid_file, log = nginx_paths(spec.get("conf"))
    master = master_pid(pid_file)
    if master is None:
        return 66, {
            "ok": False,
            "why": f"no running Nginx master found through its pid file {pid_file}",
        }
    old, offset = children(master), log_size(log)
    failed = send_reload(spec["cmd"])
    if failed:
        return 65, {"ok": False, "why": failed}
    deadline = started + spec["wait"]
    new, why = wait_for_workers(master, old, log, offset, deadline)
    if not why and not new:
        reasons = said(log_since(log, offset), ("emerg", "alert", "crit"))
        why = (
            "; ".join(reasons[-3:])
            or f"the master (pid {master}) started no new workers within {spec['wait']}s"
        )
    if not why and spec.get("marker"):
        why = wait_for_marker(spec["marker"], deadline)
    seconds = round(time.monotonic() - started, 3)
    draining = [p for p in old if os.path.exists(f"/proc/{p}")]
    verdict = {
        "ok": not why,
        "why": why,
        "master": master,
        "new": sorted(new),
        "draining": len(draining),
        "held": held_connections(master, draining),
        "seconds": seconds,
    }
    return (0 if not why else 65), verdict


def send_reload(cmd):
    """Run NGINX_RELOAD_CMD; "" when it exits 0, else why it failed (Nginx's own words)."""
    # one of NGINX_RELOAD_CMD's fixed commands (the root helper checked it): words, never a shell
    try:
        done = subprocess.run(
            shlex.split(cmd),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"{cmd} did not finish within 60s"
    except OSError as err:
        return f"{cmd}: {err.strerror}"
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip()[-800:] or f"exit {done.returncode}"
    return ""


def wait_for_marker(marker, deadline):
    """Ask the marker URL through Nginx until it answers the new site's id: "", or past `deadline`
    what it answers instead."""
    while True:
        answer = ask_marker(marker)
        if answer == marker["expect"]:
            return ""
        late = time.monotonic() > deadline
        time.sleep(0.02)
        if late:
            return "{} answers {!r}, not the new site's id {}".format(
                marker["url"], answer[:120], marker["expect"]
            )


def main(argv):
    code, verdict = reload(json.loads(argv[0]))
    print(json.dumps(verdict))
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
