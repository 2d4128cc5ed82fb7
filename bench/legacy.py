"""A legacy host: the host as the plan found it, before any tool. One builder for the takeover
benchmarks (bench/downtime.py) and the takeover tests (tests/e2e/test_takeover.py,
test_nginx_sites.py).

In a copy of the example app (its venv made by the caller, from whatever index the host has): Flask
run bare as `python app.py` (the plan's `nohup python app.py &`), Node.js under PM2 in fork mode
from a Node-only `ecosystem.config.js`, and a hand-made Nginx site sending the Flask routes to the
bare server and the rest to Node.js. The pieces are shell: `start_script` runs as the app's user,
`site_script` as root.
"""

from __future__ import annotations

import shlex
from pathlib import Path

q = shlex.quote

BARE_COMMAND = "venv/bin/python app.py"
PY_ROUTES = "api/ai|api/iot|api/lightweight-analyze|api/flask"


def node_only_ecosystem(name: str, port: int) -> str:
    """The host's PM2 file before the plan: Node.js only, fork mode (PM2's default), PORT from the
    environment."""
    return (
        "module.exports = { apps: [ { name: '" + name + "', script: 'server.js', "
        f"env_production: {{ NODE_ENV: 'production', PORT: {port} }} }} ] }};\n"
    )


def legacy_site(
    listen: str | int, bind_port: int, node_port: int, comment: str = "", tls: str = ""
) -> str:
    """The hand-made site: `listen <listen>` (a port, or an address:port), the Python routes to the
    bare server on 127.0.0.1:<bind_port>, the rest to Node.js. `tls`, if given, is a second server's
    head lines (its `listen ... ssl` and certificate lines), as certbot leaves a site."""
    body = (
        f"    location ~ ^/({PY_ROUTES}) {{\n        proxy_pass http://127.0.0.1:{bind_port};\n   "
        f" }}\n    location / {{\n        proxy_pass http://127.0.0.1:{node_port};\n    }}\n"
    )
    text = (
        f"# {comment}\n" if comment else ""
    ) + f"server {{\n    listen {listen};\n    server_name _;\n{body}}}\n"
    if tls:
        text += f"server {{\n{tls.rstrip()}\n    server_name _;\n{body}}}\n"
    return text


def start_script(
    directory: str, node_app: str, bind_port: int, bare_command: str = BARE_COMMAND
) -> str:
    """Shell, as the app's user: Node.js started under PM2 from the directory's ecosystem.config.js,
    and the bare Python server on `bind_port`, detached (every stream to a file, so an ssh that runs
    this returns at once).
    """
    d = q(directory)
    return "\n".join(
        [
            "set -e",
            f"cd {d}",
            f"pm2 delete {q(node_app)} >/dev/null 2>&1 || true",
            "pm2 start ecosystem.config.js --env production >/dev/null",
            f"PORT={bind_port} setsid nohup {bare_command} > {d}/legacy.log 2>&1 < /dev/null &",
            "echo bare=$!",
        ]
    )


def site_script(site: str, text: str, sudo: str = "") -> str:
    """Shell, as root (or a user with `sudo` given as "sudo -n "): the site written and enabled,
    Nginx reloaded."""
    link = str(Path(site).parent.parent / "sites-enabled" / Path(site).name)
    return "\n".join(
        [
            "set -e",
            f"{sudo}tee {q(site)} >/dev/null <<'LEGACY_SITE_EOF'",
            text.rstrip("\n"),
            "LEGACY_SITE_EOF",
            f"{sudo}ln -sfn {q(site)} {q(link)}",
            f"{sudo}nginx -t 2>&1 && {sudo}nginx -s reload",
        ]
    )


def bare_pids_script(directory: str) -> str:
    """Shell: the pids of the user's bare `python ... app.py` servers whose working directory is
    `directory`."""
    return (
        f"for pid in $(pgrep -u \"$(id -un)\" -f 'python.*app\\.py'); do "
        f'[ "$(readlink /proc/$pid/cwd)" = {q(directory)} ] && echo $pid; done; true'
    )
