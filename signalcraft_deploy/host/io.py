"""Host I/O: the few things that differ between a local invoke Context and a Fabric Connection.

Every helper takes the context first (patchwork's `files.exists(c, path)` idiom), quotes every
argument with `shlex.quote`, and is safe to call twice. Nothing else in the library needs to know
whether it runs locally or over SSH.

How a command reaches the host is the context's `Transport`: over the SSH transport of a Fabric
Connection, as a local process for an invoke Context, or through `c.run` (`InvokeRunner`) where a
caller attached that one with `use_transport`, as the unit tests do with invoke's MockContext.
"""

from __future__ import annotations

import getpass
import io
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from invoke import Context
from invoke.exceptions import Exit, UnexpectedExit
from invoke.runners import Result

from signalcraft_deploy.core.secrets import visible

try:  # Fabric is a dependency, but `invoke` alone must still work for local tasks.
    from fabric import Connection
except ImportError:  # pragma: no cover
    Connection = None

q = shlex.quote


def is_remote(c: Context) -> bool:
    return Connection is not None and isinstance(c, Connection)


def target_name(c: Context) -> str:
    """Who we talk to, as a person would write it: user@host:port, or 'this machine'."""
    if is_remote(c):
        return f"{c.user}@{c.host}:{c.port}"
    return "this machine"


@dataclass
class CommandLog:
    """Counts the commands sent to a host, for the speed benchmark and the summary."""

    count: int = 0
    commands: list[str] = field(default_factory=list)


def command_log(c: Context) -> CommandLog:
    log = getattr(c, "_signalcraft_log", None)
    if log is None:
        log = CommandLog()
        # object.__setattr__: an invoke Context would file a plain attribute under its config (a
        # copy).
        object.__setattr__(c, "_signalcraft_log", log)
    return log


class Transport:
    """How commands reach a context's host: `run` one to its end, or `start` one to be waited for
    later."""

    def run(
        self,
        c: Context,
        command: str,
        stdin: str | None,
        timeout: float | None,
        warn: bool,
        on_line: Callable[[str], None] | None,
    ) -> Result:
        raise NotImplementedError

    def start(self, c: Context, command: str) -> Callable[[], Result]:
        """Start `command` now; the returned function waits for it and gives its result."""
        raise NotImplementedError

    def login(self, c: Context) -> str | None:
        """The user commands run as (the deploy user); None: not known, take it to be the apps' own
        account."""
        return None


class ConnectionLost(Exit):
    """The SSH connection to the host died under a command (its channel closed with no exit status,
    its transport gone), or a command was about to be sent over a connection that had died. Not a
    result of the command: what it did on the host is not known, and every later command would fail
    the same way until a new connection is made.
    """

    def __init__(self, where: str, cause: str = ""):
        self.where, self.cause = where, cause
        super().__init__(
            f"The SSH connection to {where} was lost{self.why}. Run the task again once the host is"
            " reachable."
        )

    @property
    def why(self) -> str:
        """What the SSH library saw end the connection, as ' (cause)', or '' when it saw nothing."""
        return f" ({self.cause})" if self.cause else ""


def lost_cause(transport: Any) -> str:
    """What ended a dead SSH transport, as paramiko recorded it (a reset, an EOF, a protocol error),
    or ''."""
    exc = getattr(transport, "saved_exception", None)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")[:200] if exc is not None else ""


# How long paramiko may take between closing a dead transport's channels and marking the transport
# inactive.
LOST_SETTLE = 1.0


def connection_gone(c: Context) -> bool:
    """The context's SSH connection was open and has died (a local context, or one never opened, has
    not)."""
    transport = getattr(c, "transport", None) if is_remote(c) else None
    return transport is not None and not transport.is_active()


def _transport_dead(chan: Any) -> bool:
    transport = getattr(chan, "transport", None)
    return transport is not None and not transport.is_active()


def _lost_under(chan: Any) -> bool:
    """A channel that ended with no exit status (-1) ended because its connection died: unless its
    transport is still active, as after a command killed by a signal (sshd sends exit-signal, which
    paramiko does not read as a status). paramiko closes a dead transport's channels just before it
    marks the transport inactive: waited for a moment.
    """
    transport = getattr(chan, "transport", None)
    deadline = time.monotonic() + LOST_SETTLE
    while transport is not None and transport.is_active():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _send_input(chan: Any, data: str) -> None:
    """Send a command its stdin. A command that ended before reading it all (it failed at once: a
    read-only or full disk, say) closes the channel under us; its exit status and error output, read
    next, say why."""
    try:
        chan.sendall(data.encode())
    except OSError:
        pass


def _result(command: str, stdout: str, stderr: str, code: int) -> Result:
    return Result(
        stdout=stdout, stderr=stderr, exited=code, command=command, hide=("stdout", "stderr")
    )


def _checked(result: Result, warn: bool) -> Result:
    if not result.ok and not warn:
        raise UnexpectedExit(result)
    return result


CHANNEL_TRIES = 3


def open_channel(c: Context, timeout: float | None = None) -> Any:
    """A new session on the host's SSH connection. sshd refuses one while the connection has
    MaxSessions open (10 by default), and paramiko loses the reason when two are refused at once; no
    command has run then, so the open is tried again (Fabric's `open` first connects again if the
    connection dropped). The last refusal is one message.
    """
    import paramiko

    for attempt in range(1, CHANNEL_TRIES):
        try:
            return _open_session(c, timeout)
        except paramiko.SSHException:
            time.sleep(0.2 * attempt)
    try:
        return _open_session(c, timeout)
    except paramiko.SSHException as err:
        raise fail(
            f"SSH to {target_name(c)} refused a new session {CHANNEL_TRIES} times ({err}). The"
            " connection dropped or its sshd limits the sessions a connection may open"
            " (MaxSessions, 10 by default): check the host's sshd and its log, then run the task"
            " again."
        ) from None


def _open_session(c: Context, timeout: float | None) -> Any:
    if connection_gone(
        c
    ):  # never opened again behind the caller's back: the deploy lock went with the connection
        raise ConnectionLost(target_name(c), lost_cause(c.transport))
    c.open()
    return c.transport.open_session(timeout=timeout) if timeout else c.transport.open_session()


class SshTransport(Transport):
    """A Fabric Connection's SSH transport, a channel per command. Not invoke's Runner: it is built
    for terminals (it feeds stdin one byte per 10 ms and polls its streams), which costs 20-40 ms a
    command, and a deploy sends dozens."""

    def login(self, c: Context) -> str | None:
        return str(c.user)

    def run(
        self,
        c: Context,
        command: str,
        stdin: str | None,
        timeout: float | None,
        warn: bool,
        on_line: Callable[[str], None] | None,
    ) -> Result:
        chan = open_channel(c, timeout)
        if timeout:
            chan.settimeout(timeout)
        chan.exec_command(command)
        if stdin:
            _send_input(chan, stdin)
        chan.shutdown_write()
        return _checked(_result(command, *_collect(chan, on_line, where=target_name(c))), warn)

    def start(self, c: Context, command: str) -> Callable[[], Result]:
        chan = open_channel(c)
        chan.exec_command(command)
        chan.shutdown_write()
        return lambda: _result(command, *_collect(chan, where=target_name(c)))


class LocalTransport(Transport):
    """This machine: `bash -c` in a process of its own (invoke's local tasks)."""

    def login(self, c: Context) -> str | None:
        return getpass.getuser()

    def run(
        self,
        c: Context,
        command: str,
        stdin: str | None,
        timeout: float | None,
        warn: bool,
        on_line: Callable[[str], None] | None,
    ) -> Result:
        return _checked(_result(command, *_run_local(command, stdin, timeout, on_line)), warn)

    def start(self, c: Context, command: str) -> Callable[[], Result]:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def wait() -> Result:
            stdout, stderr = proc.communicate()
            return _result(command, stdout, stderr, proc.returncode)

        return wait


class InvokeRunner(Transport):
    """The context's own `c.run` (invoke's Runner): what a MockContext answers from its canned
    results. `login` is the deploy user it stands for; None (the default): the apps run as that
    user, so no command goes through the app helper."""

    def __init__(self, login: str | None = None):
        self._login = login

    def login(self, c: Context) -> str | None:
        return self._login

    def run(
        self,
        c: Context,
        command: str,
        stdin: str | None,
        timeout: float | None,
        warn: bool,
        on_line: Callable[[str], None] | None,
    ) -> Result:
        kwargs: dict[str, Any] = {
            "hide": True,
            "warn": warn,
            "in_stream": io.StringIO(stdin) if stdin is not None else False,
        }
        if timeout:
            kwargs["timeout"] = timeout
        # A MockContext returns a failed result without raising.
        return _checked(_ran(c.run(command, **kwargs)), warn)

    def start(self, c: Context, command: str) -> Callable[[], Result]:
        result = _ran(c.run(command, hide=True, warn=True, in_stream=False))
        return lambda: result


def _ran(result: Result | None) -> Result:
    """`Context.run`'s result, which is None only for a command run with disown=True (none here)."""
    assert result is not None
    return result


def use_transport(c: Context, transport: Transport) -> Context:
    """Send the context's commands through `transport` from now on; returns the context."""
    object.__setattr__(c, "_signalcraft_transport", transport)  # see command_log
    return c


def transport_of(c: Context) -> Transport:
    chosen = getattr(c, "_signalcraft_transport", None)
    return chosen if chosen is not None else SshTransport() if is_remote(c) else LocalTransport()


def run(
    c: Context,
    command: str,
    *,
    stdin: str | None = None,
    warn: bool = False,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> Any:
    """Run a shell command on the context's host, output hidden, stdin closed unless given.

    `on_line`, if given, receives each line of stdout as it arrives (the result still holds it all).
    """
    log = command_log(c)
    log.count += 1
    log.commands.append(command)
    return transport_of(c).run(c, command, stdin, timeout, warn, on_line)


def attached(
    c: Context, command: str, *, pty: bool = False, out: Any = None, err: Any = None
) -> int:
    """Run a command with the user attached and return its exit status: its output written to `out`
    and `err` (this process's stdout and stderr by default) as it comes; with `pty`, a terminal on
    the host fed from this process's stdin (keys, Ctrl-C, Ctrl-D, window size), else stdin closed.
    Through the context's own runner (Fabric's over SSH, invoke's here), which is built for this."""
    log = command_log(c)
    log.count += 1
    log.commands.append(command)
    streams: dict[str, Any] = {"out_stream": out, "err_stream": err}
    with _hang_up_on_interrupt(c, pty) as interrupted:
        result = c.run(
            command,
            pty=pty,
            warn=True,
            hide=False,
            in_stream=None if pty else False,
            **{k: v for k, v in streams.items() if v is not None},
        )
    if interrupted:
        raise Interrupted(
            f"Interrupted: the command on {target_name(c)} was told to stop.", code=130
        )
    code = _ran(result).exited
    if code == -1 and connection_gone(c):
        raise ConnectionLost(target_name(c), lost_cause(c.transport))
    return int(code)


class Interrupted(Exit):
    """The user pressed Ctrl-C during an attached command: the task stops here, on every host."""


@contextmanager
def _hang_up_on_interrupt(c: Context, pty: bool) -> Iterator[list[int]]:
    """Ctrl-C during a command without a terminal: close the connection, so that the command's
    session ends on the host (which ends the command: remote/in_release.py watches for that).
    Fabric's runner would wait for the command's output to end first, that is for the command. With
    a terminal, Ctrl-C reaches the command as a key (Fabric sends it)."""
    caught: list[int] = []
    if pty or not is_remote(c) or threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def hang_up(signum: int, _frame: Any) -> None:
        caught.append(signum)
        c.close()

    previous = signal.signal(signal.SIGINT, hang_up)
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_local(
    command: str, data: str | None, timeout: float | None, on_line: Callable[[str], None] | None
) -> tuple[str, str, int]:
    if on_line is None:
        proc = subprocess.run(
            ["bash", "-c", command],
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc.stdout, proc.stderr, proc.returncode
    with subprocess.Popen(
        ["bash", "-c", command],
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as popen:
        if data is not None and popen.stdin:
            popen.stdin.write(data.encode())
            popen.stdin.close()
        # Pipes with the default buffering: both are BufferedReaders, which read1 what is there.
        stdout = cast(io.BufferedReader, popen.stdout)
        stderr = cast(io.BufferedReader, popen.stderr)
        err_chunks: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(stderr.read1, err_chunks), daemon=True)
        reader.start()
        out_chunks: list[bytes] = []
        _drain(stdout.read1, out_chunks, _lines_to(on_line))
        reader.join()
        code = popen.wait(timeout=timeout)
    return (
        b"".join(out_chunks).decode("utf-8", "replace"),
        b"".join(err_chunks).decode("utf-8", "replace"),
        code,
    )


def _lines_to(on_line: Callable[[str], None]) -> Callable[[bytes], None]:
    """A chunk consumer that calls `on_line` once per complete line (a last partial line at the
    end)."""
    pending = bytearray()

    def feed(chunk: bytes) -> None:
        if not chunk:
            if pending:
                on_line(pending.decode("utf-8", "replace"))
            return
        pending.extend(chunk)
        *lines, rest = pending.split(b"\n")
        pending[:] = rest
        for line in lines:
            on_line(line.decode("utf-8", "replace"))

    return feed


def _collect(
    chan: Any, on_line: Callable[[str], None] | None = None, where: str = "the host"
) -> tuple[str, str, int]:
    """Read an SSH channel to its end: stdout, stderr and the exit status; then close it.
    `ConnectionLost` when the connection died under it: its output is cut short and its status
    unknown, so it is never handed on as a result.

    stderr is read beside stdout: the two share the channel's window, so leaving one unread could
    stall the other.
    """
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(chan.recv_stderr, err_chunks), daemon=True)
    reader.start()
    out_chunks: list[bytes] = []
    _drain(chan.recv, out_chunks, _lines_to(on_line) if on_line else None)
    reader.join()
    code = chan.recv_exit_status()
    chan.close()
    if code == -1 and _lost_under(chan):
        raise ConnectionLost(where, lost_cause(getattr(chan, "transport", None)))
    return (
        b"".join(out_chunks).decode("utf-8", "replace"),
        b"".join(err_chunks).decode("utf-8", "replace"),
        code,
    )


def _drain(recv: Any, chunks: list[bytes], feed: Callable[[bytes], None] | None = None) -> None:
    while True:
        chunk = recv(65536)
        if feed:
            feed(chunk)
        if not chunk:
            return
        chunks.append(chunk)


class Background:
    """A command started on the host now and waited for later, so that other work overlaps it."""

    def __init__(self, c: Context, command: str):
        log = command_log(c)
        log.count += 1
        log.commands.append(command)
        self.c, self.command = c, command
        self._result: Result | None = None
        self._wait = transport_of(c).start(c, command)

    def wait(self) -> Result:
        if self._result is None:
            self._result = self._wait()
        return self._result


class Waiting:
    """A command started on the host now that says `ready` on a line of its own and then waits for a
    line on stdin: the start-up (an interpreter, its imports, its connections) is paid before the
    moment it is needed. `go()` sends the line and collects the rest as a Result; dropping it (or
    the connection) ends the command.
    """

    def __init__(self, c: Context, command: str, stdin: str):
        log = command_log(c)
        log.count += 1
        log.commands.append(command)
        self.command, self.where = command, target_name(c)
        self._chan = open_channel(c)
        self._chan.exec_command(command)
        _send_input(self._chan, stdin)

    def go(self, word: str = "go", timeout: float = 30.0) -> Result:
        self._chan.settimeout(timeout)
        head = b""
        while not head.endswith(
            b"ready\n"
        ):  # nothing is sent until the command has read all it was given
            chunk = self._chan.recv(1)
            if not chunk:
                break
            head += chunk
        self._chan.settimeout(None)
        if not head.endswith(
            b"ready\n"
        ):  # it ended (or was ended) before it was ready: nothing was asked of it
            self._chan.close()
            raise OSError(f"{self.command[:60]!r} ended before it was ready")
        self._chan.sendall(f"{word}\n".encode())
        self._chan.shutdown_write()
        stdout, stderr, code = _collect(self._chan, where=self.where)
        return Result(
            stdout=head.decode("utf-8", "replace").removesuffix("ready\n") + stdout,
            stderr=stderr,
            exited=code,
            command=self.command,
            hide=("stdout", "stderr"),
        )

    def drop(self) -> None:
        self._chan.close()


def sudo(command: str) -> str:
    """Prefix for the commands of `setup` (the admin's step, full sudo): `sudo -n` never waits for a
    password prompt. Every other task runs as root only the tool's helper (host/root.py)."""
    return f"sudo -n {command}"


def exists(c: Context, path: str) -> bool:
    return run(c, f"test -e {q(path)}", warn=True).ok


def read_file(c: Context, path: str) -> str | None:
    result = run(c, f"cat {q(path)}", warn=True)
    return result.stdout if result.ok else None


def write_file_command(path: str, mode: str = "0644", *, as_root: bool = False) -> str:
    """Shell that writes stdin to `path` atomically (temp file beside it, then rename)."""
    tmp = f"{path}.signalcraft-tmp"
    script = f"umask 077 && cat > {q(tmp)} && chmod {mode} {q(tmp)} && mv -f {q(tmp)} {q(path)}"
    return sudo(f"sh -c {q(script)}") if as_root else script


def write_file(
    c: Context, path: str, content: str, mode: str = "0644", *, as_root: bool = False
) -> None:
    run(c, write_file_command(path, mode, as_root=as_root), stdin=content)


def upload(c: Context, local_path: str, remote_path: str) -> None:
    """Copy a local file to the host (SFTP over SSH, a plain copy locally)."""
    log = command_log(c)
    log.count += 1
    log.commands.append(f"upload {local_path} -> {remote_path}")
    try:
        if is_remote(c):
            c.put(local_path, remote_path)
        else:
            shutil.copyfile(local_path, remote_path)
    except (
        OSError,
        EOFError,
        _ssh_error(),
    ) as err:  # paramiko reports a short write (disk full) as OSError too
        if connection_gone(c):
            raise ConnectionLost(target_name(c), lost_cause(c.transport)) from None
        if not isinstance(err, OSError):
            raise
        run(c, f"rm -f {q(remote_path)}", warn=True)
        free = run(
            c, f"df -Pk {q(os.path.dirname(remote_path))} | tail -1", warn=True
        ).stdout.split()
        room = (
            f" ({int(free[3]) // 1024} MB free there)"
            if len(free) > 3 and free[3].isdigit()
            else ""
        )
        raise fail(
            f"Uploading to {remote_path} failed: {err}{room}. Is the disk full or read-only? "
            "Free some space on the host and deploy again; the live release is untouched."
        ) from None


class HeldCommand:
    """A command that runs for as long as we keep its stdin open (used for the deploy lock).

    Over SSH the command's stdin is the channel: if this process dies or the connection drops,
    sshd closes the channel, the command sees end-of-file and ends, and the lock is released.
    """

    def __init__(self, c: Context, command: str):
        self.c = c
        self.command = command
        self._proc: subprocess.Popen[str] | None = None
        self._chan: Any = None
        self._out: Any = None

    def start(self) -> None:
        command_log(self.c).count += 1
        if is_remote(self.c):
            self._chan = open_channel(self.c)
            self._chan.exec_command(self.command)
            self._out = self._chan.makefile("r")
        else:
            self._proc = subprocess.Popen(
                ["sh", "-c", self.command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            self._out = self._proc.stdout

    def readline(self) -> str:
        line = self._out.readline()
        return line.decode() if isinstance(line, bytes) else line

    def lost(self) -> bool:
        """The command's output ended because its SSH connection died (not because the command
        ended)."""
        return self._chan is not None and _lost_under(self._chan)

    def release(self) -> None:
        if self._chan is not None:
            chan, self._chan = self._chan, None
            if _transport_dead(
                chan
            ):  # the command ended with its connection (the lock with it): nothing to release
                return
            try:
                chan.shutdown_write()
                chan.status_event.wait(
                    10
                )  # the command has seen end-of-file, cleaned up and exited
                chan.close()
            except (OSError, EOFError, _ssh_error()):
                if not _transport_dead(chan):  # it died while being released: as above
                    raise
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None


def _ssh_error() -> type[Exception]:
    try:
        import paramiko
    except ImportError:  # pragma: no cover
        return OSError
    return paramiko.SSHException


def fail(message: str, code: int = 1) -> Exit:
    """A user-facing failure: one clear message, no traceback (shown as text: it may quote what the
    host said)."""
    return Exit(visible(message), code=code)
