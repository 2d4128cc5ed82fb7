"""Runs ON THE HOST (sent over stdin to `python3 -`): one of the user's hooks (BEFORE_SWITCH, ...).

Standard library only. Reads one JSON argument: {"name": "before-switch", "command": "...", "cwd":
"<release dir>", "path_first": "<venv>/bin", "env_file": "<release>/.env", "env_json":
"<release>/.signalcraft/env.json", "env": {"DEPLOY_RELEASE": ...}, "timeout": 300} Runs `bash -c
command` in `cwd` (or the deploy root when the release does not exist) with the app's values (from
env_json, the apps' processes' own, else the .env) and `env` added to the environment and
`path_first` first on PATH, in a process group of its own. Each line of its output (stdout and
stderr together) is printed as it comes, with the .env's secrets masked by remote/masking.py (the
client's rule too). At the deadline the group gets SIGTERM, then SIGKILL 5 s later. The last line
printed is a JSON verdict: {"exit": N, "timed_out": bool, "seconds": S, "tail": [...]}.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import List

from signalcraft_deploy.remote.masking import env_items, mask, secrets_of

MARK = "@@hook-verdict "


def read_env_file(path):
    """The .env's (KEY, VALUE) pairs in file order ([] when it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return env_items(fh.read())
    except (OSError, UnicodeDecodeError):
        return []


def read_env_json(path):
    """The release's .signalcraft/env.json as (KEY, VALUE) pairs: the .env's values as the client
    parsed them, what the apps' processes get (None when it cannot be read: the .env is read then).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh)
    except (OSError, ValueError):
        return None
    return [(str(k), str(v)) for k, v in values.items()] if isinstance(values, dict) else None


def environment(spec, app_env):
    env = dict(os.environ)
    env.update(app_env)
    env.update({k: str(v) for k, v in (spec.get("env") or {}).items()})
    if spec.get("path_first"):
        env["PATH"] = spec["path_first"] + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def stop_group(proc):
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace or None)
            return
        except subprocess.TimeoutExpired:
            continue


def run(spec):
    items = read_env_json(spec["env_json"]) if spec.get("env_json") else None
    if items is None:
        items = read_env_file(spec["env_file"]) if spec.get("env_file") else []
    app_env, hidden = dict(items), secrets_of(items)
    cwd = next(d for d in (spec["cwd"], spec.get("fallback_cwd") or "/", "/") if os.path.isdir(d))
    start = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", spec["command"]],
        cwd=cwd,
        env=environment(spec, app_env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def watchdog():
        if proc.poll() is None:
            timed_out.set()
            stop_group(proc)

    timer = threading.Timer(float(spec.get("timeout") or 300), watchdog)
    timer.start()
    tail: List[str] = []
    assert proc.stdout is not None  # stdout=PIPE
    for raw in iter(proc.stdout.readline, b""):
        line = mask(raw.decode("utf-8", "replace").rstrip("\n"), hidden)
        print(line, flush=True)
        tail = (tail + [line])[-20:]
    code = proc.wait()
    timer.cancel()
    return {
        "exit": code,
        "timed_out": timed_out.is_set(),
        "seconds": round(time.monotonic() - start, 3),
        "tail": tail,
    }


def main(argv):
    verdict = run(json.loads(argv[1]))
    print(MARK + json.dumps(verdict), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
