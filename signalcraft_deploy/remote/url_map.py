"""Print a Flask app's URL rules as JSON: `python -I url_map.py MODULE:ATTR` (or MODULE:factory()).

Not run on a host: `init` runs it on the developer's machine with the app's own venv Python, cwd the
app's folder, a minimal environment (no secrets, no .env loaded by us) and a time limit. Importing
the app runs its code; that is the price of reading the routes it really has (loops, blueprints from
plugins). Standard library only: the app's venv has Flask, not this tool. Prints [{"rule",
"methods", "endpoint"}] on stdout and exits 0, or one line on stderr saying what failed and exits 1.
"""

import json
import os
import sys
from typing import Any


def load(spec):
    module_name, _, attr = spec.partition(":")
    call = attr.endswith("()")
    attr = attr[:-2] if call else attr
    import importlib

    obj: Any = importlib.import_module(module_name)  # then its attributes, then maybe a call
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj() if call else obj


def flask_app(obj):
    """The Flask app itself: the object, or one wrapped by middleware (`.app`, `.wsgi_app`)."""
    for _ in range(5):
        if hasattr(obj, "url_map"):
            return obj
        obj = getattr(obj, "app", None) or getattr(obj, "wsgi_app", None)
        if obj is None:
            break
    return None


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: url_map.py MODULE:ATTR\n")
        return 2
    sys.path.insert(0, os.getcwd())
    out, sys.stdout = sys.stdout, sys.stderr  # what the app prints while it loads is not our JSON
    try:
        app = flask_app(load(argv[1]))
    except BaseException as err:  # the app's own import may fail in any way, SystemExit included
        sys.stderr.write(
            f"importing {argv[1]} failed: {type(err).__name__}: {err}".splitlines()[0][:300] + "\n"
        )
        return 1
    finally:
        sys.stdout = out
    if app is None:
        sys.stderr.write(f"{argv[1]} is not a Flask app (it has no url_map)\n")
        return 1
    rules = [
        {"rule": r.rule, "methods": sorted(r.methods - {"HEAD", "OPTIONS"}), "endpoint": r.endpoint}
        for r in app.url_map.iter_rules()
    ]
    sys.stdout.write(json.dumps(rules) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
