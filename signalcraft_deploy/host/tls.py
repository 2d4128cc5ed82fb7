"""TLS: whether the certificate and key can serve the site (remote/tls_check.py), and certbot's
deploy hook."""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.render import certbot_hook_path, render_certbot_hook
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root

WARN_DAYS = 14


def names(s: Settings) -> list[str]:
    """The names the certificate must cover: SERVER_NAME's (none for '_')."""
    return [] if s.server_name == "_" else s.server_name.split()


def inspect(c: Any, s: Settings) -> dict[str, Any]:
    """The verdict of remote/tls_check.py: problems, days left, the certificate's names."""
    spec = {"cert": s.tls_cert, "key": s.tls_key, "names": names(s)}
    result = root.call(c, "tls-check", json.dumps(spec), warn=True)
    try:
        verdict: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return verdict
    except (ValueError, IndexError):
        return {
            "problems": [
                f"the TLS check could not run on the host: {result.stderr.strip()[-300:]}"
            ],
            "days_left": None,
        }


def check(c: Any, s: Settings) -> list[str]:
    """Every reason the certificate and key cannot serve the site; empty when they can."""
    return list(inspect(c, s).get("problems", []))


def expiry_warning(days: float | None) -> str | None:
    if days is not None and days < WARN_DAYS:
        return (
            f"the certificate expires in {days:g} days (under {WARN_DAYS}): renew it (certbot"
            " renew) or replace TLS_CERT"
        )
    return None


def install_certbot_hook(c: Any, s: Settings) -> str:
    """Write certbot's deploy hook (reload Nginx after a renewal) when the certificate is certbot's;
    only if it differs."""
    path = certbot_hook_path(s)
    if path is None:
        return ""
    # the helper renders the same text (render_certbot_hook) at the same path from the checked
    # values
    assert s.tls_cert is not None and render_certbot_hook(s)
    result = root.call(
        c,
        "certbot-hook",
        s.app_name,
        s.tls_cert,
        s.nginx_site,
        s.nginx_test_cmd,
        s.nginx_reload_cmd,
    )
    return result.stdout.strip()
