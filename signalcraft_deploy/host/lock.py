"""One deploy at a time per host, and the audit log of every deploy and rollback.

The lock is an `flock` held by a command on the host whose stdin is our SSH channel: when this
process ends or the connection drops, the command sees end-of-file and the lock is released. A
lock file whose holder died without cleaning up is taken over with a warning; a live lock is
broken only by `unlock --force`, which is logged.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core import formats
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import ConnectionLost, HeldCommand, fail, q, run, target_name

BUSY = 75
RETAKE_WAIT = 10  # seconds a reconnect waits for the deploy lock its lost session held


def who() -> dict[str, str]:
    """Who is deploying: the local user and, in GitHub Actions, the actor and run."""
    info = {"user": getpass.getuser(), "from": socket.gethostname()}
    for key in ("GITHUB_ACTOR", "GITHUB_RUN_ID", "GITHUB_REPOSITORY"):
        if os.environ.get(key):
            info[key.lower()] = os.environ[key]
    return info


def who_text(info: dict[str, Any]) -> str:
    text = f"{info.get('user', '?')}@{info.get('from', '?')}"
    if info.get("github_actor"):
        text += f" (GitHub {info['github_actor']}, run {info.get('github_run_id', '?')})"
    return text


END = "@@signalcraft-end"


def lock_script(s: Settings, info: dict[str, Any], wait: int, then: str = "") -> str:
    """Take the lock (or say who holds it), run `then` (a read of the host, say) and hold the lock
    until stdin closes."""
    d = q(s.state_dir)
    return "\n".join(
        [
            # the marker `unlock --force` checks before it signals anyone
            ": signalcraft-deploy-lock",
            # DEPLOY_ROOT and any folder above it made now: 0755, so the apps' own account can reach
            # its releases
            f"(umask 022 && mkdir -p {q(s.deploy_root)}) || exit 1",
            # The deploy user's own PM2 home is closed to every other account, the apps' own among
            # them (PM2 makes it 0755 under a 022 umask, and its dump.pm2 and logs hold the
            # environments of the apps it ran), unless the apps run as the deploy user itself.
            (
                f'[ "$(id -un)" = {q(s.app_user)} ] || {{ h="${{PM2_HOME:-$HOME/.pm2}}"; [ ! -d'
                ' "$h" ] || [ -L "$h" ] || chmod 0700 "$h"; } || :'
            ),
            "umask 077",  # lock, lock.json, lock.pid and audit.log: the deploy user's only
            f"mkdir -p {d} && cd {d} || exit 1",
            "exec 9>>lock",
            "if ! flock -n 9; then",
            "  echo HELD; cat lock.json 2>/dev/null; echo",
            f"  if [ {wait} -le 0 ] || ! flock -w {wait} 9; then echo BUSY; exit {BUSY}; fi",
            "fi",
            "if [ -s lock.json ]; then echo STALE; cat lock.json; echo; fi",
            f"printf '%s\\n' {q(json.dumps(formats.stamp(formats.LOCK, info)))} > lock.json",
            "echo $$ > lock.pid",
            "echo LOCKED",
            *(
                [then, "echo", f"echo {END}"] if then else []
            ),  # END on a line of its own, whatever `then` printed last
            "cat > /dev/null",  # hold the lock until our stdin (the SSH channel) closes
            "rm -f lock.json lock.pid",
        ]
    )


class DeployLock:
    """The deploy lock, held from `__enter__` to `__exit__`; `then` runs on the host once it is
    taken (in the same SSH channel: the deploy reads the host there), its output read by
    `read_then()`."""

    def __init__(
        self,
        c: Any,
        s: Settings,
        info: dict[str, Any],
        wait: int,
        say: Any,
        warn: Any,
        then: str = "",
    ):
        self.held = HeldCommand(c, lock_script(s, info, wait, then))
        self.c, self.s, self.say, self.warn, self.wait, self.info = c, s, say, warn, wait, info
        self.holder = ""

    def __enter__(self) -> DeployLock:
        self.held.start()
        holder = self.holder = ""
        while True:
            line = self.held.readline()
            if not line:
                lost = self.held.lost()
                self.held.release()
                if lost:
                    raise ConnectionLost(target_name(self.c))
                raise fail(
                    f"Could not take the deploy lock in {self.s.state_dir} on"
                    f" {target_name(self.c)}: the lock command ended early (is flock installed and"
                    " the deploy root writable?)."
                )
            line = line.strip()
            if line == "LOCKED":
                _HELD[id(self.c)] = self
                return self
            if line == "HELD":
                holder = self.holder = self.held.readline().strip()
                if self.wait > 0:
                    self.say(
                        f"Another deploy holds the lock: {describe_holder(holder)}; waiting up to"
                        f" {self.wait}s..."
                    )
            elif line == "BUSY":
                self.held.release()
                raise fail(
                    f"Another deploy is running on {target_name(self.c)}:"
                    f" {describe_holder(holder)}. Wait for it (--lock-wait SECONDS), or if it is"
                    " stuck, run `unlock --force`.",
                    code=BUSY,
                )
            elif line == "STALE":
                stale = self.held.readline().strip()
                self.warn(
                    f"took over a lock left by a deploy that is gone: {describe_holder(stale)}"
                )

    def read_then(self) -> str:
        """The output of `then`, which the host prints as soon as the lock is taken."""
        lines: list[str] = []
        while True:
            line = self.held.readline()
            if not line:
                lost = self.held.lost()
                self.held.release()
                if lost:
                    raise ConnectionLost(target_name(self.c))
                raise fail(
                    f"Reading {target_name(self.c)} under the deploy lock ended early; nothing was"
                    " changed."
                )
            if line.rstrip("\n") == END:
                return "".join(lines)
            lines.append(line)

    def __exit__(self, *exc: Any) -> None:
        if _HELD.get(id(self.c)) is self:
            del _HELD[id(self.c)]
        self.held.release()

    def retake(self) -> str | None:
        """After the connection was lost and made again: the lock once more, at once, on the new
        connection, so that the undo runs under it; else why not (another deploy took it as the host
        saw the drop, or the lost session still holds it: the host has not seen the drop)."""
        self.held.release()  # the lost channel's: nothing to do on the host
        # Waiting a moment: the host ends the lost session's lock command just after it sees the
        # connection close.
        self.held, self.wait = (
            HeldCommand(self.c, lock_script(self.s, self.info, RETAKE_WAIT, "")),
            RETAKE_WAIT,
        )
        (warn, say), self.warn, self.say = (
            (self.warn, self.say),
            (lambda text: None),
            (lambda text: None),
        )
        try:
            self.__enter__()
        except ConnectionLost:
            return "the connection was lost again while the deploy lock was taken"
        except Exit:
            if _written_by(self.holder, self.info):
                return (
                    "this run's lost session still holds the deploy lock on the host (the host has"
                    " not seen the connection close; it frees the lock once it does, or run `unlock"
                    " --force`)"
                )
            return (
                "another deploy took the deploy lock as the connection dropped"
                f" ({describe_holder(self.holder)}): undoing beside it would undo its steps too"
            )
        finally:
            self.warn, self.say = warn, say
        return None


# The lock each connection holds (by the connection's id), so that a reconnect takes it again.
_HELD: dict[int, DeployLock] = {}


def retake_held(c: Any) -> str | None:
    """After a reconnect: the lock `c` held, taken again (None: taken, or none was held); else why
    not."""
    held = _HELD.get(id(c))
    return held.retake() if held is not None else None


def held_by(c: Any) -> bool:
    return id(c) in _HELD


def _written_by(raw: str, info: dict[str, Any]) -> bool:
    """Whether the holder's lock.json is the one `info` wrote (this very run's)."""
    try:
        found = json.loads(raw)
    except ValueError:
        return False
    return isinstance(found, dict) and {k: found.get(k) for k in info} == json.loads(
        json.dumps(info)
    )


def task_lock(c: Any, s: Settings, event: str) -> DeployLock:
    """The deploy lock for a task other than deploy that changes the host: taken at once, or the
    deploy that holds it is named (a task never races a deploy)."""
    info = {"event": event, "since": datetime.now(UTC).isoformat(timespec="seconds"), **who()}
    return DeployLock(c, s, info, 0, print, lambda text: print(f"warning: {text}", file=sys.stderr))


def describe_holder(raw: str) -> str:
    """Who holds the lock, from its lock.json (any format: the lock itself is the flock, the same in
    every version; a newer record is described as far as it is understood, and says which version
    wrote it).
    """
    try:
        info = json.loads(raw)
    except ValueError:
        return "unknown holder"
    if not isinstance(info, dict):
        return "unknown holder"
    text = (
        f"{who_text(info)}, deploying {str(info.get('sha', '?'))[:12]} since"
        f" {info.get('since', '?')}"
    )
    if formats.is_newer(formats.LOCK, info):
        text += (
            f" (with {info.get('tool', 'a newer signalcraft-deploy')}, newer than this"
            f" {formats.TOOL})"
        )
    return text


def audit(c: Any, s: Settings, record: dict[str, Any]) -> None:
    """Append one JSON line to <DEPLOY_ROOT>/.deploy/audit.log (no secret values ever enter it)."""
    record = formats.stamp(
        formats.AUDIT,
        {"at": datetime.now(UTC).isoformat(timespec="seconds"), **masked_tree(s, record)},
    )
    line = json.dumps(record, sort_keys=True)
    log = f"{q(s.state_dir)}/audit.log"
    run(
        c,
        f"umask 077 && mkdir -p {q(s.state_dir)} && printf '%s\\n' {q(line)} >> {log} && chmod 0600"
        f" {log}",
        warn=True,
    )


def masked_tree(s: Settings, value: Any) -> Any:
    """A JSON-like value with every string in it masked (a failure's reason may quote the host's
    output)."""
    if isinstance(value, str):
        return masked(s, value)
    if isinstance(value, dict):
        return {k: masked_tree(s, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked_tree(s, v) for v in value]
    return value


def read_audit(c: Any, s: Settings, last: int = 10) -> list[dict[str, Any]]:
    out = run(
        c, f"tail -n {int(last)} {q(s.state_dir)}/audit.log 2>/dev/null || true", warn=True
    ).stdout
    records = []
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(audit_record(record))
    return records


def audit_record(record: dict[str, Any]) -> dict[str, Any]:
    """One line of the audit log in the current format. Each line carries its own format: a line of
    an older one is migrated; one of a newer format is not interpreted, only its time and writer are
    kept.
    """
    try:
        return formats.read(formats.AUDIT, record, "audit.log")
    except formats.FormatError as err:
        tool = record.get("tool", "a newer signalcraft-deploy")
        return {
            "at": record.get("at", "?"),
            "event": "?",
            "result": "unreadable",
            "format": record.get("format"),
            "tool": tool,
            "to": f"(format {record.get('format')!r} of {tool}: upgrade to read it)",
            "note": str(err),
        }
