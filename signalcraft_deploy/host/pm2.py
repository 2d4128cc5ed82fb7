"""PM2: start, reload and check the two apps without restarting what need not be.

- Gunicorn reloads with SIGHUP to its master (the pid PM2 keeps; `pm2 sendSignal` if that fails),
  its graceful reload: the master keeps the socket. PM2's own `reload` of a fork-mode app is a
  stop-then-start that refuses connections.
- A new Gunicorn master (new venv, new PM2 entry) is brought up beside the old one on the
  handover address; Nginx moves to it, the old master drains, the new one takes the usual
  address, Nginx moves back (`handover`).
- Node.js runs in cluster mode, so `pm2 reload --only` is a rolling reload.
- Never `pm2 start` an app that is running: on a running app that is a restart.
- Every PM2 command runs as the apps' own account (APP_USER), under its PM2 daemon
  (host/app_user.py).
"""

from __future__ import annotations

import re
from typing import Any

from signalcraft_deploy.core.render import ECOSYSTEM, ECOSYSTEM_CJS
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.io import fail, q, run


def pm2(s: Settings, *args: str) -> str:
    return " ".join([q(s.pm2), *(q(a) for a in args)])


def ecosystem(s: Settings, name: str = ECOSYSTEM) -> str:
    return f"{s.current_dir}/{name}"


def start_config_command(s: Settings, config: str, only: str = "") -> str:
    """Shell that starts the apps of a PM2 config file as `pm2 start FILE [--only ONLY]` does, through
    the daemon's socket (pm2_rpc.js `start`: PM2's own modules resolve the apps, without the 0.1 s
    of CPU PM2's whole CLI takes to load), or else the CLI (no daemon yet, an app of the file
    already in PM2's list, a PM2 that keeps its modules elsewhere). `config`: the file as one shell
    word (quoted, or a variable).
    """
    rpc_only, cli_only = (f" {q(only)}", f" --only {q(only)}") if only else ("", "")
    return (
        f"P=$(command -v {q(s.pm2)} || echo {q(s.pm2)}) && "
        f'{{ node -e {q(host_facts.PM2_RPC_JS)} "$P" start {config}{rpc_only}; r=$?; '
        f'if [ $r = 3 ]; then "$P" start {config}{cli_only}; else [ $r = 0 ]; fi; }}'
    )


def with_ecosystem(s: Settings, *args: str) -> str:
    """`pm2 <args[0]> <PM2's file in current> <args[1:]>`: the release's own file,
    ecosystem.config.cjs in an ES module package, else ecosystem.config.js; looked up on the host,
    so a switch back finds the older release's.
    """
    verb, rest = args[0], " ".join(q(a) for a in args[1:])
    return (
        f'f={q(ecosystem(s, ECOSYSTEM_CJS))}; [ -e "$f" ] || f={q(ecosystem(s))}; '
        f'{q(s.pm2)} {q(verb)} "$f" {rest}'
    )


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
    """The last lines an app wrote (stdout and stderr), as PM2 kept them, secrets masked."""
    result = run(
        c,
        as_app(c, s, pm2(s, "logs", name, "--raw", "--nostream", "--lines", str(lines))),
        warn=True,
    )
    kept = [
        line
        for line in (result.stdout + "\n" + result.stderr).splitlines()
        if line.strip()
        and not line.startswith("[TAILING]")
        and not line.rstrip().endswith(f"last {lines} lines:")
    ]
    return masked(s, "\n".join(kept[-2 * lines :]))


def start(c: Any, s: Settings, name: str) -> None:
    """`pm2 start <PM2's file in current> --only NAME` (see with_ecosystem), through the daemon's
    socket when it can."""
    command = (
        f'f={q(ecosystem(s, ECOSYSTEM_CJS))}; [ -e "$f" ] || f={q(ecosystem(s))}; '
        + start_config_command(s, '"$f"', name)
    )
    result = run(c, as_app(c, s, command), warn=True)
    if not result.ok:
        raise fail(f"pm2 could not start {name}: {masked(s, result.stderr.strip()[-500:])}")


def hup_python(c: Any, s: Settings, pid_file: str = "") -> None:
    """Gunicorn's graceful reload: SIGHUP to its master.

    With PM2's pid file for the master this is a plain `kill -HUP` (what `pm2 sendSignal` does in
    PM2's daemon, without the 0.1-0.3 s start of PM2's CLI); the file is read at the moment of
    sending, so a master PM2 restarted since the host was read is the one signalled.
    """
    command = pm2(s, "sendSignal", "SIGHUP", s.python_app)
    if pid_file:
        command = (
            f'pid=$(cat {q(pid_file)} 2>/dev/null) && [ -n "$pid" ] '
            "&& tr '\\0' ' ' < /proc/\"$pid\"/cmdline 2>/dev/null | grep -q gunicorn "
            f'&& kill -HUP "$pid" || {command}'
        )
    result = run(c, as_app(c, s, command), warn=True)
    if not result.ok:
        raise fail(
            f"pm2 could not signal {s.python_app}: {masked(s, result.stderr.strip()[-500:])}"
        )


def reload_node(c: Any, s: Settings) -> None:
    # --force skips PM2's CLI-wide reload lock, which also blocks reloads of *other* apps for 30 s
    # (and outlives a killed CLI); our deploy lock already serialises this app, and PM2's daemon
    # still refuses two reloads of the same process.
    result = run(
        c,
        as_app(c, s, with_ecosystem(s, "reload", "--only", s.node_app, "--update-env", "--force")),
        warn=True,
    )
    if not result.ok:
        raise fail(f"pm2 could not reload {s.node_app}: {masked(s, result.stderr.strip()[-500:])}")


def delete_command(s: Settings, *names: str) -> str:
    """Shell that deletes PM2 apps by name, through the daemon's socket (no CLI start) or else the
    CLI."""
    cli = pm2(s, "delete", names[0] if len(names) == 1 else f"/^({'|'.join(names)})$/").split(
        " ", 1
    )[1]
    return host_facts.pm2_rpc_shell(s, "delete", *names, cli=cli)


def delete(c: Any, s: Settings, name: str) -> None:
    run(c, as_app(c, s, delete_command(s, name)), warn=True)


def save(c: Any, s: Settings) -> None:
    """`pm2 save --force` for the apps' account, through the daemon's socket (no CLI start) or else
    the CLI."""
    run(c, as_app(c, s, host_facts.pm2_rpc_shell(s, "save", cli="save --force")), warn=True)


def delete_as_deploy_user(c: Any, s: Settings, *names: str) -> None:
    """Delete apps from the deploy user's own PM2 (where apps ran before they had an account of
    their own)."""
    run(c, delete_command(s, *names), warn=True)


def save_as_deploy_user(c: Any, s: Settings) -> None:
    """Save the deploy user's own PM2 list, empty or not (without --force PM2 keeps the old dump of
    an empty list)."""
    run(c, pm2(s, "save", "--force"), warn=True)


GUNICORN_INFO = re.compile(r"^\[[^]]+\] \[\d+\] \[INFO\] ")


def error_output(c: Any, s: Settings, name: str, lines: int = 60) -> str:
    """What an app wrote to its error stream lately, without Gunicorn's INFO lines (boot, worker
    start and exit), cut to the lines that matter (`output_excerpt` keeps the last error line); ""
    when nothing is left.
    """
    kept = [
        line
        for line in error_tail(c, s, name, lines).splitlines()
        if not GUNICORN_INFO.match(line.strip())
    ]
    return "\n".join(output_excerpt("\n".join(kept))) if kept else ""


def error_tail(c: Any, s: Settings, name: str, lines: int = 20) -> str:
    """The last lines of an app's error stream, secrets masked."""
    result = run(
        c,
        as_app(c, s, pm2(s, "logs", name, "--err", "--raw", "--nostream", "--lines", str(lines))),
        warn=True,
    )
    kept = [
        line
        for line in (result.stdout + "\n" + result.stderr).splitlines()
        if line.strip()
        and not line.startswith("[TAILING]")
        and not line.rstrip().endswith(f"last {lines} lines:")
    ]
    return masked(s, "\n".join(kept[-lines:]))
