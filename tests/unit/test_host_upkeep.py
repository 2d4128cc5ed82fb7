"""Issue 14: `setup`'s facts and plan, the boot unit, log rotation, disk space, the temporary apps' logs,
the setting named when it is at fault. Pure functions on recorded host output; remote/upkeep.py run as
the host runs it (`python3 -I -`) on a scratch deploy root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_deploy import remote
from signalcraft_deploy.core.render import render_logrotate
from signalcraft_deploy.host import root
from signalcraft_deploy.host import setup as setup_ops
from signalcraft_deploy.host.facts import Pm2Process, parse_facts
from signalcraft_deploy.host.setup import PM2_VERSION, State, parse_setup_facts, plan_setup
from signalcraft_deploy.host.upkeep import boot_problems, dump_in_step, forget_logs_command, space_report
from signalcraft_deploy.steps.faults import setting_fault

PM2_TEMPLATE = """[Unit]
Description=PM2 process manager
After=network.target

[Service]
Type=forking
User=%USER%
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


def facts_output(**sections: str) -> str:
    """setup_facts.sh's output for the sandbox host as it is (nginx, node, pm2; no unit, no rotation), with changes."""
    base = {"user": "ubuntu", "group": "ubuntu", "home": "/home/ubuntu", "pm2_home": "/home/ubuntu/.pm2", "sudo": "yes",
            "apt": "yes", "packages": "nginx installed 1.22.1-9+deb12u11\nlogrotate installed 3.21.0-1",
            "commands": "nginx\nlogrotate", "venv": "yes", "node": "/usr/bin/node", "npm": "/usr/bin/npm",
            "pm2": "/usr/lib/node_modules/pm2/bin/pm2", "pm2_version": "7.0.4", "template": PM2_TEMPLATE,
            "systemd_dir": "yes", "systemd_running": "", "unit": "", "wants": "", "logrotate_conf": ""}
    base.update(sections)
    return "".join(f"\n@@signalcraft:{name}\n{text}\n" for name, text in base.items())


def states(items: list[setup_ops.Item]) -> dict[str, State]:
    return {i.name: i.state for i in items}


def test_the_sandbox_needs_only_the_boot_unit_and_log_rotation(load) -> None:
    f = parse_setup_facts(facts_output())
    assert (f.user, f.pm2, f.node, f.sudo, f.unit, f.wants) == ("ubuntu", "/usr/lib/node_modules/pm2/bin/pm2", "/usr/bin/node",
                                                                 True, None, None)
    assert states(plan_setup(load(), f)) == {"nginx": State.OK, "python3-venv": State.OK, "logrotate": State.OK,
                                             "node": State.OK, "pm2": State.OK, "boot unit": State.WRITE,
                                             "log rotation": State.WRITE, "root helper": State.WRITE, "sudoers": State.WRITE}


def test_a_set_up_host_has_nothing_to_change(load) -> None:
    s = load()
    f = parse_setup_facts(facts_output())
    done = parse_setup_facts(facts_output(unit=setup_ops.boot_unit(f), wants=f.unit_path,
                                          logrotate_conf=setup_ops.logrotate_text(s, f)))
    done.helper_digest, done.sudoers = root.digest(), root.sudoers_text("ubuntu")
    assert {i.state for i in plan_setup(s, done)} == {State.OK}
    done.helper_digest = "0" * 64  # another version's helper is redone
    assert states(plan_setup(s, done))["root helper"] is State.WRITE
    # Other rotation settings are a change of the file.
    assert states(plan_setup(load({"LOG_ROTATE_COUNT": "3"}), done))["log rotation"] is State.WRITE


def test_the_boot_unit_is_pm2s_template_with_absolute_paths() -> None:
    f = parse_setup_facts(facts_output(node="/home/ubuntu/.nvm/versions/node/v20.11.1/bin/node"))
    unit = setup_ops.boot_unit(f)
    assert "User=ubuntu\n" in unit and "PIDFile=/home/ubuntu/.pm2/pm2.pid\n" in unit
    assert "ExecStart=/usr/lib/node_modules/pm2/bin/pm2 resurrect\n" in unit
    assert "Environment=PATH=/home/ubuntu/.nvm/versions/node/v20.11.1/bin:/usr/local/sbin:" in unit
    assert "Environment=PM2_HOME=/home/ubuntu/.pm2\n" in unit and "%" not in unit


def test_a_new_node_or_pm2_path_redoes_the_unit(load) -> None:
    old = parse_setup_facts(facts_output(node="/home/ubuntu/.nvm/versions/node/v18.0.0/bin/node"))
    for change in ({"node": "/home/ubuntu/.nvm/versions/node/v20.11.1/bin/node"}, {"pm2": "/usr/local/lib/node_modules/pm2/bin/pm2"}):
        now = parse_setup_facts(facts_output(unit=setup_ops.boot_unit(old), wants=old.unit_path, **change))
        item = setup_ops.boot_item(now)
        assert item.state is State.WRITE and "another Node.js or PM2 path" in item.detail, item
    enabled_elsewhere = parse_setup_facts(facts_output(unit=setup_ops.boot_unit(old), wants="/dev/null",
                                                       node="/home/ubuntu/.nvm/versions/node/v18.0.0/bin/node"))
    assert "not enabled" in setup_ops.boot_item(enabled_elsewhere).detail


def test_a_fresh_host_gets_packages_then_pm2_at_its_pinned_version(load) -> None:
    f = parse_setup_facts(facts_output(packages="nginx not-installed \nlogrotate not-installed ", commands="", venv="",
                                       node="", npm="", pm2="", pm2_version="", template=""))
    items = {i.name: i for i in plan_setup(load(), f)}
    assert items["apt packages"].detail == "apt-get install nginx logrotate python3-venv nodejs npm"
    assert items["pm2"].state is State.INSTALL and items["pm2"].detail == f"npm install -g pm2@{PM2_VERSION}"
    assert PM2_VERSION == "7.0.4"
    assert items["boot unit"].state is State.WRITE and "once Node.js and PM2 are installed" in items["boot unit"].detail
    assert "nginx" not in items and "node" not in items


def stanzas(text: str) -> dict[str, list[str]]:
    """A logrotate file's stanzas: the first line (paths) -> its directives, stripped, scripts included."""
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
    text = render_logrotate(s, "ubuntu", "ubuntu", "/home/ubuntu", "/usr/lib/node_modules/pm2/bin/pm2", "/opt/node/bin:/usr/bin:/bin")
    apps, daemon = stanzas(text).values()
    assert list(stanzas(text)) == ["/home/ubuntu/.pm2/logs/*.log", "/home/ubuntu/.pm2/pm2.log"]
    assert apps[:9] == ["su ubuntu ubuntu", "size 20M", "rotate 4", "compress", "nodateext", "missingok", "notifempty",
                        "nocreate", "sharedscripts"]
    assert "delaycompress" not in text and "copytruncate" not in apps  # copytruncate loses lines: PM2 reopens instead
    script = "\n".join(apps[apps.index("postrotate") + 1:apps.index("endscript")])
    assert ("env HOME=/home/ubuntu PM2_HOME=/home/ubuntu/.pm2 PATH=/opt/node/bin:/usr/bin:/bin "
            "/usr/lib/node_modules/pm2/bin/pm2 reloadLogs") in script
    assert "runuser -u ubuntu --" in script and "/home/ubuntu/.pm2/logs/.*\\.log\\.1$" in script
    assert daemon == ["su ubuntu ubuntu", "size 20M", "rotate 4", "compress", "nodateext", "missingok", "notifempty",
                      "copytruncate"]
    for bad in (("ubuntu; rm -rf /", "ubuntu", "/home/ubuntu", "/usr/bin/pm2", "/usr/bin"),
                ("ubuntu", "ubuntu", "/home/ubuntu", "pm2 && reboot", "/usr/bin"),
                ("ubuntu", "ubuntu", "/home/ubuntu", "/usr/bin/pm2", "/usr/bin:$(reboot)")):
        with pytest.raises(ValueError):
            render_logrotate(s, *bad)


def test_logrotate_file_checks_out_with_logrotate(load, tmp_path: Path) -> None:
    import shutil

    if not shutil.which("logrotate") and not Path("/usr/sbin/logrotate").exists():
        pytest.skip("logrotate is not installed")
    conf = tmp_path / "pm2-u"
    conf.write_text(render_logrotate(load(), "root", "root", str(tmp_path), "/usr/bin/pm2", "/usr/bin:/bin"))
    done = subprocess.run([shutil.which("logrotate") or "/usr/sbin/logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
                          capture_output=True, text=True)
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
    s = load({"GUNICORN_WORKER_CLASS": "nosuchworker"})
    out = "[2026-12-01 21:00:00 +0000] [42] [ERROR] Error: class uri 'nosuchworker' invalid or not found: \n\n[Traceback"
    message = setting_fault(s, out)
    assert message is not None and message.startswith("The cause is the setting GUNICORN_WORKER_CLASS (flag --set): 'nosuchworker'")
    assert "Set GUNICORN_WORKER_CLASS" in message


def test_wsgi_app_is_blamed_only_for_its_own_module(load) -> None:
    s = load({"WSGI_APP": "wsgi:app"})
    assert "WSGI_APP" in (setting_fault(s, "ModuleNotFoundError: No module named 'wsgi'") or "")
    assert setting_fault(s, "ModuleNotFoundError: No module named 'does_not_exist_xyz'") is None
    assert "WSGI_APP" in (setting_fault(s, "Failed to find attribute 'app' in 'wsgi'.") or "")
    assert setting_fault(s, "RuntimeError: boom") is None


# ----------------------------------------------------------------------------- disk, dump, boot


def test_free_space_is_read_with_the_host_checks() -> None:
    out = "\n@@signalcraft:tools\npm2\n\n@@signalcraft:disk\ntmpfs 307200 280000 27200 92% /home/ubuntu/i14-disk\n"
    assert parse_facts(out).free_mb == 26
    assert parse_facts("\n@@signalcraft:tools\npm2\n").free_mb is None


def test_space_report_names_what_takes_the_space_largest_first() -> None:
    data = {"free_mb": 40, "total_mb": 300, "path": "/srv/app", "unused": ["/srv/app/venvs/old"],
            "parts": {"releases": {"path": "/srv/app/releases", "bytes": 3 * 2**20, "count": 2},
                      "venvs": {"path": "/srv/app/venvs", "bytes": 60 * 2**20, "count": 2},
                      "node_modules": {"path": "/srv/app/node_modules", "bytes": 0, "count": 0},
                      "shared": {"path": "/srv/app/shared", "bytes": 0, "count": 0},
                      "logs": {"path": "/home/u/.pm2/logs", "bytes": 9 * 2**20, "count": 7, "same_fs": False}}}
    assert space_report(data) == ("other files 197 MB, venvs 60 MB (2, 1 used by no release), "
                                  "PM2 logs 9 MB (7, another filesystem), releases 3 MB (2)")


def proc(name: str, exec_path: str, cwd: str = "/srv/app/current") -> Pm2Process:
    return Pm2Process(name, 0, 1, "online", 0, 0, "fork", exec_path, cwd, "node", ("-c", "x"), 0)


def test_the_saved_list_is_in_step_only_when_it_matches_what_runs() -> None:
    running = [proc("a-python", "/srv/app/venvs/1/bin/gunicorn"), proc("a-nodejs", "/srv/app/current/server.js")]
    saved = {"a-python": [{"exec": "/srv/app/venvs/1/bin/gunicorn", "cwd": "/srv/app/current", "args": ["-c", "x"]}],
             "a-nodejs": [{"exec": "/srv/app/current/server.js", "cwd": "/srv/app/current", "args": ["-c", "x"]}]}
    names = ("a-python", "a-nodejs")
    assert dump_in_step(saved, running, names) == []
    stale = {**saved, "a-python": [{**saved["a-python"][0], "exec": "/srv/app/venvs/0/bin/gunicorn"}]}
    assert dump_in_step(stale, running, names) == ["a-python runs 1 process(es) unlike the 1 saved (script, directory or arguments)"]
    assert dump_in_step({"a-python": saved["a-python"]}, running, names) == ["a-nodejs runs but is not in the saved list"]
    assert dump_in_step(None, running, names) == ["no saved list (pm2 save has never run)"]


def test_boot_problems_name_a_unit_that_no_longer_fits() -> None:
    unit = {"ExecStart": "/usr/lib/node_modules/pm2/bin/pm2 resurrect", "env": {"PATH": "/usr/bin:/bin"}}
    boot = {"unit_path": "/etc/systemd/system/pm2-u.service", "unit": unit, "enabled": True, "dump": {},
            "pm2": "/usr/lib/node_modules/pm2/bin/pm2", "node": "/usr/bin/node"}
    assert boot_problems(boot, [], ("a-python",)) == []
    moved = {**boot, "node": "/opt/node/bin/node", "enabled": False}
    assert boot_problems(moved, [], ("a-python",)) == ["/etc/systemd/system/pm2-u.service is not enabled",
                                                       "the unit's PATH lacks /opt/node/bin, where Node.js is now"]
    assert boot_problems({**boot, "unit": None}, [], ()) == ["no boot unit (/etc/systemd/system/pm2-u.service)"]


# ----------------------------------------------------------------------------- on the host


def test_forget_logs_removes_only_the_named_apps_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    gone = ["a-python-trial-out.log", "a-python-trial-error.log", "a-python-trial-out-12.log", "a-python-trial-out.log.1.gz"]
    kept = ["a-python-out.log", "a-python-trial-x-out.log", "b-python-trial-out.log", "a-nodejs-out-3.log"]
    for name in gone + kept:
        (logs / name).write_text("x")
    subprocess.run(["sh", "-c", forget_logs_command("a-python-trial", "a-nodejs-trial")], check=True,
                   env={"PM2_HOME": str(tmp_path), "PATH": os.environ["PATH"]})
    assert sorted(p.name for p in logs.iterdir()) == sorted(kept)


def upkeep(spec: dict, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-I", "-", json.dumps(spec)], input=remote.program("upkeep"), capture_output=True,
                          text=True, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def release(root: Path, name: str, venv: str, node_modules: str) -> None:
    (root / "releases" / name / ".signalcraft").mkdir(parents=True)
    (root / "releases" / name / ".signalcraft" / "manifest.json").write_text(
        json.dumps({"venv": f"{root}/venvs/{venv}", "node_modules": f"{root}/node_modules/{node_modules}"}))


def test_prune_removes_environments_no_release_and_no_process_uses(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for d in ("venvs/kept", "venvs/old", "venvs/running", "node_modules/kept", "node_modules/old"):
        (root / d / "bin").mkdir(parents=True)
        (root / d / "bin" / "f").write_bytes(b"x" * 10_000)
    release(root, "20261201T000000Z-a", "kept", "kept")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"{root}/venvs/running/bin/python"])
    try:
        usage = upkeep({"mode": "space", "root": str(root), "pm2_home": str(tmp_path / "pm2"), "apps": []}, tmp_path)
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
    (home / "dump.pm2").write_text(json.dumps([
        {"name": "a-python", "pm_exec_path": "/srv/v/bin/gunicorn", "pm_cwd": "/srv/current", "args": ["-c", "g.py"],
         "exec_interpreter": "/srv/v/bin/python", "env": {"SECRET": "s3cr3t-never"}},
        {"name": "other", "pm_exec_path": "/x", "pm_cwd": "/", "env": {}}]))
    out = upkeep({"mode": "boot", "pm2_home": str(home), "apps": ["a-python", "a-nodejs"], "user": "nobody-here"}, tmp_path)
    assert out["dump"] == {"a-python": [{"exec": "/srv/v/bin/gunicorn", "cwd": "/srv/current", "args": ["-c", "g.py"],
                                          "interpreter": "/srv/v/bin/python"}]}
    assert out["unit"] is None and out["enabled"] is False and "s3cr3t" not in json.dumps(out)


# ----------------------------------------------------------------------------- setup's commands (MockContext)


def test_without_systemd_the_unit_pm2_startup_could_not_enable_is_rendered_and_linked(load) -> None:
    from invoke import MockContext, Result

    from signalcraft_deploy.host.io import command_log

    f = parse_setup_facts(facts_output())
    c = MockContext(run={
        re.compile(r".*pm2 startup systemd -u ubuntu --hp /home/ubuntu$"): Result(
            exited=1, stdout="[PM2] Writing init configuration in /etc/systemd/system/pm2-ubuntu.service\n"
                             "[ERROR] Exit code : 1\n", stderr="System has not been booted with systemd as init system (PID 1).\n"),
        re.compile(r"^cat /etc/systemd/system/pm2-ubuntu.service$"): Result(exited=1),
        re.compile(r"^sudo -n sh -c .*"): Result(),
        re.compile(r"^readlink .*"): Result(exited=1),
        re.compile(r"^sudo -n ln -sfn .*"): Result(),
    }, repeat=True)
    how = setup_ops.enable_boot(c, f)
    sent = command_log(c).commands
    assert sent[0] == ("sudo -n mkdir -p /etc/systemd/system/multi-user.target.wants && sudo -n env "
                       "PATH=/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin /usr/lib/node_modules/pm2/bin/pm2 "
                       "startup systemd -u ubuntu --hp /home/ubuntu")
    assert any("/etc/systemd/system/pm2-ubuntu.service.signalcraft-tmp" in cmd for cmd in sent)
    assert sent[-1] == ("sudo -n ln -sfn /etc/systemd/system/pm2-ubuntu.service "
                        "/etc/systemd/system/multi-user.target.wants/pm2-ubuntu.service")
    assert how.startswith("rendered from PM2's template (pm2 startup: System has not been booted with systemd")
    assert "systemctl daemon-reload" not in " ".join(sent)  # no systemd runs to reload
