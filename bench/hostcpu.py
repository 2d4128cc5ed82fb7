"""Each fleet test host as a machine of its own size: its processes held to a share of the CPUs.

tests/host/fleet-up's hosts have their own network, files, sshd, Nginx and PM2, but they share this
machine's CPUs. Real hosts do not: a third host adds its own CPUs. `HostCpu(hosts, share)` puts
every process of each host's pid namespace (and so every process its sshd or PM2 starts later)
in a cgroup of its own limited to `share` CPUs, and takes them out again on exit. The shares add
up to less than the machine has, so the hosts do not wait for one another's CPU time.

cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), as the machine mounts it; root only.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

PERIOD_US = 100_000
NAME = "signalcraft-fleet{k}"


def cpu_root() -> tuple[Path, int]:
    """The cgroup folder that holds CPU limits, and its version."""
    unified = Path("/sys/fs/cgroup")
    controllers = unified / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return unified, 2
    for v1 in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct")):
        if (v1 / "cgroup.procs").exists():
            return v1, 1
    raise SystemExit(
        "No cgroup CPU controller here (cgroup v2 with `cpu`, or v1 `cpu`); run with --host-cpu 0."
    )


def namespace_pids(init_pid: int) -> list[int]:
    """Every process in the pid namespace of `init_pid`, as this machine numbers them."""
    ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    pids.append(int(entry))
            except OSError:
                pass  # gone meanwhile
    return pids


def move(pids: list[int], group: Path) -> None:
    for pid in pids:
        try:
            (group / "cgroup.procs").write_text(f"{pid}\n")
        except OSError:
            pass  # exited meanwhile


class HostCpu:
    """Context manager: host k's processes (its init's pid in `inits[k]`) held to `share` CPUs
    each."""

    def __init__(self, inits: dict[int, int], share: float):
        self.inits, self.share = inits, share
        self.root, self.version = cpu_root() if share > 0 else (Path("/"), 0)
        self.groups: dict[int, Path] = {}

    def __enter__(self) -> HostCpu:
        if self.share <= 0:
            return self
        quota = int(self.share * PERIOD_US)
        if self.version == 2:
            control = self.root / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu\n")
        for k, init in self.inits.items():
            group = self.root / NAME.format(k=k)
            group.mkdir(exist_ok=True)
            if self.version == 2:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            else:
                (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            move(namespace_pids(init), group)
            self.groups[k] = group
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for group in self.groups.values():
            move([int(p) for p in (group / "cgroup.procs").read_text().split()], self.root)
            try:
                group.rmdir()
            except OSError:
                pass  # a process still moving out; the empty group is harmless and reused next time
        self.groups.clear()
