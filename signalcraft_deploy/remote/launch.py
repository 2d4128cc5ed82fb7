"""Runs ON THE HOST as the apps' account, started by PM2: one Procfile process of a release.

Shipped into each release as `.signalcraft/launch.py` (standard library only, Python 3.8+):
`python3 -I <release>/.signalcraft/launch.py PATH_FIRST -- COMMAND...`. It puts PATH_FIRST (the
venv's bin, or the release's node_modules/.bin) first on PATH, adds the values of the release's
`.signalcraft/env.json` (an object of strings, beside this file, when there is one) to the
environment, and execs COMMAND in place: PM2's pid is the command's, and signals reach it directly.
A `/bin/sh -c LINE` command is run as a child instead, the launcher passing stop signals on.
The values come from the file, never from PM2's environment, so they are in no PM2 dump or
`pm2 env` output and no command line.
"""

import json
import os
import signal
import subprocess
import sys

ENV_FILE = "env.json"
SHELL = ["/bin/sh", "-c"]  # core/procfile.py Process.argv: a line that needs a shell
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def release_values(here):
    """The release's env.json values (beside this file), {} when there is none."""
    try:
        with open(os.path.join(here, ENV_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{ENV_FILE} is not an object of strings")
    return data


def environment(base, path_first, values, here):
    """The command's environment: `base` with the release's values and PATH_FIRST first on PATH."""
    env = dict(base)
    for name, value in values.items():  # a variable PM2 started it with keeps its value, as the
        env.setdefault(name, value)  # web apps' loaders (and python-dotenv's load_dotenv) do
    env["PATH"] = path_first + os.pathsep + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if os.path.basename(path_first) == "bin" and os.path.isfile(
        os.path.join(os.path.dirname(path_first), "pyvenv.cfg")
    ):
        env["VIRTUAL_ENV"] = os.path.dirname(path_first)
    env["SIGNALCRAFT_RELEASE"] = os.path.basename(os.path.dirname(here))
    return env


def commands_of(pid):
    """The processes a signal for `pid` is meant for: its children while it is still the shell
    (dash runs a line's commands as children and dies of a stop signal without passing it on),
    else `pid` itself (the line ended in `exec ...`)."""
    try:
        if os.readlink(f"/proc/{pid}/exe") != os.path.realpath(SHELL[0]):
            return [pid]
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(child) for child in fh.read().split()] or [pid]
    except OSError:
        return [pid]


def run_shell(command, env):
    """Run a `sh -c LINE` command as a child and stay its parent: each stop signal goes to the
    line's commands (a worker's warm shutdown), and the launcher exits as the shell does, so PM2
    sees the line's own exit status."""
    started: list = []  # the shell, once started: a signal before that stops the launcher alone

    def forward(signum, _frame):
        if not started:
            sys.exit(128 + signum)
        for pid in commands_of(started[0].pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    started.append(subprocess.Popen(command, env=env))
    code = started[0].wait()
    return code if code >= 0 else 128 - code


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        print("usage: launch.py PATH_FIRST -- COMMAND...", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.realpath(__file__))
    try:
        values = release_values(here)
    except (OSError, ValueError) as err:
        print(f"launch.py: cannot read the release's {ENV_FILE}: {err}", file=sys.stderr)
        return 1
    command = argv[3:]
    env = environment(os.environ, argv[1], values, here)
    try:
        if command[:2] == SHELL:
            return run_shell(command, env)
        os.execvpe(command[0], command, env)
    except OSError as err:
        print(
            f"launch.py: cannot run {command[0]!r}: {err.strerror} (looked in {argv[1]}, then"
            " PATH: a Python program comes from requirements.txt, a Node.js one from"
            " package.json; PROCESS_APP says which the process is)",
            file=sys.stderr,
        )
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
