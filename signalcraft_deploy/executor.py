"""Several hosts at once: `fab -H web1,web2,web3 deploy` runs the deploy task ONCE, over all hosts.

Stock Fabric (3.2.3) expands `-H a,b,c task` into one call per host (`Executor.expand_calls`),
each run knowing nothing of the others. `FleetExecutor` is Fabric's executor with one change: the
consecutive per-host calls of a task marked `fleet_aware` become one call, made with the first
host's Connection, whose config carries every host (host/fleet_hosts.py's `fleet_hosts(c)` turns
it into Connections). Tasks not marked (and a single host) run exactly as before.

How it is installed:
- `signalcraft-deploy` (cli.py) is built with `executor_class=FleetExecutor`;
- under `fab`, importing the collection sets it on Fabric's running program (`fabric.main.program`),
  which reads `executor_class` only after the fabfile is loaded; the collection's own
  `configure({"tasks": {"executor_class": ...}})` would be read too late (collection config is
  loaded by the executor itself), and a fabric.yaml / FABRIC_TASKS_EXECUTOR_CLASS naming
  `signalcraft_deploy.executor.FleetExecutor` works as well and still wins.
"""

from __future__ import annotations

import sys
from typing import Any

from fabric import Connection, Executor
from fabric.tasks import ConnectionCall
from invoke.exceptions import Exit

from signalcraft_deploy.host.fleet_hosts import FLEET_KEY
from signalcraft_deploy.host.in_release import command_line


class FleetCall(ConnectionCall):
    """A call made once, on the first host's Connection, for every host in `fleet`."""

    def __init__(self, *args: Any, fleet: list[dict[str, Any]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fleet = fleet or []

    def clone_data(self) -> dict[str, Any]:
        data = super().clone_data()
        data.update(init_kwargs=self.init_kwargs, fleet=self.fleet)
        return data

    def make_context(self, config: Any) -> Connection:
        if (
            len(self.fleet) > 1
        ):  # on a copy: the executor hands the same config to the calls after this one
            config = config.clone()
            config[FLEET_KEY] = [{k: v for k, v in h.items() if k != "config"} for h in self.fleet]
        return super().make_context(config)


class FleetExecutor(Executor):
    """Fabric's executor; a fleet-aware task given several hosts runs once, with all of them; a
    task that takes the command line's remainder (`exec -- flask routes`) gets it as its flag."""

    def expand_calls(self, calls: Any, apply_hosts: bool = True) -> list[Any]:
        hand_remainder_over(self.core, calls, sys.argv)
        out: list[Any] = []
        for call in super().expand_calls(calls, apply_hosts):
            if not (isinstance(call, ConnectionCall) and getattr(call.task, "fleet", False)):
                out.append(call)
            elif out and isinstance(out[-1], FleetCall) and out[-1].task is call.task:
                out[-1].fleet.append(dict(call.init_kwargs))
            else:
                out.append(
                    call.clone(
                        into=FleetCall,
                        with_={"init_kwargs": call.init_kwargs, "fleet": [dict(call.init_kwargs)]},
                    )
                )
        return out


def hand_remainder_over(core: Any, calls: Any, argv: list[str]) -> None:
    """Give what follows `--` to the tasks marked `remainder_to = "flag"` (exec), as that flag's
    value, and not to Fabric, which would otherwise run it as a command of its own on each host.
    Fabric joins the words with spaces; the words themselves are taken from `argv` when it holds
    them (the command line as typed), so that quoting survives (host/in_release.command_line)."""
    remainder = getattr(core, "remainder", "") if core is not None else ""
    takers = [call for call in calls if getattr(call.task, "remainder_to", None)]
    if not remainder or not takers:
        return
    words = argv[argv.index("--") + 1 :] if "--" in argv else []
    line = command_line(None, words) if " ".join(words) == remainder else remainder
    for call in takers:
        flag = call.task.remainder_to
        if call.kwargs.get(flag):
            raise Exit(f"Give the command once: --{flag} or after --, not both.", code=2)
        call.kwargs[flag] = line
    core.remainder = ""


def use_fleet_executor() -> None:
    """Under `fab`: make its program use the fleet executor (unless configured otherwise)."""
    main = sys.modules.get("fabric.main")
    program = getattr(main, "program", None) if main else None
    if program is not None and program.executor_class is Executor:
        program.executor_class = FleetExecutor
