"""`unlock`: who holds the deploy lock, and breaking it."""

from __future__ import annotations

import json

from invoke import Collection, Context, task

from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.io import fail
from signalcraft_deploy.host.lock import audit, describe_holder, who
from signalcraft_deploy.host.programs import run_program


@task(
    iterable=["set_"],
    help={**HOST_HELP, "force": "break a lock even if its deploy is still running (logged)"},
)
def unlock(
    c: Context,
    force: bool = False,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Show who holds the deploy lock; with --force, end that deploy's hold on it."""
    s = settings_for(env_file, set_, environment)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    lines = run_program(
        c, s, "unlock.sh", s.state_dir, "1" if force else "0", warn=True
    ).stdout.splitlines()
    state, holder = (lines + ["", ""])[0], (lines + ["", ""])[1].strip()
    pid = next(
        (line.removeprefix("PID ").strip() for line in lines if line.startswith("PID ")), "?"
    )
    if state == "FREE":
        print("No deploy holds the lock.")
    elif state == "STALE":
        print(
            "No deploy holds the lock; a record was left by one that is gone:"
            f" {describe_holder(holder)}."
            + (" Removed." if force else " `unlock --force` removes it.")
        )
    elif not force:
        print(
            f"Lock held by {describe_holder(holder)} (host pid {pid}).\nRun `unlock --force` to"
            " break it."
        )
    elif lines[-1] == "BROKEN":
        audit(
            c,
            s,
            {
                "event": "unlock",
                "by": who(),
                "broke": json.loads(holder) if holder.startswith("{") else holder,
            },
        )
        print(
            f"Lock held by {describe_holder(holder)} (host pid {pid}).\nLock broken; this was"
            " written to the audit log."
        )
    else:
        raise fail(
            f"The lock in {s.state_dir} is held by {describe_holder(holder)}, but"
            f" {s.state_dir}/lock.pid ({lines[-1].split()[-1]}) is not this tool's lock holder, so"
            f" nothing was stopped. Find the process that holds {s.state_dir}/lock (`fuser -v"
            f" {s.state_dir}/lock`) and end it yourself."
        )


ns = Collection(unlock)
