"""Maintenance mode: what root is asked to serve (remote/nginx_site.py `check_maintenance`), made
from the settings, the operator's message and the app's own page. Pure: text in, a description out.

Every path of the site answers 503 with Retry-After and a page (JSON when the client's Accept asks
for JSON, else HTML) except the ones that stay open: the health routes (a health route that is '/',
the home page, stays open to the tool's own checks only), MAINTENANCE_OPEN_ROUTES, the tool's
markers and ACME challenges. The message lands in HTML escaped for HTML, and in JSON as a JSON
string.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.remote.nginx_site import MAX_PAGE

DEFAULT_MESSAGE = "This site is down for maintenance. Please try again shortly."
MAX_MESSAGE = 2000

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 15vh auto; padding: 0 1rem;
       color: #222; line-height: 1.5; }}
h1 {{ font-size: 1.6rem; }}
</style>
</head>
<body>
<h1>Down for maintenance</h1>
<p>{message}</p>
<p><small>Please try again in {wait}.</small></p>
</body>
</html>
"""


def message_problem(message: str) -> str | None:
    """Why `message` cannot be shown (None: it can)."""
    if not message.strip():
        return "--message is empty: leave it out for the default message"
    if len(message) > MAX_MESSAGE:
        return f"--message is longer than {MAX_MESSAGE} characters"
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in message):
        return "--message holds control characters"
    return None


def wait_words(seconds: int) -> str:
    """Retry-After in words: "10 minutes", "1 hour", "45 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 or seconds >= 2 * size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def own_page(s: Settings) -> tuple[str, str | None]:
    """(its path, its text) of the app's own page (MAINTENANCE_PAGE in SOURCE_DIR), text None when
    there is none. A page that cannot be served is a SettingsError naming the key."""
    path = Path(s.source_dir) / s.maintenance_page
    if not path.is_file():
        return str(path), None
    data = path.read_bytes()
    if len(data) > MAX_PAGE // 2:
        raise SettingsError(
            f"MAINTENANCE_PAGE ({path}) is {len(data) // 1024} KiB: at most"
            f" {MAX_PAGE // 2 // 1024} KiB (put images and styles in the page itself, small)"
        )
    try:
        return str(path), data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"MAINTENANCE_PAGE ({path}) is not UTF-8 text") from None


def page_html(message: str, retry_after: int, own: str | None) -> str:
    """The HTML page: the app's own with {{ message }} and {{ retry_after }} filled in, else the
    tool's."""
    text = html.escape(message).replace("\n", "<br>\n")
    if own is not None:
        return own.replace("{{ message }}", text).replace("{{ retry_after }}", str(retry_after))
    return PAGE.format(message=text, wait=wait_words(retry_after))


def page_json(message: str, retry_after: int) -> str:
    return (
        json.dumps(
            {"error": "maintenance", "message": message, "retry_after": retry_after},
            ensure_ascii=False,
        )
        + "\n"
    )


def open_paths(s: Settings) -> tuple[list[str], list[str]]:
    """(paths open to everyone, paths open to the tool's checks only): the health routes, as
    Nginx sees them; the home page ('/') is never open to everyone. A health route Nginx would
    rewrite before matching (//, /./, /../) is a SettingsError naming its key."""
    for key, path in (("HEALTH_PY", s.health_py), ("HEALTH_NODE", s.health_node)):
        inner = path[1:].removesuffix("/")  # a trailing '/' is the app's own (Flask's /health/)
        if path != "/" and any(part in ("", ".", "..") for part in inner.split("/")):
            raise SettingsError(
                f"{key} {path} cannot stay open in maintenance mode: Nginx merges '//' and"
                " resolves '.' and '..' before it matches a path; set it as the app serves it,"
                " such as /api/flask/health"
            )
    health = list(dict.fromkeys([s.health_py, s.health_node]))
    return [p for p in health if p != "/"], health


def description(
    s: Settings, message: str | None, retry_after: int | None, own: str | None
) -> dict[str, Any]:
    """What root serves (nginx_site.check_maintenance's shape)."""
    words = message if message is not None else DEFAULT_MESSAGE
    seconds = retry_after if retry_after is not None else s.maintenance_retry_after
    public, probe = open_paths(s)
    page = page_html(words, seconds, own)
    if len(page.encode()) > MAX_PAGE:
        raise SettingsError(
            f"MAINTENANCE_PAGE with --message filled in is {len(page.encode()) // 1024} KiB, over"
            f" {MAX_PAGE // 1024} KiB: name {{{{ message }}}} fewer times, or give a shorter message"
        )
    return {
        "retry_after": seconds,
        "open": public,
        "prefixes": list(s.maintenance_open_routes or ()),
        "probe": probe,
        "html": page,
        "json": page_json(words, seconds),
    }
