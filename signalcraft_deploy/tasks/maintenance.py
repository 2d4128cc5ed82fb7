"""`maintenance on|off`: the site answers 503 with Retry-After and a page (JSON for clients that
ask for JSON) on every path but the open ones, until it is turned off: host/maintenance.py,
core/maintenance.py. Given several hosts (-H a,b), each is switched in turn.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from signalcraft_deploy.core import maintenance as pages
from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import maintenance as mode
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.io import target_name
from signalcraft_deploy.host.lock import audit, who
from signalcraft_deploy.host.releases import live_site_settings
from signalcraft_deploy.steps.one_host import host_settings


class Switch(Enum):
    ON = "on"
    OFF = "off"


@task(
    iterable=["set_"],
    help={
        **HOST_HELP,
        "switch": "on or off",
        "message": "on: the text the page and the JSON answer show (default: a short notice)",
        "retry-after": "on: seconds clients are asked to wait (default MAINTENANCE_RETRY_AFTER)",
    },
)
def maintenance(
    c: Context,
    switch: str,
    message: str | None = None,
    retry_after: str | None = None,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Turn maintenance mode on (503 with Retry-After for all but the health routes) or off."""
    wanted = switch_of(switch)
    s = settings_for(env_file, set_, environment)
    if wanted is Switch.OFF and (message is not None or retry_after is not None):
        raise Exit("--message and --retry-after go with `maintenance on`.", code=2)
    seconds = retry_seconds(retry_after)
    problem = pages.message_problem(message) if message is not None else None
    if problem:
        raise Exit(problem + ".", code=2)
    try:
        own_path, own = pages.own_page(s) if wanted is Switch.ON else ("", None)
    except SettingsError as err:
        raise Exit(str(err), code=2) from None
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    s = live_settings(c, s)
    if wanted is Switch.ON:
        try:
            description = pages.description(s, message, seconds, own)
        except SettingsError as err:
            raise Exit(f"{target_name(c)}: {err}.", code=2) from None
        mode.turn_on(c, s, description, message or pages.DEFAULT_MESSAGE)
        audit(c, s, {"event": "maintenance on", "by": who()})
        print(on_text(c, s, description, own_path if own is not None else None))
    elif mode.turn_off(c, s):
        audit(c, s, {"event": "maintenance off", "by": who()})
        print(f"{target_name(c)}: maintenance mode OFF: the apps answer every path again.")
    else:
        print(f"{target_name(c)}: maintenance mode was not on; nothing changed.")


def switch_of(text: str) -> Switch:
    try:
        return Switch(text)
    except ValueError:
        raise Exit(f"maintenance takes `on` or `off`, not {text!r}.", code=2) from None


def retry_seconds(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 7 * 86400:
        raise Exit(
            f"--retry-after takes whole seconds from 1 to {7 * 86400}, not {text!r}.", code=2
        )
    return int(text)


def live_settings(c: Any, s: Settings) -> Settings:
    """The settings of the site the live release serves (its health routes and listeners)."""
    facts = host_facts.gather(c, s, quick=True)
    s = host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json")
    return live_site_settings(c, s, facts.current_release)


def on_text(c: Any, s: Settings, description: dict[str, Any], own: str | None) -> str:
    opened = [*description["open"], *(p + "/..." for p in description["prefixes"])]
    home = [p for p in description["probe"] if p not in description["open"]]
    return "\n".join(
        [
            f"{target_name(c)}: maintenance mode ON: every path answers 503 (Retry-After"
            f" {description['retry_after']} s) but {', '.join(opened) or 'the tool’s markers'}.",
            f"  page: {own or 'the tool’s own (put a page at MAINTENANCE_PAGE for yours)'};"
            " clients that accept JSON get JSON.",
            *(
                [
                    f"  {', '.join(home)} (a health route that is the home page) answers only the"
                    " tool's own checks."
                ]
                if home
                else []
            ),
            "  Deploys and rollbacks keep it on; `maintenance off` ends it.",
        ]
    )


ns = Collection(maintenance)
