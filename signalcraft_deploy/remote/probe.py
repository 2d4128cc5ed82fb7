"""Runs ON THE HOST (sent over stdin to `python3 -`): the trial run before a switch, the health
gate after.

Standard library only; pm2_list.py is inlined when it is sent (`signalcraft_deploy.remote.program`).
Reads one JSON argument, prints one JSON line. Never prints environment values: PM2's jlist is
parsed here and only names, pids, states and counts leave the host.

mode "ports": free loopback ports for the trial run (which PM2 starts; see steps/trial.run_trial).

mode "gate": after the switch, wait (up to a deadline) until every URL answers 2xx/3xx, every
PM2 app is online with a restart count that is not climbing, and the processes that answer
run from the new release (their working directory), and any X-Release header names it.
With "await_go" the gate is started ahead of the switch: it prints `ready` once Python and its
connection to PM2 are up, and checks when a line `go` arrives on stdin.
"""

import json
import os
import select
import socket
import subprocess
import sys
import time

from signalcraft_deploy.remote.pm2_list import pm2_processes
from signalcraft_deploy.remote.pm2_socket import Pm2Socket, daemon_list, socket_path
from signalcraft_deploy.remote.proc_sockets import socket_inodes


def tls_context(host_header):
    """HTTPS to our own Nginx on this host: the name sent (SNI) is the site's, the certificate is
    checked by nginx-check, not here (a loopback address is not among its names)."""
    import ssl  # here, not above: the modes that fetch nothing start faster without it

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if host_header:
        wrap = ctx.wrap_socket
        # Every socket this context wraps sends the site's name (http.client would send the address).
        ctx.wrap_socket = lambda sock, *a, **k: wrap(  # type: ignore[method-assign]
            sock, *a, **{**k, "server_hostname": host_header}
        )
    return ctx


def fetch(url, host_header=None, timeout=3.0):
    import urllib.error
    import urllib.request

    # X-Signalcraft-Health: while the site is in maintenance mode, the tool's own checks from the
    # host itself reach every path (a health route that is '/', one a deploy moves): PROBE_HEADER.
    headers = {"X-Signalcraft-Health": "1", **({"Host": host_header} if host_header else {})}
    req = urllib.request.Request(url, headers=headers)
    ctx = tls_context(host_header) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, releases_named(resp.headers), ""
    except urllib.error.HTTPError as err:
        return err.code, releases_named(err.headers), ""
    except Exception as err:  # connection refused, reset, timeout
        return 0, None, f"{type(err).__name__}: {err}"


def releases_named(headers):
    """The release an answer names: Gunicorn's workers name the one their code was imported from
    (X-Signalcraft-Release, added by the rendered gunicorn.conf.py), an app may name its own
    (X-Release); the first that differs from the other wins a comparison, so both are kept."""
    named = [headers.get("X-Signalcraft-Release"), headers.get("X-Release")]
    return [r for r in named if r] or None


def ports(spec):
    """Free loopback ports for a trial run (held open together, so they differ)."""
    socks = []
    for _ in range(spec["count"]):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    found = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return {"ports": found}


def pm2_jlist(pm2, rpc_js=None):
    """PM2's process list as `pm2 jlist` prints it: from the daemon's socket (from Python, else
    rpc_js) when it can, else the CLI."""
    listed = daemon_list()
    if listed is not None:
        return json.dumps(listed)
    try:
        if rpc_js:
            import shutil  # here, as below: only where the socket could not be asked (5 ms)

            found = shutil.which(pm2)
            if found:
                done = subprocess.run(
                    ["node", "-e", rpc_js, found, "list"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if done.returncode == 0:
                    return done.stdout
        return subprocess.run([pm2, "jlist"], capture_output=True, text=True, timeout=30).stdout
    except Exception:
        return ""


def by_name(text):
    """name -> [{pid, status, restarts, mode}] from a jlist text."""
    apps: dict[str, list[dict]] = {}  # (local: never evaluated, Python 3.8 too)
    for proc in pm2_processes(text) or []:
        apps.setdefault(proc["name"], []).append(
            {
                "pid": proc["pid"],
                "status": proc["status"],
                "restarts": proc["restarts"],
                "mode": proc["exec_mode"],
            }
        )
    return apps


def pm2_state(pm2, rpc_js=None):
    """PM2's apps: name -> [{pid, status, restarts, mode}]."""
    return by_name(pm2_jlist(pm2, rpc_js))


class Pm2Watch:
    """PM2's list asked many times over one connection to its daemon: from Python (pm2_socket.py),
    else through pm2_rpc.js watch (one Node.js start for a whole gate instead of one a question,
    started at once, so that the start overlaps the first URL checks); when neither can answer (no
    daemon socket, PM2's modules elsewhere, no answer in 10 s) each question goes to pm2_state.
    """

    def __init__(self, pm2, rpc_js):
        self.pm2, self.rpc_js, self.proc, self.pending = pm2, rpc_js, None, False
        self.daemon, self.asked = None, None
        try:
            self.daemon = Pm2Socket(socket_path(), 10)
            return
        except Exception:
            self.daemon = None
        import shutil

        found = shutil.which(pm2) if rpc_js else None
        if found:
            try:
                self.proc = subprocess.Popen(
                    ["node", "-e", rpc_js, found, "watch"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError:
                self.proc = None

    def ask(self):
        """Send a question now; `state()` takes its answer (so the daemon works while the caller
        does)."""
        if self.daemon is not None and self.asked is None:
            try:
                self.asked = self.daemon.send("getMonitorData", {})
            except Exception:
                self.close()
        if self.proc is not None and not self.pending:
            assert self.proc.stdin is not None  # stdin=PIPE
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.pending = True
            except OSError:
                self.close()

    def state(self):
        self.ask()
        if self.daemon is not None and self.asked is not None:
            try:
                listed = self.daemon.answer(self.asked)[0]
                self.asked = None
                return by_name(json.dumps(listed))
            except Exception:
                self.close()
        if self.proc is not None:
            assert self.proc.stdout is not None  # stdout=PIPE
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            line = self.proc.stdout.readline() if ready else ""
            self.pending = False
            if line.strip():
                return by_name(line)
            self.close()
        return pm2_state(self.pm2, self.rpc_js)

    def close(self):
        if self.daemon is not None:
            self.daemon.close()
            self.daemon, self.asked = None, None
        if self.proc is not None:
            proc, self.proc = self.proc, None
            assert proc.stdin is not None  # stdin=PIPE
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def cwd_of(pid):
    try:
        return os.path.realpath(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def url_problems(spec):
    """What the URLs say: (problems, final) where final means an app itself answered with an error
    (fail_fast)."""
    problems = []
    for check in spec["urls"]:
        status, release, err = fetch(check["url"], check.get("host"))
        if not status or status >= 400:
            problems.append(f"{check['label']} {check['url']}: {err or status}")
            if status and spec.get("fail_fast"):  # a direct answer from the app itself is final
                return problems, True
            continue
        claims = [release] if isinstance(release, str) else (release or [])
        if check.get("expect_release") and any(r != spec["release"] for r in claims):
            other = next(r for r in claims if r != spec["release"])
            problems.append(
                f"{check['label']} {check['url']}: answered by release {other}, not"
                f" {spec['release']}"
            )
    return problems, False


def established(port):
    """The socket inodes of the established TCP connections whose local port is `port`: the
    requests a server on that port holds (IPv4 and IPv6; this network namespace's)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "01" and fields[1].endswith(f":{port:04X}"):
                found.add(fields[9])
    return found


class Drain:
    """Gunicorn's old workers after a reload. One that holds requests (connections on Gunicorn's
    port) and has taken no new one since the gate first saw it is draining: it finishes requests
    begun before the reload, and the gate waits for it up to `limit` seconds (graceful_timeout)
    from its start, not longer. One that holds none is stale (an old worker exits at once when it
    is idle), and so is one that took a new request: it still serves the old release.
    """

    def __init__(self, limit, port):
        self.limit, self.port, self.start = limit, port, time.monotonic()
        self.held = {}  # pid -> the connections it held when first seen
        self.requests = set()  # every connection seen on an old worker
        self.draining = []  # the old workers draining at the last look

    def sort(self, old_pids):
        """(draining, stale) of the old workers `old_pids`, by what they hold now."""
        now_open = established(self.port)
        draining, stale = [], []
        for pid in old_pids:
            holds = socket_inodes(pid) & now_open
            first = self.held.setdefault(pid, set(holds))
            if holds and holds <= first:
                draining.append(pid)
                self.requests |= holds
            else:
                stale.append(pid)
        self.draining = draining
        return draining, stale

    def waiting(self):
        """Old workers still drain and their time is not up: the gate looks again."""
        return bool(self.draining) and time.monotonic() - self.start < self.limit

    def report(self):
        if not self.requests:
            return None
        return {
            "seconds": round(time.monotonic() - self.start, 1),
            "requests": len(self.requests),
            "left": len(self.draining),
            "limit": self.limit,
        }


def stale_workers(app, pids, release_dir, drains):
    """The old-release processes of `app` that fail the gate (an app with a Drain: only those not
    draining)."""
    old = [pid for pid in pids if cwd_of(pid) != release_dir]
    drain = drains.get(app["name"])
    if drain is None or not old:
        if drain is not None:
            drain.draining = []
        return old
    return drain.sort(old)[1]


def pm2_problems(spec, state, first, release_dir, drains=None):
    """What PM2 says of the apps: (problems, final) where final means every process of an app has
    stopped (fail_fast)."""
    problems = []
    for app in spec["apps"]:
        procs = state.get(app["name"], [])
        if not procs or any(p["status"] != "online" for p in procs):
            problems.append(f"PM2 app {app['name']} is {[p['status'] for p in procs] or 'missing'}")
            if (
                spec.get("fail_fast")
                and procs
                and all(p["status"] in ("stopped", "errored") for p in procs)
            ):
                return problems, True
            continue
        before = sum(p["restarts"] for p in first.get(app["name"], []))
        after = sum(p["restarts"] for p in procs)
        if before and after > before + 1:
            problems.append(f"PM2 app {app['name']} is restarting ({before} -> {after} restarts)")
        pids = [p["pid"] for p in procs]
        if app.get("workers"):
            pids = [kid for pid in pids for kid in children(pid)] or pids
        stale = stale_workers(app, pids, release_dir, drains or {})
        if stale:
            problems.append(
                f"PM2 app {app['name']}: {len(stale)} process(es) still run from another release"
            )
    return problems, False


def gate(spec):
    """Poll until the URLs answer from the release and PM2 shows the apps online on it. PM2 is asked
    when the URLs pass and, while they do not, every half second (to see a crash early)."""
    watch = Pm2Watch(spec["pm2"], spec.get("pm2_rpc_js"))
    try:
        if spec.get("await_go"):  # started ahead: say so, and check only when told to
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                return {
                    "ok": False,
                    "problems": ["the health gate was started but not asked to check"],
                }
        return gate_with(spec, watch)
    finally:
        watch.close()


def gate_with(spec, watch):
    start = time.monotonic()
    deadline = start + spec["timeout"]
    release_dir = os.path.realpath(spec["release_dir"])
    drains = {a["name"]: Drain(a["drain"], a["port"]) for a in spec["apps"] if a.get("drain")}
    # A trial app does not restart: no count to compare.
    first: dict | None = {} if spec.get("fail_fast") else None
    if first is None:
        watch.ask()  # the count the restarts are compared with, read while the URLs are checked
    problems, asked, state = ["not checked yet"], time.monotonic(), {}
    while time.monotonic() < deadline:
        problems, final = url_problems(spec)
        if final:
            return {"ok": False, "problems": problems}
        if not problems or time.monotonic() - asked >= 0.5 or time.monotonic() + 0.05 >= deadline:
            if first is None:
                first = watch.state()
            asked = time.monotonic()
            state = watch.state()
            more, final = pm2_problems(spec, state, first, release_dir, drains)
            problems += more
            if final:
                return {"ok": False, "problems": problems}
            if not problems and not any(d.waiting() for d in drains.values()):
                return passed(spec, state, drains)
            if not problems:  # only old workers finishing their requests: wait for them
                deadline = max(deadline, max(d.start + d.limit for d in drains.values()))
                time.sleep(0.45)
        time.sleep(0.05)
    if not problems:  # the drain's time ran out: what is left is the master's to end
        return passed(spec, state, drains)
    return {"ok": False, "problems": problems}


def passed(spec, state, drains):
    verdict = {
        "ok": True,
        "problems": [],
        "pm2": {name: state.get(name, []) for name in spec.get("report", [])},
    }
    drained = {name: d.report() for name, d in drains.items() if d.report()}
    if drained:
        verdict["drain"] = drained
    return verdict


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def status(spec):
    """Memory of each PM2 process and of its children (Gunicorn's workers), and each URL's
    answer."""
    memory = {}
    for pid in spec["pids"]:
        kids = children(pid)
        memory[str(pid)] = {
            "master_kb": rss_kb(pid),
            "workers": len(kids),
            "workers_kb": sum(rss_kb(k) for k in kids),
        }
    urls = {}
    for check in spec["urls"]:
        code, release, err = fetch(check["url"], check.get("host"))
        urls[check["label"]] = {
            "url": check["url"],
            "status": code,
            "release": release[0] if release else None,
            "error": err,
        }
    return {"memory": memory, "urls": urls}


def main(argv):
    spec = json.loads(argv[0])
    modes = {"ports": ports, "gate": gate, "status": status}
    print(json.dumps(modes[spec["mode"]](spec)))


if __name__ == "__main__":
    main(sys.argv[1:])
