"""signalcraft-deploy: Invoke/Fabric tasks that deploy a Flask (Gunicorn) + Node.js app under PM2 behind Nginx.

`invoke <task>` runs against this machine; `fab -H user@host <task>` against each host.
One module per concern; each ends in its Collection, composed here.
"""

from invoke import Collection

from tasks import configs, deploy, freeze, install, lock, nginx, pm2, status

ns = Collection()
for module in (install, freeze, configs, nginx, pm2, deploy, status, lock):
    for name, t in module.ns.tasks.items():
        ns.add_task(t, name=name)
