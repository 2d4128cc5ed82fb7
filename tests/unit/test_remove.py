"""`remove` over a mocked host: which commands reach the host, in which order, and what a user
reads.

A dry run sends nothing that writes; --purge without --confirm APP_NAME touches nothing at all;
without --purge DEPLOY_ROOT is never deleted; a failure part way puts back what was done.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from invoke.exceptions import Exit

from signalcraft_deploy.core.settings import KEY_NAMES, load_settings
from signalcraft_deploy.host.lock import END
from signalcraft_deploy.tasks.remove import remove
from tests.unit.conftest import mock_host
from tests.unit.test_orchestration import facts_text, jlist, labels, ok, sent

RELEASE = "20250301T000000Z-000000000000"
SITE_TEXT = "# Rendered by signalcraft-deploy.\nserver {}"
SETTINGS = {"APP_NAME": "shop", "DEPLOY_ROOT": "/srv/shop"}
EXISTS = (  # is DEPLOY_ROOT there (a remove after --purge: nothing to do)?
    "[ -e /srv/shop ] || [ -L /srv/shop ]"
)
RELOADED = json.dumps({"ok": True, "master": 77, "seconds": 0.2})


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The task reads ./.env and the environment: neither holds a setting here."""
    monkeypatch.chdir(tmp_path)
    for key in (*KEY_NAMES, "ENV_FILE"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def held(mocker: Any) -> Any:
    """The deploy lock's held command, answering as lock_script does: LOCKED, then the host read."""
    fake = mocker.patch("signalcraft_deploy.host.lock.HeldCommand")

    def answer(facts: str) -> Any:
        fake.return_value.readline.side_effect = [
            "LOCKED\n",
            *facts.splitlines(keepends=True),
            "\n",
            END + "\n",
        ]
        return fake

    return answer


def live(**more: str) -> str:
    """The host read of a live `shop`: its site, `current`, both apps in its account's PM2."""
    return facts_text(
        current=f"releases/{RELEASE}",
        releases=RELEASE,
        site=SITE_TEXT,
        pm2=jlist(
            {"name": "shop-python", "pid": 10},
            {"name": "shop-nodejs", "pid": 11},
            {"name": "other-python", "pid": 12},
        ),
        **more,
    )


def host(**answers: Any) -> Any:
    """A mocked host; `answers` maps a regex of a command to its Result (these first, then the usual
    ones)."""
    usual = {
        r"id -un$": ok("ubuntu\n"),
        r"sh -s$": ok(live()),
        r"sudo -n /usr/local/sbin/signalcraft-root site-remove ": ok("removed\n"),
        r"sudo -n /usr/local/sbin/signalcraft-root nginx-reload ": ok(RELOADED + "\n"),
        r"sudo -n /usr/local/sbin/signalcraft-root site-install ": ok(),
        r"(?s)umask 077 && mkdir -p .*audit\.log": ok(),
        r".*": ok(),
    }
    ordered = {
        **answers,
        **{k: v for k, v in usual.items() if k not in answers},
    }  # a test's own answers first
    return mock_host(run={re.compile(k): v for k, v in ordered.items()}, repeat=True)


def run_remove(c: Any, **flags: Any) -> None:
    remove(c, set_=[f"{k}={v}" for k, v in SETTINGS.items()], **flags)


def commands(c: Any) -> list[str]:
    return [command for command, _ in sent(c)]


def test_a_dry_run_lists_each_action_and_sends_nothing_that_writes(task_env, held, capsys) -> None:
    lock = held("")
    c = host()
    run_remove(c, dry_run=True)
    out = capsys.readouterr().out
    assert "Plan for this machine: remove shop" in out
    assert (
        "  site      remove /etc/nginx/sites-available/shop and its link"
        " /etc/nginx/sites-enabled/shop" in out
    )
    assert "  pm2       delete shop-nodejs, shop-python from shop's PM2; pm2 save" in out
    assert f"  current   remove /srv/shop/current (names {RELEASE}); keep /srv/shop" in out
    assert "an admin removes them with: invoke setup --remove-app shop --user ubuntu" in out
    assert out.rstrip().endswith("Dry run: nothing was changed.")
    assert (
        commands(c) == ["id -un", "sh -s"] and not lock.called
    )  # the host read, no lock, no root, no PM2


def test_a_dry_run_of_a_purge_says_what_it_would_refuse(task_env, held, capsys) -> None:
    lock = held("")
    c = host(
        **{
            r"^R=/srv/shop; ": ok(
                stderr="/srv/shop holds .ssh, which this tool does not make", exited=5
            )
        }
    )
    run_remove(c, dry_run=True, purge=True, confirm="shop")
    out = capsys.readouterr().out
    assert (
        "  purge     refused: /srv/shop holds .ssh, which this tool does not make; remove --purge"
        " would stop" in out
    )
    assert len(commands(c)) == 3 and "rm " not in commands(c)[2] and not lock.called


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ({"purge": True}, "pass --confirm shop (APP_NAME) to say so (no --confirm was given)"),
        ({"purge": True, "confirm": "other"}, "(--confirm other was given)"),
        ({"confirm": "shop"}, "--confirm goes with --purge"),
    ],
)
def test_purge_without_the_apps_name_touches_nothing(
    task_env, held, flags: dict[str, Any], said: str
) -> None:
    lock = held("")
    c = host()
    with pytest.raises(Exit) as err:
        run_remove(c, **flags)
    assert (
        err.value.code == 2
        and said in err.value.message
        and "Nothing was changed." in err.value.message
    )
    assert commands(c) == [] and not lock.called


def test_remove_takes_the_site_off_first_then_the_apps_and_keeps_deploy_root(
    task_env, held, capsys
) -> None:
    held(live())
    c = host()
    run_remove(c)
    assert labels(c) == [
        "id -un",
        EXISTS,
        "root site-remove",
        "root nginx-reload",
        "pm2 delete shop-nodejs shop-python",
        "pm2 save",
        "forget logs",
        "rm -f /srv/shop/current",
        "audit",
    ]
    sent_text = "\n".join(commands(c))
    assert "other-python" not in sent_text  # another app in the same PM2 is not touched
    assert "rm -rf" not in sent_text and "find " not in sent_text  # DEPLOY_ROOT stays
    reload = json.loads(shlex.split(next(x for x in commands(c) if "nginx-reload" in x))[-1])
    assert (
        reload["marker"] is None
    )  # verified by Nginx's workers and its error log: the site's id is gone with it
    out = capsys.readouterr().out
    assert "Removed shop from this machine; /srv/shop/releases and /srv/shop/shared are kept" in out


def test_a_failed_pm2_delete_puts_the_site_back_and_says_one_thing(task_env, held) -> None:
    held(live())
    c = host(**{r"(?s).*delete": ok(stderr="PM2 daemon not reachable", exited=1)})
    with pytest.raises(Exit) as err:
        run_remove(c)
    message = err.value.message
    assert message.startswith(
        "PM2 could not delete shop-nodejs, shop-python (as shop): PM2 daemon not reachable"
    )
    assert "Undone: remove site." in message and message.rstrip().endswith(
        "Run remove again once the cause is fixed: it converges."
    )
    after = labels(c)[labels(c).index("pm2 delete shop-nodejs shop-python") + 1 :]
    assert after[:2] == ["root site-install", "root nginx-reload"], after


def test_a_second_remove_finds_nothing_and_reloads_nothing(task_env, held, capsys) -> None:
    held(facts_text(releases=RELEASE))  # the site, PM2 entries and current are gone already
    c = host(**{r"sudo -n /usr/local/sbin/signalcraft-root site-remove ": ok("absent\n")})
    run_remove(c)
    assert labels(c) == [
        "id -un",
        EXISTS,
        "root site-remove",
        "forget logs",
        "audit",
    ]  # no PM2 daemon asked to save


def test_purge_with_the_apps_name_deletes_deploy_root_and_writes_no_audit_into_it(
    task_env, held, capsys
) -> None:
    held(live())
    c = host()
    run_remove(c, purge=True, confirm="shop")
    last = commands(c)[-1]
    check = next(i for i, command in enumerate(commands(c)) if command.startswith("R=/srv/shop; "))
    assert (
        check < labels(c).index("root site-remove") and "rm" not in commands(c)[check]
    )  # before anything changes
    assert last.startswith(commands(c)[check]) and last.endswith(
        "/srv/shop/npm-cache && rm -rf -- /srv/shop"
    )
    assert (
        "find /srv/shop/shared -mindepth 1 -delete" in last
    )  # shared/ first, as the apps' account
    assert "audit" not in labels(c) and "rm -f /srv/shop/current" not in labels(c)
    assert "Removed shop from this machine, /srv/shop included." in capsys.readouterr().out


def test_a_folder_that_is_no_deploy_root_is_not_purged(task_env, held) -> None:
    held(live())
    c = host(**{r"^R=/srv/shop; ": ok(stderr="no .deploy/ in it", exited=3)})
    with pytest.raises(Exit) as err:
        run_remove(c, purge=True, confirm="shop")
    assert (
        "holds no .deploy/ folder of the deploy user's, so it is not a deploy root this tool made:"
        " nothing in it was deleted. Check DEPLOY_ROOT. Nothing was changed." in err.value.message
    )
    assert labels(c)[3:] == ["audit"]  # the site and apps untouched


def test_a_purge_that_fails_part_way_puts_back_neither_site_nor_apps(task_env, held) -> None:
    # releases deleted part way: a site put back (and apps started from them) would serve errors
    held(live())
    c = host(
        **{
            r"^R=/srv/shop; .*rm -rf": ok(
                stderr="rm: cannot remove '/srv/shop/shared/x/y': Permission denied", exited=1
            )
        }
    )
    with pytest.raises(Exit) as err:
        run_remove(c, purge=True, confirm="shop")
    assert "Permission denied" in err.value.message and "gone already" in err.value.message
    assert "Undone" not in err.value.message
    assert not [x for x in labels(c) if x in ("root site-install", "pm2 start")]


def test_settings_name_the_apps_of_remove(tmp_path) -> None:
    s = load_settings(overrides=SETTINGS, environ={}, cwd=str(tmp_path))
    assert (s.python_app, s.node_app, s.app_user) == ("shop-python", "shop-nodejs", "shop")


def test_a_reload_that_does_not_take_puts_the_site_back(task_env, held) -> None:
    held(live())
    bad = json.dumps({"ok": False, "why": "[emerg] bind() to 0.0.0.0:80 failed"})
    # the removal's reload (no site id to ask for) does not take; the undo's, of the site put back,
    # does
    c = host(
        **{
            r"sudo -n /usr/local/sbin/signalcraft-root nginx-reload .*\"marker\": null": ok(
                bad + "\n"
            )
        }
    )
    with pytest.raises(Exit) as err:
        run_remove(c)
    assert (
        err.value.message.startswith("Nginx's reload did not take")
        and "Undone: remove site." in err.value.message
    )
    assert labels(c)[2:6] == [
        "root site-remove",
        "root nginx-reload",
        "root site-install",
        "root nginx-reload",
    ]
    assert not [x for x in labels(c) if x.startswith("pm2")]  # the apps were never touched


def test_apps_that_run_as_the_deploy_user_leave_nothing_for_an_admin(
    task_env, held, capsys
) -> None:
    held(live())
    c = host()
    remove(c, set_=[f"{k}={v}" for k, v in {**SETTINGS, "APP_USER": "ubuntu"}.items()])
    out = capsys.readouterr().out
    assert "Removed shop from this machine" in out and "setup --remove-app" not in out


# ----------------------------------------------------------------------------- --purge run for
# real, in a folder here


def purge_shell(tmp_path: Any, root: Any, home: Any, rm_fails_on: str = "") -> Any:
    """purge_command run by a real shell as it runs on the host: HOME the deploy user's, the app
    door a stand-in (sudo runs the command as it is), and `rm` failing (after it has done its work)
    when one of its arguments ends in `rm_fails_on`, as it does on what the apps' account made
    unreadable to the deploy user."""
    import os
    import subprocess

    from signalcraft_deploy.steps.remove import purge_command

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sudo").write_text(
        '#!/bin/sh\nshift 4\nexec "$@"\n'
    )  # sudo -n -u APP_USER signalcraft-app CMD...
    (bin_dir / "rm").write_text(
        '#!/bin/sh\n/bin/rm "$@"; s=$?\nfor a; do case "$a" in *"$RM_FAILS_ON") [ -n "$RM_FAILS_ON"'
        ' ] && { echo "rm: cannot remove $a: Permission denied" >&2; exit 1; };; esac; done\nexit'
        " $s\n"
    )
    for tool in ("sudo", "rm"):
        (bin_dir / tool).chmod(0o755)
    s = load_settings(
        overrides={**SETTINGS, "DEPLOY_ROOT": str(root)}, environ={}, cwd=str(tmp_path)
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RM_FAILS_ON": rm_fails_on,
    }
    return subprocess.run(
        ["sh", "-c", purge_command(None, s)], env=env, capture_output=True, text=True, timeout=30
    )


def a_deploy_root(root: Any) -> None:
    for folder in (".deploy", "releases/r1", "shared/data", "venvs/v1", "node_modules/n1"):
        (root / folder).mkdir(parents=True)
    (root / ".deploy" / "audit.log").write_text("{}\n")
    (root / "current").symlink_to("releases/r1")


def test_purge_of_a_deploy_root_that_is_the_deploy_users_home_deletes_nothing(tmp_path) -> None:
    # DEPLOY_ROOT=/home/deploy passes the settings' check for any deploy user but ubuntu, and a
    # deploy there makes .deploy/
    home = tmp_path / "home" / "deploy"
    a_deploy_root(home)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA admin\n")
    done = purge_shell(tmp_path, home, home)
    assert done.returncode == 5 and "home" in done.stderr
    assert (home / ".ssh" / "authorized_keys").exists() and (home / "releases" / "r1").is_dir()


def test_purge_of_a_folder_holding_what_the_tool_does_not_make_deletes_nothing(tmp_path) -> None:
    # DEPLOY_ROOT one folder too high: another app's deploy root (or the deploy user's home) is in
    # it
    root = tmp_path / "srv" / "apps"
    a_deploy_root(root)
    a_deploy_root(root / "blog")
    done = purge_shell(tmp_path, root, tmp_path / "home")
    assert done.returncode == 5 and "blog" in done.stderr
    assert (root / "blog" / ".deploy" / "audit.log").exists() and (
        root / "shared" / "data"
    ).is_dir()


def test_a_purge_that_fails_part_way_keeps_deploy_state_so_a_second_purge_converges(
    tmp_path,
) -> None:
    # the apps' account makes something in shared/ the deploy user cannot delete (after its own find
    # emptied shared/)
    root = tmp_path / "srv" / "shop"
    a_deploy_root(root)
    failed = purge_shell(tmp_path, root, tmp_path / "home", rm_fails_on="/shared")
    assert (
        failed.returncode != 0 and (root / ".deploy").is_dir()
    )  # still this tool's deploy root, by its own sign
    again = purge_shell(tmp_path, root, tmp_path / "home")
    assert again.returncode == 0 and not root.exists()


def test_a_purge_that_would_delete_a_home_says_so_and_what_to_set(task_env, held) -> None:
    held(live())
    said = "DEPLOY_ROOT /srv/shop is the deploy user's home, or holds it"
    c = host(**{r"\[ -d /srv/shop/\.deploy \]|R=/srv/shop": ok(stderr=said, exited=5)})
    with pytest.raises(Exit) as err:
        run_remove(c, purge=True, confirm="shop")
    message = err.value.message
    assert (
        said in message and "nothing in it was deleted" in message and "Set DEPLOY_ROOT" in message
    )


def test_reading_the_host_for_remove_starts_no_pm2_daemon(tmp_path) -> None:
    # `pm2 jlist` (the list's fallback when PM2's socket cannot be asked) spawns a daemon when none
    # runs: a dry run, or a second remove on a host whose apps' PM2 is down, would leave one running
    # as the apps' account
    import os
    import subprocess

    from signalcraft_deploy.host.facts import facts_script

    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    (bin_dir / "sudo").write_text(
        '#!/bin/sh\nshift 4\nexec "$@"\n'
    )  # the app door: the command as it is
    (bin_dir / "node").write_text("#!/bin/sh\nexit 3\n")  # pm2_rpc.js: no daemon to ask
    (bin_dir / "pm2").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/pm2-ran\necho '[]'\n")
    for tool in ("sudo", "node", "pm2"):
        (bin_dir / tool).chmod(0o755)
    s = load_settings(
        overrides={**SETTINGS, "DEPLOY_ROOT": str(tmp_path / "srv")}, environ={}, cwd=str(tmp_path)
    )
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("PM2_HOME", None)
    script = facts_script(s, quick=True, spawn_pm2=False)
    done = subprocess.run(
        ["sh", "-s"], input=script, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and "@@signalcraft:pm2\n[]" in done.stdout
    assert not (tmp_path / "pm2-ran").exists()


def test_a_remove_after_a_purge_finds_nothing_and_makes_no_deploy_root_again(
    task_env, held, capsys
) -> None:
    # the deploy lock's script makes DEPLOY_ROOT and its .deploy/ (mkdir -p): a second remove after
    # --purge, under the lock, would leave an empty deploy root with a lock file and an audit log
    # behind
    lock = held("")
    c = host(**{r"^\[ -e /srv/shop \]": ok(exited=1), r"sh -s$": ok(facts_text())})
    run_remove(c, purge=True, confirm="shop")
    out = capsys.readouterr().out
    assert (
        "Nothing of shop is left on this machine (no /srv/shop, no site of its, no PM2 app of its)"
        in out
    )
    assert "Nothing was changed." in out and not lock.called
    assert not [x for x in commands(c) if "signalcraft-root" in x or "mkdir" in x]


def test_a_failed_remove_starts_the_procfile_processes_again_from_the_release_each_ran(
    mocker: Any,
) -> None:
    from types import SimpleNamespace

    from signalcraft_deploy.steps import remove as remove_steps

    s = load_settings(overrides=SETTINGS)
    record = {
        "name": "worker",
        "command": "rq worker",
        "app": "python",
        "release": RELEASE,
        "venv": "/srv/shop/venvs/v1",
    }
    facts = SimpleNamespace(
        manifest={"processes": [record]},
        current_release=RELEASE,
        pm2=[SimpleNamespace(name="shop-python"), SimpleNamespace(name="shop-worker")],
        deploy_pm2=[],
    )
    start = mocker.patch.object(remove_steps.pm2_ops, "start")
    mocker.patch.object(remove_steps.pm2_ops, "save")
    converge = mocker.patch.object(
        remove_steps.processes, "converge", return_value="started shop-worker"
    )
    r = remove_steps.RemoveRun(None, s, None, facts, False, {})  # type: ignore[arg-type]
    assert remove_steps.start_apps_again(r) == (
        f"started shop-python from {RELEASE}; processes: started shop-worker"
    )
    start.assert_called_once_with(None, s, "shop-python")
    (_, _, want, known), _ = converge.call_args
    assert [(w.proc.name, w.release_dir) for w in want] == [
        ("worker", f"/srv/shop/releases/{RELEASE}")
    ]
    assert known == {"worker"}
