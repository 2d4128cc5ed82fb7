"""Runs ON THE HOST as the apps' account (through the app helper, as hooks do): a command, or an
interactive console, in the live release's environment.

Standard library only, Python 3.8+. Run as `python3 -I -S -c PROGRAM SPEC` (the program text is an
argument, not stdin: a console's stdin is the operator's terminal). SPEC is one JSON object:
{"current": "<DEPLOY_ROOT>/current", "mode": "exec" | "python" | "node", "command": "<shell line>"
(exec), "wsgi_app": "<WSGI_APP>", "node_env": "<NODE_ENV>"}.

It resolves `current` once (a deploy that switches later does not move the command), changes to that
release's folder, and runs (its exit status is the command's):
- exec: `bash -c LINE` with stdin from /dev/null, as a child stopped when this program's stdin (the
  SSH session's) ends: the caller is gone;
- python: `flask shell` where the release's venv has Flask (FLASK_APP defaults to WSGI_APP), else
  the venv's `python`;
- node: `node` (the REPL), with the release's node_modules beside it;
a console in place, on the terminal.
The environment is the app helper's (HOME, PATH...), NODE_ENV, then the release's values as its
processes get them (.signalcraft/env.json; else its .env, as hooks read it) where a name is not set
yet, the release's venv bin and node_modules/.bin first on PATH, VIRTUAL_ENV, SIGNALCRAFT_RELEASE,
PYTHONUNBUFFERED=1 and FLASK_SKIP_DOTENV=1 (Flask's CLI would read the .env again, or print a tip
when it cannot).
The values come from the file, never from a command line. When it cannot start the command it says
why on stderr, prefixed `signalcraft-deploy:`, and exits FAILED (125, as env(1) and `docker run`).
"""

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Dict, List, NoReturn, Optional, Tuple

from signalcraft_deploy.remote.masking import env_items

FAILED = 125
MANIFEST = ".signalcraft/manifest.json"
ENV_JSON = ".signalcraft/env.json"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
BASH = "/bin/bash"


def refuse(why: str) -> NoReturn:
    sys.stderr.write(f"signalcraft-deploy: {why}\n")
    sys.stderr.flush()
    sys.exit(FAILED)


def live_release(current: str) -> str:
    """The release `current` points to now, as a real folder."""
    release = os.path.realpath(current)
    if not os.path.isdir(release):
        refuse(f"No release at {current} yet: run `deploy` first.")
    return release


def release_venv(release: str) -> Optional[str]:
    """The release's Python environment, as its manifest records it (None: none recorded or gone)."""
    try:
        with open(os.path.join(release, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    venv = manifest.get("venv") if isinstance(manifest, dict) else None
    return venv if isinstance(venv, str) and os.path.isdir(venv) else None


def release_values(release: str) -> List[Tuple[str, str]]:
    """The app's values as its processes get them (env.json), else its .env's, else none."""
    try:
        with open(os.path.join(release, ENV_JSON), encoding="utf-8") as fh:
            values = json.load(fh)
        if isinstance(values, dict):
            return [(str(k), str(v)) for k, v in values.items()]
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(release, ".env"), encoding="utf-8") as fh:
            return env_items(fh.read())
    except (OSError, UnicodeDecodeError):
        return []


def environment(
    base: Dict[str, str], release: str, venv: Optional[str], spec: Dict[str, str]
) -> Dict[str, str]:
    env = dict(base)
    env.setdefault("NODE_ENV", spec.get("node_env") or "production")
    for name, value in release_values(release):
        if "\0" not in name + value and "=" not in name:
            env.setdefault(name, value)  # as the apps' launcher: what is set first stays
    first = ([os.path.join(venv, "bin")] if venv else []) + [
        os.path.join(release, "node_modules", ".bin")
    ]
    env["PATH"] = os.pathsep.join(first + [env.get("PATH") or SYSTEM_PATH])
    if venv:
        env["VIRTUAL_ENV"] = venv
    if spec.get("mode") == "python" and spec.get("wsgi_app"):
        env.setdefault("FLASK_APP", spec["wsgi_app"])
    env.setdefault("PYTHONUNBUFFERED", "1")  # Python's lines stream as they come, as processes'
    env.setdefault("FLASK_SKIP_DOTENV", "1")  # the values are here already; no .env "Tip" line
    env["PWD"] = release
    env["SIGNALCRAFT_RELEASE"] = os.path.basename(release)
    return env


def argv_for(spec: Dict[str, str], venv: Optional[str]) -> List[str]:
    mode = spec.get("mode")
    if mode == "exec":
        if not spec.get("command"):
            refuse("no command given")
        return [BASH, "-c", spec["command"]]
    if mode == "node":
        return ["node"]
    if mode == "python":
        if not venv:
            refuse("the live release has no Python environment (its manifest names none).")
        flask = os.path.join(venv, "bin", "flask")
        if os.access(flask, os.X_OK):
            return [flask, "shell"]
        return [os.path.join(venv, "bin", "python")]
    refuse(f"unknown mode {mode!r}")


def run_watched(command: List[str], env: Dict[str, str]) -> int:
    """Run an exec's command as a child in a process group of its own, stdin from /dev/null, and
    watch this program's stdin (the SSH session's): it ends when the caller is gone (Ctrl-C, a lost
    connection), and then so does the command (SIGTERM to its group, SIGKILL 5 s later), not
    running on unseen. Its exit status (128 + N for signal N, as a shell says)."""
    try:
        child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as err:
        refuse(f"cannot run {command[0]!r}: {err.strerror}")

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:  # no stdin to watch: nothing to go by
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(child.pid, sig)
                child.wait(timeout=grace or None)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    threading.Thread(target=watch, daemon=True).start()
    code = child.wait()
    return code if code >= 0 else 128 - code


def main(argv: List[str]) -> None:
    spec = json.loads(argv[1])
    release = live_release(spec["current"])
    venv = release_venv(release)
    command = argv_for(spec, venv)
    env = environment(dict(os.environ), release, venv, spec)
    os.chdir(release)
    if spec["mode"] == "exec":
        sys.exit(run_watched(command, env))
    try:  # a console: in place, on the terminal (which ends it when the session ends)
        os.execvpe(command[0], command, env)
    except OSError as err:
        refuse(f"cannot run {command[0]!r} in {release}: {err.strerror}")


if __name__ == "__main__":
    main(sys.argv)
