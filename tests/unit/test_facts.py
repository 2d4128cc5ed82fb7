"""Facts: `pm2 jlist` and the sectioned facts output parsed into HostFacts, never keeping an app's
env values."""

from __future__ import annotations

import dataclasses
import getpass
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from invoke import Context

from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.host.facts import (
    MARK,
    facts_script,
    parse_facts,
    parse_pm2_jlist,
    split_sections,
)
from signalcraft_deploy.host.lock import DeployLock

SECRET = "s3cr3t-Zq9x-never-print-me"
DB_PASSWORD = "hunter2-db-pass"
VENV = "/home/ubuntu/signalcraft/venvs/0123456789abcdef"
CURRENT = "/home/ubuntu/signalcraft/current"


def _pm2_env(**over: Any) -> dict[str, Any]:
    """A pm2_env as PM2 5.x prints it: the app's environment appears both nested and copied to the
    top level."""
    app_env = {
        "SECRET_KEY": SECRET,
        "DATABASE_URL": f"postgres://app:{DB_PASSWORD}@db/app",
        "PATH": "/usr/bin:/bin",
    }
    base: dict[str, Any] = {
        "namespace": "default",
        "kill_retry_time": 100,
        "windowsHide": True,
        "username": "ubuntu",
        "treekill": True,
        "autorestart": True,
        "vizion": True,
        "env": {**app_env, "unique_id": "6c1f8e0a-1b2c-4d5e-8f90-123456789abc"},
        "instance_var": "NODE_APP_INSTANCE",
        "pmx": True,
        "automation": True,
        "node_args": [],
        "status": "online",
        "pm_uptime": 1_741_064_767_000,
        "axm_actions": [],
        "axm_monitor": {"Heap Size": {"value": "12.11", "unit": "MiB"}},
        "axm_options": {},
        "axm_dynamic": {},
        "created_at": 1_741_064_760_000,
        "restart_time": 0,
        "unstable_restarts": 0,
        "version": "N/A",
        "versioning": None,
        **app_env,
    }
    base.update(over)
    return base


def pm2_jlist() -> list[dict[str, Any]]:
    python = {
        "pid": 41001,
        "name": "signalcraft-python",
        "pm_id": 0,
        "monit": {"memory": 61_440_000, "cpu": 0.4},
        "pm2_env": _pm2_env(
            name="signalcraft-python",
            exec_mode="fork_mode",
            instances=1,
            pm_exec_path=f"{VENV}/bin/gunicorn",
            pm_cwd=CURRENT,
            exec_interpreter=f"{VENV}/bin/python",
            args=["-c", f"{CURRENT}/gunicorn.conf.py"],
            restart_time=3,
            pm_id=0,
        ),
    }
    nodes = [
        {
            "pid": 41002 + i,
            "name": "signalcraft-nodejs",
            "pm_id": 1 + i,
            "monit": {"memory": 48_000_000 + i, "cpu": 0.1},
            "pm2_env": _pm2_env(
                name="signalcraft-nodejs",
                exec_mode="cluster_mode",
                instances=2,
                pm_exec_path=f"{CURRENT}/server.js",
                pm_cwd=CURRENT,
                exec_interpreter="node",
                NODE_APP_INSTANCE=i,
                pm_id=1 + i,
                status="online" if i == 0 else "launching",
            ),
        }
        for i in range(2)
    ]
    return [python, *nodes]


JLIST = json.dumps(pm2_jlist())


# --- parse_pm2_jlist
# ------------------------------------------------------------------------------------------


def test_jlist_two_apps() -> None:
    procs, readable = parse_pm2_jlist(JLIST)
    assert readable
    assert [(p.name, p.pm_id, p.exec_mode, p.status) for p in procs] == [
        ("signalcraft-python", 0, "fork", "online"),
        ("signalcraft-nodejs", 1, "cluster", "online"),
        ("signalcraft-nodejs", 2, "cluster", "launching"),
    ]
    py = procs[0]
    assert py.pid == 41001
    assert py.exec_path == f"{VENV}/bin/gunicorn"
    assert py.interpreter == f"{VENV}/bin/python"
    assert py.cwd == CURRENT
    assert py.args == ("-c", f"{CURRENT}/gunicorn.conf.py")
    assert py.restarts == 3
    assert py.started_ms == 1_741_064_767_000
    assert py.memory == 61_440_000
    assert procs[1].exec_path == procs[2].exec_path == f"{CURRENT}/server.js"
    assert procs[2].args == ()


def test_jlist_never_keeps_env_values() -> None:
    procs, _ = parse_pm2_jlist(JLIST)
    assert SECRET in JLIST and DB_PASSWORD in JLIST  # the fixture does carry them
    text = repr(procs) + str(procs) + repr([p.__dict__ for p in procs])
    assert SECRET not in text
    assert DB_PASSWORD not in text


@pytest.mark.parametrize(
    "preamble",
    [
        (
            "[PM2] Spawning PM2 daemon with pm2_home=/home/ubuntu/.pm2\n[PM2] PM2 Successfully"
            " daemonized\n"
        ),
        (
            ">>>> In-memory PM2 is out-of-date, do:\n>>>> $ pm2 update\nIn memory PM2 version:"
            " 5.3.0\nLocal PM2 version: 5.4.2\n\n"
        ),
        (
            "[PM2][WARN] Current process list is not synchronized with saved list. Type 'pm2 save'"
            " to synchronize.\n"
        ),
    ],
)
def test_jlist_after_non_json_lines(preamble: str) -> None:
    procs, readable = parse_pm2_jlist(preamble + JLIST + "\n")
    assert readable
    assert [p.name for p in procs] == [
        "signalcraft-python",
        "signalcraft-nodejs",
        "signalcraft-nodejs",
    ]


def test_jlist_pretty_printed() -> None:
    procs, readable = parse_pm2_jlist(json.dumps(pm2_jlist(), indent=2))
    assert readable and len(procs) == 3


@pytest.mark.parametrize(
    "text", ["[]", "[]\n", "[PM2] Spawning PM2 daemon with pm2_home=/root/.pm2\n[]\n"]
)
def test_jlist_empty(text: str) -> None:
    assert parse_pm2_jlist(text) == ([], True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "[PM2] something went wrong",
        '{"not": "a list"}',
        "Error: connect ENOENT /home/ubuntu/.pm2/rpc.sock",
        "[1, 2",
    ],
)
def test_jlist_garbage_is_unreadable(text: str) -> None:
    assert parse_pm2_jlist(text) == ([], False)


def test_jlist_tolerates_missing_fields() -> None:
    procs, readable = parse_pm2_jlist(
        '[{"name": "x", "pm_id": 5}, "not a dict", {"name": "y", "pm_id": 6, "pid": null,'
        ' "pm2_env": {}}]'
    )
    assert readable
    assert [(p.name, p.pm_id, p.pid, p.status, p.exec_mode) for p in procs] == [
        ("x", 5, 0, "unknown", ""),
        ("y", 6, 0, "unknown", ""),
    ]


def test_jlist_args_as_a_string() -> None:
    procs, _ = parse_pm2_jlist(
        json.dumps([{"name": "x", "pm_id": 0, "pm2_env": {"args": "--port 3000"}}])
    )
    assert procs[0].args == ("--port 3000",)


# --- parse_facts
# ----------------------------------------------------------------------------------------------

MANIFEST = {
    "release": "20250304T050607Z-111111111111",
    "key": "k" * 64,
    "venv": VENV,
    "python_code": "p",
}
READ = {
    **MANIFEST,
    "format": 2,
}  # an unversioned manifest (format 1) as parse_facts reads it: migrated
SITE = "upstream signalcraft_python {\n    server 127.0.0.1:8001;\n}\n"
GUNICORN_CONF = "bind = ['127.0.0.1:8001']\nworkers = 5\n"


def sectioned(sections: dict[str, str]) -> str:
    """What facts_script prints: each section starts with a blank line and the marked name."""
    return "".join(
        f"\n{MARK}{name}\n{body}" + ("" if body.endswith("\n") or not body else "\n")
        for name, body in sections.items()
    )


def full_output() -> str:
    return sectioned(
        {
            "uid": "1000",
            "current": "/home/ubuntu/signalcraft/releases/20250304T050607Z-111111111111",
            "manifest": json.dumps(MANIFEST, indent=2),
            "releases": (
                "20250304T050607Z-111111111111\n20250301T000000Z-aaaaaaaaaaaa\n20250302T000000Z-bbbbbbbbbbbb"
            ),
            "bad": "20250302T000000Z-bbbbbbbbbbbb",
            "venvs": "0123456789abcdef\nfedcba9876543210",
            "node_modules": "00aa11bb22cc33dd",
            "conf:gunicorn.conf.py": GUNICORN_CONF,
            "conf:ecosystem.config.js": "module.exports = { apps: [] };",
            "site": SITE,
            "enabled": "yes",
            "tools": "pm2\nnode\nflock\npython-venv\nsudo\nnginx",
            "pm2": "[PM2] Spawning PM2 daemon with pm2_home=/home/ubuntu/.pm2\n" + JLIST,
        }
    )


def test_split_sections_keeps_section_bodies() -> None:
    sec = split_sections("noise before\n" + sectioned({"a": "1\n2", "b": "", "c": "x"}))
    assert sec == {"a": "1\n2", "b": "", "c": "x"}


def test_parse_facts_full() -> None:
    facts = parse_facts(full_output())
    assert facts.uid == 1000
    assert facts.current_release == "20250304T050607Z-111111111111"
    assert facts.manifest == READ
    assert facts.releases == [
        "20250301T000000Z-aaaaaaaaaaaa",
        "20250302T000000Z-bbbbbbbbbbbb",
        "20250304T050607Z-111111111111",
    ]
    assert facts.bad_releases == {"20250302T000000Z-bbbbbbbbbbbb"}
    assert facts.venvs_ready == {"0123456789abcdef", "fedcba9876543210"}
    assert facts.node_modules_ready == {"00aa11bb22cc33dd"}
    assert facts.configs == {
        "gunicorn.conf.py": GUNICORN_CONF,
        "ecosystem.config.js": "module.exports = { apps: [] };\n",
    }
    assert facts.site_text == SITE
    assert facts.site_enabled is True
    assert facts.tools == {"pm2", "node", "flock", "python-venv", "sudo", "nginx"}
    assert facts.pm2_readable
    assert len(facts.apps("signalcraft-nodejs")) == 2
    assert facts.online("signalcraft-python")
    assert not facts.online("signalcraft-nodejs")  # one instance is still launching
    assert not facts.online("signalcraft-absent")


def test_parse_facts_keeps_no_secret() -> None:
    facts = parse_facts(full_output())
    assert SECRET not in repr(facts) and DB_PASSWORD not in repr(facts)


def test_parse_facts_fresh_host() -> None:
    """A host with nothing deployed and no PM2: every section present but empty."""
    output = sectioned(
        {
            name: ""
            for name in (
                "uid",
                "current",
                "manifest",
                "releases",
                "bad",
                "venvs",
                "node_modules",
                "conf:gunicorn.conf.py",
                "conf:ecosystem.config.js",
                "site",
                "enabled",
                "tools",
                "pm2",
            )
        }
    )
    facts = parse_facts(output)
    assert facts == HostFacts(uid=None, pm2=[], pm2_readable=False)


def test_parse_facts_current_with_trailing_slash_and_bad_manifest() -> None:
    facts = parse_facts(
        sectioned({"current": "releases/r1/", "manifest": "{not json", "enabled": "no"})
    )
    assert facts.current_release == "r1"
    assert facts.manifest is None
    assert facts.site_enabled is False


def test_facts_script_round_trip(tmp_path: Path, load) -> None:
    """The script facts_script writes, run by sh against a real directory tree, parses back into
    what is there."""
    root = tmp_path / "deploy"
    release = root / "releases" / "20250304T050607Z-111111111111"
    (release / ".signalcraft").mkdir(parents=True)
    (root / "releases" / "20250301T000000Z-aaaaaaaaaaaa").mkdir()
    (release / ".signalcraft" / "manifest.json").write_text(json.dumps(MANIFEST))
    (release / "gunicorn.conf.py").write_text(GUNICORN_CONF)
    (root / "current").symlink_to(release)
    (root / ".deploy" / "bad").mkdir(parents=True)
    (root / ".deploy" / "bad" / "20250301T000000Z-aaaaaaaaaaaa").touch()
    (root / "venvs" / "0123456789abcdef").mkdir(parents=True)
    (root / "venvs" / "0123456789abcdef" / ".ok").touch()
    (root / "venvs" / "halfbuilt00000000").mkdir()  # no .ok: an interrupted build is not ready
    (root / "site.conf").write_text(SITE)
    s = at_site(
        load({"DEPLOY_ROOT": str(root), "PM2": "pm2-not-installed-here"}), root / "site.conf"
    )

    out = subprocess.run(
        ["sh", "-s"], input=facts_script(s) + "\n", capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    facts = parse_facts(out.stdout)
    assert facts.uid is not None
    assert facts.current_release == release.name
    assert facts.manifest == READ
    assert facts.releases == ["20250301T000000Z-aaaaaaaaaaaa", release.name]
    assert facts.bad_releases == {"20250301T000000Z-aaaaaaaaaaaa"}
    assert facts.venvs_ready == {"0123456789abcdef"}
    assert facts.node_modules_ready == set()
    assert facts.configs == {"gunicorn.conf.py": GUNICORN_CONF}
    assert facts.site_text == SITE
    assert facts.site_enabled  # a site outside sites-available needs no link
    assert "pm2" not in facts.tools
    assert (facts.pm2, facts.pm2_readable) == ([], False)


def live_release_r1(tmp_path: Path, load) -> tuple[Path, Path, Any]:
    """A deploy root whose `current` is release r1 with a manifest, and settings that point at
    it."""
    root = tmp_path / "deploy"
    release = root / "releases" / "r1"
    (release / ".signalcraft").mkdir(parents=True)
    (release / ".signalcraft" / "manifest.json").write_text(json.dumps(MANIFEST))
    (root / "current").symlink_to(release)
    return (
        root,
        release,
        at_site(
            load({"DEPLOY_ROOT": str(root), "PM2": "pm2-not-installed-here"}), root / "site.conf"
        ),
    )


def at_site(s: Any, site: Path) -> Any:
    """Settings whose site is a file of the test's own (settings allow only Nginx's folders: the
    script reads any)."""
    return dataclasses.replace(s, nginx_site=str(site))


def test_quick_read_sees_what_shows_nothing_changed_and_only_that(tmp_path: Path, load) -> None:
    """The quick read (what shows that nothing changed) has the files and this user's
    processes with their working directories, but not the tools or listeners a real deploy checks.
    """
    root, release, s = live_release_r1(tmp_path, load)
    s = replace(
        s, app_user=getpass.getuser()
    )  # the apps run as this user: their processes are its own
    child = subprocess.Popen(["sleep", "30"], cwd=release)
    try:
        out = subprocess.run(
            ["sh", "-s"],
            input=facts_script(s, quick=True) + "\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        child.kill()
        child.wait()
    facts = parse_facts(out.stdout)
    assert out.returncode == 0, out.stderr
    assert facts.current_release == "r1" and facts.manifest == READ
    assert not facts.complete
    assert facts.tools == set() and facts.listeners == []
    ppid, cwd = facts.procs[child.pid]
    assert cwd == str(release)  # what tells which release a process runs
    assert ppid > 0
    full = parse_facts(
        subprocess.run(
            ["sh", "-s"], input=facts_script(s) + "\n", capture_output=True, text=True, timeout=30
        ).stdout
    )
    assert full.complete


def test_the_lock_channel_reads_the_host_once_the_lock_is_taken_and_holds_it(
    tmp_path: Path, load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy takes the lock and reads the host in one command: the facts come after LOCKED, and the
    lock stays held (flock from outside fails) until the deploy lets go."""
    monkeypatch.setenv(
        "PM2_HOME", str(tmp_path / "pm2")
    )  # the lock closes the PM2 home it finds: not this machine's
    root, release, s = live_release_r1(tmp_path, load)
    lock = DeployLock(
        Context(), s, {"user": "me"}, 0, print, print, then=facts_script(s, quick=True)
    )
    lock.__enter__()
    try:
        facts = parse_facts(lock.read_then())
        held = subprocess.run(["flock", "-n", str(root / ".deploy" / "lock"), "true"]).returncode
    finally:
        lock.__exit__(None, None, None)
    assert facts.current_release == "r1" and facts.manifest == READ and not facts.complete
    assert held != 0
    assert subprocess.run(["flock", "-n", str(root / ".deploy" / "lock"), "true"]).returncode == 0


def test_parse_facts_joins_process_parents_and_working_directories() -> None:
    facts = parse_facts(
        sectioned(
            {
                "procs": "  101     1\n  102   101\n  103   101\nnot a line",
                "cwds": (
                    "/proc/101/cwd /srv/app/releases/r1\n/proc/102/cwd /srv/my"
                    " app/releases/r2\n/proc/x/cwd /nope"
                ),
            }
        )
    )
    assert facts.procs == {
        101: (1, "/srv/app/releases/r1"),
        102: (101, "/srv/my app/releases/r2"),
        103: (101, ""),
    }


def test_the_lock_channel_ends_its_read_even_when_the_read_ends_without_a_newline(
    tmp_path: Path, load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PM2's list ends without a newline; the lock's end marker must still stand on a line of its
    own."""
    import threading

    monkeypatch.setenv(
        "PM2_HOME", str(tmp_path / "pm2")
    )  # the lock closes the PM2 home it finds: not this machine's
    root, _, s = live_release_r1(tmp_path, load)
    lock = DeployLock(Context(), s, {"user": "me"}, 0, print, print, then="printf '[]'")
    got: list[str] = []
    lock.__enter__()
    try:
        reader = threading.Thread(target=lambda: got.append(lock.read_then()), daemon=True)
        reader.start()
        reader.join(10)
    finally:
        lock.__exit__(None, None, None)
    assert got and got[0].startswith("[]")
