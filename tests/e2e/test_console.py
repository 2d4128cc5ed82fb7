"""`exec` and `console` on a real host, as a user runs them: `fab` on this machine, SSH to the test
host, the app helper to the apps' account, the live release's venv, values and folder.

One deploy of the example app (profile "console", ports 7605-7625) with an APP_ENV_FILE holding a
value of the module's own, shared by every test. The commands run from a user's home of the
module's: `~/.ssh/config` names the host `your-host`, and `web1` and `web2` (the same host on its
ports 22 and 2222: two Connections, two host keys checked, the fleet's path through the tool, at
no second deploy's cost) and ENV_FILE names the settings. The documented lines (DOCUMENTED) run
verbatim; `console` runs on a pseudo-terminal of this test's (Python's pty), typed into as a user
would, Ctrl-D included. About 25 s beyond the deploy.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import (
    APP_USER,
    REPO,
    AppRepo,
    Profile,
    Sandbox,
    UserShell,
    clean_host,
    fab,
    sh,
    ssh_config,
    users_env,
)
from tests.e2e.hosts import on_this_machine

CONSOLE = Profile("console", "/home/ubuntu/console", 7605, 7615, 7625)
SECRET = f"console-secret-{secrets.token_hex(10)}"

EXEC_ROUTES = "fab -H ubuntu@your-host exec -- flask routes"
FLEET_ROUTES = "fab -H web1,web2 exec -- flask routes"
PYTHON_CONSOLE = "fab -H ubuntu@your-host console"
NODE_CONSOLE = "fab -H ubuntu@your-host console --node"
DOCUMENTED = (EXEC_ROUTES, FLEET_ROUTES, PYTHON_CONSOLE, NODE_CONSOLE)
CTRL_D = "\x04"


class User(UserShell):
    """A user's machine (conftest's), with a terminal to type into."""

    def in_terminal(self, line: str, steps: list[tuple[str, str]]) -> tuple[int, str]:
        """Run `line` on a new pseudo-terminal; each (text, keys): once `text` shows after the
        last keys typed, type `keys`. Its exit status and all it showed."""
        master, slave = os.openpty()
        with on_this_machine():
            proc = subprocess.Popen(
                ["bash", "-c", line],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )
        os.close(slave)
        shown, mark, deadline = b"", 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            if steps and steps[0][0].encode() in shown[mark:]:
                text, keys = steps.pop(0)
                mark = shown.index(text.encode(), mark) + len(text)
                os.write(master, keys.encode())
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: nothing holds the terminal any more
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout=10), shown.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def user(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> User:
    root = tmp_path_factory.mktemp("console")
    app_env = root / "app.env"
    app_env.write_text(f"CONSOLE_SECRET={SECRET}\n")
    clean_host(CONSOLE)
    done = fab(sandbox, CONSOLE, AppRepo(root / "app"), "--set", f"APP_ENV_FILE={app_env}")
    assert done.returncode == 0, done.stdout + done.stderr
    home = root / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh/config").write_text(
        ssh_config(sandbox, {"your-host": 22, "web1": 22, "web2": 2222}, user="ubuntu")
    )
    settings = root / "deploy.env"
    settings.write_text(
        "".join(f"{k}={v}\n" for k, v in CONSOLE.settings().items())
        + f"APP_ENV_FILE={app_env}\nKNOWN_HOSTS={sandbox.known_hosts}\n"
    )
    return User(users_env(home) | {"ENV_FILE": str(settings)})


def live() -> tuple[str, str]:
    """The live release's folder and its venv, as the host has them."""
    release = sh(f"readlink -f {CONSOLE.root}/current").stdout.strip()
    manifest = json.loads(sh(f"cat {release}/.signalcraft/manifest.json").stdout)
    return release, manifest["venv"]


def test_exec_runs_in_the_live_release_as_the_apps_account_with_its_values(user: User) -> None:
    program = (
        "import os, pwd, sys; print(sys.executable); print(os.getcwd());"
        " print(pwd.getpwuid(os.getuid()).pw_name); print('CONSOLE_SECRET' in os.environ)"
    )
    done = user.run(f'fab -H ubuntu@your-host exec -- python -c "{program}"')
    release, venv = live()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{venv}/bin/python", release, APP_USER, "True"]
    assert f"as {APP_USER}" in done.stderr


def test_the_documented_exec_lists_the_apps_routes(user: User) -> None:
    done = user.run(EXEC_ROUTES)
    assert done.returncode == 0, done.stderr
    assert "health" in done.stdout and "catch_all" in done.stdout, done.stdout


def test_output_streams_as_it_comes_and_a_failing_status_is_the_task_s(user: User) -> None:
    line = (
        "fab -H ubuntu@your-host exec -- python -c 'import time; print(1); time.sleep(2); exit(3)'"
    )
    with on_this_machine():
        proc = subprocess.Popen(
            ["bash", "-c", line],
            env=user.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert proc.stdout is not None and proc.stdout.readline() == "1\n"
    shown = time.monotonic()
    status, err = proc.wait(timeout=60), proc.stderr.read() if proc.stderr else ""
    assert time.monotonic() - shown > 1.5  # the line came while the command still ran
    assert status == 3 and "exited with status 3" in err, err


def test_ctrl_c_stops_the_command_on_the_host_too(user: User) -> None:
    line = "fab -H ubuntu@your-host exec --command 'echo started; sleep 61'"
    with on_this_machine():
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            env=user.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    running = f"for i in $(seq 50); do pgrep -u {APP_USER} -fx 'sleep 61' && exit; sleep 0.1; done; exit 1"
    assert sh(running, check=False).returncode == 0
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=10) == 130
    deadline = time.monotonic() + 10
    while sh(f"pgrep -u {APP_USER} -fx 'sleep 61'", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the command still runs on the host"
        time.sleep(0.2)


def test_the_apps_values_are_masked_in_what_the_tool_prints(user: User) -> None:
    line = f'test "$CONSOLE_SECRET" = {SECRET} && echo present'
    done = user.run(f"fab -H ubuntu@your-host exec --command '{line}'")
    assert (done.returncode, done.stdout) == (0, "present\n"), done.stderr
    assert SECRET not in done.stderr and "***" in done.stderr, done.stderr


def test_two_hosts_run_in_turn_each_line_labelled_and_a_failure_names_them(user: User) -> None:
    done = user.run(FLEET_ROUTES)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    labels = [line.split(" | ", 1)[0] for line in lines]
    assert labels == sorted(labels) and set(labels) == {"web1", "web2"}, done.stdout
    assert all(
        any("health" in x for x in lines if x.startswith(f"{h} | ")) for h in ("web1", "web2")
    )
    failed = user.run("fab -H web1,web2 exec --command 'echo here; exit 4'")
    assert failed.returncode == 4
    assert failed.stdout.splitlines() == ["web1 | here", "web2 | here"]
    assert "failed on 2 of 2 hosts: web1 (exit 4), web2 (exit 4)" in failed.stderr


def test_the_python_console_imports_the_app_and_ctrl_d_ends_it_cleanly(user: User) -> None:
    status, shown = user.in_terminal(
        PYTHON_CONSOLE,
        [
            (">>> ", "from app import create_app; print('name=' + create_app().name)\r"),
            ("name=app", ""),
            (">>> ", CTRL_D),
        ],
    )
    assert status == 0 and "name=app" in shown, shown
    assert SECRET not in shown


def test_the_consoles_exit_status_is_the_tasks(user: User) -> None:
    status, shown = user.in_terminal(PYTHON_CONSOLE, [(">>> ", "raise SystemExit(5)\r")])
    assert status == 5 and "The console ended with status 5." in shown, shown


def test_the_node_console_is_the_releases_and_ctrl_d_ends_it_cleanly(user: User) -> None:
    status, shown = user.in_terminal(
        NODE_CONSOLE,
        [
            ("> ", "console.log('pkg=' + require('./package.json').name)\r"),
            ("pkg=signalcraft-example", ""),
            ("> ", CTRL_D),
        ],
    )
    assert status == 0 and "pkg=signalcraft-example" in shown, shown
