"""`unlock`: who holds the deploy lock, and breaking it."""

from __future__ import annotations

import json

from invoke import Collection, task

from signalcraft_deploy.host.connect import COMMON_HELP, open_host, settings_for
from signalcraft_deploy.host.io import q, run
from signalcraft_deploy.host.lock import audit, describe_holder, who


@task(iterable=["set_"], help={**COMMON_HELP, "force": "break a lock even if its deploy is still running (logged)"})
def unlock(c, force=False, env_file=None, set_=None):
    """Show who holds the deploy lock; with --force, end that deploy's hold on it."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    d = q(s.state_dir)
    holder = run(c, f"cat {d}/lock.json 2>/dev/null", warn=True).stdout.strip()
    pid = run(c, f"cat {d}/lock.pid 2>/dev/null", warn=True).stdout.strip()
    if not holder:
        print("No deploy holds the lock.")
        return
    print(f"Lock held by {describe_holder(holder)} (host pid {pid or '?'}).")
    if not force:
        print("Run `unlock --force` to break it.")
        return
    if pid.isdigit():
        run(c, f"pkill -P {pid}; kill {pid}; true", warn=True)
    run(c, f"rm -f {d}/lock.json {d}/lock.pid", warn=True)
    audit(c, s, {"event": "unlock", "by": who(), "broke": json.loads(holder) if holder.startswith("{") else holder})
    print("Lock broken; this was written to the audit log.")


ns = Collection(unlock)
