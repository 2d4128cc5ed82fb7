"""Runs ON THE HOST as the apps' account, with the Python of the app's venv (`VENV/bin/python -I -
SPEC`, the program the first bytes of stdin): Gunicorn's effective configuration, as Gunicorn itself works it out.

SPEC (JSON): {"master": PID of the running Gunicorn master, "confs": {label: path}, "stdin":
label of the file whose text is this program's stdin (one not on the host yet)}. Each
configuration file is read by Gunicorn's own code (`WSGIApplication`: defaults, the file executed
as Python, then GUNICORN_CMD_ARGS, then the command line), with the command line and
GUNICORN_CMD_ARGS the running master was started with (read from its /proc entry: the same user's),
so a template that computes a value, or a `--preload` in the environment, counts as Gunicorn counts
it. The app itself is not imported. Prints one JSON line: {label: {setting: value}} or
{"error": ...}; never an environment value.
"""

import contextlib
import io
import json
import os
import sys

# The settings that decide how a reload works.
READ = ("preload_app", "reuse_port", "bind", "worker_class", "workers", "graceful_timeout")


def master_start(pid):
    """The running master's arguments (after the gunicorn script) and its GUNICORN_CMD_ARGS."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    script = next((i for i, a in enumerate(argv) if os.path.basename(a) == "gunicorn"), 0)
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [e.split(b"=", 1) for e in fh.read().split(b"\0") if b"=" in e]
    environ = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in pairs}
    return argv[script + 1 :], environ.get("GUNICORN_CMD_ARGS")


def with_conf(args, path):
    """The master's arguments with its configuration file replaced by `path`."""
    out, skip = [], False
    for arg in args:
        if skip:
            out.append(path)
            skip = False
        elif arg in ("-c", "--config"):
            out.append(arg)
            skip = True
        elif arg.startswith("--config="):
            out.append("--config=" + path)
        else:
            out.append(arg)
    return out if path in out or "--config=" + path in out else ["-c", path, *out]


def effective(args, cmd_args):
    from gunicorn.app.wsgiapp import WSGIApplication  # type: ignore[import-not-found]

    if cmd_args is None:
        os.environ.pop("GUNICORN_CMD_ARGS", None)
    else:
        os.environ["GUNICORN_CMD_ARGS"] = cmd_args
    sys.argv = ["gunicorn", *args]
    here = os.getcwd()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cfg = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg
    finally:
        os.chdir(here)
    values = {}
    for name in READ:
        value = cfg.settings[name].get() if name in cfg.settings else None
        values[name] = (
            value if isinstance(value, (bool, int, str, list, type(None))) else str(value)
        )
    return values


def effective_of_text(args, cmd_args, text):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="gunicorn-conf-") as fh:
        fh.write(text)
        fh.flush()
        return effective(with_conf(args, fh.name), cmd_args)


def main(argv):
    spec = json.loads(argv[0])
    try:
        args, cmd_args = master_start(spec["master"]) if spec.get("master") else ([], None)
        out = {}
        for label, path in spec.get("confs", {}).items():
            out[label] = effective(with_conf(args, path), cmd_args)
        if spec.get("stdin"):
            out[spec["stdin"]] = effective_of_text(args, cmd_args, sys.stdin.read())
    except SystemExit as err:  # Gunicorn's own refusal of a bad file or argument
        out = {"error": f"Gunicorn refused its configuration (exit status {err.code})"}
    except Exception as err:
        out = {"error": f"{type(err).__name__}: {err}"[:300]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
