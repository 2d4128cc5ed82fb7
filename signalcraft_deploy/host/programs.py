"""Running the programs of signalcraft_deploy/remote/ on the host: the one way each kind is sent.

The program's text goes on stdin, its arguments on the command line, each quoted with
`shlex.quote`; nothing is copied to the host first.

- `name.py`: `PYTHON - ARGS...` (with `remote.program`'s inlined dependencies);
- `name.sh`: `sh -c "$(cat)" name.sh ARGS...`: the shell reads the whole text first, so the
  program's own stdin is empty, as for a command sent without input;
- a program that waits (`start_waiting`): `PYTHON -c "$(head -c BYTES)" ARGS...`: the program's
  text is the first BYTES of stdin, and what comes after it is the program's own input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.io import Waiting, is_remote, q, run
from signalcraft_deploy.remote import program, script


def program_command(s: Settings, name: str, *args: str) -> tuple[str, str]:
    """The command line that runs remote/`name` with `args`, and the text to send on its stdin."""
    stem, _, kind = name.rpartition(".")
    if kind == "py":
        command, text = f"{q(s.python)} -I -S -", program(stem)
    elif kind == "sh":
        command, text = f'sh -c "$(cat)" {q(name)}', script(stem)
    else:
        raise ValueError(f"not a remote program: {name} (expected name.py or name.sh)")
    command = " ".join([command, *(q(str(a)) for a in args)])
    return command, text


def run_program(
    c: Any,
    s: Settings,
    name: str,
    *args: str,
    warn: bool = False,
    on_line: Callable[[str], None] | None = None,
    app: bool = False,
) -> Any:
    """Run remote/`name` on the host as the deploy user (with `app`, as the apps' own account) and
    return the result; `on_line` receives each line of its output as it comes. (Root runs only the
    installed helper: host/root.py.)"""
    command, text = program_command(s, name, *args)
    return run(c, as_app(c, s, command) if app else command, stdin=text, warn=warn, on_line=on_line)


def waiting_command(s: Settings, name: str, *args: str) -> tuple[str, str]:
    """The command line that runs the Python program remote/`name` with `args` and leaves its stdin
    to it, and the text to send first on that stdin (the program itself)."""
    text = program(name.removesuffix(".py"))
    return (
        " ".join(
            [
                f'{q(s.python)} -I -S -c "$(head -c {len(text.encode())})"',
                *(q(str(a)) for a in args),
            ]
        ),
        text,
    )


def start_waiting(c: Any, s: Settings, name: str, *args: str, app: bool = False) -> Waiting | None:
    """Start remote/`name` (a Python program that prints `ready`, then reads a line) to be told to
    go later (with `app`, as the apps' own account); None where that cannot be done (not over SSH),
    and the caller then runs it in the usual way."""
    if not is_remote(c) or not name.endswith(".py"):
        return None
    command, text = waiting_command(s, name, *args)
    return Waiting(c, as_app(c, s, command) if app else command, text)
