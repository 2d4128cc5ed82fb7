"""The test hosts the end-to-end tests deploy to (tests/host/testhost): what a test knows of one,
and how it acts on it.

Each pytest-xdist worker of tests/e2e/run runs inside a host of its own (`own_host()`): a root login
on it, with the host's files, processes and network (so a test reads `/etc/nginx/...`, runs `ps` or
`curl 127.0.0.1` as the host sees them). What a user's laptop does runs `on_this_machine()`: `fab`
and `invoke` as clients, wheel builds, requests to other hosts; it reaches the host at 198.18.K.2
over its veth, as it reaches any other. Other hosts (a fleet, the systemd host) are acted on over
SSH as their `admin`, the way their own admin would.
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

CLIENT = Path(
    "/run/testhost"
)  # this run's client key, known_hosts and ssh_config, bound into every host
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class TestHost:
    """A test host numbered `number` (198.18.<number>.2), logged into as `user`."""

    __test__ = False  # not a test class, for pytest
    number: int
    user: str = "ubuntu"
    port: int = 2222  # its sshd answers on 22 and 2222: a target with a port, as many hosts have

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
    def host_key(self) -> str:
        """The host's public key as known_hosts has it: "<type> <base64>"."""
        for line in Path(self.known_hosts).read_text().splitlines():
            if line.split(" ", 1)[0] == self.host:
                return line.split(" ", 1)[1]
        raise LookupError(f"{self.host} is not in {self.known_hosts}")

    @property
    def name(self) -> str:
        """The host's name, which its own /etc/hosts (and so this worker) resolves to its
        address."""
        return f"h{self.number}"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def ssh_options(self) -> list[str]:
        """`ssh` options that reach this host with this run's key, its host key checked."""
        return [
            "-p",
            str(self.port),
            "-i",
            self.key,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ]

    @property
    def is_own(self) -> bool:
        return os.environ.get("TESTHOST") == str(self.number)

    def as_user(self, user: str) -> TestHost:
        return replace(self, user=user)

    def run(
        self,
        cmd: str,
        user: str = "root",
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host as `user`: in its namespaces for the worker's own host,
        else over SSH."""
        as_user = [] if user == "root" else ["sudo", "-u", user, "-H"]
        if self.is_own:
            argv = [*as_user, "bash", "-c", cmd]
        else:
            remote = shlex.join(["sudo", "-n", *as_user, "bash", "-c", cmd])
            argv = ["ssh", *self.ssh_options(), "-l", "admin", self.host, remote]
            with on_this_machine():
                return subprocess.run(
                    argv, capture_output=True, text=True, check=check, timeout=timeout, input=input
                )
        return subprocess.run(
            argv, capture_output=True, text=True, check=check, timeout=timeout, input=input
        )


def own_host() -> TestHost:
    """The host this worker runs inside (tests/host/testhost-python sets TESTHOST)."""
    number = os.environ.get("TESTHOST")
    if not number:
        raise RuntimeError(
            "the end-to-end tests run on test hosts: start them with tests/e2e/run (or tests/run)"
        )
    return TestHost(int(number))


_libc = ctypes.CDLL(None, use_errno=True)
_machine_network: int | None = (
    None  # an open handle on this machine's network namespace, once the worker moved
)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def move_onto_own_host() -> None:
    """Put this thread (the worker's main thread, where the tests run) on the own host's network
    too, keeping a handle on this machine's: from here on, the worker is a root login on its host in
    every respect.
    """
    global _machine_network
    if _machine_network is None and os.environ.get("TESTHOST"):
        _machine_network = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        host = os.open("/proc/1/ns/net", os.O_RDONLY)
        try:
            _setns(host)
        finally:
            os.close(host)


@contextmanager
def on_this_machine() -> Iterator[None]:
    """Within: this thread's sockets, and the threads and processes it starts, are on this machine's
    network, as a laptop deploying to the hosts would be (it reaches every test host and the package
    registries).
    """
    if _machine_network is None:
        yield
        return
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(_machine_network)
        yield
    finally:
        try:
            _setns(back)
        finally:
            os.close(back)
