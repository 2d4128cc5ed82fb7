"""The hooks appended to every gunicorn.conf.py (remote/gunicorn_hooks.py), run as Gunicorn's master
runs them: after a HUP, a new worker that exits while old ones still drain is replaced.

The master here is Gunicorn's own bookkeeping (arbiter.py: `reload`, `manage_workers`,
`reap_workers`, `spawn_worker`), reduced to the lines that decide which workers run: Gunicorn 27
waits inside its reload until the old workers are gone (`waits`), managing none meanwhile; older
versions go on managing them. The hooks are the configuration file's, executed as Gunicorn
executes it."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from signalcraft_deploy.remote import source


class Worker:
    def __init__(self, pid: int, age: int) -> None:
        self.pid, self.age = pid, age


class Master:
    """Gunicorn's arbiter, as far as the worker count goes."""

    def __init__(self, cfg: dict[str, Any], workers: int, waits: bool = True) -> None:
        self.cfg, self.configured, self.waits = cfg, workers, waits
        self.WORKERS: dict[int, Worker] = {}
        self.LISTENERS = ["127.0.0.1:8000"]
        self.reloading_since: int | None = None  # the last old worker's age, while reload waits
        self._num_workers = workers
        self.next_pid, self.age = 100, 0
        self.told_to_quit: list[int] = []
        self.manage_workers()

    @property
    def num_workers(self) -> int:
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        self._num_workers = value

    def spawn_worker(self) -> None:
        self.age += 1
        self.next_pid += 1
        self.WORKERS[self.next_pid] = Worker(self.next_pid, self.age)

    def manage_workers(self) -> None:
        while len(self.WORKERS) < self.num_workers:
            self.spawn_worker()
        workers = sorted(self.WORKERS.items(), key=lambda w: w[1].age)
        while len(workers) > self.num_workers:
            pid, _ = workers.pop(0)
            if pid not in self.told_to_quit:
                self.told_to_quit.append(pid)

    def hup(self) -> None:
        self.num_workers = self.configured  # setup() reads the configuration again
        self.cfg["on_reload"](self)
        last_age = self.age
        for _ in range(self.configured):
            self.spawn_worker()
        self.manage_workers()
        if self.waits:  # Gunicorn 27: reap only, until no worker is that old
            self.reloading_since = last_age

    def exits(self, pid: int) -> None:
        worker = self.WORKERS.pop(pid)
        self.cfg["child_exit"](self, worker)
        since = self.reloading_since
        if since is not None and any(w.age <= since for w in self.WORKERS.values()):
            return  # still inside reload's wait: nothing managed
        self.reloading_since = None
        self.manage_workers()

    def serving(self) -> list[int]:
        return [pid for pid in self.WORKERS if pid not in self.told_to_quit]


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A gunicorn.conf.py's namespace with the hooks appended, as Gunicorn executes the file."""
    monkeypatch.delitem(sys.modules, "_signalcraft_seen", raising=False)  # a new master process
    namespace: dict[str, Any] = {}
    exec(compile(source("gunicorn_hooks.py"), "gunicorn.conf.py", "exec"), namespace)
    namespace["_signalcraft_install"](namespace, "/srv/app/releases", "app")
    return namespace


def test_new_workers_that_exit_while_an_old_one_drains_are_replaced(cfg: dict[str, Any]) -> None:
    master = Master(cfg, 3)
    old = list(master.WORKERS)
    master.hup()
    assert set(master.told_to_quit) == set(old) and len(master.serving()) == 3
    for pid in old[1:]:  # idle: they exit at once
        master.exits(pid)
    busy = old[0]  # finishing a long request
    for pid in list(master.serving()):  # each new worker recycles (max_requests) meanwhile
        master.exits(pid)
        assert len(master.serving()) == 3  # replaced: Gunicorn alone would leave 2, 1, then none
    assert len(master.WORKERS) == 4
    master.exits(busy)
    assert master.num_workers == 3 and len(master.serving()) == 3 and len(master.WORKERS) == 3
    assert master.told_to_quit == old  # no new worker was told to quit for the count to come down


NO_HOOKS: dict[str, Any] = {"on_reload": lambda server: None, "child_exit": lambda s, w: None}


@pytest.mark.parametrize("waits", [True, False], ids=["gunicorn-27", "older"])
def test_gunicorn_alone_leaves_no_worker_while_old_ones_drain(waits: bool) -> None:
    """What the hooks are for, shown on the same master without them."""
    master = Master(NO_HOOKS, 2, waits=waits)
    old = list(master.WORKERS)
    master.hup()
    for pid in list(master.serving()):
        master.exits(pid)
    assert master.serving() == [] and set(master.WORKERS) == set(old)


@pytest.mark.parametrize("waits", [True, False], ids=["gunicorn-27", "older"])
def test_with_the_hooks_as_many_workers_serve_as_configured_throughout(
    cfg: dict[str, Any], waits: bool
) -> None:
    master = Master(cfg, 2, waits=waits)
    old = list(master.WORKERS)
    master.hup()
    for _ in range(5):
        master.exits(master.serving()[0])
        assert len(master.serving()) == 2
    for pid in old:
        master.exits(pid)
    assert len(master.serving()) == 2 and len(master.WORKERS) == 2 and master.num_workers == 2


def test_without_a_drain_nothing_is_added(cfg: dict[str, Any]) -> None:
    master = Master(cfg, 2)
    master.exits(next(iter(master.WORKERS)))  # recycled, no HUP ever: Gunicorn's own replacement
    old = list(master.WORKERS)
    master.hup()
    for pid in old:
        master.exits(pid)  # the old ones exit before any new one does
    master.exits(master.serving()[0])
    assert len(master.serving()) == 2 and len(master.WORKERS) == 2


def test_a_master_shutting_down_starts_no_worker(cfg: dict[str, Any]) -> None:
    master = Master(cfg, 2)
    old = list(master.WORKERS)
    master.hup()
    master.LISTENERS = []  # Gunicorn's stop() closes its sockets first
    for pid in list(master.serving()):
        master.exits(pid)
    assert set(master.WORKERS) == set(old)


def test_a_second_hup_during_a_drain_counts_every_worker_then_old(cfg: dict[str, Any]) -> None:
    master = Master(cfg, 2)
    first = list(master.WORKERS)
    master.hup()
    master.exits(master.serving()[0])
    second = [pid for pid in master.WORKERS if pid not in first]
    master.hup()  # every worker now is old, the first drain's included
    master.exits(master.serving()[0])
    assert len(master.serving()) == 2
    for pid in first + second:
        master.exits(pid)
    assert len(master.serving()) == 2 and len(master.WORKERS) == 2


def test_the_templates_own_child_exit_still_runs_first(cfg: dict[str, Any]) -> None:
    seen: list[int] = []
    namespace: dict[str, Any] = {"child_exit": lambda server, worker: seen.append(worker.pid)}
    exec(compile(source("gunicorn_hooks.py"), "gunicorn.conf.py", "exec"), namespace)
    namespace["_signalcraft_install"](namespace, "/srv/app/releases", "app")
    master = Master(namespace, 1)
    pid = next(iter(master.WORKERS))
    master.exits(pid)
    assert seen == [pid]
