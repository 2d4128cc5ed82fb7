"""Runs ON THE HOST as the apps' account, started by PM2: one Procfile process of a release.

Shipped into each release as `.signalcraft/launch.py` (standard library only, Python 3.8+):
`python3 -I <release>/.signalcraft/launch.py PATH_FIRST -- COMMAND...`. It puts PATH_FIRST (the
venv's bin, or the release's node_modules/.bin) first on PATH, adds the values of the release's
`.signalcraft/env.json` (an object of strings, beside this file, when there is one) to the
environment, and execs COMMAND in place: PM2's pid is the command's, and signals reach it directly.
The values come from the file, never from PM2's environment, so they are in no PM2 dump or
`pm2 env` output and no command line.
"""

import json
import os
import sys

ENV_FILE = "env.json"


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
    try:
        os.execvpe(command[0], command, environment(os.environ, argv[1], values, here))
    except OSError as err:
        print(f"launch.py: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
