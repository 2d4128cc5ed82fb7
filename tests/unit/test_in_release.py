"""`exec` and `console` (host/in_release.py, remote/in_release.py, tasks/console.py): the command
built for the host, quoted all the way through the app helper; the program run in a release folder
of this machine (its folder, venv, values, exit status, stdin); the command line after `--`; the
labelled output of several hosts; what the tool prints around a command, masked.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from fabric import Connection
from invoke import Context, MockContext, Result
from invoke.exceptions import Exit

from signalcraft_deploy.executor import hand_remainder_over
from signalcraft_deploy.host.in_release import (
    FAILED,
    Mode,
    Shown,
    command_line,
    in_release_command,
)
from signalcraft_deploy.host.io import InvokeRunner, use_transport
from signalcraft_deploy.host.root import APP_HELPER
from signalcraft_deploy.remote import program

ODD = 'it\'s $HOME; `id` "quoted" \\ end'
SECRET = "s3cret-value-4217"


@pytest.fixture
def release(tmp_path: Path, load):
    """A deploy root on this machine: releases/r1 (a manifest naming a venv with a `marker`
    program, env.json with a secret and a PATH that must not win), `current` pointing to it."""
    root = tmp_path / "root"
    r1 = root / "releases" / "r1"
    (r1 / ".signalcraft").mkdir(parents=True)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    marker = venv / "bin" / "marker"
    marker.write_text("#!/bin/sh\necho marker-ran\n")
    marker.chmod(0o755)
    (r1 / ".signalcraft/manifest.json").write_text(json.dumps({"venv": str(venv)}))
    values = {"SECRET_TOKEN": SECRET, "PATH": "/nowhere", "ODD": ODD}
    (r1 / ".signalcraft/env.json").write_text(json.dumps(values))
    (root / "current").symlink_to(r1)
    s = replace(
        load({"DEPLOY_ROOT": str(root), "PYTHON": sys.executable}), app_user=getpass.getuser()
    )
    return SimpleNamespace(s=s, root=root, r1=r1, venv=venv)


def started(command: str) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    return subprocess.Popen(
        ["bash", "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def on_host(command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `command` as over SSH: its stdin (the session's) open until it ends, `stdin` sent."""
    proc = started(command)
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(stdin)
    proc.stdin.flush()
    out = proc.stdout.read()
    err = proc.stderr.read()
    code = proc.wait(timeout=30)
    proc.stdin.close()
    return subprocess.CompletedProcess(command, code, out, err)


def test_exec_runs_in_the_live_release_with_its_venv_and_values_and_passes_the_status(
    release,
) -> None:
    line = (
        'pwd; echo "$PWD|$VIRTUAL_ENV|$SIGNALCRAFT_RELEASE|$NODE_ENV"; echo "${PATH%%:*}";'
        ' test "$SECRET_TOKEN" = ' + SECRET + ' && echo has-secret; printf "%s\\n" "$ODD";'
        " marker; cat; exit 3"
    )
    done = on_host(in_release_command(Context(), release.s, Mode.EXEC, line), "typed input")
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [
        str(release.r1),
        f"{release.r1}|{release.venv}|r1|production",
        f"{release.venv}/bin",
        "has-secret",
        ODD,
        "marker-ran",
    ]  # `cat` read nothing: the command's stdin is /dev/null, never the caller's


def test_a_line_reaches_bash_byte_for_byte(release) -> None:
    done = on_host(
        in_release_command(Context(), release.s, Mode.EXEC, f"printf %s {shlex.quote(ODD)}")
    )
    assert (done.returncode, done.stdout) == (0, ODD), done.stderr


def test_the_environment_files_path_does_not_replace_the_hosts(release) -> None:
    done = on_host(in_release_command(Context(), release.s, Mode.EXEC, 'echo "$PATH"'))
    assert "/nowhere" not in done.stdout and done.stdout.rstrip().endswith("/usr/bin:/bin")


def test_without_env_json_the_releases_env_is_read_as_hooks_read_it(release) -> None:
    (release.r1 / ".signalcraft/env.json").unlink()
    (release.r1 / ".env").write_text(f"export SECRET_TOKEN='{SECRET}'\n")
    done = on_host(in_release_command(Context(), release.s, Mode.EXEC, 'echo "$SECRET_TOKEN"'))
    assert done.stdout.strip() == SECRET


def test_when_the_session_ends_the_command_is_stopped_not_left_running(release) -> None:
    proc = started(in_release_command(Context(), release.s, Mode.EXEC, "echo started; sleep 60"))
    assert proc.stdin and proc.stdout and proc.stdout.readline() == "started\n"
    proc.stdin.close()  # Ctrl-C or a lost connection: sshd closes the command's stdin
    assert proc.wait(timeout=10) == 128 + 15  # bash, with its sleep, stopped by SIGTERM


def test_no_release_yet_says_so_and_exits_with_the_tools_own_status(release) -> None:
    (release.root / "current").unlink()
    done = on_host(in_release_command(Context(), release.s, Mode.EXEC, "true"))
    assert done.returncode == FAILED
    assert f"No release at {release.root}/current yet: run `deploy` first." in done.stderr


def test_the_python_console_is_flask_shell_with_the_wsgi_app_else_the_venvs_python(release) -> None:
    python = release.venv / "bin" / "python"
    python.write_text('#!/bin/sh\necho "python $PWD"\n')
    python.chmod(0o755)
    command = in_release_command(Context(), release.s, Mode.PYTHON)
    assert on_host(command).stdout.strip() == f"python {release.r1}"
    flask = release.venv / "bin" / "flask"
    flask.write_text('#!/bin/sh\necho "flask $1 $FLASK_APP"\n')
    flask.chmod(0o755)
    assert on_host(command).stdout.strip() == f"flask shell {release.s.wsgi_app}"


def test_through_the_app_helper_the_program_and_the_line_survive_two_shells(load) -> None:
    s = load({"APP_USER": "shop", "DEPLOY_ROOT": "/srv/shop"})
    command = in_release_command(Connection("ubuntu@web1"), s, Mode.EXEC, ODD)
    sudo = shlex.split(command)
    assert sudo[:6] == ["sudo", "-n", "-u", "shop", APP_HELPER, "/bin/sh"] and sudo[6] == "-c"
    python, isolated, nosite, dash_c, text, spec = shlex.split(sudo[7])
    assert (python, isolated, nosite, dash_c, text) == (
        "python3",
        "-I",
        "-S",
        "-c",
        program("in_release"),
    )
    assert json.loads(spec) == {
        "current": "/srv/shop/current",
        "mode": "exec",
        "command": ODD,
        "wsgi_app": s.wsgi_app,
        "node_env": s.node_env,
    }


def test_no_value_of_the_apps_env_file_is_on_the_command_line(tmp_path: Path, load) -> None:
    env = tmp_path / "app.env"
    env.write_text(f"SECRET_TOKEN={SECRET}\n")
    s = load({"APP_USER": "shop", "APP_ENV_FILE": str(env)})
    for mode in Mode:
        assert SECRET not in in_release_command(Connection("ubuntu@web1"), s, mode, "env")


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (["flask", "routes"], "flask routes"),
        (["flask init-db && flask seed"], "flask init-db && flask seed"),
        (
            ["python", "-c", "import sys; print(sys.executable)"],
            "python -c 'import sys; print(sys.executable)'",
        ),
        (["echo", "$HOME"], "echo '$HOME'"),
    ],
)
def test_after_two_dashes_one_word_is_a_line_and_several_are_a_program_and_its_arguments(
    words: list[str], line: str
) -> None:
    assert command_line(None, words) == line
    task = SimpleNamespace(remainder_to="command")
    call = SimpleNamespace(task=task, kwargs={"command": None})
    core = SimpleNamespace(remainder=" ".join(words))
    hand_remainder_over(core, [call], ["fab", "-H", "web1", "exec", "--", *words])
    assert (call.kwargs["command"], core.remainder) == (line, "")  # Fabric runs nothing itself


def test_a_remainder_not_from_this_command_line_is_the_line_fabric_parsed() -> None:
    call = SimpleNamespace(task=SimpleNamespace(remainder_to="command"), kwargs={})
    core = SimpleNamespace(remainder="flask routes")
    hand_remainder_over(core, [call], ["pytest"])
    assert call.kwargs["command"] == "flask routes"


def test_a_command_given_twice_is_refused_and_other_tasks_leave_fabric_its_remainder() -> None:
    call = SimpleNamespace(task=SimpleNamespace(remainder_to="command"), kwargs={"command": "ls"})
    with pytest.raises(Exit, match="once"):
        hand_remainder_over(SimpleNamespace(remainder="ls"), [call], ["fab", "exec", "--", "ls"])
    other = SimpleNamespace(task=SimpleNamespace(), kwargs={})
    core = SimpleNamespace(remainder="uptime")
    hand_remainder_over(core, [other], ["fab", "deploy", "--", "uptime"])
    assert (core.remainder, other.kwargs) == ("uptime", {})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_several_hosts_output_is_labelled_line_by_line_a_partial_line_waits() -> None:
    out = io.StringIO()
    shown = Shown(out, "web1")
    shown.write("one\ntw")
    shown.flush()  # the runner flushes after each chunk
    assert out.getvalue() == "web1 | one\n"
    shown.write("o\nthree")
    shown.end()
    assert out.getvalue() == "web1 | one\nweb1 | two\nweb1 | three\n"


def test_a_terminal_is_shown_escape_sequences_a_pipe_gets_the_bytes() -> None:
    term, pipe = Terminal(), io.StringIO()
    for stream in (term, pipe):
        Shown(stream).write("\x1b]0;title\x07ok\n")
    assert term.getvalue() == "^[]0;title^Gok\n"
    assert pipe.getvalue() == "\x1b]0;title\x07ok\n"


def exec_task(c: MockContext, load_env: Path, *args: str) -> None:
    from signalcraft_deploy.tasks.console import exec_

    exec_(c, command=" ".join(args), env_file=str(load_env), set_=[])


def test_exec_passes_the_status_and_masks_the_apps_values_in_what_it_prints(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    app_env = tmp_path / "app.env"
    app_env.write_text(f"SECRET_TOKEN={SECRET}\n")
    settings = tmp_path / "deploy.env"
    settings.write_text(f"APP_ENV_FILE={app_env}\nDEPLOY_ROOT={tmp_path}/root\n")
    monkeypatch.chdir(tmp_path)
    c = use_transport(MockContext(run=Result(exited=3)), InvokeRunner())
    with pytest.raises(Exit) as stop:
        exec_task(c, settings, f"test $SECRET_TOKEN = {SECRET}")
    assert stop.value.code == 3
    said = capsys.readouterr().err + str(stop.value.message)
    assert SECRET not in said and "exited with status 3" in said and "***" in said


def test_console_without_a_terminal_says_so_and_points_to_exec(tmp_path: Path, monkeypatch) -> None:
    from signalcraft_deploy.tasks.console import console

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(Exit, match="needs a terminal.*use exec"):
        console(use_transport(MockContext(), InvokeRunner()), set_=[])
    master, slave = os.openpty()  # a terminal, but not this process's: no key would be passed on
    with open(slave) as stdin, open(os.dup(slave), "w") as stdout:
        monkeypatch.setattr(sys, "stdin", stdin)
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(Exit, match="in its foreground"):
            console(use_transport(MockContext(), InvokeRunner()), set_=[])
    os.close(master)


def test_ctrl_c_during_an_exec_closes_the_connection_rather_than_wait_for_the_command(
    monkeypatch,
) -> None:
    import signal
    import threading

    from signalcraft_deploy.host.io import _hang_up_on_interrupt

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are the main thread's")
    c = Connection("ubuntu@web1")
    closed: list[bool] = []
    monkeypatch.setattr(c, "close", lambda: closed.append(True))
    before = signal.getsignal(signal.SIGINT)
    with _hang_up_on_interrupt(c, pty=False) as caught:
        os.kill(os.getpid(), signal.SIGINT)
    assert (caught, closed) == ([signal.SIGINT], [True])
    assert signal.getsignal(signal.SIGINT) is before
    with _hang_up_on_interrupt(c, pty=True) as caught:  # a console: Ctrl-C is a key for it
        assert signal.getsignal(signal.SIGINT) is before


def test_a_deploy_user_without_the_door_to_the_apps_account_is_told_before_its_command_runs(
    load,
) -> None:
    from signalcraft_deploy.host.in_release import run_in_release

    s = load({"APP_USER": "shop"})
    refused = Result(stderr="sudo: a password is required\n", exited=1)
    c = use_transport(MockContext(run=refused, repeat=True), InvokeRunner(login="ubuntu"))
    with pytest.raises(Exit) as stop:
        run_in_release(c, s, "flask routes", sys.stdout, sys.stderr)
    message = str(stop.value.message)
    assert "cannot run commands as the apps' account shop (APP_USER)" in message
    assert "a password is required" in message and "setup --user" in message
    assert len(c.run.call_args_list) == 1  # the user's command was never sent
