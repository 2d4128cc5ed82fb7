"""PM2: start, reload and check the two apps without restarting what need not be.

- Gunicorn reloads with `pm2 sendSignal SIGHUP` (its graceful reload: the master keeps the
  socket); PM2's own `reload` of a fork-mode app is a stop-then-start that refuses connections.
- A new Gunicorn master (new venv, new PM2 entry) is brought up beside the old one on the
  handover address; Nginx moves to it, the old master drains, the new one takes the usual
  address, Nginx moves back (`handover`).
- Node.js runs in cluster mode, so `pm2 reload --only` is a rolling reload.
- Never `pm2 start` an app that is running: on a running app that is a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from invoke import Collection, task

from tasks import facts as host_facts
from tasks.connect import COMMON_HELP, open_host, settings_for
from tasks.hostio import fail, q, run, write_file
from tasks.nginx import install_site, reload_nginx
from tasks.output import Reporter
from tasks.render import python_entry, render_nginx_site
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


def canary(c: Any, s: Settings, release_dir: str, venv: str) -> None:
    """Start the new release's apps on free ports and call their health routes, before any switch."""
    spec = {
        "mode": "canary",
        "timeout": s.health_timeout,
        "log_dir": f"{s.state_dir}",
        "apps": {
            s.python_app: {
                "argv": [f"{venv}/bin/gunicorn", "-c", f"{release_dir}/gunicorn.conf.py", "--chdir", release_dir,
                         "--bind", "127.0.0.1:{port}", "--workers", "1"],
                "cwd": release_dir, "health": s.health_py, "env": {"PYTHONUNBUFFERED": "1", "SIGNALCRAFT_CHDIR": release_dir},
            },
            s.node_app: {
                "argv": ["node", f"{release_dir}/{s.node_script}"],
                "cwd": release_dir, "health": s.health_node, "env": {"NODE_ENV": s.node_env},
            },
        },
    }
    results = probe(c, s, spec)
    failed = {name: r for name, r in results.items() if not r.get("ok")}
    if failed:
        lines = []
        for name, r in failed.items():
            lines.append(f"{name}: {r['why']}")
            if r.get("log"):
                lines.append("  its output:\n    " + "\n    ".join(r["log"].splitlines()[-15:]))
        raise fail("The new release failed its trial run, so nothing was switched and the live release keeps serving.\n"
                   + "\n".join(lines) + "\nFix the app and deploy again.")


def gate(c: Any, s: Settings, release: str, release_dir: str, checked: dict[str, bool],
         python_address: str | None = None) -> list[str]:
    """After a switch: wait until the apps answer, directly and through Nginx, from the new release."""
    host = s.server_name.split()[0] if s.server_name != "_" else None
    nginx = f"http://127.0.0.1:{s.nginx_listen}"
    py_direct = f"http://{python_address or s.gunicorn_bind}{s.health_py}"
    py, node = bool(checked.get("python")), bool(checked.get("nodejs"))
    # Only the apps just (re)loaded must answer from the new release; the others keep theirs.
    urls = [
        {"label": "Gunicorn", "url": py_direct, "expect_release": py},
        {"label": "Node.js", "url": f"http://127.0.0.1:{s.node_port}{s.health_node}", "expect_release": node},
        {"label": "Nginx -> Gunicorn", "url": nginx + s.health_py, "host": host, "expect_release": py},
        {"label": "Nginx -> Node.js", "url": nginx + s.health_node, "host": host, "expect_release": node},
    ]
    apps = ([{"name": s.python_app, "workers": True}] if py else []) + ([{"name": s.node_app}] if node else [])
    spec = {"mode": "gate", "timeout": s.health_timeout, "pm2": s.pm2, "release": release,
            "release_dir": release_dir, "urls": urls, "apps": apps}
    return probe(c, s, spec).get("problems", [])


def start(c: Any, s: Settings, name: str) -> None:
    result = run(c, pm2(s, "start", ecosystem(s), "--only", name), warn=True)
    if not result.ok:
        raise fail(f"pm2 could not start {name}: {result.stderr.strip()[-500:]}")


def hup_python(c: Any, s: Settings) -> None:
    result = run(c, pm2(s, "sendSignal", "SIGHUP", s.python_app), warn=True)
    if not result.ok:
        raise fail(f"pm2 could not signal {s.python_app}: {result.stderr.strip()[-500:]}")


def reload_node(c: Any, s: Settings) -> None:
    # --force skips PM2's CLI-wide reload lock, which also blocks reloads of *other* apps for 30 s
    # (and outlives a killed CLI); our deploy lock already serialises this app, and PM2's daemon
    # still refuses two reloads of the same process.
    result = run(c, pm2(s, "reload", ecosystem(s), "--only", s.node_app, "--update-env", "--force"), warn=True)
    if not result.ok:
        raise fail(f"pm2 could not reload {s.node_app}: {result.stderr.strip()[-500:]}")


def delete(c: Any, s: Settings, name: str) -> None:
    run(c, pm2(s, "delete", name), warn=True)


def restart_node(c: Any, s: Settings) -> None:
    delete(c, s, s.node_app)
    start(c, s, s.node_app)


def save(c: Any, s: Settings) -> None:
    run(c, pm2(s, "save", "--force"), warn=True)


def error_tail(c: Any, s: Settings, name: str, lines: int = 20) -> str:
    result = run(c, pm2(s, "logs", name, "--err", "--raw", "--nostream", "--lines", str(lines)), warn=True)
    kept = [line for line in result.stdout.splitlines()
            if line.strip() and not line.startswith("[TAILING]") and not line.rstrip().endswith(f"last {lines} lines:")]
    return "\n".join(kept[-lines:])


def handover(c: Any, s: Settings, release: str, release_dir: str, venv: str, reporter: Reporter) -> None:
    """Replace the Gunicorn master without refusing a connection: a second master takes the traffic meanwhile."""
    entry = python_entry(s, venv)
    entry.update(name=s.handover_app, args=entry["args"] + ["--bind", str(s.gunicorn_handover_bind)],
                 exec_mode="fork", autorestart=False, kill_signal="SIGTERM")
    config = f"{s.state_dir}/handover.config.json"
    write_file(c, config, json.dumps({"apps": [entry]}, indent=2), "0600")
    delete(c, s, s.handover_app)
    run(c, pm2(s, "start", config))
    problems = gate(c, s, release, release_dir, {}, python_address=str(s.gunicorn_handover_bind))
    if problems:
        delete(c, s, s.handover_app)
        raise fail("The new Gunicorn master did not come up on the handover address "
                   f"{s.gunicorn_handover_bind}: " + "; ".join(problems))
    reporter.say(f"     new master answers on {s.gunicorn_handover_bind}; moving Nginx to it")
    install_site(c, s, render_nginx_site(s, python_address=str(s.gunicorn_handover_bind)), backup=False)
    reload_nginx(c, s)
    try:
        delete(c, s, s.python_app)  # SIGTERM: the old master finishes its requests
        start(c, s, s.python_app)
        problems = gate(c, s, release, release_dir, {"python": True})
        if problems:
            raise fail("The new Gunicorn master did not come up on " f"{s.gunicorn_bind}: " + "; ".join(problems))
    finally:
        install_site(c, s, render_nginx_site(s), backup=False)
        reload_nginx(c, s)
    delete(c, s, s.handover_app)


@task(iterable=["set_"], help={**COMMON_HELP})
def pm2_reload(c, env_file=None, set_=None):
    """Bring both PM2 apps to the current release: start what is stopped, HUP Gunicorn, roll Node.js, save."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    facts = host_facts.gather(c, s)
    if not facts.current_release:
        raise fail(f"No release at {s.current_dir}: run `deploy` first.")
    release_dir = f"{s.releases_dir}/{facts.current_release}"
    venv = (facts.manifest or {}).get("venv")
    if not venv:
        raise fail(f"{s.current_dir} has no manifest; run `deploy` to make a release.")
    canary(c, s, release_dir, venv)
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
