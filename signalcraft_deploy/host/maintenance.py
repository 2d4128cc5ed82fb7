"""Maintenance mode on a host: root serves it (the helper's maintenance-on/off verbs render it from
a checked description, remote/nginx_site.py), a verified reload makes it take, and the deploy user
keeps a record of it in <DEPLOY_ROOT>/.deploy/maintenance.json (what was asked, when, by whom) for
`status` and to put the previous state back when a reload does not take.

Nothing of it is in the site itself (the site only includes its files), so deploys and rollbacks
leave it as it is, and a reboot finds it in Nginx's configuration.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core import formats
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root
from signalcraft_deploy.host.io import fail, q, run, write_file
from signalcraft_deploy.host.lock import who
from signalcraft_deploy.host.nginx import reload_nginx
from signalcraft_deploy.remote.nginx_site import maintenance_files, upstream_for

RECORD = "maintenance.json"  # in DEPLOY_ROOT/.deploy (the deploy user's, 0600)
MARKER = "/.signalcraft-deploy-maintenance"


def record_path(s: Settings) -> str:
    return f"{s.state_dir}/{RECORD}"


def served_file(s: Settings) -> str:
    """The file Nginx includes while maintenance mode is on (root's, world-listable folder)."""
    return maintenance_files(upstream_for(s.nginx_site))["server"]


def facts_script(s: Settings) -> list[str]:
    """Shell sections for host facts: the record, and whether Nginx's configuration has it on."""
    return [
        f"sec maintenance; cat {q(record_path(s))} 2>/dev/null || true",
        f"sec maintenance_on; test -e {q(served_file(s))} && echo yes; true",
    ]


def parse_record(text: str, served: bool) -> dict[str, Any] | None:
    """What `facts_script` read: None when maintenance mode is off and nothing says otherwise."""
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    shown = (
        {k: data.get(k) for k in ("since", "by", "message", "retry_after")}
        if isinstance(data, dict)
        else {}
    )
    if not served and not shown:
        return None
    return {"on": served, "recorded": bool(shown), **shown}


def marker(s: Settings, expect: str) -> dict[str, Any]:
    """The reload's proof: the site's first plain-HTTP listener answers `expect` at MARKER."""
    return {
        "url": f"http://{s.nginx_listen[0].local}{MARKER}",
        "host": s.server_name.split()[0] if s.server_name != "_" else None,
        "expect": expect,
    }


def _ask_root(c: Any, s: Settings, verb: str, description: dict[str, Any] | None) -> str:
    """Run maintenance-on/off; its last line of output (the id, `off` or `absent`)."""
    result = root.call(
        c,
        verb,
        s.state_dir,
        s.nginx_site,
        s.nginx_test_cmd,
        stdin=json.dumps(description) if description is not None else None,
        warn=True,
    )
    said = (result.stderr or "").strip()
    if result.exited == 65:
        raise fail(
            f"nginx -t rejected maintenance mode for {s.nginx_site}; nothing was changed. nginx"
            f" said:\n{said}"
        )
    if result.exited == 2 and ("not installed by this helper" in said or "claim" in said):
        raise fail(
            f"NGINX_SITE {s.nginx_site} was not installed by this tool for this deploy user and"
            " DEPLOY_ROOT: deploy first (maintenance mode serves the site a deploy installed)."
        )
    if result.exited == 2 and "older version" in said:
        raise fail(
            f"NGINX_SITE {s.nginx_site} was installed by an older version of signalcraft-deploy,"
            " which had no maintenance mode: deploy once with this version, then turn it on."
        )
    if not result.ok:
        raise fail(f"Could not switch maintenance mode: {said[-400:] or f'exit {result.exited}'}")
    return (result.stdout.strip().splitlines() or [""])[-1]


def read_record(c: Any, s: Settings) -> dict[str, Any] | None:
    result = run(c, f"cat {q(record_path(s))}", warn=True)
    try:
        data = json.loads(result.stdout) if result.ok else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def record_if_on(c: Any, s: Settings) -> dict[str, Any] | None:
    """The record of the mode Nginx's files serve now; None when they serve none (a record left
    after the site was taken away describes nothing that is on)."""
    if not run(c, f"test -e {q(served_file(s))}", warn=True).ok:
        return None
    return read_record(c, s)


def turn_on(c: Any, s: Settings, description: dict[str, Any], message: str) -> dict[str, Any]:
    """Serve maintenance mode as `description` says, proven by a reload whose new workers answer its
    id; the record written. If the reload does not take, what was there before is put back. On
    again keeps when (and by whom) it was first turned on: `status` tells how long it has been."""
    before = record_if_on(c, s)
    expect = _ask_root(c, s, "maintenance-on", description)
    try:
        verdict = reload_nginx(c, s, marker=marker(s, expect))
    except Exit:
        _put_back(c, s, before)
        raise
    record = formats.stamp(
        formats.MAINTENANCE,
        {
            "since": (before or {}).get("since") or datetime.now(UTC).isoformat(timespec="seconds"),
            "by": (before or {}).get("by") or who(),
            "message": message,
            "retry_after": description["retry_after"],
            "description": description,
        },
    )
    run(c, f"umask 077 && mkdir -p {q(s.state_dir)}")
    write_file(c, record_path(s), json.dumps(record), mode="0600")
    return verdict


def turn_off(c: Any, s: Settings) -> bool:
    """Maintenance mode off (its files removed, then a reload proven to take); False when it was
    not on. If the reload does not take, it is turned on again as it was."""
    before = record_if_on(c, s)
    if _ask_root(c, s, "maintenance-off", None) == "absent":
        run(c, f"rm -f {q(record_path(s))}", warn=True)
        return False
    try:
        reload_nginx(c, s)
    except Exit:
        _put_back(c, s, before)
        raise
    run(c, f"rm -f {q(record_path(s))}")
    return True


def _put_back(c: Any, s: Settings, before: dict[str, Any] | None) -> None:
    """The reload was not proven: its files as they were before, and Nginx reloaded once more. A
    reload that took but whose marker did not answer has the new files running; without that
    reload they would stay running while the files (and `status`) say otherwise."""
    previous = (before or {}).get("description")
    try:
        if isinstance(previous, dict):
            _ask_root(c, s, "maintenance-on", previous)
        else:
            _ask_root(c, s, "maintenance-off", None)
        reload_nginx(c, s)
    except Exit:
        pass  # the reload's own failure is the message that matters
