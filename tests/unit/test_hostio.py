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
        assert sock.recv(100) == b"SSH-2.0-x\r\n"  # what paramiko calls, through the quick-ack wrapper
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
