"""PM2's daemon asked over its RPC socket from Python: no Node.js start (0.05-0.1 s of CPU each).

Standard library only, nothing run at import: pm2_ask.py, probe.py and upkeep.py get this file
inlined (see `signalcraft_deploy.remote.program`), on the host as the account whose PM2 it asks
(PM2_HOME, else ~/.pm2).

The protocol is that of PM2's client modules (pm2-axon's req socket, pm2-axon-rpc, amp framing): a
message is one byte (version 1 << 4 | argument count), then each argument as a 32-bit big-endian
length and its bytes, "j:" + JSON or "s:" + text. A call sends {type: "call", method, args} and
an id; the daemon answers {args: [...]} or {error} with the same id.
"""

import json
import os
import socket
import struct


class Pm2Socket:
    """One connection to PM2's daemon (its rpc.sock), calls answered in order."""

    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""
        self.calls = 0

    def call(self, method: str, arg: object) -> list:
        """The daemon's answer to `method(arg)`: its arguments after the error (an error raises)."""
        return self.answer(self.send(method, arg))

    def send(self, method: str, arg: object) -> str:
        """Ask `method(arg)`; `answer` with the id returned reads the answer (the daemon works
        meanwhile)."""
        self.calls += 1
        ident = f"{os.getpid()}:{self.calls}"
        request = {"type": "call", "method": method, "args": [arg]}
        self.sock.sendall(frame([b"j:" + json.dumps(request).encode(), b"s:" + ident.encode()]))
        return ident

    def answer(self, ident: str) -> list:
        reply, answered = self.message()
        if answered != ident.encode() or not isinstance(reply, dict):
            raise ValueError("an answer to another question")
        if "error" in reply:
            raise RuntimeError(str(reply["error"]))
        return list(reply.get("args") or [])

    def message(self) -> tuple:
        """The next message: its JSON argument and its id."""
        head = self.read(1)[0]
        if head >> 4 != 1 or head & 0xF != 2:
            raise ValueError("not an answer of PM2's daemon")
        args = []
        for _ in range(2):
            (length,) = struct.unpack(">I", self.read(4))
            args.append(self.read(length))
        if not args[0].startswith(b"j:") or not args[1].startswith(b"s:"):
            raise ValueError("not an answer of PM2's daemon")
        return json.loads(args[0][2:].decode()), args[1][2:]

    def close(self) -> None:
        self.sock.close()

    def read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self.buffer)))
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


def frame(args: list) -> bytes:
    return bytes([1 << 4 | len(args)]) + b"".join(struct.pack(">I", len(a)) + a for a in args)


def socket_path() -> str:
    home = os.environ.get("PM2_HOME") or os.path.join(os.path.expanduser("~"), ".pm2")
    return os.path.join(home, "rpc.sock")


def daemon_list(timeout: float = 10) -> "list | None":  # (quoted: no `typing` import, 5 ms)
    """The daemon's process list (what `pm2 jlist` prints, parsed) over a connection of its own;
    None when it cannot be asked this way (the caller then asks PM2's CLI)."""
    try:
        daemon = Pm2Socket(socket_path(), timeout)
        try:
            listed = daemon.call("getMonitorData", {})[0]
        finally:
            daemon.close()
    except Exception:
        return None
    return listed if isinstance(listed, list) else None
