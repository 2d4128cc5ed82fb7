"""`exec` and `console`: a command, or an interactive session, in the live release's environment
(its folder, its venv first on PATH, APP_ENV_FILE's values, as APP_USER): host/in_release.py.

`exec` takes the command with --command LINE or after `--` (the executor hands the remainder of
the command line to it, executor.py); given several hosts (-H a,b) it runs on each in turn, each
line of output labelled with its host, and fails if any failed, naming them. `console` opens one
session on one host, on a terminal.
"""

from __future__ import annotations

import sys
from typing import Any

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from signalcraft_deploy.core.secrets import masker_for
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.fleet_hosts import fleet_aware, fleet_hosts
from signalcraft_deploy.host.in_release import (
    FAILED,
    Mode,
    Shown,
    command_line,
    needs_terminal,
    open_console,
    run_in_release,
)
from signalcraft_deploy.host.io import Interrupted, fail, target_name


@fleet_aware
@task(
    iterable=["set_"],
    help={
        **HOST_HELP,
        "command": "the shell line to run (or give the command after --: exec -- flask routes)",
    },
)
def exec_(
    c: Context,
    command: str | None = None,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Run a command in the live release: its folder, venv, APP_ENV_FILE's values, as APP_USER."""
    s = settings_for(env_file, set_, environment)
    line = command_line(command)
    if not line:
        raise Exit(
            "exec needs a command: `exec -- flask routes`, or --command 'flask routes'.", code=2
        )
    hosts = fleet_hosts(c)
    if len(hosts) == 1:
        code = one_host(c, s, line, known_hosts, accept_new_host, label=None)
        if code:
            raise fail(masker_for(s)(verdict(line, code, target_name(c))), code=code)
        return
    failed = [
        (h, code)
        for h in hosts
        if (code := one_host(h, s, line, known_hosts, accept_new_host, label=h.original_host))
    ]
    if failed:
        names = ", ".join(f"{h.original_host} (exit {code})" for h, code in failed)
        raise fail(
            masker_for(s)(f"`{line}` failed on {len(failed)} of {len(hosts)} hosts: {names}."),
            code=failed[0][1],
        )


exec_.remainder_to = "command"  # `exec -- LINE`: executor.py


def one_host(
    c: Any,
    s: Settings,
    line: str,
    known_hosts: str | None,
    accept_new_host: bool,
    label: str | None,
) -> int:
    """Run the line on one host, its output shown (labelled when there are several); its status.
    Several hosts: one that cannot be reached is a failure of its own, and the others still run."""
    out, err = Shown(sys.stdout, label), Shown(sys.stderr, label)
    mask = masker_for(s)
    where = f"{label} ({target_name(c)})" if label else target_name(c)
    print(mask(f"exec on {where} as {s.app_user}: {line}"), file=sys.stderr, flush=True)
    try:
        open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        return run_in_release(c, s, line, out, err)
    except Exit as stop:
        if label is None or isinstance(stop, Interrupted):
            raise
        print(f"{label} | {mask(str(stop.message))}", file=sys.stderr, flush=True)
        return int(stop.code) or 1
    finally:
        out.end()
        err.end()


def verdict(line: str, code: int, where: str) -> str:
    if code == FAILED:
        return f"`{line}` could not be started on {where} (see the line above)."
    return f"`{line}` exited with status {code} on {where}."


@fleet_aware
@task(
    iterable=["set_"],
    help={**HOST_HELP, "node": "a Node.js REPL instead of the Python shell"},
)
def console(
    c: Context,
    node: bool = False,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Open a shell in the live release, on a terminal: `flask shell` (or python), or --node's REPL."""
    s = settings_for(env_file, set_, environment)
    if len(fleet_hosts(c)) > 1:
        raise Exit("console opens one session: give one host with -H.", code=2)
    needs_terminal()
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    mode = Mode.NODE if node else Mode.PYTHON
    print(f"console on {target_name(c)} as {s.app_user} ({mode}); Ctrl-D ends it.", flush=True)
    code = open_console(c, s, mode)
    if code:
        raise fail(f"The console ended with status {code}.", code=code)


ns = Collection()
ns.add_task(exec_, name="exec")
ns.add_task(console)
