"""`nginx-check`: the routes reach the right app, Gunicorn is on loopback only, `nginx -t` passes; warns when Node.js
listens beyond loopback."""

from __future__ import annotations

import sys

from invoke import Collection, Context, task

from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import tls as tls_ops
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.io import fail
from signalcraft_deploy.host.nginx import check, drift, read_site
from signalcraft_deploy.host.releases import live_site_settings
from signalcraft_deploy.steps.one_host import host_settings


@task(iterable=["set_"], help={**HOST_HELP})
def nginx_check(
    c: Context,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Check Nginx: routes, nginx -t, the running config is the one on disk, the TLS certificate."""
    s = settings_for(env_file, set_, environment)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    facts = host_facts.gather(c, s, quick=True)
    s = live_site_settings(
        c,
        host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json"),
        facts.current_release,
    )
    routes, problems = check(c, s)
    warning = host_facts.node_public_warning(s, host_facts.gather(c, s))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    running = drift(c, s, read_site(c, s))
    problems += [running] if running else []
    if s.tls:
        verdict = tls_ops.inspect(c, s)
        problems += verdict.get("problems", [])
        warning = tls_ops.expiry_warning(verdict.get("days_left"))
        problems += [warning] if warning else []
        if not verdict.get("problems"):
            print(
                f"TLS: {s.tls_cert} matches its key, covers"
                f" {', '.join(tls_ops.names(s)) or 'any name'}, expires in"
                f" {verdict.get('days_left')} days"
            )
    for r in routes:
        print(
            f"{'ok  ' if r.ok else 'FAIL'} {r.uri:<32} -> {r.found or '-':<22} (expected"
            f" {r.expected})"
        )
    if problems:
        raise fail("Nginx check failed:\n  " + "\n  ".join(problems))
    print("nginx -t: ok")


nginx_check.__name__ = "nginx-check"


ns = Collection(nginx_check)
