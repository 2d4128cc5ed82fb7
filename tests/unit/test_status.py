"""`status`'s host life: who the apps run as (read as that account, through the app helper), its
boot unit and saved list, PM2's logs of that account, and the warnings when the apps run as the
deploy user or its own PM2 still saves them. The host is a mock that answers each program by who
asks and in which mode."""

from __future__ import annotations

import json
import re

from invoke import MockContext, Result

from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.host.io import InvokeRunner, command_log, use_transport
from signalcraft_deploy.host.root import APP_HELPER
from signalcraft_deploy.tasks.status import host_life, render_host_life

DOOR = f"sudo -n -u shop {APP_HELPER} /bin/sh -c "
UNIT = "/etc/systemd/system/pm2-shop.service"
APPS = {
    "user": "shop",
    "uid": 998,
    "pm2_home": "/var/lib/signalcraft-apps/shop/.pm2",
    "logs": {
        "path": "/var/lib/signalcraft-apps/shop/.pm2/logs",
        "bytes": 4096,
        "count": 2,
        "dev": 7,
    },
    "app_logs": {"shop-python-out.log": 2048},
    "in_use": ["/srv/shop/venvs/abc/bin/gunicorn"],
}
BOOT = {
    "user": "shop",
    "uid": 998,
    "pm2_home": APPS["pm2_home"],
    "unit_path": UNIT,
    "enabled": True,
    "unit": {
        "User": "shop",
        "ExecStart": "/usr/lib/node_modules/pm2/bin/pm2 resurrect",
        "env": {"PATH": "/usr/bin:/bin"},
    },
    "dump": {},
    "pm2": "/usr/lib/node_modules/pm2/bin/pm2",
    "node": "/usr/bin/node",
    "logrotate": "/etc/logrotate.d/pm2-shop",
}
SPACE = {
    "free_mb": 900,
    "total_mb": 2000,
    "path": "/srv/shop",
    "dev": 7,
    "user": "ubuntu",
    "unused": [],
    "parts": {
        n: {"path": f"/srv/shop/{n}", "bytes": 0, "count": 0}
        for n in ("releases", "venvs", "node_modules", "shared")
    },
}


def host(
    login: str,
    deploy_dump: dict | None = None,
    apps: dict = APPS,
    boot: dict = BOOT,
    space: dict = SPACE,
):
    """A host whose remote/upkeep.py answers by mode, through the door (the apps' account) or as the
    deploy user."""
    answers = {
        re.compile(r'^sudo -n -u shop .*"mode": "apps"'): Result(json.dumps(apps) + "\n"),
        re.compile(r'^sudo -n -u shop .*"mode": "boot"'): Result(json.dumps(boot) + "\n"),
        re.compile(r'^python3 -I -S - .*"mode": "space"'): Result(json.dumps(space) + "\n"),
        re.compile(r'^python3 -I -S - .*"mode": "boot"'): Result(
            json.dumps({**boot, "dump": deploy_dump or {}}) + "\n"
        ),
    }
    return use_transport(MockContext(run=answers, repeat=True), InvokeRunner(login=login))


def test_status_says_which_account_runs_the_apps_read_as_it_through_the_app_helper(load) -> None:
    s = load({"APP_NAME": "shop", "APP_USER": "shop", "DEPLOY_ROOT": "/srv/shop"})
    c = host("ubuntu")
    data = host_life(c, s, HostFacts())
    lines = render_host_life(data)
    assert (
        lines[0]
        == "apps run as shop (uid 998), PM2 home /var/lib/signalcraft-apps/shop/.pm2; deployed by"
        " ubuntu"
    )
    assert not any(line.startswith("WARNING") for line in lines), lines
    assert lines[1] == f"boot      {UNIT} enabled; PM2's saved list matches what runs"
    assert (
        "shop-python-out.log 2 kB; /var/lib/signalcraft-apps/shop/.pm2/logs: 4 kB in 2 files"
        in lines[-1]
    )
    sent = command_log(c).commands
    assert (
        sum(cmd.startswith(DOOR) for cmd in sent) == 2
    )  # the apps' boot state and their side, as shop
    assert (
        sum(cmd.startswith("python3 -I -S - ") for cmd in sent) == 2
    )  # DEPLOY_ROOT's space and ubuntu's own saved list
    space = next(cmd for cmd in sent if '"mode": "space"' in cmd and cmd.startswith("python3"))
    assert (
        "/srv/shop/venvs/abc/bin/gunicorn" in space
    )  # what the apps run from is never counted unused


def test_status_warns_when_the_apps_run_as_the_deploy_user(load) -> None:
    s = load({"APP_NAME": "shop", "APP_USER": "ubuntu", "DEPLOY_ROOT": "/srv/shop"})
    same = {**APPS, "user": "ubuntu", "uid": 1000, "pm2_home": "/home/ubuntu/.pm2"}
    answers = {
        re.compile(r'^python3 -I -S - .*"mode": "apps"'): Result(json.dumps(same) + "\n"),
        re.compile(r'^python3 -I -S - .*"mode": "boot"'): Result(
            json.dumps({**BOOT, "user": "ubuntu"}) + "\n"
        ),
        re.compile(r'^python3 -I -S - .*"mode": "space"'): Result(json.dumps(SPACE) + "\n"),
    }
    c = use_transport(MockContext(run=answers, repeat=True), InvokeRunner(login="ubuntu"))
    lines = render_host_life(host_life(c, s, HostFacts()))
    assert lines[0] == "apps run as ubuntu (uid 1000), PM2 home /home/ubuntu/.pm2 (the deploy user)"
    assert lines[1].startswith(
        "WARNING   the apps run as the deploy user ubuntu: code running inside them can do all "
        "ubuntu can (rewrite the releases, add a key to ~ubuntu/.ssh"
    )
    assert not any(
        "sudo -n -u" in cmd for cmd in command_log(c).commands
    )  # no door: the same account


def test_status_warns_when_the_deploy_users_own_pm2_still_saves_the_apps(load) -> None:
    s = load({"APP_NAME": "shop", "APP_USER": "shop", "DEPLOY_ROOT": "/srv/shop"})
    saved = {
        "shop-python": [
            {"exec": "/x", "cwd": "/srv/shop/current", "args": [], "interpreter": "none"}
        ]
    }
    lines = render_host_life(host_life(host("ubuntu", deploy_dump=saved), s, HostFacts()))
    assert (
        lines[1]
        == "WARNING   ubuntu's own PM2 saved list still holds shop-python: its boot unit would"
        " start them beside shop's at boot (deploy again to move them, or `pm2 delete` them as"
        " ubuntu and `pm2 save --force`)"
    )


def test_status_warns_when_the_apps_pm2_runs_outside_its_unit_under_systemd(load) -> None:
    s = load({"APP_NAME": "shop", "APP_USER": "shop", "DEPLOY_ROOT": "/srv/shop"})
    inside = render_host_life(
        host_life(host("ubuntu", boot={**BOOT, "daemon_unit": "pm2-shop.service"}), s, HostFacts())
    )
    assert not any(line.startswith("WARNING") for line in inside), inside
    outside = render_host_life(
        host_life(host("ubuntu", boot={**BOOT, "daemon_unit": ""}), s, HostFacts())
    )
    assert (
        outside[1]
        == "WARNING   shop's PM2 daemon runs outside pm2-shop.service (started by a command over"
        " SSH): systemd would not restart it if it died; the next boot, or `sudo systemctl"
        " restart pm2-shop.service` (which restarts the apps), puts it there"
    )


def test_releases_are_listed_current_then_what_rollback_picks_then_the_bad_ones() -> None:
    """r5 failed (bad), r4 was rolled back from (good, newer than current r3): `previous` starts
    with r2, the release `rollback` returns to (previous_release), and the bad ones are under their
    own heading."""
    from signalcraft_deploy.host.releases import previous_release
    from signalcraft_deploy.tasks.status import ordered_releases, render_releases

    names, bad = ["r1", "r2", "r3", "r4", "r5", "r0"], {"r5", "r0"}
    listed = ordered_releases(names, "r3", bad)
    assert [r["name"] for r in listed] == ["r3", "r2", "r1", "r4", "r5", "r0"]
    picked = previous_release(HostFacts(releases=sorted(names), bad_releases=bad), "r3")
    assert [r["name"] for r in listed if r["rollback"]] == [picked] == ["r2"]
    assert render_releases(listed) == [
        "previous  r2 (rollback returns here), r1",
        "newer     r4 (after the current one: `rollback --to NAME` returns there)",
        "bad       r5, r0",
    ]
    assert render_releases(ordered_releases(["r1"], "r1", set())) == ["previous  none"]


def test_status_shows_crashes_apart_from_the_reloads_pm2_counts_as_restarts(load) -> None:
    from signalcraft_deploy.tasks.status import render_status

    app = {
        "name": "shop-nodejs",
        "pm_id": 5,
        "pid": 4200,
        "status": "online",
        "mode": "cluster",
        "uptime_s": 9,
        "restarts": 3,
        "crashes": 1,
        "memory_master_mb": 40.0,
        "workers": 0,
        "memory_workers_mb": 0,
    }
    data = {
        "host": "h",
        "current": {"release": "r3", "sha": "a" * 40, "deployed_at": "t", "deployed_by": "ci"},
        "releases": [
            {"name": "r3", "current": True, "bad": False, "newer": False, "rollback": False}
        ],
        "apps": [app],
        "nginx_test_ok": True,
        "nginx_drift": None,
        "tls": None,
        "health": {},
        "recent": [],
        "shared": {},
        "warnings": [],
        **{
            "runs_as": {
                "user": "shop",
                "uid": 998,
                "pm2_home": "/p",
                "deploy_user": "ubuntu",
                "deploy_user_saved": [],
                "unit": "u",
                "daemon_unit": None,
            },
            "boot": {"unit": "u", "enabled": True, "problems": []},
            "disk": {"free_mb": 900, "path": "/", "min_free_mb": 500},
            "logs": {
                "files": {},
                "all_bytes": 0,
                "all_files": 0,
                "dir": "/p/logs",
                "rotation": "r",
            },
        },
    }
    text = render_status(data)
    header = next(line for line in text.splitlines() if line.startswith("app "))
    row = next(line for line in text.splitlines() if line.startswith("shop-nodejs"))
    assert header.split()[5:7] == ["crashes", "restarts"] and row.split()[5:7] == ["1", "3"]
    assert "(crashes: PM2's restarts since the last deploy, rollback or pm2-reload" in text
    app["crashes"] = None
    assert "; ?: none recorded yet)" in render_status(data)
