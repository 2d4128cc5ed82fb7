"""The user's own Nginx site at a takeover: what of it the new site keeps, and what it would drop.

Read with crossplane (pure: text in, data out). What the settings express becomes their default
for this host (listen addresses, server_name, TLS certificate and key, client_max_body_size); a
`location` that serves neither app is kept verbatim in the extras file beside our site (the
template includes it); a redirect server to HTTPS is TLS_REDIRECT. Anything else is listed as
dropped, with what would keep it, and the deploy stops unless told to drop it.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

from signalcraft_deploy.core.settings import Settings

# Directives the template writes itself, or that the TLS server supersedes with its modern
# protocols.
EXPRESSED = {
    "listen",
    "server_name",
    "ssl_certificate",
    "ssl_certificate_key",
    "client_max_body_size",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_dhparam",
    "ssl",
    "http2",
}
CERTBOT_OPTIONS = re.compile(r"^/etc/letsencrypt/options-ssl-nginx\.conf$")
EXTRAS_HEADER = (
    "# Rendered by signalcraft-deploy. Location blocks kept from the site it took over "
    "(included by its site; edit here).\n"
)


@dataclass
class OldSite:
    settings: dict[str, str] = field(default_factory=dict)  # KEY: value the old site implies
    extras: list[dict[str, Any]] = field(
        default_factory=list
    )  # location blocks to keep (crossplane form)
    extras_lines: list[int] = field(
        default_factory=list
    )  # where each starts in the old site (the helper reads them there)
    dropped: list[str] = field(default_factory=list)  # "line N: directive args — what keeps it"

    def extras_text(self) -> str | None:
        if not self.extras:
            return None
        import crossplane

        return EXTRAS_HEADER + crossplane.build(self.extras, indent=4, tabs=False) + "\n"


def parse(text: str) -> list[dict[str, Any]]:
    """The old site's directives (crossplane), parsed on its own: includes are not followed."""
    import crossplane

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "site.conf")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        result = crossplane.parse(
            path, single=True, catch_errors=True, check_ctx=False, check_args=False, comments=False
        )
    return result["config"][0]["parsed"] if result["config"] else []


def _listen(args: list[str]) -> tuple[str, bool]:
    """A listen line's address as NGINX_LISTEN writes it, and whether it is `ssl`."""
    where = args[0]
    if re.fullmatch(r"[0-9]+", where) or re.fullmatch(
        r"(\[[0-9a-fA-F:.]+\]|[0-9.]+|\*):[0-9]+", where
    ):
        return where, "ssl" in args[1:]
    return "", "ssl" in args[1:]


def _proxies_to_apps(
    block: list[dict[str, Any]], s: Settings, upstreams: dict[str, list[str]]
) -> bool:
    ours = {
        str(s.gunicorn_bind),
        f"127.0.0.1:{s.node_port}",
        f"localhost:{s.node_port}",
        f"localhost:{s.gunicorn_bind.port}",
    }
    for d in block:
        if d["directive"] == "proxy_pass" and d.get("args"):
            target = re.sub(r"^https?://", "", d["args"][0]).split("/", 1)[0]
            if target in ours or set(upstreams.get(target, [])) & ours:
                return True
    return False


def _is_redirect(server: list[dict[str, Any]]) -> bool:
    """certbot's HTTP server: only listen/server_name, `return 301 https://...` and `if ($host =
    ...) { return 301 }`."""
    text = repr([d for d in server if d["directive"] not in ("listen", "server_name")])
    return "https://" in text and all(
        d["directive"] in ("listen", "server_name", "return", "if") for d in server
    )


def read(s: Settings, text: str) -> OldSite:
    """What the settings and the template keep of the old site `text`, and what they would drop."""
    out = OldSite()
    directives = parse(text)
    upstreams = {
        d["args"][0]: [x["args"][0] for x in d.get("block", []) if x["directive"] == "server"]
        for d in directives
        if d["directive"] == "upstream" and d.get("args")
    }
    http: list[str] = []
    tls: list[str] = []
    names: list[str] = []
    for d in directives:
        if d["directive"] in ("upstream", "map"):
            continue
        if d["directive"] != "server":
            out.dropped.append(
                f"line {d['line']}: {d['directive']} {' '.join(d.get('args', []))} — outside a"
                " server block; keep it in a file of its own in conf.d/"
            )
            continue
        _server(s, d.get("block", []), out, upstreams, http, tls, names)
    _settings(out, http, tls, names)
    return out


def _server(
    s: Settings,
    block: list[dict[str, Any]],
    out: OldSite,
    upstreams: dict[str, list[str]],
    http: list[str],
    tls: list[str],
    names: list[str],
) -> None:
    listens = [_listen(d["args"]) for d in block if d["directive"] == "listen" and d.get("args")]
    for where, ssl in listens:
        (tls if ssl else http).append(where)
    names += [
        a
        for d in block
        if d["directive"] == "server_name"
        for a in d.get("args", [])
        if a not in names
    ]
    if _is_redirect(block):
        out.settings["TLS_REDIRECT"] = "true"
        return
    for d in block:
        name, args = d["directive"], d.get("args", [])
        if name == "ssl_certificate":
            out.settings["TLS_CERT"] = args[0]
        elif name == "ssl_certificate_key":
            out.settings["TLS_KEY"] = args[0]
        elif name == "client_max_body_size":
            out.settings["CLIENT_MAX_BODY_SIZE"] = args[0]
        elif name == "location":
            if (
                not _proxies_to_apps(d.get("block", []), s, upstreams)
                and args not in (["/"],)
                and all(e.get("args") != args for e in out.extras)
            ):
                out.extras.append(
                    {k: v for k, v in d.items() if k in ("directive", "args", "block")}
                )
                out.extras_lines.append(d["line"])
            elif args == ["/"] and not _proxies_to_apps(d.get("block", []), s, upstreams):
                out.dropped.append(
                    f"line {d['line']}: location / — it does not proxy to Node.js on NODE_PORT; the"
                    " tool's site has no place for it (move it into a location block of its own,"
                    " or let it go)"
                )
        elif name == "include" and args and CERTBOT_OPTIONS.match(args[0]):
            continue  # certbot's TLS options: the template's TLS server sets its own modern ones
        elif name not in EXPRESSED:
            out.dropped.append(
                f"line {d['line']}: {name} {' '.join(args)} — the tool's site has no place for it"
                " (root renders the site from the settings; move it into a location block to"
                " keep it)"
            )


def _settings(out: OldSite, http: list[str], tls: list[str], names: list[str]) -> None:
    if http and all(http):
        out.settings["NGINX_LISTEN"] = ",".join(dict.fromkeys(http))
    if tls and all(tls):
        out.settings["TLS_LISTEN"] = ",".join(dict.fromkeys(tls))
    if names and names != ["_"] and "" not in names:
        out.settings["SERVER_NAME"] = " ".join(n for n in names if n != "_")
    if tls and "TLS_REDIRECT" not in out.settings and out.settings.get("TLS_CERT"):
        out.settings["TLS_REDIRECT"] = "false"


# The settings a site taken over can imply (`_settings`, `_server`): the only keys a host's
# site-defaults.json sets.
SITE_KEYS = frozenset(
    {
        "NGINX_LISTEN",
        "TLS_LISTEN",
        "SERVER_NAME",
        "TLS_REDIRECT",
        "TLS_CERT",
        "TLS_KEY",
        "CLIENT_MAX_BODY_SIZE",
    }
)


def apply(s: Settings, values: dict[str, str], where: str) -> Settings:
    """`s` with `values` as the defaults of this host: a key set anywhere (.env, environment, flag)
    keeps its value. Only the keys an Nginx site implies (SITE_KEYS): what the host says never
    chooses a program, a path or an account.
    """
    from pathlib import Path

    from signalcraft_deploy.core.settings import KEYS, validate

    raw: dict[str, str | None] = {k.name: k.parse.show(getattr(s, k.attr)) for k in KEYS}
    origins = dict(s.origins)
    changed = False
    for key, value in values.items():
        if (
            key in SITE_KEYS
            and key in raw
            and origins.get(key, "default") == "default"
            and raw[key] != value
        ):
            raw[key], origins[key], changed = value, where, True
    return validate(raw, origins, Path(s.source_dir)) if changed else s
