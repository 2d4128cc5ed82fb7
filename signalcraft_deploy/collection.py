"""The collection: every task of signalcraft-deploy, as `fab` and `invoke` list them.

`invoke <task>` runs against this machine; `fab -H user@host <task>` against each host.
One module per concern; each ends in its Collection, composed here.
"""

import gc

from invoke import Collection

from signalcraft_deploy.executor import use_fleet_executor
from signalcraft_deploy.tasks import (
    configs,
    console,
    deploy,
    freeze,
    init,
    install,
    lock,
    maintenance,
    nginx,
    pm2,
    remove,
    settings,
    setup,
    status,
)

ns = Collection()
for module in (
    init,
    setup,
    install,
    freeze,
    configs,
    nginx,
    pm2,
    deploy,
    status,
    console,
    maintenance,
    lock,
    settings,
    remove,
):
    for name, t in module.ns.tasks.items():
        ns.add_task(t, name=name)

# `fab -H a,b,c deploy`: one deploy over all the hosts, not one per host (see executor.py).
use_fleet_executor()

# Everything imported so far (Fabric, paramiko, Jinja2, these modules) lives until the process
# ends: keep it out of the garbage collector's passes. The collection at exit otherwise walks it
# all once more, 0.04-0.08 s of every run, a fifth of a deploy that changes nothing.
gc.freeze()
