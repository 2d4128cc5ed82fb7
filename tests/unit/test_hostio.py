"""hostio.run outside invoke's Runner, and the SSH socket without Nagle's delay."""

from __future__ import annotations

import socket
import time

import pytest
from invoke import Context
from invoke.exceptions import UnexpectedExit

from signalcraft_deploy.host.connect import QuickAckSocket, nodelay_socket
from signalcraft_deploy.host.io import Background, command_log, run


def test_run_keeps_stdout_and_stderr_apart_and_reports_the_exit_status() -> None:
    c = Context()
    result = run(c, "echo out; echo err >&2; exit 3", warn=True)
    assert (result.stdout, result.stderr, result.exited, result.ok) == ("out\n", "err\n", 3, False)
    with pytest.raises(UnexpectedExit):
        run(c, "exit 4")


def test_run_feeds_stdin_whole_and_closes_it_otherwise() -> None:
    c = Context()
    assert run(c, "wc -c", stdin="x" * 100_000).stdout.strip() == "100000"
    assert run(c, "cat").stdout == ""  # stdin closed: cat ends at once instead of waiting


def test_a_flood_on_stderr_does_not_stall_stdout() -> None:
    c = Context()
    result = run(c, "head -c 3000000 /dev/zero | tr '\\0' e >&2; echo done", warn=True)
    assert result.stdout == "done\n" and len(result.stderr) == 3_000_000


def test_every_command_is_counted() -> None:
    c = Context()
    run(c, "true")
    run(c, "true", stdin="x")
    assert command_log(c).count == 2 and command_log(c).commands == ["true", "true"]


def test_the_ssh_socket_has_nagle_off_and_acks_at_once() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        sock = nodelay_socket("127.0.0.1", server.getsockname()[1], 5)
        peer, _ = server.accept()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        if hasattr(socket, "TCP_QUICKACK"):
            assert isinstance(sock, QuickAckSocket) and sock.gettimeout() == 5
        peer.sendall(b"SSH-2.0-x\r\n")
        assert (
            sock.recv(100) == b"SSH-2.0-x\r\n"
        )  # what paramiko calls, through the quick-ack wrapper
        peer.close()
        sock.close()
    finally:
        server.close()


def test_a_background_command_runs_while_other_commands_do_and_is_waited_for() -> None:
    c = Context()
    started = time.monotonic()
    pending = Background(c, "sleep 0.4; echo stopped; echo note >&2; exit 5")
    assert run(c, "echo meanwhile").stdout == "meanwhile\n"
    assert time.monotonic() - started < 0.3  # the first did not hold up the second
    result = pending.wait()
    assert (result.stdout, result.stderr, result.exited) == ("stopped\n", "note\n", 5)
    assert time.monotonic() - started >= 0.4
    assert pending.wait() is result
    assert command_log(c).count == 2


class ClosedEarlyChannel:
    """An SSH channel whose command failed at once: it sent its error and exit status, then
    closed."""

    def __init__(self, stderr: bytes = b"", stdout: bytes = b"", code: int = 1) -> None:
        self.out, self.err, self.code, self.closed = [stdout, b""], [stderr, b""], code, False

    def exec_command(self, command: str) -> None: ...
    def settimeout(self, seconds: float | None) -> None: ...
    def shutdown_write(self) -> None: ...

    def sendall(self, data: bytes) -> None:
        raise OSError("Socket is closed")

    def recv(self, n: int) -> bytes:
        return self.out.pop(0) if self.out else b""

    def recv_stderr(self, n: int) -> bytes:
        return self.err.pop(0) if self.err else b""

    def recv_exit_status(self) -> int:
        return self.code

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    def __init__(self, chan: ClosedEarlyChannel) -> None:
        self.chan = chan
        self.transport = self

    def open(self) -> None: ...

    def open_session(self, timeout: float | None = None) -> ClosedEarlyChannel:
        return self.chan


def test_a_command_that_ends_before_reading_its_stdin_reports_its_own_error_not_a_closed_socket() -> (
    None
):
    from signalcraft_deploy.host.io import SshTransport

    chan = ClosedEarlyChannel(stderr=b"mkdir: cannot create directory: Read-only file system\n")
    # type: ignore[arg-type]
    result = SshTransport().run(FakeConnection(chan), "cat > x", "data", None, True, None)
    assert (result.exited, result.stderr) == (
        1,
        "mkdir: cannot create directory: Read-only file system\n",
    )


def test_a_waiting_command_that_ends_before_it_is_ready_raises_so_the_caller_asks_the_usual_way() -> (
    None
):
    from signalcraft_deploy.host.io import Waiting

    chan = ClosedEarlyChannel()
    waiting = Waiting(FakeConnection(chan), "python3 -c probe", "spec")  # type: ignore[arg-type]
    with pytest.raises(OSError, match="ended before it was ready"):
        waiting.go()
    assert chan.closed


def test_a_refused_ssh_session_is_asked_for_again_and_a_lasting_refusal_is_one_message(
    mocker,
) -> None:
    import paramiko
    from fabric import Connection
    from invoke.exceptions import Exit

    from signalcraft_deploy.host.io import open_channel

    mocker.patch.object(Connection, "open")
    mocker.patch("signalcraft_deploy.host.io.time.sleep")
    c = Connection("ubuntu@web1", port=2222)
    channel = object()
    c.transport = mocker.Mock()
    c.transport.open_session.side_effect = [
        paramiko.ChannelException(1, "Administratively prohibited"),
        paramiko.SSHException("Unable to open channel."),
        channel,
    ]
    assert open_channel(c) is channel
    c.transport.open_session.side_effect = paramiko.SSHException("Unable to open channel.")
    with pytest.raises(Exit) as refused:
        open_channel(c)
    message = str(refused.value)
    assert "ubuntu@web1:2222 refused a new session 3 times (Unable to open channel.)" in message
    assert "MaxSessions" in message and "run the task again" in message


# ----------------------------------------------------------------------------- a lost connection is
# named as one


class Transport:
    def __init__(self, active: bool) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


class CutChannel(ClosedEarlyChannel):
    """A channel that ended with no exit status (-1) and a part of its output: its connection died,
    or (transport still active) its command was killed by a signal."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(stdout=b"PYTHON_VENV=", code=-1)
        self.transport = transport


def test_a_channel_cut_with_its_connection_raises_connection_lost_never_a_result() -> None:
    from signalcraft_deploy.host.io import ConnectionLost, SshTransport

    with pytest.raises(ConnectionLost) as lost:
        SshTransport().run(
            FakeConnection(CutChannel(Transport(active=False))), "sh -s", "facts", None, True, None
        )  # type: ignore[arg-type]
    assert "The SSH connection to this machine was lost" in str(lost.value.message)


def test_a_command_killed_by_a_signal_is_still_a_result_while_the_connection_lives(
    monkeypatch,
) -> None:
    from signalcraft_deploy.host import io
    from signalcraft_deploy.host.io import SshTransport

    monkeypatch.setattr(io, "LOST_SETTLE", 0.05)
    result = SshTransport().run(
        FakeConnection(CutChannel(Transport(active=True))), "sleep 9", None, None, True, None
    )  # type: ignore[arg-type]
    assert (result.exited, result.stdout) == (-1, "PYTHON_VENV=")


def test_no_command_is_sent_over_a_dead_connection_and_it_is_not_opened_again_behind_the_caller(
    mocker,
) -> None:
    from fabric import Connection

    from signalcraft_deploy.host.io import ConnectionLost, open_channel

    opened = mocker.patch.object(Connection, "open")
    c = Connection("ubuntu@web1", port=2222)
    c.transport = Transport(active=False)
    with pytest.raises(ConnectionLost) as lost:
        open_channel(c)
    assert lost.value.where == "ubuntu@web1:2222"
    assert (
        not opened.called
    )  # the deploy lock went with the connection: a silent new one would run unlocked


def test_releasing_a_lock_whose_connection_died_raises_nothing(mocker) -> None:
    from fabric import Connection

    from signalcraft_deploy.host.io import HeldCommand

    held = HeldCommand(Connection("ubuntu@web1"), "flock ...")
    chan = mocker.Mock()
    chan.transport = Transport(active=False)
    chan.shutdown_write.side_effect = OSError("Socket is closed")
    held._chan = chan
    held.release()
    held.release()  # twice: nothing left to release
    assert not chan.shutdown_write.called


def test_reconnect_tries_again_and_says_why_it_could_not(mocker) -> None:
    from fabric import Connection

    from signalcraft_deploy.host import connect

    mocker.patch("signalcraft_deploy.host.connect.time.sleep")
    made = mocker.patch.object(
        connect, "_connect", side_effect=[OSError("Connection refused"), None]
    )
    c = Connection("ubuntu@web1")
    assert connect.reconnect(c) is None and made.call_count == 2
    made.side_effect = OSError("No route to host")
    assert (
        connect.reconnect(c) == "connecting again failed (No route to host)"
        and made.call_count == 2 + connect.RECONNECT_TRIES
    )


def test_a_lost_connection_says_what_ended_it_when_the_ssh_library_saw_it(mocker) -> None:
    from fabric import Connection

    from signalcraft_deploy.host.io import ConnectionLost, open_channel

    mocker.patch.object(Connection, "open")
    c = Connection("ubuntu@web1", port=2222)
    c.transport = Transport(active=False)
    # type: ignore[attr-defined]
    c.transport.saved_exception = ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(ConnectionLost) as lost:
        open_channel(c)
    assert lost.value.cause == "ConnectionResetError: [Errno 104] Connection reset by peer"
    assert "was lost (ConnectionResetError: [Errno 104] Connection reset by peer)." in str(
        lost.value.message
    )
    c.transport.saved_exception = None  # type: ignore[attr-defined]
    with pytest.raises(ConnectionLost) as quiet:  # nothing recorded: nothing made up
        open_channel(c)
    assert quiet.value.why == "" and "was lost. Run the task again" in str(quiet.value.message)
