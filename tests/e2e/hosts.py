"""The test hosts the end-to-end tests deploy to (tests/host/testhost): what a test knows of one, and how it acts on it.

Each pytest-xdist worker of tests/e2e/run runs inside a host of its own (`own_host()`): it shares that host's files
and processes (a root login on it, so a test reads `/etc/nginx/...` or `ps` as the host sees them), while its network
is this machine's, like a laptop's: `fab` reaches the host at 198.18.K.2 over its veth, as it reaches any other.
Commands that need the host's network (a loopback-bound listener, `ss`) run through `TestHost.run`; other hosts
(a fleet, the systemd host) are reached over SSH as their `admin`, the way their own admin would.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

CLIENT = Path("/run/testhost")  # this run's client key, known_hosts and ssh_config, bound into every host
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class TestHost:
    """A test host numbered `number` (198.18.<number>.2), logged into as `user`."""

    __test__ = False  # not a test class, for pytest
    number: int
    user: str = "ubuntu"
    port: int = 22

    @property
    def host(self) -> str:
        return f"198.18.{self.number}.2"

    address = host

    @property
    def key(self) -> str:
        return str(CLIENT / "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return str(CLIENT / "known_hosts")

    @property
    def ssh_config(self) -> str:
        return str(CLIENT / "ssh_config")

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def is_own(self) -> bool:
        return os.environ.get("TESTHOST") == str(self.number)

    def as_user(self, user: str) -> TestHost:
        return replace(self, user=user)

    def run(self, cmd: str, user: str = "root", check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host as `user`: in its namespaces for the worker's own host, else over SSH."""
        as_user = [] if user == "root" else ["sudo", "-u", user, "-H"]
        if self.is_own:
            argv = ["nsenter", "-t", "1", "-n", "--", *as_user, "bash", "-c", cmd]
        else:
            remote = shlex.join(["sudo", "-n", *as_user, "bash", "-c", cmd])
            argv = ["ssh", "-F", self.ssh_config, "-l", "admin", self.host, remote]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout, input=input)


def own_host() -> TestHost:
    """The host this worker runs inside (tests/host/testhost-python sets TESTHOST)."""
    number = os.environ.get("TESTHOST")
    if not number:
        raise RuntimeError("the end-to-end tests run on test hosts: start them with tests/e2e/run (or tests/run)")
    return TestHost(int(number))


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@contextmanager
def own_host_network() -> Iterator[None]:
    """Within: this thread's sockets (and the threads and processes it starts) are on the own host's network, so
    127.0.0.1 is the host's loopback. Only the calling thread moves, so other threads are not affected."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns("/proc/1/ns/net")
        yield
    finally:
        try:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to this machine's network")
        finally:
            os.close(back)
