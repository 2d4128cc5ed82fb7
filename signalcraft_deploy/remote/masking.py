"""The one masking rule, here and on the host: which values of an app's .env are secrets, the forms
they are written in, and how a text is masked.

Standard library only, Python 3.8+, nothing run at import: the hook program (remote/hook.py) gets
this file inlined (see `signalcraft_deploy.remote.program`); core/secrets.py imports it as it is.

A value is a secret when it is MIN_LENGTH characters or longer and not a short plain number
(ports, counts, timeouts); a single plain word (`production`, `true`, `info`) only under a key
that names a secret, so that ordinary words stay readable. Each secret is hidden in every form it
is likely to be written in (`secret_forms`), longest first, as MASK.
"""

import json
import re
from typing import Iterable, List, Optional, Set, Tuple
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
MIN_LENGTH = 4
SHORT_NUMBER = re.compile(r"[0-9]{1,7}")
PLAIN_WORD = re.compile(r"[A-Za-z]{1,15}")
SECRET_KEY = re.compile(
    r"PASS|SECRET|TOKEN|KEY|AUTH|CRED|PRIVATE|SALT|SIGN|DSN|SESSION|COOKIE", re.I
)
ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
COLOUR = re.compile(
    r"\x1b\[[0-9;:]*m"
)  # colour and style (SGR): PM2 colours lines even into a pipe


def env_items(text: str) -> List[Tuple[str, str]]:
    """The KEY=VALUE lines of a .env file as python-dotenv reads the common cases: `export`, quotes
    removed, an unquoted ` # comment` cut off."""
    items = []
    for line in text.splitlines():
        found = ENV_LINE.match(line)
        if not found:
            continue
        value = found.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        items.append((found.group(1), value))
    return items


def url_password(value: str) -> Optional[str]:
    """The password of a URL such as postgres://user:PASSWORD@host/db (None if it has none)."""
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def is_secret(value: str, key: str = "") -> bool:
    """A value worth hiding (the rule in this module's docstring)."""
    if len(value) < MIN_LENGTH or SHORT_NUMBER.fullmatch(value):
        return False
    if PLAIN_WORD.fullmatch(value) and key and not SECRET_KEY.search(key):
        return False
    return True


def secret_forms(value: str) -> Set[str]:
    """The ways a value is likely to be written out: as it is, URL-encoded (path, form, every
    character), URL-decoded, JSON-escaped, a URL's password on its own (in all these forms), and each
    line of a multi-line value."""
    out = {
        value,
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
        unquote(value),
        json.dumps(value)[1:-1],
    }
    password = url_password(value)
    if password and password != value:
        out |= secret_forms(password)
    lines = value.splitlines()
    if len(lines) > 1:  # a multi-line value (a key) printed a line at a time
        out |= {line.strip() for line in lines}
    return {f for f in out if is_secret(f)}


def secrets_of(items: Iterable[Tuple[str, str]]) -> Set[str]:
    """Every string to hide for these (key, value) pairs: each secret value in all its forms."""
    found: Set[str] = set()
    for key, value in items:
        if is_secret(value, key):
            found |= secret_forms(value)
    return found


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` without colour sequences (a secret coloured in part is still found) and with every
    occurrence of each secret replaced by MASK; longest first, so a value that holds another (a URL
    and its password) is hidden whole."""
    text = COLOUR.sub("", text)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
