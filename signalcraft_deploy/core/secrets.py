"""Secrets never printed: the values of the app's .env (APP_ENV_FILE) and REPO_URL's credentials,
masked.

Everything the tool prints or logs that came from the host (an app's output in a trial or handover
excerpt, the PM2 logs of `logs`, a hook's lines, a failed command's stderr, the audit log's reason)
goes through `mask` first: each secret value, in every form it is likely to be written in, becomes
`***`. Values shorter than MIN_LENGTH, and short plain numbers (ports, counts, timeouts), are not
secrets worth hiding: masking them would turn ordinary words and port numbers into `***`. What
`masker` and `masked` return is also safe for a terminal (`visible`): the apps run as an account of
their own, and what they write must not drive the operator's terminal (move the cursor, clear it,
set its title or clipboard). Pure, but for `masker_for`, which reads the local APP_ENV_FILE (cached
while the file is unchanged).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus, unquote, urlsplit

from signalcraft_deploy.core.settings import Settings

MASK = "***"
MIN_LENGTH = 4
SHORT_NUMBER = re.compile(r"[0-9]{1,7}")
PLAIN_WORD = re.compile(r"[A-Za-z]{1,15}")
SECRET_KEY = re.compile(
    r"PASS|SECRET|TOKEN|KEY|AUTH|CRED|PRIVATE|SALT|SIGN|DSN|SESSION|COOKIE", re.I
)
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def env_items(text: str) -> list[tuple[str, str]]:
    """The KEY=VALUE lines of a .env file (quotes removed, an unquoted ` # comment` cut off)."""
    items = []
    for line in text.splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        value = found.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        items.append((found.group(1), value))
    return items


def env_values(text: str) -> list[str]:
    """The values of a .env file's KEY=VALUE lines."""
    return [value for _, value in env_items(text)]


def url_password(value: str) -> str | None:
    """The password of a URL such as postgres://user:PASSWORD@host/db (None if it has none)."""
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def is_secret(value: str, key: str = "") -> bool:
    """A value worth hiding: MIN_LENGTH or longer and not a short number; a single plain word
    (`production`, `true`, `info`) only under a key that names a secret, so that ordinary words stay
    readable."""
    if len(value) < MIN_LENGTH or SHORT_NUMBER.fullmatch(value):
        return False
    if PLAIN_WORD.fullmatch(value) and key and not SECRET_KEY.search(key):
        return False
    return True


def forms(value: str) -> set[str]:
    """The ways a value is likely to be written out: as it is, URL-encoded (path, form, every
    character), URL-decoded, JSON-escaped, and a URL's password on its own."""
    out = {
        value,
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
        unquote(value),
        json.dumps(value)[1:-1],
    }
    password = url_password(value)
    if password:
        out |= forms(password) if password != value else set()
    return {f for f in out if is_secret(f)}


def secret_values(env_text: str | None, repo_url: str | None) -> frozenset[str]:
    """Every string to hide: the .env's values (MIN_LENGTH or more) and REPO_URL's password, in all
    their forms."""
    found: set[str] = set()
    password = url_password(repo_url or "")
    for key, value in [
        *env_items(env_text or ""),
        *([("REPO_URL_PASSWORD", password)] if password else []),
    ]:
        if is_secret(value, key):
            found |= forms(value)
    return frozenset(found)


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by MASK; longest first, so a value that
    holds another (a URL and its password) is hidden whole."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


_SGR = re.compile(
    r"\x1b\[[0-9;:]*m"
)  # colour and style only: dropped (PM2 colours some lines even into a pipe)
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
    return _CONTROL.sub(_caret, _SGR.sub("", text).replace("\r\n", "\n"))


def masker(secrets: Iterable[str]) -> Callable[[str], str]:
    """Text from the host as it may be shown or logged: secrets masked, then `visible`."""
    hidden = tuple(sorted(set(secrets), key=len, reverse=True))
    return lambda text: visible(mask(_SGR.sub("", text), hidden)) if text else text


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
