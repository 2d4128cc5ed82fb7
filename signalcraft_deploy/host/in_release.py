"""In the live release: a command (`exec`) or an interactive console, in the apps' environment.

The program remote/in_release.py, given as an argument to the host's python3 (a console's stdin is
the operator's terminal), run as APP_USER through the app helper (host/app_user.py's `as_app`, the
door hooks already use: the deploy user gains nothing it did not have, and root is not involved).
It resolves `current`, changes to that release, and execs the command with the release's venv first
on PATH and the app's values in its environment, read from the release's own files on the host.

The command's output is passed on as it comes, not masked: it is the output the user asked for, of
a command the deploy user could already run, and masking works on whole lines (a progress bar, a
prompt or a binary stream would stall or break). What the tool itself prints around it (the header,
the verdicts) is masked. Output bound for a terminal is made `visible` (escape sequences shown,
not obeyed): the command runs as the apps' account, whose data must not drive the operator's
terminal; a pipe or a file gets the bytes as they are.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TextIO

from signalcraft_deploy.core.secrets import visible
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.app_user import as_app, runs_as_deploy_user
from signalcraft_deploy.host.io import attached, fail, q, run
from signalcraft_deploy.remote import program

FAILED = 125  # remote/in_release.py could not start the command (it said why on stderr)


class Mode(StrEnum):
    """What runs in the release; the values are remote/in_release.py's."""

    EXEC = "exec"
    PYTHON = "python"
    NODE = "node"


def in_release_command(c: Any, s: Settings, mode: Mode, command: str | None = None) -> str:
    """Shell (as the deploy user) that runs remote/in_release.py as APP_USER."""
    spec = {
        "current": s.current_dir,
        "mode": str(mode),
        "command": command,
        "wsgi_app": s.wsgi_app,
        "node_env": s.node_env,
    }
    line = f"{q(s.python)} -I -S -c {q(program('in_release'))} {q(json.dumps(spec))}"
    return as_app(c, s, line)


def check_app_door(c: Any, s: Settings) -> None:
    """Stop with one message when the deploy user cannot run a command as APP_USER (a host set up
    before APP_USER, or for another deploy user), before the user's command is tried."""
    if runs_as_deploy_user(c, s):
        return
    door = run(c, as_app(c, s, "true"), warn=True)
    if not door.ok:
        raise fail(
            f"The deploy user cannot run commands as the apps' account {s.app_user} (APP_USER):"
            f" {door.stderr.strip()[-300:] or 'sudo refused'}. An admin's `setup --user"
            " DEPLOY_USER` with these settings gives it that (the sudoers drop-in's app helper)."
        )


def run_in_release(c: Any, s: Settings, line: str, out: Any, err: Any) -> int:
    """Run a shell line in the live release; its output to `out`/`err` as it comes; its status."""
    check_app_door(c, s)
    return attached(c, in_release_command(c, s, Mode.EXEC, line), out=out, err=err)


def open_console(c: Any, s: Settings, mode: Mode) -> int:
    """An interactive session in the live release, on a terminal; its exit status."""
    check_app_door(c, s)
    return attached(c, in_release_command(c, s, mode), pty=True)


def command_line(command: str | None, remainder: list[str] | None = None) -> str | None:
    """The shell line to run: --command as it is; after `--`, one word is a shell line as written
    (`exec -- 'flask init-db && flask seed'`), several are a program and its arguments, each kept
    as it was given (`exec -- python -c 'import sys; print(sys.path)'`)."""
    if remainder:
        return remainder[0] if len(remainder) == 1 else shlex.join(remainder)
    return command or None


class Shown:
    """A stream for a command's output: each write passed on at once, made `visible` when it goes
    to a terminal; with a `label` (several hosts), whole lines, each prefixed `label | `."""

    def __init__(self, stream: TextIO, label: str | None = None):
        self.stream, self.label = stream, label
        self.show: Callable[[str], str] = visible if _is_terminal(stream) else str
        self.pending = ""

    def write(self, text: str) -> int:
        if self.label is None:
            self.stream.write(self.show(text))
        else:
            *lines, self.pending = (self.pending + text).split("\n")
            for line in lines:
                self.stream.write(f"{self.label} | {self.show(line)}\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:  # the runner flushes after each chunk: a partial line waits
        self.stream.flush()

    def end(self) -> None:
        """The command ended: a last line without a newline is written too."""
        if self.label is not None and self.pending:
            self.stream.write(f"{self.label} | {self.show(self.pending)}\n")
            self.pending = ""
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def needs_terminal() -> None:
    """Stop with one message when this process has no terminal for a console: stdin and stdout a
    terminal, and this process in its foreground (Fabric's runner passes no key on otherwise, and
    the session would wait for ever)."""
    try:
        ready = sys.stdin.isatty() and sys.stdout.isatty()
        ready = ready and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):  # not this process's controlling terminal
        ready = False
    if not ready:
        raise fail(
            "console needs a terminal, and to run in its foreground (start it from a shell in a"
            " terminal, not from a pipe, CI or in the background); to run one command, use exec."
        )
