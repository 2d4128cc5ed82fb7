"""The app's processes beyond its two web apps: its `Procfile` (worker, scheduler...) and the
PROCESS_* settings, as one typed list.

A `Procfile` (the Heroku/honcho/foreman convention) is read from the release's tree on the client:
`name: command` lines, `#` comments. Its `web:` line is not run (the tool serves the web apps itself:
WSGI_APP, NODE_SCRIPT); a `release:` line is refused (BEFORE_SWITCH runs a command before the
switch). What a Procfile cannot say comes from settings, each a `name=value` list naming processes
by their Procfile name: PROCESS_INSTANCES, PROCESS_STOP_TIMEOUT, PROCESS_STOP_SIGNAL, SINGLETONS,
PROCESS_APP. Pure: no I/O.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any

PROCFILE = "Procfile"
NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
LINE_RE = re.compile(r"^([^:\s]*)\s*:\s*(.*)$")
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT")
RUNTIMES = ("python", "nodejs")
# The conventional names of a scheduler: singletons unless SINGLETONS says otherwise.
DEFAULT_SINGLETONS = ("beat", "clock", "scheduler")
DEFAULT_STOP_TIMEOUT = 30
# PM2 names the tool gives an app's processes (`<APP_NAME>-<name>`): a process may not take one.
RESERVED_NAMES = ("python", "nodejs", "web", "release")
RESERVED_SUFFIXES = ("-trial", "-handover")
# The second PM2 name of a process, used while new instances overlap the old ones (PM2 cannot
# rename): a process alternates between its name and this one.
TWIN_SUFFIX = "-b"
NODE_PROGRAMS = ("node", "npm", "npx", "yarn", "pnpm")
NODE_SCRIPT_RE = re.compile(r"\S+\.(js|mjs|cjs)$")
# A command line with any of these needs a shell to mean what it says.
SHELL_CHARS = re.compile(r"[$|&;<>()`*?\[\]{}~\\\n]")
# `NAME=value` words before the command: /usr/bin/env sets them, so no shell stays in between
# (dash does not exec a `sh -c` line's command: a stop signal would reach the shell only).
ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
# A `#` that starts a word starts a comment, as in the shell honcho and foreman run lines with.
COMMENT_RE = re.compile(r"(^|\s)#")


class ProcfileError(ValueError):
    """A Procfile or PROCESS_* setting the tool cannot run; the message names the line or key."""


@dataclass(frozen=True)
class Process:
    """One process of the app, as the Procfile and settings declare it."""

    name: str
    command: str  # the Procfile line's command, as written
    app: str  # "python" (the venv's bin first on PATH) or "nodejs" (node_modules/.bin first)
    instances: int = 1
    stop_timeout: int = DEFAULT_STOP_TIMEOUT  # seconds its job may take after the stop signal
    stop_signal: str = "SIGTERM"
    singleton: bool = False  # never two at once; on a fleet, on the first host only

    @property
    def argv(self) -> list[str]:
        """What the launcher execs: the words of the command, or `sh -c LINE` when it needs a
        shell."""
        line = self.command
        comment = COMMENT_RE.search(line)
        if SHELL_CHARS.search(line) or (comment and re.search("[\"']", line)):
            return ["/bin/sh", "-c", line]
        words = shlex.split(line[: comment.start()] if comment else line)
        settings = 0
        while settings < len(words) and ASSIGNMENT_RE.fullmatch(words[settings]):
            settings += 1
        command = words[settings:]
        if command[:1] == ["exec"] and len(command) > 1 and not command[1].startswith("-"):
            command = command[1:]  # the launcher execs already
        if not command or command[0] == "exec":
            return ["/bin/sh", "-c", line]
        return ["/usr/bin/env", *words[:settings], *command] if settings else command

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Process:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_procfile(text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """The Procfile's (line number, name, command) entries and notes to show; ProcfileError names
    the first bad line."""
    entries: list[tuple[int, str, str]] = []
    notes: list[str] = []
    seen: dict[str, int] = {}
    text = text.removeprefix("\ufeff")  # a byte order mark some Windows editors write
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE_RE.match(line)
        if not match or not match.group(2).strip():
            raise ProcfileError(
                f"Procfile line {number}: {line[:80]!r} is not `name: command`. Fix the line."
            )
        name, command = match.group(1), match.group(2).strip()
        if not NAME_RE.fullmatch(name):
            raise ProcfileError(
                f"Procfile line {number}: process name {name!r} may hold only letters, digits,"
                " '_' and '-'. Rename it."
            )
        if name in seen:
            raise ProcfileError(
                f"Procfile line {number}: process {name!r} is declared again (first on line"
                f" {seen[name]}). Keep one."
            )
        seen[name] = number
        if name == "release":
            raise ProcfileError(
                f"Procfile line {number}: `release:` (a command run before the release goes live)"
                " is not run from the Procfile. Set BEFORE_SWITCH to that command instead, and"
                " take the line out."
            )
        if name == "web":
            notes.append(
                f"Procfile line {number} (web:) is not run: the tool serves the web apps itself"
                " (WSGI_APP, NODE_SCRIPT)"
            )
            continue
        check_name(name, number)
        check_words(name, command, number)
        entries.append((number, name, command))
    check_twins([name for _, name, _ in entries])
    return entries, notes


def check_name(name: str, number: int) -> None:
    if name in RESERVED_NAMES or name.endswith(RESERVED_SUFFIXES):
        raise ProcfileError(
            f"Procfile line {number}: process name {name!r} clashes with the names the tool gives"
            f" its own PM2 apps (python, nodejs, *-trial, *-handover). Rename it."
        )


def check_words(name: str, command: str, number: int) -> None:
    """The launcher splits a command into words: its quotes must close (a shell would refuse it
    too, but only on the host, as a crash loop)."""
    try:
        Process(name, command, "python").argv  # noqa: B018
    except ValueError as err:
        raise ProcfileError(
            f"Procfile line {number}: the command of {name!r} cannot be split into words ({err})."
            " Close its quotes."
        ) from None


def check_twins(names: list[str]) -> None:
    for name in names:
        if name + TWIN_SUFFIX in names:
            raise ProcfileError(
                f"Procfile: processes {name!r} and {name + TWIN_SUFFIX!r} clash: the tool runs"
                f" {name!r}'s new instances as {name + TWIN_SUFFIX!r} while the old ones finish."
                " Rename one."
            )


def runtime_of(command: str) -> str:
    """PROCESS_APP's default: nodejs for node/npm/npx/yarn/pnpm or a .js/.mjs/.cjs script (after
    any `NAME=value` words and `exec`), else python."""
    words = list(itertools.dropwhile(ASSIGNMENT_RE.fullmatch, command.split()))
    words = words[1:] if words[:1] == ["exec"] else words
    first = words[0].rsplit("/", 1)[-1] if words else ""
    if first in NODE_PROGRAMS or NODE_SCRIPT_RE.fullmatch(first):
        return "nodejs"
    return "python"


Lists = dict[str, dict[str, str]]  # key -> {process name -> value}


def processes(text: str | None, lists: Lists) -> tuple[tuple[Process, ...], list[str]]:
    """The app's processes from its Procfile text (None: it has none) and the PROCESS_* lists
    (settings key -> {name: value}); with the notes the plan shows. ProcfileError names the key or
    line at fault."""
    entries, notes = parse_procfile(text) if text is not None else ([], [])
    names = {name for _, name, _ in entries}
    for key_name, values in lists.items():
        unknown = sorted(set(values) - names)
        if unknown:
            raise ProcfileError(
                f"{key_name} names {', '.join(unknown)}, which the Procfile does not declare"
                f" ({', '.join(sorted(names)) or 'it declares none'}). Fix {key_name} or the"
                " Procfile."
            )
    return tuple(one_process(name, command, lists) for _, name, command in entries), notes


def one_process(name: str, command: str, lists: Lists) -> Process:
    singles = lists.get("SINGLETONS")  # unset: the conventional names
    singleton = name in singles if singles is not None else name in DEFAULT_SINGLETONS
    instances = int(lists.get("PROCESS_INSTANCES", {}).get(name, "1"))
    if singleton and instances > 1:
        raise ProcfileError(
            f"PROCESS_INSTANCES gives {name} {instances} instances, but it is a singleton"
            " (SINGLETONS): it runs once. Fix PROCESS_INSTANCES or SINGLETONS."
        )
    return Process(
        name=name,
        command=command,
        app=lists.get("PROCESS_APP", {}).get(name) or runtime_of(command),
        instances=instances,
        stop_timeout=int(lists.get("PROCESS_STOP_TIMEOUT", {}).get(name, DEFAULT_STOP_TIMEOUT)),
        stop_signal=lists.get("PROCESS_STOP_SIGNAL", {}).get(name, "SIGTERM"),
        singleton=singleton,
    )


def parse_list(text: str, check: Any) -> dict[str, str]:
    """A `name=value,name=value` setting: {name: value}, each value checked by `check` (which
    raises ValueError with what it expects)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, value = part.partition("=")
        if not eq or not NAME_RE.fullmatch(name.strip()) or name.strip() in out:
            raise ValueError(f"name=value pairs, each name once (found {part!r})")
        out[name.strip()] = check(value.strip())
    return out


def parse_names(text: str) -> dict[str, str]:
    """SINGLETONS: a comma-separated list of process names, or `none`."""
    if text.strip() == "none":
        return {}
    out: dict[str, str] = {}
    for name in (p.strip() for p in text.split(",")):
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"process names separated by commas, or none (found {name!r})")
        out[name] = "yes"
    return out
