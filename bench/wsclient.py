"""A minimal WebSocket client (RFC 6455, text frames) for the benchmarks and end-to-end tests.

No package: the handshake and framing are written out here. It only connects to loopback, like
bench.loadgen. A client reads in a thread of its own and records every message with its arrival
time, and how the connection ended: a close frame from the server (its code and reason), or the
connection cut without one (``cut``), which is what a deploy must never do to a WebSocket.

    with WebSocketClient("ws://127.0.0.1/live/ws") as ws:
        ws.wait_for(lambda m: m["type"] == "tick")
        ws.send("hi")
    print(ws.ending)   # "closed 1001 going away", "cut: ...", or "open"
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from bench.loadgen import loopback_target

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() when it arrived
    body: dict[str, Any]


class WebSocketClient:
    def __init__(self, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None):
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"{url!r}: only ws:// URLs are supported")
        target = loopback_target("http://" + parts.netloc + (parts.path or "/"))
        self.url = url
        self.messages: list[Message] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.cut = ""  # why the connection ended without a close frame, if it did
        self._lock = threading.Condition()
        self._sock = socket.create_connection((target.host, target.port), timeout=timeout)
        self._handshake(parts.netloc, parts.path or "/", headers or {})
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_all, daemon=True)
        self._reader.start()

    def _handshake(self, netloc: str, path: str, headers: dict[str, str]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{self.url}: connection closed during the handshake")
            head += chunk
        head, self._rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"{self.url}: handshake answered {lines[0]!r}")
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        if fields.get("sec-websocket-accept") != expected:
            raise ConnectionError(f"{self.url}: wrong Sec-WebSocket-Accept")

    def _recv_exact(self, n: int) -> bytes:
        while len(self._rest) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed without a close frame")
            self._rest += chunk
        data, self._rest = self._rest[:n], self._rest[n:]
        return data

    def _read_frame(self) -> tuple[int, bytes]:
        first, second = self._recv_exact(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._recv_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._recv_exact(8))
        return first & 0x0F, self._recv_exact(length)

    def _read_all(self) -> None:
        try:
            while True:
                opcode, payload = self._read_frame()
                if opcode == 0x1:
                    with self._lock:
                        self.messages.append(Message(time.monotonic(), json.loads(payload)))
                        self._lock.notify_all()
                elif opcode == 0x8:
                    with self._lock:
                        self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                        self.close_reason = payload[2:].decode("utf-8", "replace")
                    self._send_frame(0x8, payload[:2])
                    break
                elif opcode == 0x9:
                    self._send_frame(0xA, payload)
        except (OSError, EOFError, ValueError) as exc:
            with self._lock:
                self.cut = str(exc) or type(exc).__name__
        finally:
            with self._lock:
                self._lock.notify_all()
            self._sock.close()

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self._sock.sendall(head + mask + masked)
        except OSError:
            pass  # the reader records how the connection ended

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    @property
    def open(self) -> bool:
        return self._reader.is_alive()

    @property
    def ending(self) -> str:
        """How the connection ended: "open", "closed <code> <reason>", or "cut: <why>"."""
        with self._lock:
            if self.close_code is not None:
                return f"closed {self.close_code} {self.close_reason}".rstrip()
            if self.cut:
                return f"cut: {self.cut}"
        return "open"

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, after: int = 0
    ) -> Message | None:
        """The first message from index `after` on that `predicate` accepts, waiting up to
        `timeout` seconds; None if none came (or the connection ended first)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for message in self.messages[after:]:
                    if predicate(message.body):
                        return message
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return None
                self._lock.wait(min(left, 0.5))

    def wait_closed(self, timeout: float = 10.0) -> bool:
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def close(self, code: int = 1000) -> None:
        if self.open:
            self._send_frame(0x8, struct.pack("!H", code))
            self._reader.join(5)
        self._sock.close()

    def __enter__(self) -> WebSocketClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
