"""`nginx-check`: the routes reach the right app, Gunicorn is on loopback only, `nginx -t` passes; warns when Node.js
listens beyond loopback."""

from __future__ import annotations

import sys

from invoke import Collection, task

from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.connect import COMMON_HELP, open_host, settings_for
from signalcraft_deploy.host.io import fail
from signalcraft_deploy.host.nginx import check


@task(iterable=["set_"], help={**COMMON_HELP})
def nginx_check(c, env_file=None, set_=None):
    """Check that Nginx proxies the Python routes to Gunicorn and the rest to Node.js, then nginx -t."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    routes, problems = check(c, s)
    warning = host_facts.node_public_warning(s, host_facts.gather(c, s))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    for r in routes:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.uri:<32} -> {r.found or '-':<22} (expected {r.expected})")
    if problems:
        raise fail("Nginx check failed:\n  " + "\n  ".join(problems))
    print("nginx -t: ok")


nginx_check.__name__ = "nginx-check"


ns = Collection(nginx_check)
