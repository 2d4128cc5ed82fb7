"""Takeover: the first deploy on a host where Python still runs as a bare `python app.py &`.

Only the deploy user's own server is taken over (the plan refuses any other: core.plan._takeover).
Before anything changes, `record` saves what is needed to return to exactly that state, in two
places by whose it is:
- the deploy user's own (remote/takeover_record.py, as the deploy user, in
  <DEPLOY_ROOT>/.deploy/takeover/, 0700/0600, never printed): the unmanaged server's command line,
  working directory and environment (less its login session's), and the PM2 entries of the app's
  Node.js process;
- root's (the helper's `takeover-record`, in /var/lib/signalcraft-deploy/takeover/): its own copy of
  the Nginx site file, the only one root ever puts back. The deploy then moves traffic to Gunicorn
  under PM2 without refusing a connection (`steps.handover.handover` with `stop_unmanaged`, which
  stops the server only while it is the deploy user's). `restore` (used by `rollback` and by a
  failed takeover) brings the old site back through the helper, then the bare process and the old
  PM2 entry as the deploy user.
"""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core import formats
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root
from signalcraft_deploy.host.app_user import as_app, runs_as_deploy_user
from signalcraft_deploy.host.io import fail, q, run, write_file, write_file_command
from signalcraft_deploy.host.nginx import reload_nginx
from signalcraft_deploy.host.programs import program_command, run_program
from signalcraft_deploy.host.upkeep import forget_logs_command


def folder(s: Settings) -> str:
    return f"{s.state_dir}/takeover"


def recorded(c: Any, s: Settings) -> bool:
    return run(c, f"test -e {q(folder(s))}/legacy.json", warn=True).ok


APPS_OWN = (  # in the apps' own account's home: its copy of the record, to restore it as it
    ".signalcraft-takeover"
)


def record(c: Any, s: Settings, pid: int, apps_own: bool = False) -> None:
    """Save what `restore` needs, once (a second takeover attempt keeps the first, true 'before'
    record). A server of the apps' own account is read as that account, and its record kept by the
    deploy user, marked `ran_as`.
    """
    args = (str(pid), folder(s), s.pm2, s.node_app, str(formats.TAKEOVER.current), formats.TOOL)
    if apps_own:
        command, text = program_command(s, "takeover_record.py", *args[:1], "-", *args[2:])
        keep = (
            f"{q(s.python)} -c {q(MARK_RAN_AS)} {q(s.app_user)} > {q(folder(s))}/legacy.json.tmp "
            f"&& mv -f {q(folder(s))}/legacy.json.tmp {q(folder(s))}/legacy.json"
        )
        result = run(
            c,
            f"umask 077 && mkdir -p {q(folder(s))} && if [ ! -e {q(folder(s))}/legacy.json ]; then "
            f"{as_app(c, s, command)} | {keep}; fi",
            stdin=text,
            warn=True,
        )
    else:
        result = run_program(c, s, "takeover_record.py", *args, warn=True)
    if result.ok:
        result = root.call(c, "takeover-record", s.state_dir, str(pid), s.nginx_site, warn=True)
    if not result.ok:
        raise fail(
            f"Could not record the unmanaged server (pid {pid}) before taking it over:"
            f" {result.stderr.strip()[-400:]}"
        )


# Reads the apps' account's record on stdin, adds whose it is (the deploy user's word, not the
# record's), prints it.
MARK_RAN_AS = (
    "import json, sys; r = json.load(sys.stdin); r['ran_as'] = sys.argv[1]; print(json.dumps(r))"
)


def keep_site_defaults(c: Any, s: Settings, values: dict[str, str]) -> str:
    """Keep on the host the settings the old site implied (later deploys read them:
    facts.site_defaults)."""
    if not values:
        return ""
    write_file(
        c,
        f"{s.state_dir}/site-defaults.json",
        json.dumps(values, indent=2, sort_keys=True) + "\n",
        "0600",
    )
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def restore(c: Any, s: Settings) -> str:
    """Return the host to its state before the takeover: bare Python server, old Node.js entry, old
    site."""
    from signalcraft_deploy.host import pm2 as pm2_ops

    program = ("takeover_restore.py", folder(s), s.pm2, str(formats.TAKEOVER.current), formats.TOOL)
    readable = run_program(c, s, *program, "check", warn=True)
    if not readable.ok:  # a record this version cannot restore: the apps keep running
        raise fail(
            f"Could not restore the state before the takeover: {readable.stderr.strip()[-400:]}"
        )
    apps_own = (readable.stdout.strip().splitlines() or [""])[
        -1
    ] == s.app_user and runs_as_deploy_user(c, s) is False
    # its server is started again as it, from its copy of the record (the deploy user's folder is
    # closed to it)
    if apps_own:
        program = ("takeover_restore.py", APPS_OWN, *program[2:])
        copy = as_app(
            c,
            s,
            f"umask 077 && mkdir -p {APPS_OWN} && "
            + write_file_command(f"{APPS_OWN}/legacy.json", "0600"),
        )
        run(c, f"{copy} < {q(folder(s))}/legacy.json")
    for name in (s.python_app, s.handover_app, s.node_app, s.node_handover_app):
        pm2_ops.delete(c, s, name)
    run(c, as_app(c, s, forget_logs_command(s.handover_app, s.node_handover_app)), warn=True)
    result = run_program(c, s, *program, warn=True, app=apps_own)
    if not result.ok:
        raise fail(
            f"Could not restore the state before the takeover: {result.stderr.strip()[-400:]}"
        )
    site = root.call(c, "takeover-restore", s.state_dir, s.nginx_site, s.nginx_test_cmd, warn=True)
    if site.ok:
        reload_nginx(c, s)
    run(c, f"rm -f {q(s.current_dir)} {q(s.state_dir)}/site-defaults.json", warn=True)
    pm2_ops.save(c, s)
    if not runs_as_deploy_user(
        c, s
    ):  # the old Node.js entry is back in the deploy user's own PM2, where it ran
        pm2_ops.save_as_deploy_user(c, s)
    if not site.ok:
        raise fail(
            "The unmanaged server runs again, but its Nginx site could not be put back: "
            f"{(site.stderr or site.stdout).strip()[-400:]}"
        )
    state = json.loads(result.stdout.strip().splitlines()[-1])
    return f"the unmanaged server runs again (pid {state['pid']})" + (
        "" if state["alive"] else " — but it exited at once"
    )
