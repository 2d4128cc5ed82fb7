"""Failures caused by a setting, not by the app: recognised in the app's output, so the message
names the key."""

from __future__ import annotations

import re
from collections.abc import Callable

from signalcraft_deploy.core.settings import Settings


def setting_fault(s: Settings, output: str) -> str | None:
    """The setting at fault and its fix, when an app's output shows one (None: look at the app)."""
    for pattern, key, what, applies in SETTING_FAULTS:
        match = re.search(pattern, output)
        if match and applies(s, match.group(1)):
            return (
                f"The cause is the setting {key} ({s.origins.get(key, 'default')}):"
                f" {getattr(s, key.lower())!r} {what}. Set {key} to a working value and deploy"
                " again."
            )
    return None


def _always(s: Settings, found: str) -> bool:
    return True


# Output showing that a setting, not the app's code, is at fault: (regex, key, what is wrong,
# whether it is that key's value).
SETTING_FAULTS: tuple[tuple[str, str, str, Callable[[Settings, str], bool]], ...] = (
    (
        r"class uri '([^']*)' invalid or not found",
        "GUNICORN_WORKER_CLASS",
        (
            "is not a worker class Gunicorn can load (sync and gthread are built in; gevent and"
            " eventlet need their package in requirements.txt)"
        ),
        _always,
    ),
    (
        r"Failed to find attribute '([^']*)' in '[^']*'",
        "WSGI_APP",
        "names an attribute the module does not have",
        _always,
    ),
    (
        r"Failed to parse '([^']*)' as an attribute name or function call",
        "WSGI_APP",
        "is not module:attribute or module:factory()",
        _always,
    ),
    (
        r"No module named '([^']*)'",
        "WSGI_APP",
        "names a module the app does not have (the part before ':')",
        lambda s, found: found == s.wsgi_app.split(":")[0],
    ),
    (
        r"Script not found: (\S+)",
        "NODE_SCRIPT",
        "is not a file in the release",
        lambda s, found: s.node_script is not None and found.endswith("/" + s.node_script),
    ),
)
