"""PM2: start, reload and check the two apps without restarting what need not be.

- Gunicorn reloads with SIGHUP to its master (the pid PM2 keeps; `pm2 sendSignal` if that fails),
  its graceful reload: the master keeps the socket. PM2's own `reload` of a fork-mode app is a
  stop-then-start that refuses connections.
- A new Gunicorn master (new venv, new PM2 entry) is brought up beside the old one on the
  handover address; Nginx moves to it, the old master drains, the new one takes the usual
  address, Nginx moves back (`handover`).
- Node.js runs in cluster mode, so `pm2 reload --only` is a rolling reload.
- Never `pm2 start` an app that is running: on a running app that is a restart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Collection, task

from tasks import facts as host_facts
from tasks.connect import COMMON_HELP, open_host, settings_for
from tasks.hostio import Background, fail, q, run, sudo, write_file_command
from tasks.nginx import install_site, reload_nginx
from tasks.output import Reporter
from tasks.render import node_entry, python_entry, render_nginx_site
from tasks.settings import Settings

PROBE_SCRIPT = (Path(__file__).parent / "probe_script.py").read_text()


def pm2(s: Settings, *args: str) -> str:
    return " ".join([q(s.pm2), *(q(a) for a in args)])


def ecosystem(s: Settings) -> str:
    return f"{s.current_dir}/ecosystem.config.js"


def probe(c: Any, s: Settings, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the host-side probe (canary or gate) and return its JSON verdict."""
    result = run(c, f"{q(s.python)} - {q(json.dumps(spec))}", stdin=PROBE_SCRIPT, warn=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise fail(f"The health probe could not run on the host: {result.stderr.strip()[-500:]}") from None


def trial_names(s: Settings) -> tuple[str, str]:
    return f"{s.app_name}-python-trial", f"{s.app_name}-nodejs-trial"


def canary(c: Any, s: Settings, release: str, release_dir: str, venv: str,
           kinds: tuple[str, ...] = ("python", "nodejs"), present: set[str] | None = None) -> Background | None:
    """Trial run before any switch: the new release's apps under PM2, with their real entries, on spare ports.

    Started by PM2 exactly as they will be (same interpreter, script, environment), a commit that
    fails to import, crashes on start, crashes only under PM2, or answers its health route with an
    error is caught here, while the live release keeps serving. `kinds` names the apps to try
    (an app about to be handed over is tried on the handover address instead); `present` is PM2's
    app names as last read, to skip deleting trial apps that are not there. A passed trial's apps
    are being stopped when this returns: the returned command is to be waited for.
    """
    py_port, node_port = probe(c, s, {"mode": "ports", "count": 2})["ports"]
    py_name, node_name = trial_names(s)
    apps, urls, watch = [], [], []
    if "python" in kinds:
        py, _ = handover_entry(s, "python", venv, release_dir)
        py.update(name=py_name, args=py["args"][:-1] + [f"127.0.0.1:{py_port}", "--workers", "1"])
        apps.append(py)
        urls.append({"label": s.python_app, "url": f"http://127.0.0.1:{py_port}{s.health_py}", "expect_release": True})
        watch.append({"name": py_name, "workers": True})
    if "nodejs" in kinds:
        node, _ = handover_entry(s, "nodejs", venv, release_dir)
        # Fork mode: PM2 loses a cluster worker's start-up exception, and its message is what the user needs.
        node.update(name=node_name, instances=1, exec_mode="fork", env={**node["env"], "PORT": str(node_port)})
        apps.append(node)
        urls.append({"label": s.node_app, "url": f"http://127.0.0.1:{node_port}{s.health_node}", "expect_release": True})
        watch.append({"name": node_name})
    if not apps:
        return None
    names = [a["name"] for a in apps]
    config = f"{s.state_dir}/trial.config.json"
    leftovers = present is None or bool(set(trial_names(s)) & present)
    start_trial = (f"mkdir -p {q(s.state_dir)} && {write_file_command(config, '0600')} && "
                   + (f"{{ {delete_command(s, *trial_names(s))} >/dev/null 2>&1; true; }} && " if leftovers else "")
                   + pm2(s, "start", config))
    run(c, start_trial, stdin=json.dumps({"apps": apps}, indent=2), warn=True)
    problems = probe(c, s, {"mode": "gate", "timeout": s.health_timeout, "pm2": s.pm2, "pm2_rpc_js": host_facts.PM2_RPC_JS,
                            "release": release, "release_dir": release_dir, "urls": urls, "apps": watch,
                            "fail_fast": True}).get("problems", [])
    if not problems:
        return Background(c, f"{delete_command(s, *trial_names(s))} >/dev/null 2>&1; true")
    logs = {name: app_output(c, s, name) for name in names}
    run(c, f"{delete_command(s, *trial_names(s))} >/dev/null 2>&1; true", warn=True)
    if problems:
        lines = [f"  {p}" for p in problems]
        for name, text in logs.items():
            if text.strip():
                lines.append(f"  output of {name}:\n    " + "\n    ".join(output_excerpt(text)))
        raise fail("The new release failed its trial run, so nothing was switched and the live release keeps serving.\n"
                   + "\n".join(lines) + "\nFix the app and deploy again.")


ERROR_LINE = re.compile(r"^\S*(Error|Exception)\b.*:|^\S+Error$")


def output_excerpt(text: str, lines: int = 15) -> list[str]:
    """The last lines of an app's output, and its last error line if that is further up.

    Several Gunicorn workers failing at once write several tracebacks and boot lines: the line
    that names the cause (`ModuleNotFoundError: ...`) must not be cut off.
    """
    all_lines = [line for line in text.splitlines() if line.strip()]
    tail = all_lines[-lines:]
    errors = [line for line in all_lines if ERROR_LINE.search(line.strip())]
    if errors and errors[-1] not in tail:
        return [errors[-1], "..."] + tail
    return tail


def app_output(c: Any, s: Settings, name: str, lines: int = 60) -> str:
    """The last lines an app wrote (stdout and stderr), as PM2 kept them."""
    result = run(c, pm2(s, "logs", name, "--raw", "--nostream", "--lines", str(lines)), warn=True)
    kept = [line for line in (result.stdout + "\n" + result.stderr).splitlines()
            if line.strip() and not line.startswith("[TAILING]") and not line.rstrip().endswith(f"last {lines} lines:")]
    return "\n".join(kept[-2 * lines:])


def gate(c: Any, s: Settings, release: str, release_dir: str, checked: dict[str, bool],
         report: dict[str, Any] | None = None) -> list[str]:
    """After a switch: wait until the apps answer, directly and through Nginx, from the new release.

    `report`, if given, receives PM2's state of both apps as the passing check saw it.
    """
    host = s.server_name.split()[0] if s.server_name != "_" else None
    nginx = f"http://127.0.0.1:{s.nginx_listen}"
    py, node = bool(checked.get("python")), bool(checked.get("nodejs"))
    # Only the apps just (re)loaded must answer from the new release; the others keep theirs.
    urls = [
        {"label": "Gunicorn", "url": f"http://{s.gunicorn_bind}{s.health_py}", "expect_release": py},
        {"label": "Node.js", "url": f"http://127.0.0.1:{s.node_port}{s.health_node}", "expect_release": node},
        {"label": "Nginx -> Gunicorn", "url": nginx + s.health_py, "host": host, "expect_release": py},
        {"label": "Nginx -> Node.js", "url": nginx + s.health_node, "host": host, "expect_release": node},
    ]
    apps = ([{"name": s.python_app, "workers": True}] if py else []) + ([{"name": s.node_app}] if node else [])
    return gate_on(c, s, release, release_dir, urls, apps, report=report)


def gate_on(c: Any, s: Settings, release: str, release_dir: str, urls: list[dict[str, Any]], apps: list[dict[str, Any]],
            fail_fast: bool = False, report: dict[str, Any] | None = None) -> list[str]:
    spec = {"mode": "gate", "timeout": s.health_timeout, "pm2": s.pm2, "pm2_rpc_js": host_facts.PM2_RPC_JS, "release": release,
            "release_dir": release_dir, "urls": urls, "apps": apps, "fail_fast": fail_fast,
            "report": [s.python_app, s.node_app] if report is not None else []}
    verdict = probe(c, s, spec)
    if report is not None:
        report.update(verdict.get("pm2") or {})
    return verdict.get("problems", [])


def start(c: Any, s: Settings, name: str) -> None:
    result = run(c, pm2(s, "start", ecosystem(s), "--only", name), warn=True)
    if not result.ok:
        raise fail(f"pm2 could not start {name}: {result.stderr.strip()[-500:]}")


def hup_python(c: Any, s: Settings, pid_file: str = "") -> None:
    """Gunicorn's graceful reload: SIGHUP to its master.

    With PM2's pid file for the master this is a plain `kill -HUP` (what `pm2 sendSignal` does in
    PM2's daemon, without the 0.1-0.3 s start of PM2's CLI); the file is read at the moment of
    sending, so a master PM2 restarted since the host was read is the one signalled.
    """
    command = pm2(s, "sendSignal", "SIGHUP", s.python_app)
    if pid_file:
        command = (f"pid=$(cat {q(pid_file)} 2>/dev/null) && [ -n \"$pid\" ] "
                   "&& tr '\\0' ' ' < /proc/\"$pid\"/cmdline 2>/dev/null | grep -q gunicorn "
                   f"&& kill -HUP \"$pid\" || {command}")
    result = run(c, command, warn=True)
    if not result.ok:
        raise fail(f"pm2 could not signal {s.python_app}: {result.stderr.strip()[-500:]}")


def reload_node(c: Any, s: Settings) -> None:
    # --force skips PM2's CLI-wide reload lock, which also blocks reloads of *other* apps for 30 s
    # (and outlives a killed CLI); our deploy lock already serialises this app, and PM2's daemon
    # still refuses two reloads of the same process.
    result = run(c, pm2(s, "reload", ecosystem(s), "--only", s.node_app, "--update-env", "--force"), warn=True)
    if not result.ok:
        raise fail(f"pm2 could not reload {s.node_app}: {result.stderr.strip()[-500:]}")


def delete_command(s: Settings, *names: str) -> str:
    """Shell that deletes PM2 apps by name, through the daemon's socket (no CLI start) or else the CLI."""
    cli = pm2(s, "delete", names[0] if len(names) == 1 else f"/^({'|'.join(names)})$/").split(" ", 1)[1]
    return host_facts.pm2_rpc_shell(s, "delete", *names, cli=cli)


def delete(c: Any, s: Settings, name: str) -> None:
    run(c, delete_command(s, name), warn=True)


def save(c: Any, s: Settings) -> None:
    run(c, pm2(s, "save", "--force"), warn=True)


def error_tail(c: Any, s: Settings, name: str, lines: int = 20) -> str:
    result = run(c, pm2(s, "logs", name, "--err", "--raw", "--nostream", "--lines", str(lines)), warn=True)
    kept = [line for line in (result.stdout + "\n" + result.stderr).splitlines()
            if line.strip() and not line.startswith("[TAILING]") and not line.rstrip().endswith(f"last {lines} lines:")]
    return "\n".join(kept[-lines:])


def handover_entry(s: Settings, kind: str, venv: str, release_dir: str) -> tuple[dict[str, Any], str]:
    """The PM2 entry of the temporary app that serves while `kind`'s processes are replaced, and its address.

    It runs straight from the release directory (not `current`), so `current` can be switched only
    once the old processes get no more traffic.
    """
    if kind == "python":
        entry = python_entry(s, venv)
        address = str(s.gunicorn_handover_bind)
        entry.update(name=s.handover_app, cwd=release_dir, exec_mode="fork",
                     args=["-c", f"{release_dir}/gunicorn.conf.py", "--chdir", release_dir, "--bind", address],
                     env={**entry["env"], "SIGNALCRAFT_CHDIR": release_dir})
    else:
        entry = node_entry(s)
        address = f"127.0.0.1:{s.node_handover_port}"
        entry.update(name=s.node_handover_app, cwd=release_dir, script=f"{release_dir}/{s.node_script}", exec_mode="cluster",
                     env={**entry["env"], "PORT": str(s.node_handover_port)})
    entry.update(autorestart=False)
    return entry, address


def wait_drained(c: Any, port: int, seconds: int = 10) -> None:
    """Wait (bounded) until no connection to a local port is open: nothing is in flight there any more."""
    run(c, f"i=0; while [ $i -lt {seconds * 50} ] && ss -tnH state established '( sport = :{port} )' | grep -q .; "
           "do sleep 0.02; i=$((i+1)); done", warn=True)


def handover(c: Any, s: Settings, kind: str, release: str, release_dir: str, venv: str, reporter: Reporter,
             stop_old: Callable[[], None] | None = None, switch: Callable[[], None] | None = None,
             present: set[str] | None = None) -> Background | None:
    """Replace an app's processes without refusing a connection: a second copy takes the traffic meanwhile.

    1. start the new release as a temporary PM2 app on the handover address, check it;
    2. point Nginx's upstream at it (nginx -t, graceful reload that waits for the old workers);
    3. switch `current` (if asked), wait until the old processes have no connection left, stop them;
    4. start the app under its own name and address from `current`, check it;
    5. point Nginx back, graceful reload, and start stopping the temporary app: that stop is
       returned, to be waited for (`.wait()`) before PM2's list is saved.
    If step 4 fails, Nginx stays on the temporary app (the new release, healthy) and the error is
    raised: the caller brings the previous release back and then calls `end_handover`.
    """
    entry, address = handover_entry(s, kind, venv, release_dir)
    name = s.python_app if kind == "python" else s.node_app
    health = s.health_py if kind == "python" else s.health_node
    config = f"{s.state_dir}/handover-{kind}.config.json"
    # A temporary app left by an interrupted deploy goes first; `pm2 start` on a running app would restart it.
    leftover = present is None or entry["name"] in present
    run(c, write_file_command(config, "0600")
        + (f" && {{ {delete_command(s, entry['name'])} >/dev/null 2>&1; true; }}" if leftover else "")
        + f" && {pm2(s, 'start', config)}", stdin=json.dumps({"apps": [entry]}, indent=2))
    # autorestart is off for this app, so a crash shows as stopped/errored at once: fail fast.
    problems = gate_on(c, s, release, release_dir, [{"label": "handover", "url": f"http://{address}{health}", "expect_release": True}],
                       [{"name": entry["name"], "workers": kind == "python"}], fail_fast=True)
    if problems:
        output = app_output(c, s, entry["name"])
        delete(c, s, entry["name"])
        shown = ("\n  output of the new processes:\n    " + "\n    ".join(output_excerpt(output))) if output.strip() else ""
        raise fail(f"The new {name} did not come up on the handover address {address}: " + "; ".join(problems) + shown)
    reporter.say(f"     {name}: new processes answer on {address}; Nginx moves to them")
    site_for = {"python_address": address} if kind == "python" else {"node_address": address}
    install_site(c, s, render_nginx_site(s, **site_for), backup=False)
    reload_nginx(c, s)
    if switch:
        switch()
    # PM2 stops apps with SIGINT (it has no per-app kill signal), Gunicorn's quick shutdown: harmless
    # only once nothing is in flight, which Nginx's drained reload and this wait make sure of.
    wait_drained(c, s.gunicorn_bind.port if kind == "python" else s.node_port)
    (stop_old or (lambda: delete(c, s, name)))()
    start(c, s, name)
    problems = gate(c, s, release, release_dir, {kind: True})
    if problems:
        raise fail(f"{name} did not come up on its own address after the handover: " + "; ".join(problems))
    return end_handover(c, s, kind, background=True)


def end_handover(c: Any, s: Settings, kind: str, background: bool = False) -> Background | None:
    """Point Nginx back at the apps' own addresses and stop the temporary app once it is drained.

    With `background`, the stop (0.5 s: PM2 waits for Gunicorn to exit) is left running and
    returned; the caller overlaps it with the health check and waits before `pm2 save`.
    """
    install_site(c, s, render_nginx_site(s), backup=False)
    reload_nginx(c, s)
    wait_drained(c, s.gunicorn_handover_bind.port if kind == "python" else s.node_handover_port)
    stop = delete_command(s, s.handover_app if kind == "python" else s.node_handover_app)
    if background:
        return Background(c, stop)
    run(c, stop, warn=True)
    return None


def stop_unmanaged(c: Any, s: Settings, pid: int) -> Callable[[], None]:
    """Stop a server PM2 does not know (the plan's bare `python app.py &`) once Nginx no longer sends to it."""
    def stop() -> None:
        script = "\n".join([
            f"pid={pid}",
            "kill -TERM $pid 2>/dev/null || exit 0",
            f"i=0; while kill -0 $pid 2>/dev/null && [ $i -lt {s.gunicorn_graceful_timeout * 10} ]; do sleep 0.1; i=$((i+1)); done",
            "kill -KILL $pid 2>/dev/null; true",
        ])
        run(c, sudo(f"sh -c {q(script)}"))
    return stop


@task(iterable=["set_"], help={**COMMON_HELP})
def pm2_reload(c, env_file=None, set_=None):
    """Bring both PM2 apps to the current release: start what is stopped, HUP Gunicorn, roll Node.js, save."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    facts, release_dir = host_facts.live_release(c, s)
    venv = (facts.manifest or {}).get("venv")
    if not venv:
        raise fail(f"{s.current_dir} has no manifest; run `deploy` to make a release.")
    trial_stop = canary(c, s, facts.current_release, release_dir, venv)
    if trial_stop:
        trial_stop.wait()
    checked = {"python": True, "nodejs": True}
    if facts.online(s.python_app):
        hup_python(c, s)
        print(f"{s.python_app}: graceful reload (SIGHUP)")
    else:
        start(c, s, s.python_app)
        print(f"{s.python_app}: started")
    if facts.online(s.node_app):
        reload_node(c, s)
        print(f"{s.node_app}: rolling reload")
    else:
        start(c, s, s.node_app)
        print(f"{s.node_app}: started")
    problems = gate(c, s, facts.current_release, release_dir, checked)
    if problems:
        raise fail("Apps are not healthy after the reload:\n  " + "\n  ".join(problems))
    save(c, s)
    print("pm2 save: done")


pm2_reload.__name__ = "pm2-reload"
ns = Collection(pm2_reload)
