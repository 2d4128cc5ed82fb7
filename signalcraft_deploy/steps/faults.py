"""Failures caused by a setting, not by the app: recognised in the app's output, so the message
names the key."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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


def health_route_fault(
    s: Settings, problems: list[str], checks: list[dict[str, Any]]
) -> str | None:
    """The health route setting and its value, when an app answered its health route with an HTTP
    error (each check names its `setting`; a problem reads "<label> <url>: <status>")."""
    for check in checks:
        said = f"{check['label']} {check['url']}: "
        for problem in problems:
            status = problem[len(said) :] if problem.startswith(said) else ""
            if status.isdigit():
                return _health_route_message(s, check["setting"], int(status))
    return None


def _health_route_message(s: Settings, key: str, status: int) -> str:
    value, origin = getattr(s, key.lower()), s.origins.get(key, "default")
    if status < 500:
        return (
            f"The cause is likely the setting {key} ({origin}): the new release answers its route"
            f" {value!r} with {status}. Set {key} to a route the app answers with 200 (or add that"
            " route to the app) and deploy again."
        )
    return (
        f"The app failed on its health route {key}={value!r} ({origin}) with {status}: fix the"
        " error in its output above and deploy again."
    )


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
