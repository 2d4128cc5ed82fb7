"""The hosts of a fleet-aware task: `fab -H web1,web2,web3 deploy` calls it once, with them all.

The executor (executor.py) makes one call of a task marked `fleet_aware` for every host given with
-H, and puts those hosts in the first host's config under FLEET_KEY; the task reads them back with
`fleet_hosts(c)`.
"""

from __future__ import annotations

from typing import Any

from fabric import Connection

FLEET_KEY = "signalcraft_fleet"


def fleet_aware(t: Any) -> Any:
    """Mark a task as one that handles several hosts itself (deploy, rollback, releases, status,
    exec; console, to refuse them)."""
    t.fleet = True
    return t


def fleet_hosts(c: Any) -> list[Any]:
    """The Connections a fleet-aware task works on: `c` alone, or c and the other hosts given with
    -H."""
    try:
        hosts = c.config[FLEET_KEY]
    except (KeyError, AttributeError):
        return [c]
    if not hosts or len(hosts) < 2:
        return [c]
    return [c] + [Connection(config=c.config, **dict(h)) for h in hosts[1:]]
