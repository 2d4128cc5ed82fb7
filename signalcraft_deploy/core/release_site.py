"""The Nginx site a release was deployed with, recorded in the release, so that a rollback serves it
again.

Each release holds `.signalcraft/site.json` (0600, the deploy user's): the site description root
rendered its site from (remote/nginx_site.py) and the health paths its gate probed through that
site. A rollback turns the record back into settings (`settings_of`): the same renderer then makes
the same site, so the deploy's own steps (nginx-check, the verified reload, their undo) put it in
place. The site file stays today's NGINX_SITE: a site moved elsewhere since would leave two files
serving. Pure: text in, settings out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from signalcraft_deploy.core.render import site_description
from signalcraft_deploy.core.settings import KEYS, Settings, SettingsError, validate
from signalcraft_deploy.remote import nginx_site

SITE_FILE = ".signalcraft/site.json"
# listen addresses and TLS paths: the apps' account reads no more of them than it can today
SITE_FILE_MODE = 0o600
# Derived from GUNICORN_BIND and NODE_PORT when left unset: derived again from the release's.
_HANDOVER = {"GUNICORN_HANDOVER_BIND": "GUNICORN_BIND", "NODE_HANDOVER_PORT": "NODE_PORT"}


def record(s: Settings) -> str:
    """What a release records of its site."""
    return (
        json.dumps(
            {
                "description": site_description(s),
                "health_py": s.health_py,
                "health_node": s.health_node,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )


def _values(data: Any) -> dict[str, str]:
    """The settings a recorded site stands for (KEY: text), after root's own check of its
    description."""
    if not isinstance(data, dict) or not isinstance(data.get("description"), dict):
        raise ValueError("not a site record")
    desc = nginx_site.check(data["description"])
    tls = desc["tls"] or {}
    values = {
        "NGINX_LISTEN": ",".join(desc["listen"]),
        "TLS_LISTEN": ",".join(desc["tls_listen"]),
        "SERVER_NAME": desc["server_name"],
        "CLIENT_MAX_BODY_SIZE": desc["body_size"],
        "TLS_CERT": tls.get("cert", ""),
        "TLS_KEY": tls.get("key", ""),
        "GUNICORN_BIND": desc["python"],
        "NODE_PORT": desc["node"].rsplit(":", 1)[-1],
        "HEALTH_PY": str(data["health_py"]),
        "HEALTH_NODE": str(data["health_node"]),
    }
    if "streams" in desc:
        values["STREAM_ROUTES"] = ",".join(desc["streams"])
    if tls:
        values["TLS_REDIRECT"] = "true" if tls["redirect"] else "false"
    if "table" in desc:
        values["ROUTES"] = ",".join(f"{entry[0]}={entry[1]}" for entry in desc["table"])
        values["MOUNTS"] = ",".join(entry[0] for entry in desc["table"] if len(entry) == 3)
        values["PY_ROUTES"] = next(k.default for k in KEYS if k.name == "PY_ROUTES") or ""
    else:
        values["ROUTES"], values["MOUNTS"], values["PY_ROUTES"] = "", "", ",".join(desc["routes"])
    return values


def settings_of(s: Settings, text: str, release: str) -> Settings:
    """`s` serving the site `release` recorded (`text`, site.json's content): its routes, listen
    addresses, names, TLS, body size, upstream addresses and health paths. SettingsError names what
    is wrong with the record, or with today's settings beside it (a port another key now uses,
    say)."""
    where = f"release {release}'s {SITE_FILE}"
    try:
        values = _values(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        raise SettingsError(
            f"{where} cannot be read ({err}); roll back with --to another release."
        ) from None
    raw: dict[str, str | None] = {k.name: k.parse.show(getattr(s, k.attr)) for k in KEYS}
    origins = dict(s.origins)
    for key, app_key in _HANDOVER.items():
        if origins.get(key, "default") == "default" and values.get(app_key) != raw[app_key]:
            raw[key] = ""  # derived again, next to the release's own address
    for key, value in values.items():
        if raw[key] != value:
            raw[key], origins[key] = value, where
    return validate(raw, origins, Path(s.source_dir))
