"""`setup`'s facts and plan, the boot unit, log rotation, disk space, the temporary apps' logs, the
setting named when it is at fault. Pure functions on recorded host output; remote/upkeep.py run as
the host runs it (`python3 -I -`) on a scratch deploy root."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_deploy import remote
from signalcraft_deploy.core.facts import Pm2Process
from signalcraft_deploy.core.render import render_logrotate
from signalcraft_deploy.host import root
from signalcraft_deploy.host import setup as setup_ops
from signalcraft_deploy.host.facts import parse_facts
from signalcraft_deploy.host.setup import PM2_VERSION, State, parse_setup_facts, plan_setup
from signalcraft_deploy.host.upkeep import (
    boot_problems,
    dump_in_step,
    forget_logs_command,
    space_report,
)
from signalcraft_deploy.steps.faults import setting_fault
from tests.unit.conftest import mock_host

# PM2 7.0's lib/templates/init-scripts/systemd.tpl, which `pm2 startup systemd` fills in; the boot
# unit setup wrote before it rendered its own (templates/pm2-boot.service.j2) was this, filled in by
# `old_boot_unit`.
PM2_TEMPLATE = """[Unit]
Description=PM2 process manager
Documentation=https://pm2.keymetrics.io/
After=network.target

[Service]
Type=forking
User=%USER%
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
Environment=PATH=%NODE_PATH%:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
Environment=PM2_HOME=%HOME_PATH%
PIDFile=%HOME_PATH%/pm2.pid
Restart=on-failure

ExecStart=%PM2_PATH% resurrect
ExecReload=%PM2_PATH% reload all
ExecStop=%PM2_PATH% kill

[Install]
WantedBy=multi-user.target
"""


def old_boot_unit(f: setup_ops.SetupFacts, template: str = PM2_TEMPLATE) -> str:
    """What setup's `boot_unit` gave before 0.4.0's admin setup (PM2's template read from the host,
    filled in)."""
    return (
        template.replace("%PM2_PATH%", f.pm2)
        .replace("%NODE_PATH%", setup_ops.unit_path_env(f.node))
        .replace("%USER%", f.user)
        .replace("%HOME_PATH%", f"{f.home.rstrip('/')}/.pm2")
        .replace("%SERVICE_NAME%", f"pm2-{f.user}")
    )


def owners(path: str, *changes: tuple[str, str, str]) -> str:
    """setup_facts.sh's `owners` lines for a root-owned path and its folders, with (path, uid, mode)
    changes."""
    lines, at = [], path
    while True:
        lines.append(f"0 {'755' if at != path else '644'} {at}")
        if at == "/":
            break
        at = at.rsplit("/", 1)[0] or "/"
    for where, uid, mode in changes:
        lines = [f"{uid} {mode} {where}" if line.endswith(" " + where) else line for line in lines]
    return "\n".join(lines)


def facts_output(**sections: str) -> str:
    """setup_facts.sh's output for the sandbox host as it is (nginx, node, pm2; no unit, no
    rotation), with changes."""
    base = {
        "root": "yes",
        "user": "ubuntu",
        "group": "ubuntu",
        "home": "/home/ubuntu",
        "pm2_home": "/home/ubuntu/.pm2",
        "apt": "yes",
        "packages": "nginx installed 1.22.1-9+deb12u11\nlogrotate installed 3.21.0-1",
        "commands": "nginx\nlogrotate",
        "venv": "yes",
        "node": "/usr/bin/node",
        "npm": "/usr/bin/npm",
        "pm2": "/usr/lib/node_modules/pm2/bin/pm2",
        "pm2_version": "7.0.4",
        "systemd_dir": "yes",
        "systemd_running": "",
        "unit": "",
        "wants": "",
        "logrotate_conf": "",
    }
    base.update(sections)
    for name in ("node", "pm2"):
        base.setdefault(f"owners_{name}", owners(base[name]) if base[name] else "")
    return "".join(f"\n@@signalcraft:{name}\n{text}\n" for name, text in base.items())


def states(items: list[setup_ops.Item]) -> dict[str, State]:
    return {i.name: i.state for i in items}


def test_the_sandbox_needs_only_the_boot_unit_and_log_rotation(load) -> None:
    f = parse_setup_facts(facts_output())
    assert (f.user, f.pm2, f.node, f.sudo, f.unit, f.wants) == (
        "ubuntu",
        "/usr/lib/node_modules/pm2/bin/pm2",
        "/usr/bin/node",
        True,
        None,
        None,
    )
    assert states(plan_setup(load(), f)) == {
        "nginx": State.OK,
        "python3-venv": State.OK,
        "logrotate": State.OK,
        "node": State.OK,
        "pm2": State.OK,
        "boot unit": State.WRITE,
        "log rotation": State.WRITE,
        "nginx drain": State.WRITE,
        "root helper": State.WRITE,
        "sudoers": State.WRITE,
    }


def test_a_set_up_host_has_nothing_to_change(load) -> None:
    s = load()
    f = parse_setup_facts(facts_output())
    done = parse_setup_facts(
        facts_output(
            unit=setup_ops.boot_unit(f),
            wants=f.unit_path,
            logrotate_conf=setup_ops.logrotate_text(s, f),
            nginx_drain=setup_ops.drain_text(s) or "",
        )
    )
    done.helper_digest, done.sudoers = root.digest(), root.sudoers_text("ubuntu")
    assert {i.state for i in plan_setup(s, done)} == {State.OK}
    done.helper_digest = "0" * 64  # another version's helper is redone
    assert states(plan_setup(s, done))["root helper"] is State.WRITE
    # Other rotation settings are a change of the file.
    assert states(plan_setup(load({"LOG_ROTATE_COUNT": "3"}), done))["log rotation"] is State.WRITE


def test_old_nginx_workers_are_bounded_by_a_main_level_file_never_by_editing_nginx_conf(
    load,
) -> None:
    s = load({"NGINX_DRAIN_SECONDS": "45"})
    text = setup_ops.drain_text(s)
    assert text is not None and text.endswith("\nworker_shutdown_timeout 45s;\n")
    fresh = parse_setup_facts(facts_output())
    assert setup_ops.drain_item(s, fresh).state is State.WRITE
    assert setup_ops.drain_item(s, parse_setup_facts(facts_output(nginx_drain=text))).state is (
        State.OK
    )
    # nginx.conf's own directive wins: left as it is, and a file of ours beside it is taken off
    own = "worker_shutdown_timeout 10s;"
    item = setup_ops.drain_item(s, parse_setup_facts(facts_output(nginx_conf_drain=own)))
    assert item.state is State.OK and "sets worker_shutdown_timeout 10s; itself" in item.detail
    both = parse_setup_facts(facts_output(nginx_conf_drain=own, nginx_drain=text))
    assert setup_ops.drain_item(s, both).state is State.WRITE
    # 0: no bound, no file
    off = load({"NGINX_DRAIN_SECONDS": "0"})
    assert setup_ops.drain_text(off) is None
    assert setup_ops.drain_item(off, fresh).state is State.OK
    assert setup_ops.drain_item(off, parse_setup_facts(facts_output(nginx_drain=text))).state is (
        State.WRITE
    )


def test_the_boot_unit_is_pm2s_template_with_absolute_paths() -> None:
    f = parse_setup_facts(facts_output(node="/home/ubuntu/.nvm/versions/node/v20.11.1/bin/node"))
    unit = setup_ops.boot_unit(f)
    assert "User=ubuntu\n" in unit and "PIDFile=/home/ubuntu/.pm2/pm2.pid\n" in unit
    assert "ExecStart=/usr/lib/node_modules/pm2/bin/pm2 resurrect\n" in unit
    assert "Environment=PATH=/home/ubuntu/.nvm/versions/node/v20.11.1/bin:/usr/local/sbin:" in unit
    assert "Environment=PM2_HOME=/home/ubuntu/.pm2\n" in unit and "%" not in unit


def test_a_new_node_or_pm2_path_redoes_the_unit(load) -> None:
    old = parse_setup_facts(facts_output(node="/home/ubuntu/.nvm/versions/node/v18.0.0/bin/node"))
    for change in (
        {"node": "/home/ubuntu/.nvm/versions/node/v20.11.1/bin/node"},
        {"pm2": "/usr/local/lib/node_modules/pm2/bin/pm2"},
    ):
        now = parse_setup_facts(
            facts_output(unit=setup_ops.boot_unit(old), wants=old.unit_path, **change)
        )
        item = setup_ops.boot_item(now)
        assert item.state is State.WRITE and "another Node.js or PM2 path" in item.detail, item
    enabled_elsewhere = parse_setup_facts(
        facts_output(
            unit=setup_ops.boot_unit(old),
            wants="/dev/null",
            node="/home/ubuntu/.nvm/versions/node/v18.0.0/bin/node",
        )
    )
    assert "not enabled" in setup_ops.boot_item(enabled_elsewhere).detail


def test_a_fresh_host_gets_packages_then_pm2_at_its_pinned_version(load) -> None:
    f = parse_setup_facts(
        facts_output(
            packages="nginx not-installed \nlogrotate not-installed ",
            commands="",
            venv="",
            node="",
            npm="",
            pm2="",
            pm2_version="",
        )
    )
    items = {i.name: i for i in plan_setup(load(), f)}
    assert items["apt packages"].detail == "apt-get install nginx logrotate python3-venv nodejs npm"
    assert (
        items["pm2"].state is State.INSTALL
        and items["pm2"].detail == f"npm install -g pm2@{PM2_VERSION}"
    )
    assert PM2_VERSION == "7.0.4"
    assert (
        items["boot unit"].state is State.WRITE
        and "once Node.js and PM2 are installed" in items["boot unit"].detail
    )
    assert "nginx" not in items and "node" not in items


def stanzas(text: str) -> dict[str, list[str]]:
    """A logrotate file's stanzas: the first line (paths) -> its directives, stripped, scripts
    included."""
    out: dict[str, list[str]] = {}
    head = None
    for line in text.splitlines():
        if line.endswith("{"):
            head = line[:-1].strip()
            out[head] = []
        elif line.strip() == "}":
            head = None
        elif head is not None:
            out[head].append(line.strip())
    return out


def test_logrotate_file_rotates_by_size_compressed_and_has_pm2_reopen_its_files(load) -> None:
    s = load({"LOG_ROTATE_SIZE": "20M", "LOG_ROTATE_COUNT": "4"})
    text = render_logrotate(
        s,
        "ubuntu",
        "ubuntu",
        "/home/ubuntu",
        "/usr/lib/node_modules/pm2/bin/pm2",
        "/opt/node/bin:/usr/bin:/bin",
    )
    apps, daemon = stanzas(text).values()
    assert list(stanzas(text)) == ["/home/ubuntu/.pm2/logs/*.log", "/home/ubuntu/.pm2/pm2.log"]
    assert apps[:9] == [
        "su ubuntu ubuntu",
        "size 20M",
        "rotate 4",
        "compress",
        "nodateext",
        "missingok",
        "notifempty",
        "nocreate",
        "sharedscripts",
    ]
    assert (
        "delaycompress" not in text and "copytruncate" not in apps
    )  # copytruncate loses lines: PM2 reopens instead
    script = "\n".join(apps[apps.index("postrotate") + 1 : apps.index("endscript")])
    assert 'env HOME="$1" PM2_HOME="$2" PATH="$3" "$4" reloadLogs' in script
    assert (
        script.splitlines()[-1]
        == "' postrotate /home/ubuntu /home/ubuntu/.pm2 /opt/node/bin:/usr/bin:/bin "
        "/usr/lib/node_modules/pm2/bin/pm2"
    )
    assert 'renamed="-> $2/logs/.*\\.log\\.1\\$"' in script
    assert daemon == [
        "su ubuntu ubuntu",
        "size 20M",
        "rotate 4",
        "compress",
        "nodateext",
        "missingok",
        "notifempty",
        "copytruncate",
    ]
    for bad in (
        ("ubuntu; rm -rf /", "ubuntu", "/home/ubuntu", "/usr/bin/pm2", "/usr/bin"),
        ("ubuntu", "ubuntu", "/home/ubuntu", "pm2 && reboot", "/usr/bin"),
        ("ubuntu", "ubuntu", "/home/ubuntu", "/usr/bin/pm2", "/usr/bin:$(reboot)"),
    ):
        with pytest.raises(ValueError):
            render_logrotate(s, *bad)


def test_logrotate_file_checks_out_with_logrotate(load, tmp_path: Path) -> None:
    import shutil

    if not shutil.which("logrotate") and not Path("/usr/sbin/logrotate").exists():
        pytest.skip("logrotate is not installed")
    conf = tmp_path / "pm2-u"
    conf.write_text(
        render_logrotate(load(), "root", "root", str(tmp_path), "/usr/bin/pm2", "/usr/bin:/bin")
    )
    done = subprocess.run(
        [
            shutil.which("logrotate") or "/usr/sbin/logrotate",
            "-d",
            "-s",
            str(tmp_path / "state"),
            str(conf),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr


@pytest.mark.parametrize("value", ["100", "100M", "5k", "1G"])
def test_log_rotate_size_takes_logrotate_sizes(load, value: str) -> None:
    assert load({"LOG_ROTATE_SIZE": value}).log_rotate_size == value


@pytest.mark.parametrize("value", ["0", "10MB", "1 G", "-5", "1T"])
def test_log_rotate_size_refuses_others_naming_the_key(load, value: str) -> None:
    from signalcraft_deploy.core.settings import SettingsError

    with pytest.raises(SettingsError, match="^LOG_ROTATE_SIZE"):
        load({"LOG_ROTATE_SIZE": value})


# ----------------------------------------------------------------------------- the setting at fault


def test_an_unknown_worker_class_names_the_setting(load) -> None:
    s = load({"GUNICORN_WORKER_CLASS": "nosuch.Worker"})
    out = (
        "[2026-12-01 21:00:00 +0000] [42] [ERROR] Error: class uri 'nosuch.Worker' invalid or not"
        " found: \n\n[Traceback"
    )
    message = setting_fault(s, out)
    assert message is not None and message.startswith(
        "The cause is the setting GUNICORN_WORKER_CLASS (flag --set): 'nosuch.Worker'"
    )
    assert "Set GUNICORN_WORKER_CLASS" in message


def test_wsgi_app_is_blamed_only_for_its_own_module(load) -> None:
    s = load({"WSGI_APP": "wsgi:app"})
    assert "WSGI_APP" in (setting_fault(s, "ModuleNotFoundError: No module named 'wsgi'") or "")
    assert setting_fault(s, "ModuleNotFoundError: No module named 'does_not_exist_xyz'") is None
    assert "WSGI_APP" in (setting_fault(s, "Failed to find attribute 'app' in 'wsgi'.") or "")
    assert setting_fault(s, "RuntimeError: boom") is None


def test_node_script_is_blamed_only_when_it_is_set(load) -> None:
    said = "[PM2][ERROR] Script not found: /home/ubuntu/signalcraft/releases/r1/dist/main.js"
    assert "NODE_SCRIPT" in (setting_fault(load({"NODE_SCRIPT": "dist/main.js"}), said) or "")
    assert setting_fault(load({"NODE_SCRIPT": "server.js"}), said) is None
    assert setting_fault(load(), said) is None  # unset: package.json named the file, no setting


# ----------------------------------------------------------------------------- disk, dump, boot


def test_free_space_is_read_with_the_host_checks() -> None:
    out = (
        "\n@@signalcraft:tools\npm2\n\n@@signalcraft:disk\ntmpfs 307200 280000 27200 92%"
        " /home/ubuntu/full-disk\n"
    )
    assert parse_facts(out).free_mb == 26
    assert parse_facts("\n@@signalcraft:tools\npm2\n").free_mb is None


def test_space_report_names_what_takes_the_space_largest_first() -> None:
    data = {
        "free_mb": 40,
        "total_mb": 300,
        "path": "/srv/app",
        "unused": ["/srv/app/venvs/old"],
        "parts": {
            "releases": {"path": "/srv/app/releases", "bytes": 3 * 2**20, "count": 2},
            "venvs": {"path": "/srv/app/venvs", "bytes": 60 * 2**20, "count": 2},
            "node_modules": {"path": "/srv/app/node_modules", "bytes": 0, "count": 0},
            "shared": {"path": "/srv/app/shared", "bytes": 0, "count": 0},
            "logs": {"path": "/home/u/.pm2/logs", "bytes": 9 * 2**20, "count": 7, "same_fs": False},
        },
    }
    assert (
        space_report(data) == "other files 197 MB, venvs 60 MB (2, 1 used by no release), "
        "PM2 logs 9 MB (7, another filesystem), releases 3 MB (2)"
    )


def proc(name: str, exec_path: str, cwd: str = "/srv/app/current") -> Pm2Process:
    return Pm2Process(name, 0, 1, "online", 0, 0, "fork", exec_path, cwd, "node", ("-c", "x"), 0)


def test_the_saved_list_is_in_step_only_when_it_matches_what_runs() -> None:
    running = [
        proc("a-python", "/srv/app/venvs/1/bin/gunicorn"),
        proc("a-nodejs", "/srv/app/current/server.js"),
    ]
    saved = {
        "a-python": [
            {
                "exec": "/srv/app/venvs/1/bin/gunicorn",
                "cwd": "/srv/app/current",
                "args": ["-c", "x"],
            }
        ],
        "a-nodejs": [
            {"exec": "/srv/app/current/server.js", "cwd": "/srv/app/current", "args": ["-c", "x"]}
        ],
    }
    names = ("a-python", "a-nodejs")
    assert dump_in_step(saved, running, names) == []
    stale = {
        **saved,
        "a-python": [{**saved["a-python"][0], "exec": "/srv/app/venvs/0/bin/gunicorn"}],
    }
    assert dump_in_step(stale, running, names) == [
        "a-python runs 1 process(es) unlike the 1 saved (script, directory or arguments)"
    ]
    assert dump_in_step({"a-python": saved["a-python"]}, running, names) == [
        "a-nodejs runs but is not in the saved list"
    ]
    assert dump_in_step(None, running, names) == ["no saved list (pm2 save has never run)"]


def test_boot_problems_name_a_unit_that_no_longer_fits() -> None:
    unit = {
        "ExecStart": "/usr/lib/node_modules/pm2/bin/pm2 resurrect",
        "env": {"PATH": "/usr/bin:/bin"},
    }
    boot = {
        "unit_path": "/etc/systemd/system/pm2-u.service",
        "unit": unit,
        "enabled": True,
        "dump": {},
        "pm2": "/usr/lib/node_modules/pm2/bin/pm2",
        "node": "/usr/bin/node",
    }
    assert boot_problems(boot, [], ("a-python",)) == []
    moved = {**boot, "node": "/opt/node/bin/node", "enabled": False}
    assert boot_problems(moved, [], ("a-python",)) == [
        "/etc/systemd/system/pm2-u.service is not enabled",
        "the unit's PATH lacks /opt/node/bin, where Node.js is now",
    ]
    assert boot_problems({**boot, "unit": None}, [], ()) == [
        "no boot unit (/etc/systemd/system/pm2-u.service)"
    ]


# ----------------------------------------------------------------------------- on the host


def test_forget_logs_removes_only_the_named_apps_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    gone = [
        "a-python-trial-out.log",
        "a-python-trial-error.log",
        "a-python-trial-out-12.log",
        "a-python-trial-out.log.1.gz",
    ]
    kept = [
        "a-python-out.log",
        "a-python-trial-x-out.log",
        "b-python-trial-out.log",
        "a-nodejs-out-3.log",
    ]
    for name in gone + kept:
        (logs / name).write_text("x")
    subprocess.run(
        ["sh", "-c", forget_logs_command("a-python-trial", "a-nodejs-trial")],
        check=True,
        env={"PM2_HOME": str(tmp_path), "PATH": os.environ["PATH"]},
    )
    assert sorted(p.name for p in logs.iterdir()) == sorted(kept)


def upkeep(spec: dict, cwd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-I", "-", json.dumps(spec)],
        input=remote.program("upkeep"),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def release(root: Path, name: str, venv: str, node_modules: str) -> None:
    (root / "releases" / name / ".signalcraft").mkdir(parents=True)
    (root / "releases" / name / ".signalcraft" / "manifest.json").write_text(
        json.dumps(
            {"venv": f"{root}/venvs/{venv}", "node_modules": f"{root}/node_modules/{node_modules}"}
        )
    )


def test_prune_removes_environments_no_release_and_no_process_uses(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for d in ("venvs/kept", "venvs/old", "venvs/running", "node_modules/kept", "node_modules/old"):
        (root / d / "bin").mkdir(parents=True)
        (root / d / "bin" / "f").write_bytes(b"x" * 10_000)
    release(root, "20261201T000000Z-a", "kept", "kept")
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", f"{root}/venvs/running/bin/python"]
    )
    try:
        usage = upkeep(
            {"mode": "space", "root": str(root), "pm2_home": str(tmp_path / "pm2"), "apps": []},
            tmp_path,
        )
        assert usage["unused"] == [f"{root}/node_modules/old", f"{root}/venvs/old"]
        assert usage["parts"]["venvs"]["count"] == 3 and usage["parts"]["venvs"]["bytes"] >= 30_000
        assert usage["free_mb"] > 0
        removed = upkeep({"mode": "prune", "root": str(root)}, tmp_path)["removed"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert removed == [f"{root}/node_modules/old", f"{root}/venvs/old"]
    assert sorted(p.name for p in (root / "venvs").iterdir()) == ["kept", "running"]


def test_boot_reads_the_saved_list_without_env_values(tmp_path: Path) -> None:
    home = tmp_path / "pm2"
    home.mkdir()
    (home / "dump.pm2").write_text(
        json.dumps(
            [
                {
                    "name": "a-python",
                    "pm_exec_path": "/srv/v/bin/gunicorn",
                    "pm_cwd": "/srv/current",
                    "args": ["-c", "g.py"],
                    "exec_interpreter": "/srv/v/bin/python",
                    "env": {"SECRET": "s3cr3t-never"},
                },
                {"name": "other", "pm_exec_path": "/x", "pm_cwd": "/", "env": {}},
            ]
        )
    )
    out = upkeep(
        {
            "mode": "boot",
            "pm2_home": str(home),
            "apps": ["a-python", "a-nodejs"],
            "user": "nobody-here",
        },
        tmp_path,
    )
    assert out["dump"] == {
        "a-python": [
            {
                "exec": "/srv/v/bin/gunicorn",
                "cwd": "/srv/current",
                "args": ["-c", "g.py"],
                "interpreter": "/srv/v/bin/python",
            }
        ]
    }
    assert out["unit"] is None and out["enabled"] is False and "s3cr3t" not in json.dumps(out)


# ----------------------------------------------------------------------------- setup's commands
# (MockContext)


def test_the_boot_unit_is_rendered_and_linked_by_root_shells_of_mktemp_and_install() -> None:
    from invoke import Result

    from signalcraft_deploy.host.io import command_log

    f = parse_setup_facts(facts_output())
    c = mock_host(run={re.compile(r"^sudo -n sh -c .*"): Result()}, repeat=True)
    how = setup_ops.enable_boot(c, f)
    sent = command_log(c).commands
    assert "pm2" not in " ".join(s for s in sent if "startup" in s) and not any(
        "startup" in s for s in sent
    )  # root runs no PM2
    assert sent[0] == setup_ops.root_install_command("/etc/systemd/system/pm2-ubuntu.service")
    assert sent[0].startswith("sudo -n sh -c 't=$(mktemp) && n=$(mktemp -p /etc/systemd/system ")
    assert (
        'install -o root -g root -m 0644 "$t" "$n" && mv -fT "$n"'
        " /etc/systemd/system/pm2-ubuntu.service" in sent[0]
    )
    assert (
        sent[1] == "sudo -n sh -c 'mkdir -p /etc/systemd/system/multi-user.target.wants && ln -sfn"
        " /etc/systemd/system/pm2-ubuntu.service"
        " /etc/systemd/system/multi-user.target.wants/pm2-ubuntu.service'"
    )
    assert not any("/tmp/" in cmd or "signalcraft-tmp" in cmd for cmd in sent)
    assert how.startswith("wrote /etc/systemd/system/pm2-ubuntu.service")
    assert "systemctl daemon-reload" not in " ".join(sent)  # no systemd runs to reload


def test_the_logrotate_file_is_checked_and_installed_in_one_root_shell_with_no_fixed_tmp_name(
    load,
) -> None:
    from invoke import Result

    from signalcraft_deploy.host.io import command_log

    s, f = load(), parse_setup_facts(facts_output())
    c = mock_host(run={re.compile(r"^sudo -n sh -c .*"): Result()}, repeat=True)
    assert setup_ops.write_logrotate(c, s, f) == "/etc/logrotate.d/pm2-ubuntu"
    [sent] = command_log(c).commands
    assert sent == setup_ops.root_install_command(
        "/etc/logrotate.d/pm2-ubuntu", "0644", check='logrotate -d "$t" 2>&1'
    )
    assert sent.startswith("sudo -n sh -c 't=$(mktemp) && ") and "/tmp/" not in sent
    assert (
        'cat > "$t" && logrotate -d "$t" 2>&1 && install -o root -g root -m 0644 "$t" "$n"' in sent
    )
    assert sent.endswith('rm -f "$t" "$n"; exit $rc\'')


@pytest.mark.skipif(os.geteuid() != 0, reason="installs root-owned files: needs root")
def test_the_root_install_shell_replaces_a_symlink_atomically_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    folder, elsewhere = tmp_path / "etc", tmp_path / "victim"
    folder.mkdir()
    elsewhere.write_text("not root's to overwrite\n")
    (folder / "pm2-u").symlink_to(elsewhere)
    command = setup_ops.root_install_command(
        str(folder / "pm2-u"), "0644", check='grep -q rotate "$t"'
    )
    done = subprocess.run(
        ["sh", "-c", command.removeprefix("sudo -n ")],
        input="rotate 3\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not (folder / "pm2-u").is_symlink() and (folder / "pm2-u").read_text() == "rotate 3\n"
    assert (
        oct((folder / "pm2-u").stat().st_mode & 0o777) == "0o644"
        and elsewhere.read_text() == "not root's to overwrite\n"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["pm2-u"]
    refused = subprocess.run(
        ["sh", "-c", command.removeprefix("sudo -n ")],
        input="nothing\n",
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and (folder / "pm2-u").read_text() == "rotate 3\n"
    assert sorted(p.name for p in folder.iterdir()) == ["pm2-u"]


def test_the_boot_unit_is_what_setup_wrote_before_for_the_same_facts() -> None:
    """Hosts set up by the previous version (PM2's template, as `pm2 startup` fills it) stay
    "ok"."""
    for node in ("/usr/bin/node", "/usr/local/bin/node", "/opt/node-v20/bin/node"):
        for user, home in (("ubuntu", "/home/ubuntu"), ("deploy", "/srv/deploy/")):
            f = parse_setup_facts(facts_output(node=node, user=user, home=home))
            assert setup_ops.boot_unit(f) == old_boot_unit(f)
            unit = setup_ops.boot_unit(f)
            assert (
                setup_ops.boot_item(
                    parse_setup_facts(
                        facts_output(
                            node=node,
                            user=user,
                            home=home,
                            unit=unit.rstrip("\n"),
                            wants=f.unit_path,
                        )
                    )
                ).state
                is State.OK
            )


def test_the_root_files_are_rendered_from_the_bundled_templates_even_with_templates_dir(
    load, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("logrotate.conf.j2", "pm2-boot.service.j2"):
        (mine / name).write_text("postrotate\n  chmod 4755 /bin/sh\nendscript\n")
    s, bundled = load({"TEMPLATES_DIR": str(mine)}), load()
    assert s.templates_dir
    f = parse_setup_facts(facts_output())
    assert setup_ops.logrotate_text(s, f) == setup_ops.logrotate_text(
        bundled, f
    ) and "chmod" not in setup_ops.logrotate_text(s, f)
    assert "chmod" not in setup_ops.boot_unit(f) and setup_ops.boot_unit(f) == old_boot_unit(f)


def test_the_postrotate_runs_as_the_user_with_its_values_as_arguments(load, tmp_path: Path) -> None:
    text = render_logrotate(
        load(),
        "deploy",
        "deploy",
        "/srv/deploy",
        "/usr/lib/node_modules/pm2/bin/pm2",
        "/usr/bin:/bin",
    )
    apps = stanzas(text)["/srv/deploy/.pm2/logs/*.log"]
    script = [
        line
        for line in apps[apps.index("postrotate") + 1 : apps.index("endscript")]
        if not line.startswith("#")
    ]
    assert script[0] == 'if [ "$(id -u)" = 0 ]; then as="runuser -u deploy --"; else as=""; fi'
    assert (
        script[1] == "$as /bin/sh -c '"
    )  # everything else (pid files, /proc, kill) is in the user's shell
    assert (
        script[-1] == "' postrotate /srv/deploy /srv/deploy/.pm2 /usr/bin:/bin"
        " /usr/lib/node_modules/pm2/bin/pm2"
    )
    assert "/srv/deploy" not in "\n".join(
        script[2:-1]
    )  # the fixed script: no value is pasted into it


def test_the_postrotate_reloads_pm2s_logs_as_it_runs(load, tmp_path: Path) -> None:
    """The script as logrotate runs it (not root here: `as` is empty): PM2 reloadLogs with the
    user's HOME and PM2_HOME."""
    home = tmp_path / "u"
    (home / ".pm2" / "pids").mkdir(parents=True)
    (home / ".pm2" / "pm2.pid").write_text(str(os.getpid()))
    (home / ".pm2" / "pids" / "a-0.pid").write_text("not-a-pid")
    pm2 = tmp_path / "pm2"
    pm2.write_text(f'#!/bin/sh\necho "$HOME $PM2_HOME $*" > {tmp_path}/called\n')
    pm2.chmod(0o755)
    text = render_logrotate(load(), "nobody", "nogroup", str(home), str(pm2), "/usr/bin:/bin")
    apps = stanzas(text)[f"{home}/.pm2/logs/*.log"]
    script = "\n".join(apps[apps.index("postrotate") + 1 : apps.index("endscript")])
    if os.geteuid() == 0:
        script = script.replace('as="runuser -u nobody --"', 'as=""')  # as the test's own user
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "called").read_text() == f"{home} {home}/.pm2 reloadLogs\n"


def test_setup_plans_for_the_named_user_and_reads_its_facts_as_root(
    load, monkeypatch, tmp_path: Path, capsys
) -> None:
    from invoke import Result

    from signalcraft_deploy.host.io import command_log
    from signalcraft_deploy.tasks import setup as setup_task

    monkeypatch.chdir(tmp_path)
    deploy = facts_output(
        user="deploy", group="deploy", home="/home/deploy", pm2_home="/home/deploy/.pm2"
    )
    c = mock_host(
        run={
            re.compile(
                r"^if sudo -n true .*setup_facts\.sh pm2 python3 deploy signalcraft; else"
            ): Result(deploy),
            re.compile(r".*sudo -n cat /etc/sudoers.d/signalcraft-deploy.*"): Result(""),
        },
        repeat=True,
    )
    setup_task.setup(c, dry_run=True, user="deploy")
    out = capsys.readouterr().out
    sent = command_log(c).commands
    assert sent[0].startswith(
        "if sudo -n true 2>/dev/null; then sudo -n env -i"
        ' PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin sh -c "$(cat)"'
        " setup_facts.sh"
    )
    assert "Setup of this machine for deploy (PM2 home /home/deploy/.pm2):" in out
    assert (
        "would write    boot unit     /etc/systemd/system/pm2-deploy.service (missing): as pm2"
        " startup systemd -u deploy" in out
    )
    assert (
        "/etc/logrotate.d/pm2-deploy" in out
        and "/etc/sudoers.d/signalcraft-deploy (missing): deploy ALL=(root)" in out
    )
    assert "Dry run:" in out and not any(
        cmd.startswith("sudo -n sh -c") for cmd in sent
    )  # nothing written


@pytest.mark.parametrize(
    "name", ["Deploy", "deploy;reboot", "-u", "", "de ploy", "a" * 33, "root/../x", "d.ploy"]
)
def test_setup_refuses_a_user_name_that_is_not_plain(name: str) -> None:
    from invoke.exceptions import Exit

    with pytest.raises(Exit, match="not a plain user name"):
        setup_ops.check_user(name)


def test_setup_names_a_user_the_host_lacks(load, monkeypatch, tmp_path: Path) -> None:
    from invoke import Result
    from invoke.exceptions import Exit

    from signalcraft_deploy.tasks import setup as setup_task

    monkeypatch.chdir(tmp_path)
    c = mock_host(
        run={re.compile(r"^if sudo -n true .*"): Result("\n@@signalcraft:root\nyes\n")}, repeat=True
    )
    with pytest.raises(
        Exit, match="There is no user deploy on this machine: create the deploy account first"
    ):
        setup_task.setup(c, dry_run=True, user="deploy")
    c = mock_host(run={re.compile(r"^if sudo -n true .*"): Result("")}, repeat=True)
    with pytest.raises(Exit, match="setup needs full passwordless sudo for the connecting account"):
        setup_task.setup(c, dry_run=True, user="deploy")


@pytest.mark.parametrize(
    "change",
    [
        (
            "/home/ubuntu/.npm-global/lib/node_modules/pm2/bin/pm2",
            "/home/ubuntu",
            "1000",
            "755",
        ),  # the user's folder
        (
            "/usr/local/lib/node_modules/pm2/bin/pm2",
            "/usr/local/lib/node_modules",
            "0",
            "775",
        ),  # group-writable
        (
            "/usr/local/lib/node_modules/pm2/bin/pm2",
            "/usr/local/lib/node_modules/pm2/bin/pm2",
            "1000",
            "755",
        ),  # the file
    ],
)
def test_a_pm2_that_another_account_can_change_is_refused(load, change) -> None:
    from invoke.exceptions import Exit

    pm2, where, uid, mode = change
    f = parse_setup_facts(facts_output(pm2=pm2, owners_pm2=owners(pm2, (where, uid, mode))))
    items = {i.name: i for i in plan_setup(load(), f)}
    assert (
        items["boot unit"].state is State.REFUSED and items["log rotation"].state is State.REFUSED
    )
    [problem] = setup_ops.path_problems(f)
    assert f"PM2 on root's PATH is {pm2}, and {where} (" in problem
    assert f"Install PM2 globally as root with `sudo npm install -g pm2@{PM2_VERSION}`" in problem
    with pytest.raises(Exit, match="can be changed by an account other than root"):
        setup_ops.enable_boot(mock_host(), f)
    with pytest.raises(Exit, match="can be changed by an account other than root"):
        setup_ops.write_logrotate(mock_host(), load(), f)


def test_a_node_in_a_user_writable_folder_is_refused_and_root_owned_ones_pass() -> None:
    node = "/opt/node/bin/node"
    f = parse_setup_facts(
        facts_output(node=node, owners_node=owners(node, ("/opt/node", "1000", "755")))
    )
    assert [p.split(",")[0] for p in setup_ops.path_problems(f)] == [
        f"Node.js on root's PATH is {node}"
    ]
    assert setup_ops.path_problems(parse_setup_facts(facts_output(node=node))) == []
    assert (
        setup_ops.unsafe_folder([("0", "1777", "/tmp")])
        == "/tmp (mode 1777: writable by its group or others)"
    )
    assert setup_ops.unsafe_folder([]) == "(not found)"


# ----------------------------------------------------------------------------- the apps' own
# account

APP_OK = {
    "acl": "yes",
    "user_groups": "ubuntu shop",
    "app_entry": (
        "shop:x:998:998:signalcraft-deploy apps of"
        " ubuntu:/var/lib/signalcraft-apps/shop:/usr/sbin/nologin"
    ),
    "app_password": "L",
    "app_groups": "shop",
    "app_sudo": "User shop is not allowed to run sudo on h1.",
}


def app_facts(**sections: str) -> setup_ops.SetupFacts:
    f = parse_setup_facts(facts_output(**sections))
    f.app = "shop"
    return f


def test_setup_plans_the_apps_own_account_its_group_boot_unit_rotation_record_and_door(
    load,
) -> None:
    s = load({"APP_NAME": "shop"})
    items = {i.name: i for i in plan_setup(s, app_facts())}
    assert {
        name: items[name].state
        for name in (
            "app user",
            "app group",
            "app boot unit",
            "app rotation",
            "app record",
            "sudoers",
        )
    } == dict.fromkeys(
        ("app user", "app group", "app boot unit", "app rotation", "app record", "sudoers"),
        State.WRITE,
    )
    assert "acl" in items["apt packages"].detail
    assert (
        items["app user"].detail == "shop: a system account (no shell, locked password, no sudo), "
        "home /var/lib/signalcraft-apps/shop"
    )
    assert items["sudoers"].detail.endswith(f"{root.HELPER} and {root.APP_HELPER} as shop")
    f = app_facts(**APP_OK)
    done = app_facts(
        **APP_OK,
        app_unit=setup_ops.app_boot_unit(f),
        app_wants=setup_ops.app_unit_path(f),
        app_logrotate_conf=setup_ops.app_logrotate_text(s, f),
        app_records=json.dumps(setup_ops.app_record(f)),
    )
    assert {i.name: i.state for i in setup_ops.app_items(s, done)} == dict.fromkeys(
        ("app user", "app group", "app boot unit", "app rotation", "app record"), State.OK
    )
    assert setup_ops.app_record(f) == {
        "deploy": "ubuntu",
        "apps": {"shop": {"uid": 998, "home": "/var/lib/signalcraft-apps/shop"}},
    }
    assert "User=shop" in setup_ops.app_boot_unit(
        f
    ) and "PM2_HOME=/var/lib/signalcraft-apps/shop/.pm2" in setup_ops.app_boot_unit(f)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"app_entry": "shop:x:1001:1001::/home/shop:/bin/bash"},
            "shop has the login shell /bin/bash",
        ),
        ({"app_entry": "shop:x:0:0::/root:/usr/sbin/nologin"}, "shop has root's uid"),
        ({"app_password": "P"}, "shop has a password that is not locked"),
        ({"app_sudo": "    (ALL : ALL) ALL"}, "shop may use sudo ((ALL : ALL) ALL)"),
        ({"app_groups": "shop sudo"}, "shop is in other groups than its own (sudo)"),
    ],
)
def test_an_existing_account_with_a_way_in_or_rights_is_refused_as_the_apps_account(
    load, change: dict[str, str], says: str
) -> None:
    item = setup_ops.app_user_item(app_facts(**{**APP_OK, **change}))
    assert (
        item.state is State.REFUSED
        and item.detail.startswith(says)
        and "APP_USER=ubuntu" in item.detail
    )


def test_the_apps_run_as_the_deploy_user_when_app_user_is_its_name(load) -> None:
    f = parse_setup_facts(facts_output())
    f.app = "ubuntu"
    assert setup_ops.app_items(load({"APP_USER": "ubuntu"}), f) == [] and f.apps == ()
    assert setup_ops.sudoers_item(f).detail.endswith(f"ubuntu ALL=(root) NOPASSWD: {root.HELPER}")


def test_an_account_already_serving_another_deploy_users_apps_is_refused(load) -> None:
    """Root's record of another deploy user names the account: it would let this one see and reach
    that one's apps."""
    other = json.dumps(
        {
            "deploy": "alice",
            "apps": {"shop": {"uid": 998, "home": "/var/lib/signalcraft-apps/shop"}},
        },
        indent=1,
    )
    item = setup_ops.app_user_item(
        app_facts(**APP_OK, other_app_records=other.replace("\n", "") + "\n")
    )
    assert item.state is State.REFUSED
    assert (
        item.detail.startswith("shop is already the apps' account of the deploy user alice")
        and "Name another APP_USER" in item.detail
    )
    mine = setup_ops.app_user_item(
        app_facts(**APP_OK, other_app_records='{"deploy": "alice", "apps": {"blog": {}}}\n')
    )
    assert mine.state is State.OK


def set_up_app_facts(s, **change: str) -> setup_ops.SetupFacts:
    """The apps' account `shop` with its unit, rotation and record written, on a host where systemd
    runs."""
    f = app_facts(**APP_OK)
    return app_facts(
        **APP_OK,
        app_unit=setup_ops.app_boot_unit(f),
        app_wants=setup_ops.app_unit_path(f),
        app_logrotate_conf=setup_ops.app_logrotate_text(s, f),
        app_records=json.dumps(setup_ops.app_record(f)),
        **{"systemd_running": "yes", **change},
    )


def test_under_a_running_systemd_setup_starts_the_apps_unit_unless_a_pm2_of_theirs_runs_outside_it(
    load,
) -> None:
    s = load({"APP_NAME": "shop"})
    stopped = setup_ops.app_boot_item(set_up_app_facts(s, app_active="inactive"))
    assert (
        stopped.state is State.WRITE
        and "start it now (systemd then runs shop's PM2)" in stopped.detail
    )
    active = setup_ops.app_boot_item(set_up_app_facts(s, app_active="active", app_daemon="4242"))
    assert (active.state, active.detail) == (
        State.OK,
        "/etc/systemd/system/pm2-shop.service enabled; active",
    )
    outside = setup_ops.app_boot_item(set_up_app_facts(s, app_active="inactive", app_daemon="4242"))
    assert (
        outside.state is State.OK and "(pid 4242) was started outside it" in outside.detail
    )  # no second daemon
    assert (
        setup_ops.app_boot_item(set_up_app_facts(s, systemd_running="")).state is State.OK
    )  # the sandbox: no systemd


def test_setup_starts_the_apps_unit_after_the_account_makes_its_pm2_home_private(load) -> None:
    from invoke import Result

    from signalcraft_deploy.host.io import command_log

    s = load({"APP_NAME": "shop"})
    f = set_up_app_facts(s, app_active="failed")
    c = mock_host(run={re.compile(".*"): Result("")}, repeat=True)
    done = setup_ops.enable_app_boot(c, f)
    assert done == "started pm2-shop.service (systemd runs shop's PM2)"
    assert command_log(c).commands == [
        "sudo -n runuser -u shop -- mkdir -p -m 0700 /var/lib/signalcraft-apps/shop/.pm2",
        "sudo -n systemctl start pm2-shop.service",
    ]


def test_the_apps_side_reports_its_account_its_pm2_logs_and_only_what_it_runs_from_under_the_deploy_root(
    tmp_path: Path,
) -> None:
    import pwd

    root, pm2_home = tmp_path / "app", tmp_path / "pm2"
    (root / "venvs" / "running" / "bin").mkdir(parents=True)
    (pm2_home / "logs").mkdir(parents=True)
    (pm2_home / "logs" / "a-python-out.log").write_bytes(b"x" * 3000)
    (pm2_home / "logs" / "other-out.log").write_bytes(b"x" * 10)
    sleeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(30)",
            f"{root}/venvs/running/bin/python",
            "/elsewhere/secret-word",
        ]
    )
    try:
        out = upkeep(
            {"mode": "apps", "root": str(root), "pm2_home": str(pm2_home), "apps": ["a-python"]},
            tmp_path,
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (out["user"], out["uid"], out["pm2_home"]) == (
        pwd.getpwuid(os.getuid()).pw_name,
        os.getuid(),
        str(pm2_home),
    )
    assert out["in_use"] == [
        f"{root}/venvs/running/bin/python"
    ]  # nothing of its processes outside the environments
    assert out["app_logs"] == {"a-python-out.log": 3000}
    assert out["logs"]["count"] == 2 and out["logs"]["dev"] == os.stat(pm2_home).st_dev


def test_prune_keeps_what_the_apps_account_runs_from(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for d in ("venvs/theirs", "venvs/old"):
        (root / d).mkdir(parents=True)
    removed = upkeep(
        {"mode": "prune", "root": str(root), "in_use": [f"{root}/venvs/theirs/bin/gunicorn"]},
        tmp_path,
    )
    assert removed["removed"] == [f"{root}/venvs/old"]
    assert sorted(p.name for p in (root / "venvs").iterdir()) == ["theirs"]


def test_boot_names_the_unit_whose_cgroup_holds_this_users_pm2_daemon(tmp_path: Path) -> None:
    """Under a running systemd: this process stands in for PM2's daemon (its pid in pm2.pid); its
    cgroup's unit, or "" outside any service. Without systemd, or with no live daemon of this user,
    None."""
    home = tmp_path / "pm2"
    home.mkdir()
    out = upkeep({"mode": "boot", "pm2_home": str(home), "apps": []}, tmp_path)
    assert out["daemon_unit"] is None  # no pm2.pid
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (home / "pm2.pid").write_text(f"{sleeper.pid}\n")
        found = upkeep({"mode": "boot", "pm2_home": str(home), "apps": []}, tmp_path)["daemon_unit"]
        cgroup = Path(f"/proc/{sleeper.pid}/cgroup").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
    if not Path("/run/systemd/system").is_dir():
        assert found is None
    else:
        unit = re.search(
            r"/([^/]+[.]service)$",
            next(x.split(":", 2)[2] for x in cgroup.splitlines() if x.startswith("0::")),
        )
        assert found == (unit.group(1) if unit else "")


# Review proof (au-review): setup adopts ANY existing system account as the apps' own, e.g. the web
# server's www-data (nologin, locked, one group), though docs/design/app-user.md D3 says only an
# account with setup's GECOS marker and uid < 1000 is adopted. www-data's processes (Nginx's
# workers, PHP-FPM pools) then become "the caller's own" for the root helper (own_uids: listeners,
# serves_pid, takeover-record), the deploy user gets a sudo door to run as www-data, and code in the
# app can signal and read /proc of Nginx's workers. APP_USER defaults to APP_NAME, which may be
# `www-data`, `nobody`, `daemon`, `proxy`, `backup`...
def test_review_a_system_account_of_another_service_is_not_adopted_as_the_apps_account(
    load,
) -> None:
    www = {
        **APP_OK,
        "app_entry": "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin",
        "app_groups": "www-data",
        "app_sudo": "User www-data is not allowed to run sudo on h1.",
    }
    f = app_facts(**www)
    f.app = "www-data"
    item = setup_ops.app_user_item(f)
    assert item.state is State.REFUSED, item


# ----------------------------------------------------------------------------- setup --remove-app


def test_remove_app_takes_off_only_what_setup_made_for_this_deploy_users_account(load) -> None:
    s = load({"APP_NAME": "shop"})
    f = set_up_app_facts(s)
    assert setup_ops.removal_problem(f) is None
    items = {i.name: (i.state, i.detail) for i in setup_ops.removal_items(f)}
    assert items["app boot unit"] == (
        State.REMOVE,
        "/etc/systemd/system/pm2-shop.service: stopped, disabled, removed",
    )
    assert items["app rotation"] == (State.REMOVE, "/etc/logrotate.d/pm2-shop")
    assert items["app user"][1].startswith(
        "userdel --remove shop (its home /var/lib/signalcraft-apps/shop"
    )
    assert items["sudoers"][1].endswith(
        "ubuntu may run /usr/local/sbin/signalcraft-app as no apps' account any more"
    )
    gone = app_facts(
        app_records=json.dumps({"deploy": "ubuntu", "apps": {}})
    )  # a second run: nothing left
    assert setup_ops.removal_problem(gone) is None and setup_ops.removal_items(gone) == []


@pytest.mark.parametrize(
    ("records", "entry"),
    [
        ({}, None),  # not in root's record of this deploy user
        (None, "shop:x:33:33:www-data:/var/www:/usr/sbin/nologin"),  # another service's
        (
            None,
            (
                "shop:x:998:998:signalcraft-deploy apps of"
                " alice:/var/lib/signalcraft-apps/shop:/usr/sbin/nologin"
            ),
        ),
    ],
)
def test_remove_app_refuses_an_account_setup_did_not_make_for_this_deploy_user(
    load, records: dict | None, entry: str | None
) -> None:
    f = set_up_app_facts(load({"APP_NAME": "shop"}))
    f.app_records = f.app_records if records is None else records
    f.app_entry = f.app_entry if entry is None else entry.split(":")
    assert (setup_ops.removal_problem(f) or "").startswith(
        "shop is not an apps' account setup made for ubuntu"
    )


def test_remove_app_refuses_the_deploy_user_itself(load) -> None:
    f = parse_setup_facts(facts_output())
    f.app = "ubuntu"
    assert "is the deploy user itself" in (setup_ops.removal_problem(f) or "")


def test_remove_app_refuses_while_the_account_runs_apps_and_removes_nothing(load) -> None:
    from invoke import Result
    from invoke.exceptions import Exit

    from signalcraft_deploy.host.io import command_log

    s = load({"APP_NAME": "shop"})
    f = set_up_app_facts(s, app_daemon="4242")
    c = mock_host(
        run={
            re.compile(r"sudo -n pgrep -u shop$"): Result("4242\n4300\n"),
            re.compile(".*"): Result(""),
        },
        repeat=True,
    )
    with pytest.raises(
        Exit, match=r"still runs 1 process\(es\) besides its PM2 daemon \(pids 4300\): run `remove`"
    ):
        setup_ops.remove_app_user(c, s, f)
    assert [x.split(" ")[2] for x in command_log(c).commands] == ["pgrep", "find"]  # read only


# Attack (review of fd-remove): a plain `remove` keeps DEPLOY_ROOT, shared/ with it: the app's data,
# owned by the apps' account, the folder in its group (2770). `setup --remove-app` then frees their
# uid and gid, and `useradd --system` gives the highest free ones to the next account it makes (the
# next app's, by setup): that app's code owns the removed app's data (its database) and may write in
# its shared/.
def test_remove_app_refuses_while_the_account_owns_files_in_deploy_root_and_removes_nothing(
    load,
) -> None:
    from invoke import Result
    from invoke.exceptions import Exit

    from signalcraft_deploy.host.io import command_log

    s = load({"APP_NAME": "shop", "DEPLOY_ROOT": "/srv/shop"})
    f = set_up_app_facts(s, app_daemon="4242")
    c = mock_host(
        run={
            re.compile(r"sudo -n pgrep -u shop$"): Result("4242\n"),
            re.compile(r"sudo -n find /srv/shop -xdev .*-user shop"): Result(
                "/srv/shop/shared/app.db\n"
            ),
        },
        repeat=True,
    )
    with pytest.raises(Exit) as err:
        setup_ops.remove_app_user(c, s, f)
    message = err.value.message
    assert "/srv/shop/shared/app.db" in message and "remove --purge --confirm shop" in message
    assert "uid" in message and "Nothing was removed." in message
    assert not [
        x for x in command_log(c).commands if "userdel" in x or "systemctl" in x or "rm -f" in x
    ]


# Attack (review of fd-remove): the deploy user keeps its sudo door to the account (sudo -u APP_USER
# signalcraft-app) until the very end of `setup --remove-app`, so it can start a process as the
# account right after the pkill: it outlives the kill, keeps userdel from finishing, or runs while
# root's userdel removes the home it writes in. And the app's own code can leave a crontab or an at
# job: userdel leaves both, and they run again as the next account of that name (setup for the app
# again).
def test_remove_app_closes_the_door_first_and_drops_the_accounts_scheduled_jobs_before_the_kill(
    load,
) -> None:
    from invoke import Result

    from signalcraft_deploy.host.io import command_log

    s = load({"APP_NAME": "shop"})
    f = set_up_app_facts(s, app_daemon="4242")
    c = mock_host(
        run={re.compile(r"sudo -n pgrep -u shop$"): Result("4242\n"), re.compile(".*"): Result("")},
        repeat=True,
    )
    setup_ops.remove_app_user(c, s, f)
    sent = command_log(c).commands
    door = next(i for i, x in enumerate(sent) if "visudo" in x)
    kill = next(i for i, x in enumerate(sent) if "pkill -KILL -u shop" in x)
    assert door < next(i for i, x in enumerate(sent) if "systemctl disable" in x) < kill
    assert [x for x in sent if "visudo" in x] == [sent[door]]  # written once, without shop
    assert (
        sent[kill].index("crontab -u shop -r")
        < sent[kill].index("atrm")
        < sent[kill].index("pkill -KILL -u shop")
    )


def test_a_dry_run_of_remove_app_says_what_the_removal_would_refuse(
    load, monkeypatch, tmp_path: Path, capsys
) -> None:
    from invoke import Result

    from signalcraft_deploy.host.io import command_log
    from signalcraft_deploy.tasks import setup as setup_task

    monkeypatch.chdir(tmp_path)
    s = load({"APP_NAME": "shop"})
    f = app_facts(**APP_OK)
    text = facts_output(
        **APP_OK,
        app_unit=setup_ops.app_boot_unit(f),
        app_wants=setup_ops.app_unit_path(f),
        app_records=json.dumps(setup_ops.app_record(f)),
        app_daemon="4242",
    )
    c = mock_host(
        run={
            re.compile(r"^if sudo -n true .*setup_facts"): Result(text),
            re.compile(r"sudo -n pgrep -u shop$"): Result("4242\n4300\n"),
            re.compile(r"sudo -n find .* -user shop"): Result(f"{s.shared_dir}/app.db\n"),
            re.compile(".*"): Result(""),
        },
        repeat=True,
    )
    setup_task.setup(c, dry_run=True, user="ubuntu", remove_app="shop")
    out = capsys.readouterr().out
    assert (
        "would remove" in out
        and "still runs 1 process(es) besides its PM2 daemon (pids 4300)" in out
    )
    assert f"still owns files in DEPLOY_ROOT {s.deploy_root} ({s.shared_dir}/app.db)" in out
    assert "Dry run: setup --remove-app would refuse as the host is now" in out
    assert not [
        x for x in command_log(c).commands if "userdel" in x or "visudo" in x or "systemctl" in x
    ]


# Attack (review of fd-remove): root's loop that takes the account's ACL entries off the folders
# above DEPLOY_ROOT ran `setfacl -x u:APP_USER` on every one of them, whoever owns it and through
# any link in the path, and setfacl recomputes a folder's ACL mask even when the entry was not
# there: a mask an admin narrowed (mask::---, to shut a named group out for now) widens to what the
# named entries grant. The deploy user picks the path (a link in its home).
def test_remove_app_takes_its_acl_entries_off_without_widening_a_folders_mask(
    load, tmp_path: Path
) -> None:
    import getpass
    import shutil
    import subprocess

    if not shutil.which("setfacl"):
        pytest.skip("setfacl (the acl package) is not installed here")
    base = tmp_path / "base"
    mine = base / "mine"
    mine.mkdir(parents=True)
    subprocess.run(["setfacl", "-m", "g:65534:rwx", str(base)], check=True)
    subprocess.run(["setfacl", "-m", "m::---", str(base)], check=True)  # the admin's narrowed mask
    subprocess.run(
        ["setfacl", "-m", "u:nobody:--x", str(mine)], check=True
    )  # as reach_command gave it
    s = load({"APP_NAME": "shop", "DEPLOY_ROOT": str(mine / "shop")})
    done = subprocess.run(
        ["sh", "-c", setup_ops.acl_removal_command(s, "nobody", getpass.getuser())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    acl = subprocess.run(
        ["getfacl", "-p", str(base), str(mine)], capture_output=True, text=True
    ).stdout
    assert "user:nobody:" not in acl  # the account's entry is gone
    assert acl.split("# file: ")[1].count("mask::---") == 1, (
        acl
    )  # the admin's mask on base is as it was
    if (
        os.geteuid() == 0
    ):  # a folder of another owner's on the way (a link in the deploy user's path to it): untouched
        theirs = base / "theirs"
        (theirs / "in").mkdir(parents=True)
        os.chown(theirs, 1, 1)
        subprocess.run(["setfacl", "-m", "u:nobody:--x", str(theirs)], check=True)
        s = load({"APP_NAME": "shop", "DEPLOY_ROOT": str(theirs / "in" / "shop")})
        subprocess.run(
            ["sh", "-c", setup_ops.acl_removal_command(s, "nobody", getpass.getuser())],
            check=True,
            timeout=30,
        )
        assert (
            "user:nobody:--x"
            in subprocess.run(["getfacl", "-p", str(theirs)], capture_output=True, text=True).stdout
        )


def test_settle_records_restart_counts_and_removes_only_the_logs_of_pm_ids_pm2_no_longer_has(
    tmp_path: Path,
) -> None:
    """A Node.js cluster moved from pm_ids 1-4 to 5-6 by a handover: the per-pm_id logs of 1-4
    (rotated ones too) go; the live ones, the fork-mode app's, another app's and a handover app's
    stay. PM2 cannot be asked: nothing goes.
    """
    logs = tmp_path / "pm2" / "logs"
    logs.mkdir(parents=True)
    kept = [
        "a-nodejs-out-5.log",
        "a-nodejs-error-6.log",
        "a-python-out.log",
        "b-nodejs-out-1.log",
        "a-python-handover-out-2.log",
        "a-nodejs-out.log",
    ]
    gone = [
        "a-nodejs-out-1.log",
        "a-nodejs-error-1.log",
        "a-nodejs-out-4.log",
        "a-nodejs-out-3.log.1.gz",
    ]
    for name in kept + gone:
        (logs / name).write_text("x\n")
    listing = [
        {"name": "a-python", "pm_id": 0, "pm2_env": {"restart_time": 3, "status": "online"}},
        {"name": "a-nodejs", "pm_id": 5, "pm2_env": {"restart_time": 1, "status": "online"}},
        {"name": "a-nodejs", "pm_id": 6, "pm2_env": {"restart_time": 0, "status": "online"}},
        {"name": "b-nodejs", "pm_id": 1, "pm2_env": {"restart_time": 9, "status": "online"}},
    ]
    pm2 = tmp_path / "pm2-cli"
    pm2.write_text(
        "#!/bin/sh\necho '[PM2] Spawning PM2 daemon'\necho "
        + shlex.quote(json.dumps(listing))
        + "\n"
    )
    pm2.chmod(0o755)
    spec = {
        "mode": "settle",
        "apps": ["a-python", "a-nodejs"],
        "pm2": str(pm2),
        "pm2_home": str(tmp_path / "pm2"),
    }
    out = upkeep(spec, tmp_path)
    assert out["restarts"] == {"a-python": {"0": 3}, "a-nodejs": {"5": 1, "6": 0}}
    assert sorted(out["removed"]) == sorted(gone)
    assert sorted(p.name for p in logs.iterdir()) == sorted(kept)
    pm2.write_text("#!/bin/sh\necho 'connect ENOENT'\nexit 1\n")
    (logs / "a-nodejs-out-9.log").write_text("x\n")
    assert upkeep(spec, tmp_path) == {"restarts": None, "removed": []}
    assert (logs / "a-nodejs-out-9.log").exists()


def test_crashes_are_restarts_since_the_tool_last_reloaded_the_apps() -> None:
    from signalcraft_deploy.host.upkeep import crashes

    recorded = {"a-nodejs": {"5": 2, "6": 2}, "a-python": {"0": 0}}
    assert crashes(2, 5, "a-nodejs", recorded) == 0  # two rolling reloads: no crash
    assert crashes(3, 6, "a-nodejs", recorded) == 1  # killed once since
    assert crashes(1, 7, "a-nodejs", recorded) == 1  # a process started since counts from 0
    assert (
        crashes(0, 5, "a-nodejs", recorded) == 0
    )  # PM2's daemon restarted: its counts start again
    assert crashes(4, 0, "a-python", None) is None  # nothing recorded (an older version deployed)
