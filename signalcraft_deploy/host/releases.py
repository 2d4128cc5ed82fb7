"""Releases on the host: the `current` link, the previous release, bad marks, pruning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core import release_site
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.render import APP_ENV_CJS
from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.host.io import fail, q, run
from signalcraft_deploy.remote import source


def give_loader(c: Any, s: Settings, release_dir: str) -> None:
    """Give a release an older version made the Node.js loader, env.cjs (a no-op for any other).

    PM2 keeps node_args across a `pm2 reload` (measured: a reload adds them, never removes them),
    so once the Node.js app has run with `--require <release>/.signalcraft/env.cjs`, a release
    without that file cannot start under it: a rollback to one gives it the file before its trial.
    It loads no values there: such a release has no env.json. Never written through a link."""
    loader = q(f"{release_dir}/{APP_ENV_CJS}")
    run(
        c,
        f'l=$(mktemp {q(s.state_dir + "/env-cjs.XXXXXX")}) && cat > "$l" && {{ [ -e {loader} ] ||'
        f' [ -L {loader} ] || {{ mkdir -p {q(release_dir + "/.signalcraft")} && cp "$l"'
        f' {loader} && chmod 0644 {loader}; }}; }}; r=$?; rm -f "$l"; exit $r',
        stdin=source("app_env.cjs"),
    )


def switch(c: Any, s: Settings, release: str) -> None:
    """Point `current` at a release atomically (a temporary link renamed over the old one)."""
    tmp = f"{s.deploy_root}/.current.tmp"
    run(c, f"ln -sfn {q('releases/' + release)} {q(tmp)} && mv -Tf {q(tmp)} {q(s.current_dir)}")


def site_settings(c: Any, s: Settings, release: str, warn: Callable[[str], None]) -> Settings:
    """The settings that serve the Nginx site `release` recorded (core/release_site.py); today's,
    with a warning, for a release an older version made (it recorded none)."""
    path = f"{s.releases_dir}/{release}/{release_site.SITE_FILE}"
    found = run(c, f"test -f {q(path)} && cat {q(path)}", warn=True)
    if not found.ok:
        warn(
            f"{release} records no Nginx site (an older version deployed it): its routes, listen"
            " addresses and TLS are today's settings, not the ones it was deployed with."
        )
        return s
    try:
        return release_site.settings_of(s, found.stdout, release)
    except SettingsError as err:
        raise fail(f"Nothing was changed: {err}", code=2) from None


def live_site_settings(c: Any, s: Settings, release: str | None) -> Settings:
    """The settings of the site the live `release` was deployed (or rolled back) with, for checking
    what serves: after a rollback its routes and health paths, not today's; `s` when it recorded
    none or a record that does not fit.
    """
    if not release:
        return s
    quiet: list[str] = []
    try:
        return site_settings(c, s, release, quiet.append)
    except Exit:
        return s


def previous_release(facts: HostFacts, before: str | None) -> str | None:
    older = [
        r for r in facts.releases if (before is None or r < before) and r not in facts.bad_releases
    ]
    return older[-1] if older else None


def mark_bad(c: Any, s: Settings, release: str) -> None:
    """Remember a release that failed, so `rollback` and `previous_release` never pick it."""
    run(c, f"mkdir -p {q(s.state_dir)}/bad && touch {q(s.state_dir)}/bad/{q(release)}", warn=True)


def prunable(releases: list[str], bad: set[str], keep: int, protected: set[str]) -> list[str]:
    """What pruning removes: bad releases first (all but the newest, kept as evidence of the last
    failure), then good ones beyond the newest `keep` good ones; never a protected one."""
    ordered = sorted(releases)
    good = [r for r in ordered if r not in bad]
    failed = [r for r in ordered if r in bad]
    doomed = failed[:-1] + (good[:-keep] if len(good) > keep else [])
    return sorted(r for r in doomed if r not in protected)


def prune(
    c: Any, s: Settings, keep: int, current: str, prev: str | None, running: tuple[str, ...] = ()
) -> list[str]:
    """Remove old releases beyond KEEP_RELEASES good ones, bad ones first; never current, previous,
    one the manifest says an app runs (`running`: a deploy of the tool's files alone moves `current`
    and reloads nothing, so the apps stay in an older release), or one a live process of the deploy
    user runs from (the apps' account's cwds are not readable here)."""
    listing = run(
        c,
        f"ls -1 {q(s.releases_dir)}; echo @@; ls -1 {q(s.state_dir)}/bad 2>/dev/null; echo @@; "
        "find /proc/[0-9]*/cwd -maxdepth 0 -printf '%l\\n' 2>/dev/null | sort -u",
        warn=True,
    ).stdout
    names, bad, cwds = (listing.split("@@") + ["", ""])[:3]
    releases = [n for n in names.split() if n and not n.endswith(".tmp")]
    in_use = {
        line.strip().rstrip("/").split("/releases/")[-1].split("/")[0]
        for line in cwds.splitlines()
        if "/releases/" in line
    }
    doomed = prunable(releases, set(bad.split()), keep, {current, prev or "", *running} | in_use)
    if doomed:
        run(
            c,
            "rm -rf "
            + " ".join(
                q(f"{s.releases_dir}/{r}") + " " + q(f"{s.state_dir}/bad/{r}") for r in doomed
            ),
        )
    return doomed
