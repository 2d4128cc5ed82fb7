"""Programs that run ON THE HOST, kept here as ordinary files so they are linted and unit-tested.

Each is sent to the host as one text on stdin (nothing is copied there first):

- Python programs (`*.py`, standard library only, Python 3.8+) run as `python3 - ARGS`.
  `program(name)` returns the text to send. A program may use another module of this folder
  with a line of the form `from signalcraft_deploy.remote.<module> import <names>`: the files
  import normally (unit tests, editors), and `program` replaces each such line (once per
  module) by that module's source, so the host needs nothing but the one text. An inlined
  module must therefore not use `from __future__`, must not run anything at import, and its
  top-level names must not clash with the program's.
- Shell programs (`*.sh`, POSIX sh) take positional arguments; `script(name)` returns the text
  and `host.io.run_program` runs it as `sh -c "$(cat)" NAME ARGS...` with the text on stdin.
- `pm2_rpc.js` runs as `node -e <text> ARGS` (`source("pm2_rpc.js")`).
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).parent
# One line, or the formatter's parenthesized form over several.
IMPORT = re.compile(
    r"^from signalcraft_deploy\.remote\.(\w+) import (?:[\w ,]+|\([\w\s,]+\))$", re.MULTILINE
)
ANY_IMPORT = re.compile(r"^\s*(from|import) signalcraft_deploy\b.*$", re.MULTILINE)


def source(filename: str) -> str:
    """The text of one file of this folder, as it is."""
    return (HERE / filename).read_text()


def program(name: str) -> str:
    """A Python program of this folder with the remote modules it imports inlined: one
    self-contained text."""
    return _inline(source(f"{name}.py"), done={name})


def _inline(text: str, done: set[str]) -> str:
    def dependency(match: re.Match[str]) -> str:
        module = match.group(1)
        if module in done:
            return ""
        done.add(module)
        body = _inline(source(f"{module}.py"), done)
        start = f"# --- inlined signalcraft_deploy/remote/{module}.py ---"
        return f"{start}\n{body.rstrip()}\n# --- end of {module}.py ---"

    inlined = IMPORT.sub(dependency, text)
    left = ANY_IMPORT.search(inlined)
    if left:
        raise ValueError(
            f"cannot inline {left.group(0).strip()!r}: use `from signalcraft_deploy.remote.<module>"
            " import <names>`"
        )
    return inlined


def script(name: str) -> str:
    """A shell program of this folder (`<name>.sh`)."""
    return source(f"{name}.sh")
