"""render-configs: write gunicorn.conf.py, ecosystem.config.js (.cjs in an ES module package) and the Nginx site.

Locally (`invoke render-configs`) the files go to an output folder for review. On a host
(`fab -H ... render-configs`) each file is written only if its content changed, atomically,
keeping the previous version beside it, and a unified diff of each change is printed.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import replace
from pathlib import Path

from invoke import Collection, Context, Exit, task

from signalcraft_deploy.core import procfile
from signalcraft_deploy.core.plan import release_settings
from signalcraft_deploy.core.render import (
    ECOSYSTEM_CJS,
    render_nginx_site,
    render_release_configs,
    site_description,
    venv_dir,
)
from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.core.source import node_entry_of, with_node_entry, with_session_bound
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.io import fail, is_remote, q, read_file, run, write_file
from signalcraft_deploy.host.lock import task_lock
from signalcraft_deploy.host.nginx import install_site, read_site

SITE_NAME = "nginx-site.conf"


def rendered_files(s: Settings, requirements: str, esm: bool = False) -> dict[str, str]:
    """Every file render-configs writes, by file name (the Nginx site as nginx-site.conf; PM2's file as
    ecosystem.config.cjs in an ES module package)."""
    return {
        **render_release_configs(s, venv_dir(s, requirements), esm),
        SITE_NAME: render_nginx_site(s),
    }


def diff(old: str | None, new: str, path: str) -> str:
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True), f"a{path}", f"b{path}"
    )
    return "".join(lines)


@task(
    iterable=["set_"],
    help={
        **HOST_HELP,
        "output": "local folder for the rendered files (default ./rendered)",
        "dry-run": "print the diffs without writing anything",
    },
)
def render_configs(
    c: Context,
    output: str | None = None,
    dry_run: bool = False,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Render gunicorn.conf.py, ecosystem.config.js and the Nginx site; write only what changed, with diffs."""
    s = settings_for(env_file, set_, environment)
    if is_remote(c):
        open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
        _render_on_host(c, s, dry_run)
    else:
        try:
            _render_locally(s, output, dry_run)
        except SettingsError as err:
            raise Exit(f"Settings error: {err}", code=2) from None


def _render_locally(s: Settings, output: str | None, dry_run: bool) -> None:
    """Into a local folder for review (default ./rendered), each changed file atomically, with its diff. The Node.js
    entry point is found as a deploy finds it, but in the working tree rather than the commit."""
    requirements, package = (
        Path(s.source_dir, "requirements.txt"),
        Path(s.source_dir, "package.json"),
    )
    package_json = package.read_text() if package.exists() else None
    entry = node_entry_of(
        s,
        package_json,
        lambda path: Path(s.source_dir, path).is_file(),
        f"the working tree of SOURCE_DIR {s.source_dir}",
    )
    s = with_session_bound(s, package_json)
    s = with_processes(with_node_entry(s, entry), Path(s.source_dir, procfile.PROCFILE))
    print(f"Node.js entry point: {entry.script} ({entry.why}, read from the working tree)")
    files = rendered_files(s, requirements.read_text() if requirements.exists() else "", entry.esm)
    out = Path(output or "rendered").resolve()
    for name, text in files.items():
        target = out / name
        old = target.read_text() if target.exists() else None
        if old == text:
            continue
        print(diff(old, text, str(target)), end="")
        if not dry_run:
            out.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, target)
    print(
        f"{'Would write' if dry_run else 'Wrote'} {', '.join(files)}"
        f" {'to' if not dry_run else 'in'} {out}"
    )


def with_processes(s: Settings, path: Path) -> Settings:
    """`s` with the processes of the working tree's Procfile, as a deploy of it would run them."""
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        found, notes = procfile.processes(text, s.process_lists())
    except procfile.ProcfileError as err:
        raise SettingsError(str(err)) from None
    for note in notes:
        print(note)
    return replace(s, processes=found)


def _render_on_host(c: Context, s: Settings, dry_run: bool) -> None:
    """Into the current release and the Nginx site: each changed file, the previous one kept as
    .prev."""
    if dry_run:
        _write_on_host(c, s, dry_run)
        return
    with task_lock(c, s, "render-configs"):
        _write_on_host(c, s, dry_run)


def _write_on_host(c: Context, s: Settings, dry_run: bool) -> None:
    requirements = read_file(c, f"{s.current_dir}/requirements.txt")
    if requirements is None:
        raise fail(
            f"No release at {s.current_dir}: run `deploy` first (it renders the configs into each"
            " release)."
        )
    manifest = read_file(c, f"{s.current_dir}/.signalcraft/manifest.json")
    try:
        recorded = json.loads(manifest) if manifest else {}
    except ValueError:
        recorded = {}
    s = release_settings(s, recorded)
    files = rendered_files(s, requirements, recorded.get("ecosystem") == ECOSYSTEM_CJS)
    changed = 0
    for name, text in files.items():
        path = s.nginx_site if name == SITE_NAME else f"{s.current_dir}/{name}"
        old = read_site(c, s) if name == SITE_NAME else read_file(c, path)
        if old == text:
            continue
        changed += 1
        print(diff(old, text, path), end="")
        if dry_run:
            continue
        if name == SITE_NAME:
            install_site(c, s, site_description(s))
        else:
            run(c, f"cp -p {q(path)} {q(path + '.prev')} 2>/dev/null; true")
            write_file(c, path, text)
    print(
        f"{changed} file(s) {'would change' if dry_run else 'changed'}; nothing reloaded "
        "(run pm2-reload, or deploy, to apply)."
    )


render_configs.__name__ = "render-configs"
ns = Collection(render_configs)
