"""Format versions of the files this tool leaves on a host: the release manifest, the lock record,
the audit log's lines and the takeover record.

Each file says which format it is in (`"format": N`) and which version of the tool wrote it
(`"tool": "signalcraft-deploy X.Y.Z"`). A file without a format is format 1: what the tool wrote
before formats were numbered (0.3.0 and the checkout-only releases before it). Reading migrates an
older format to the current one step by step; a newer format stops with `FormatError`, naming the
version that wrote it and the upgrade. Pure: no host, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from signalcraft_deploy import __version__

TOOL = f"signalcraft-deploy {__version__}"
UNVERSIONED = 1  # the format of a file that carries no "format" field
UPGRADE = "pip install -U signalcraft-deploy"


class FormatError(ValueError):
    """A file on the host is in a format this version cannot read (a newer one); the message says
    what to do."""


Migration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Format:
    """One kind of file: its name as users see it, its current format, and how to bring format N to
    N + 1."""

    what: str
    current: int
    migrations: Mapping[int, Migration] = field(
        default_factory=dict
    )  # N -> the function from N to N + 1


def _numbered(data: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: the fields stay as they were; format 2 adds only "format" and "tool" (which an old
    file cannot know)."""
    return dict(data)


MANIFEST = Format("release manifest", 2, {1: _numbered})
LOCK = Format("deploy lock record", 2, {1: _numbered})
AUDIT = Format("audit record", 2, {1: _numbered})
TAKEOVER = Format("takeover record", 2, {1: _numbered})
MAINTENANCE = Format("maintenance record", 1)


def stamp(kind: Format, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` as this version writes it: with its format and this tool's version."""
    return {**data, "format": kind.current, "tool": TOOL}


def format_of(data: Mapping[str, Any]) -> int:
    """The format a file says it is in (1 when it says nothing); 0 when what it says is not a
    format."""
    value = data.get("format", UNVERSIONED)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 0


def is_newer(kind: Format, data: Mapping[str, Any]) -> bool:
    return format_of(data) > kind.current


def refusal(kind: Format, data: Mapping[str, Any], where: str) -> str:
    """Why a file cannot be read, and what to do: one sentence naming the file, its writer and the
    fix."""
    number = format_of(data)
    writer = data.get("tool") if isinstance(data.get("tool"), str) else "a newer signalcraft-deploy"
    if number == 0:
        return (
            f"{where}: the {kind.what} has format {data.get('format')!r}, which is not a format"
            " number; the file is damaged or was not written by signalcraft-deploy."
        )
    return (
        f"{where}: the {kind.what} is in format {number}, written by {writer}; this is {TOOL},"
        f" which reads formats up to {kind.current}. Upgrade the tool on this machine ({UPGRADE})"
        " and run again."
    )


def read(kind: Format, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`data` in the current format: an older format migrated step by step, a newer one refused
    (FormatError)."""
    number = format_of(data)
    if number == 0 or number > kind.current:
        raise FormatError(refusal(kind, data, where))
    out = dict(data)
    for step in range(number, kind.current):
        out = kind.migrations[step](out)
    out["format"] = kind.current
    return out
