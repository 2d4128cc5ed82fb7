"""Secrets never printed: the values of the app's .env (APP_ENV_FILE) and REPO_URL's credentials,
masked.

Everything the tool prints or logs that came from the host (an app's output in a trial or handover
excerpt, the PM2 logs of `logs`, a hook's lines, a failed command's stderr, the audit log's reason)
goes through `mask` first: each secret value, in every form it is likely to be written in, becomes
`***`. Which values are secrets, their forms and the masking itself are remote/masking.py's: one
rule, which the hook program applies on the host too. What `masker` and `masked` return is also
safe for a terminal (`visible`): the apps run as an account of their own, and what they write must
not drive the operator's terminal (move the cursor, clear it, set its title or clipboard). Pure,
but for `masker_for`, which reads the local APP_ENV_FILE (cached while the file is unchanged).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.remote.masking import COLOUR, env_items, mask, secrets_of, url_password


def app_environment(text: str) -> dict[str, str]:
    """A .env's values as python-dotenv reads them (what `load_dotenv` gives an app), for the
    processes' environment: `${NAME}` refers to a key earlier in the same file only, never to this
    machine's environment; a key with no value is left out. ValueError, naming the key but never a
    value, for one no environment can hold (an '=' or a NUL character)."""
    import io  # here: only a deploy with APP_ENV_FILE needs these

    from dotenv import dotenv_values
    from dotenv.variables import parse_variables

    values: dict[str, str] = {}
    for name, raw in dotenv_values(stream=io.StringIO(text), interpolate=False).items():
        if raw is None:
            continue
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"the key {name!r} cannot be an environment variable's name")
        value = "".join(atom.resolve(values) for atom in parse_variables(raw))
        if "\0" in value:
            raise ValueError(f"the value of {name} holds a NUL character")
        values[name] = value
    return values


def env_values(text: str) -> list[str]:
    """The values of a .env file's KEY=VALUE lines."""
    return [value for _, value in env_items(text)]


def secret_values(env_text: str | None, repo_url: str | None) -> frozenset[str]:
    """Every string to hide: the .env's secret values and REPO_URL's password, in all their
    forms."""
    password = url_password(repo_url or "")
    try:  # the values the apps' processes get (escapes, multi-line, ${NAME}: python-dotenv's)
        given = list(app_environment(env_text).items()) if env_text else []
    except ValueError:  # a key no environment can hold: a deploy refuses the file
        given = []
    return frozenset(
        secrets_of(
            [
                *env_items(env_text or ""),
                *given,
                *([("REPO_URL_PASSWORD", password)] if password else []),
            ]
        )
    )


_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)  # every other control character but tab and newline


def _caret(found: re.Match[str]) -> str:
    code = ord(found.group())
    return (
        f"^{chr(code ^ 0x40)}" if code < 0x80 else f"\\x{code:02x}"
    )  # ESC as ^[, DEL as ^?, C1 as \x9b


def visible(text: str) -> str:
    """`text` as a terminal may show it without obeying it: colour sequences dropped, CRLF line ends
    made LF, every other control character but tab and newline written out (caret notation, as `cat
    -v`: ESC is ^[).
    """
    return _CONTROL.sub(_caret, COLOUR.sub("", text).replace("\r\n", "\n"))


def masker(secrets: Iterable[str]) -> Callable[[str], str]:
    """Text from the host as it may be shown or logged: secrets masked, then `visible`."""
    hidden = tuple(sorted(set(secrets), key=len, reverse=True))
    return lambda text: visible(mask(text, hidden)) if text else text


@lru_cache(maxsize=8)
def _file_secrets(path: str, changed: tuple[int, int], repo_url: str | None) -> frozenset[str]:
    try:
        text = open(path, encoding="utf-8", errors="replace").read() if path else ""
    except OSError:
        text = ""
    return secret_values(text, repo_url)


def masker_for(s: Settings) -> Callable[[str], str]:
    """The masker of these settings: APP_ENV_FILE's values and REPO_URL's password."""
    path = str(s.app_env_file or "")
    try:
        info = os.stat(path) if path else None
        changed = (info.st_mtime_ns, info.st_size) if info else (0, 0)
    except OSError:
        changed = (0, 0)
    return masker(_file_secrets(path, changed, s.repo_url))


def masked(s: Settings, text: str) -> str:
    """`text` (output that came from the host) as it may be shown or logged."""
    return masker_for(s)(text)
