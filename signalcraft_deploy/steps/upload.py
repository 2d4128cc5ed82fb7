"""The upload: what a release is made of (`Shipment`), and putting it on the host as
releases/<name>/."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from signalcraft_deploy.core import procfile, release_paths, release_site, source
from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import Manifest, Plan, make_manifest, release_inputs
from signalcraft_deploy.core.render import (
    APP_ENV_CJS,
    APP_ENV_JSON,
    DEFAULT_NODE_SCRIPT,
    LAUNCHER,
    digest,
)
from signalcraft_deploy.core.secrets import app_environment, mask, masked, secret_values
from signalcraft_deploy.core.settings import Settings, SettingsError, require_utf8
from signalcraft_deploy.core.source import (
    SourceTree,
    make_tarball,
    read_blob,
    read_source,
)
from signalcraft_deploy.host.app_user import runs_as_deploy_user
from signalcraft_deploy.host.io import fail, q, run, upload
from signalcraft_deploy.host.lock import who, who_text
from signalcraft_deploy.remote import program
from signalcraft_deploy.remote import source as remote_source


@dataclass
class Shipment:
    """The code of one release: its tree, the files deploy must read, and how to put it on the
    host."""

    tree: SourceTree
    requirements: str
    package_lock: str | None
    app_env: str | None
    source_dir: str | None  # local checkout (SOURCE=upload), None for SOURCE=git
    package_json: str | None = None
    node_script: str = DEFAULT_NODE_SCRIPT  # NODE_SCRIPT, or the entry point package.json names
    esm: bool = False  # package.json has "type": "module"
    tool_collection: tuple[
        str, ...
    ] = ()  # its fabfile.py/tasks.py that are the tool's (source.tool_collection)
    procfile: str | None = None  # its Procfile's text (None: it has none)


def shipment_settings(s: Settings, shipment: Shipment) -> Settings:
    """The settings with the Node.js entry point this shipment runs (package.json's when NODE_SCRIPT
    is unset), and which of its files are the tool's collection."""
    s = replace(s, tool_collection=shipment.tool_collection)
    try:
        found, notes = procfile.processes(shipment.procfile, s.process_lists())
    except procfile.ProcfileError as err:
        raise SettingsError(f"{err} Nothing was changed on the host.") from None
    s = replace(s, processes=found, procfile_notes=tuple(notes))
    s = source.with_session_bound(s, shipment.package_json)
    return source.with_node_entry(
        s, source.resolve_node_entry(shipment.package_json, shipment.tree.has, s.node_script)
    )


def _wsgi_module_paths(wsgi_app: str) -> tuple[str, str]:
    module = wsgi_app.split(":", 1)[0].replace(".", "/")
    return f"{module}.py", f"{module}/__init__.py"


def check_shipment(s: Settings, tree: SourceTree, where: str) -> None:
    """The app must have what the configs point at, or it would crash-loop on the host."""
    if not tree.has("requirements.txt"):
        source_key = "SOURCE_DIR" if s.source == "upload" else "REPO_URL"
        raise SettingsError(
            f"{source_key} ({s.origins.get(source_key, 'default')}): requirements.txt is missing in"
            f" {where} at {tree.sha[:12]}; the Python app needs one (with gunicorn pinned: run"
            " `invoke freeze`)."
        )
    if not any(tree.has(p) for p in _wsgi_module_paths(s.wsgi_app)):
        raise SettingsError(
            f"WSGI_APP ({s.origins.get('WSGI_APP', 'default')}): module {s.wsgi_app.split(':')[0]} "
            f"({' or '.join(_wsgi_module_paths(s.wsgi_app))}) is not in {where} at {tree.sha[:12]}."
        )
    check_environments(tree, where)
    clashes = release_paths.collisions(tree.modes, s.shared_paths or ())
    if clashes:
        raise SettingsError(
            f"{where} at {tree.sha[:12]} has entries where the tool writes its own files in a"
            " release; nothing was changed on the host:\n  " + "\n  ".join(clashes)
        )


def check_environments(tree: SourceTree, where: str) -> None:
    """A committed node_modules/ or venv is refused, naming each and the fix: the host builds both
    from the lock files, and a committed node_modules would be the one Node.js loads."""
    found = source.committed_environments(tree.blobs)
    if not found:
        return
    lines = []
    for folder in found:
        kind = (
            "node_modules"
            if folder.rsplit("/", 1)[-1] == "node_modules"
            else "a virtual environment (pyvenv.cfg)"
        )
        target = folder if folder != "." else "pyvenv.cfg"
        lines.append(
            f"{folder}/: {kind}; fix: git rm -r --cached {q(target)} && echo {q(target + '/')} >>"
            " .gitignore"
        )
    raise SettingsError(
        f"{where} at {tree.sha[:12]} commits what the host builds itself (node_modules by npm ci"
        " from package-lock.json, the venv from requirements.txt); a committed node_modules would"
        " win over the built one. Nothing was changed on the host. Take it out of git, commit, and"
        " deploy again:\n  " + "\n  ".join(lines)
    )


def read_app_env(s: Settings) -> str | None:
    """APP_ENV_FILE's text (None when unset), checked to be one the processes' environment can
    hold."""
    if not s.app_env_file:
        return None
    where = f"APP_ENV_FILE ({s.origins.get('APP_ENV_FILE')}): {s.app_env_file}"
    try:
        text = require_utf8(Path(s.app_env_file), where)
    except OSError as err:
        raise SettingsError(f"{where}: cannot read it: {err.strerror}.") from None
    try:
        app_environment(text)
    except ValueError as err:
        raise SettingsError(
            f"{where}: {err}, and its values go into the apps' environment; fix that line."
        ) from None
    return text


def local_shipment(s: Settings) -> Shipment:
    tree = read_source(s.source_dir)
    where = f"SOURCE_DIR {s.source_dir}"
    check_shipment(s, tree, where)
    package_json = read_blob(s.source_dir, tree, "package.json")
    entry = source.node_entry_of(s, package_json, tree.has, f"{where} at {tree.sha[:12]}")
    return Shipment(
        tree=tree,
        requirements=read_blob(s.source_dir, tree, "requirements.txt") or "",
        package_lock=read_blob(s.source_dir, tree, "package-lock.json"),
        app_env=read_app_env(s),
        source_dir=s.source_dir,
        package_json=package_json,
        node_script=entry.script,
        esm=entry.esm,
        tool_collection=source.tool_collection(lambda path: read_blob(s.source_dir, tree, path)),
        procfile=read_blob(s.source_dir, tree, procfile.PROCFILE),
    )


def split_credentials(url: str) -> tuple[str, str | None]:
    """An http(s) URL without its user and password, and the line git's credential store keeps for
    them."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.password:
        return url, None
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return (
        urlunsplit(parts._replace(netloc=netloc)),
        f"{parts.scheme}://{parts.username}:{parts.password}@{netloc}",
    )


def redact(url: str | None) -> str:
    """REPO_URL as it may be shown: a password or token replaced by ***."""
    parts = urlsplit(url or "")
    if not parts.password:
        return url or ""
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def mirror_script(s: Settings, with_credentials: bool) -> str:
    """Fetch REPO_URL into the host's bare mirror. The URL it runs with has no credentials (so none
    reach `ps`); they go from stdin to a 0600 credential store that git reads."""
    d, repo = q(s.state_dir), q(f"{s.state_dir}/repo.git")
    clean, _ = split_credentials(s.repo_url or "")
    store = q(f"{s.state_dir}/repo.credentials")
    creds = (
        [
            f"cat > {store}",
            (
                f"git -C {repo} config credential.helper"
                f" {q('store --file=' + s.state_dir + '/repo.credentials')}"
            ),
        ]
        if with_credentials
        else [f"rm -f {store}", f"git -C {repo} config --unset credential.helper || true"]
    )
    return "\n".join(
        [
            "set -e",
            "umask 077",
            f"mkdir -p {d}",
            f"[ -d {repo} ] || git init --quiet --bare {repo}",
            f"git -C {repo} config remote.origin.url {q(clean)}",
            *creds,
            (
                f"git -C {repo} fetch --quiet --prune --force origin '+refs/heads/*:refs/heads/*'"
                " '+refs/tags/*:refs/tags/*'"
            ),
            f"git -C {repo} rev-parse --verify --quiet {q(s.ref + '^{commit}')}",
        ]
    )


def resolve_without_fetching(c: Any, s: Settings) -> str | None:
    """For --dry-run: REF in the host's mirror as it is (None if it has none); nothing fetched,
    nothing written."""
    repo = q(f"{s.state_dir}/repo.git")
    result = run(
        c,
        f"git -C {repo} rev-parse --verify --quiet {q(s.ref + '^{commit}')} 2>/dev/null",
        warn=True,
    )
    return result.stdout.strip().splitlines()[-1] if result.ok and result.stdout.strip() else None


def git_shipment(c: Any, s: Settings, dry_run: bool = False) -> Shipment | None:
    """SOURCE=git: the host keeps a mirror of REPO_URL and resolves REF itself. When dry, from the
    mirror as it is (None when it does not have REF: only a fetch would tell)."""
    repo = q(f"{s.state_dir}/repo.git")
    sha = resolve_without_fetching(c, s) if dry_run else fetch_ref(c, s)
    if sha is None:
        return None
    tree = mirror_tree(c, s, sha)
    check_shipment(s, tree, redact(s.repo_url))
    blobs = tree.blobs

    def show(path: str) -> str | None:
        if path not in blobs:
            return None
        return run(c, f"git -C {repo} cat-file blob {q(blobs[path])}").stdout

    package_json = show("package.json")
    entry = source.node_entry_of(s, package_json, tree.has, f"{s.repo_url} at {tree.sha[:12]}")
    return Shipment(
        tree=tree,
        requirements=show("requirements.txt") or "",
        package_lock=show("package-lock.json"),
        app_env=read_app_env(s),
        source_dir=None,
        package_json=package_json,
        node_script=entry.script,
        esm=entry.esm,
        tool_collection=source.tool_collection(show),
        procfile=show(procfile.PROCFILE),
    )


def fetch_ref(c: Any, s: Settings) -> str:
    """Fetch REPO_URL into the host's mirror (its password on stdin, never in a command) and
    resolve REF there: the commit's sha."""
    _, credentials = split_credentials(s.repo_url or "")
    result = run(
        c,
        mirror_script(s, credentials is not None),
        stdin=(credentials + "\n") if credentials else None,
        warn=True,
    )
    if not result.ok:
        raise fail(
            f"The host could not fetch {redact(s.repo_url)} at {s.ref}: "
            f"{masked(s, (result.stderr or result.stdout).strip()[-500:])}. "
            "Check REPO_URL, REF and the host's access to the repository (a deploy key)."
        )
    return str(result.stdout.strip().splitlines()[-1])


def mirror_tree(c: Any, s: Settings, sha: str) -> SourceTree:
    """The commit `sha`'s tree as the host's mirror lists it: its id, each file's blob and mode."""
    repo = q(f"{s.state_dir}/repo.git")
    listed = run(
        c, f"git -C {repo} rev-parse {q(sha + '^{tree}')} && git -C {repo} ls-tree -r -z {q(sha)}"
    ).stdout
    tree_id, _, listing = listed.partition("\n")
    files = source.parse_ls_tree(listing)
    return SourceTree(
        sha=sha,
        tree=tree_id.strip(),
        blobs={p: b for p, (_, b) in files.items()},
        dirty=0,
        subdir="",
        modes={p: m for p, (m, _) in files.items()},
    )


def redact_text(text: str, url: str | None) -> str:
    """`text` with REPO_URL's password (in any of its forms) replaced by ***."""
    return mask(text, secret_values(None, url))


def extras_tar(plan: Plan, site_record: str) -> bytes:
    """The files deploy adds to a release: rendered configs, REVISION, the manifest and the
    release's Nginx site."""
    import tarfile  # here: only a deploy that makes a release needs it

    files = {
        **plan.configs,
        "REVISION": plan.manifest.release + "\n",
        ".signalcraft/manifest.json": plan.manifest.to_json(),
        LAUNCHER: program("launch"),
        release_site.SITE_FILE: site_record,
        APP_ENV_CJS: remote_source("app_env.cjs"),  # code only: the values are in APP_ENV_JSON
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            mode = release_site.SITE_FILE_MODE if name == release_site.SITE_FILE else 0o644
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload_delta(s: Settings, shipment: Shipment, facts: HostFacts) -> source.Delta | None:
    """Hash, don't copy: the files the live release already has (same path, mode and blob) are
    copied on the host; only the others are sent. None when the live release's tree is not known
    here."""
    old_tree = (facts.manifest or {}).get("tree")
    if not (shipment.source_dir and facts.current_release and old_tree):
        return None
    found = source.delta(
        source.file_ids(shipment.tree), source.tree_files(shipment.source_dir, old_tree)
    )
    # The tool's own files (rendered configs, REVISION, .env) in the live release are not the
    # repository's: sent.
    return (
        source.resend(found, [p for p in found.same if release_paths.written_by_tool(p)])
        if found
        else None
    )


def send_files(
    c: Any, s: Settings, shipment: Shipment, plan: Plan, same: source.Delta | None
) -> list[str]:
    """Upload the code that differs (or all of it) and the extras to incoming/; return the shell
    that unpacks the code."""
    release, incoming = plan.manifest.release, f"{s.state_dir}/incoming"
    unpack = []
    with tempfile.TemporaryDirectory() as tmp:
        extras = os.path.join(tmp, "extras.tar")
        with open(extras, "wb") as fh:
            fh.write(extras_tar(plan, release_site.record(s)))
        # shared/ is the apps' to write (their data, SQLite's journal beside it): in their account's
        # group, setgid. (What is in it is theirs too: only remote/shared_paths.py, which follows no
        # link, changes anything there.)
        shared = q(s.shared_dir)
        give = (
            ""
            if runs_as_deploy_user(c, s)
            else f" && chgrp {q(s.app_user)} {shared} && chmod 2770 {shared}"
        )
        run(
            c,
            f"mkdir -p {q(incoming)} {q(s.releases_dir)} {shared} && chmod 0755"
            f" {q(s.deploy_root)}{give}",
        )
        if not shipment.source_dir:
            unpack = [
                f"git -C {q(s.state_dir + '/repo.git')} archive {q(shipment.tree.sha)} | tar -x -C"
                ' "$t"'
            ]
        elif same is None or same.changed:
            code = os.path.join(tmp, "code.tar")
            make_tarball(shipment.source_dir, shipment.tree, code, same.changed if same else None)
            upload(c, code, f"{incoming}/{release}.tar")
            unpack = [f'tar -xf {q(incoming + "/" + release + ".tar")} -C "$t"']
        upload(c, extras, f"{incoming}/{release}.extras.tar")
    return unpack


def write_app_env(c: Any, s: Settings, release: str, app_env: str) -> None:
    """The app's secrets for one release, as the .env and as its values in JSON (APP_ENV_JSON, what
    the processes read): written from stdin (never on a command line), mode 0600; the assembly moves
    them into the release, so the live release's are never touched."""
    env = q(f"{s.state_dir}/incoming/{release}.env")
    values = json.dumps(app_environment(app_env), ensure_ascii=False)  # one line: \n is escaped
    # The first line of stdin is the JSON (`read` takes no more of it), the rest the .env.
    run(
        c,
        f"umask 077 && IFS= read -r j && printf '%s\\n' \"$j\" > {env}.json.tmp"
        f" && cat > {env}.tmp && mv -f {env}.json.tmp {env}.json && mv -f {env}.tmp {env}",
        stdin=values + "\n" + app_env,
    )


def live_loader(live: str) -> list[str]:
    """Shell that gives the live release the Node.js loader if an older version made it: a failed
    deploy's undo reloads it under the node_args PM2 keeps (host/releases.py `give_loader`)."""
    if not live:
        return []
    loader = q(f"{live}/{APP_ENV_CJS}")
    return [
        f"[ -e {loader} ] || [ -L {loader} ] || [ ! -d {q(live + '/.signalcraft')} ] ||"
        f' [ ! -f "$t"/{q(APP_ENV_CJS)} ] || cp "$t"/{q(APP_ENV_CJS)} {loader}'
    ]


def env_script(s: Settings, release: str, live: str, carry: bool) -> list[str]:
    """Shell that gives the release its own .env and APP_ENV_JSON (0600): the ones uploaded for it,
    else (`carry`) copies of the live one's, the JSON only with the .env it was made from (not when
    .env is a shared path: the processes then get no values of a file the apps' account writes)."""
    env = q(f"{s.state_dir}/incoming/{release}.env")
    values = f'"$t"/{q(APP_ENV_JSON)}'
    lines = [
        f'if [ -e {env} ]; then rm -rf "$t/.env" {values} && mv -f {env} "$t/.env"'
        f" && mv -f {q(s.state_dir + '/incoming/' + release + '.env.json')} {values}"
    ]
    if carry and live:
        live_values = q(f"{live}/{APP_ENV_JSON}")
        copy_values = (
            ""
            if ".env" in {p.rstrip("/") for p in s.shared_paths or ()}
            else f" && {{ [ ! -f {live_values} ] || [ -L {live_values} ] || cp {live_values}"
            f" {values}; }}"
        )
        lines.append(
            f'elif [ ! -e "$t/.env" ] && [ -e {q(live + "/.env")} ]; then cp -L {q(live + "/.env")}'
            f' "$t/.env"{copy_values}'
        )
    # The apps' own account reads them through its group (0640), unless the apps run as the deploy
    # user (0600).
    app = q(s.app_user)
    lines += ["fi"] + [
        f'if [ -f {f} ]; then chmod 0600 {f} && {{ [ "$(id -un)" = {app} ] || {{'
        f" chgrp {app} {f} && chmod 0640 {f}; }}; }}; fi"
        for f in ('"$t/.env"', values)
    ]
    return lines


def shared_script(s: Settings, live: str, c: Any = None) -> list[str]:
    """Shell that makes shared/logs and each of SHARED_PATHS in shared/ (remote/shared_paths.py: the
    first time, what the live release has there, moved and linked back so the live app keeps it,
    else what the release ships, else an empty folder; given to the apps' own account, never through
    a link the app planted), then links each into the release."""
    same = runs_as_deploy_user(c, s)
    shared = [
        f'{q(s.python)} -I -S -c {q(program("shared_paths"))} make {q(s.shared_dir)} "$G"',
        "</dev/null",
    ]
    lines = [
        (
            f"G={q('' if same else s.app_user)}"
            if same is not None
            else f'G=; [ "$(id -un)" = {q(s.app_user)} ] || G={q(s.app_user)}'
        ),
        f"{shared[0]} '' '' logs/ {shared[1]}",
    ]
    if s.shared_paths:
        lines.append(
            f'{shared[0]} {q(live)} "$t" {" ".join(q(p) for p in s.shared_paths)} {shared[1]}'
        )
    for path in s.shared_paths or ():
        name = path.rstrip("/")
        here = f'"$t"/{q(name)}'
        lines.append(
            f'rm -rf {here} && mkdir -p "$(dirname {here})" && ln -sfn'
            f" {q(s.shared_dir + '/' + name)} {here}"
        )
    return lines


def assemble_script(
    s: Settings,
    release: str,
    parts: list[str],
    live: str = "",
    carry_env: bool = False,
    c: Any = None,
) -> str:
    """Shell that builds releases/<release>.tmp from `parts` and the extras, gives it its .env,
    links the shared paths, renames it into place."""
    rdir, incoming = f"{s.releases_dir}/{release}", f"{s.state_dir}/incoming/{release}"
    return "\n".join(
        [
            "set -e",
            f"t={q(rdir + '.tmp')}",
            'rm -rf "$t" && mkdir -p "$t"',
            *parts,
            f'tar -xf {q(incoming + ".extras.tar")} -C "$t"',
            *live_loader(live),
            *env_script(s, release, live, carry_env),
            f'ln -sfn {q(s.shared_dir)}/logs "$t/logs" 2>/dev/null || true',
            *shared_script(s, live, c),
            f'rm -rf {q(rdir)} && mv "$t" {q(rdir)}',
            f"rm -f {q(incoming + '.tar')} {q(incoming + '.extras.tar')}",
        ]
    )


def under_shared(s: Settings, path: str) -> bool:
    return any(
        path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in s.shared_paths or ()
    )


# the exit status of remote/copy_live.py when files of the live release are not what git holds
EDITED = 3


def copy_command(s: Settings, live: str) -> str:
    """Shell that copies the checked files of the live release into the new one
    (remote/copy_live.py; its list on stdin)."""
    # -I -S: the standard library only, and no site start-up (a code-change deploy pays this once)
    return f'{q(s.python)} -I -S -c {q(program("copy_live"))} {q(live)} "$t"'


def copy_records(shipment: Shipment, kept: list[str]) -> str:
    """What remote/copy_live.py reads: mode, blob id and path of each file to copy,
    NUL-separated."""
    tree = shipment.tree
    return "".join(f"{tree.modes.get(p, '100644')}\0{tree.blobs[p]}\0{p}\0" for p in kept)


def edited_files(result: Any) -> list[str] | None:
    """The files the live release holds other than git does (None: the assembly failed
    otherwise)."""
    if result.exited != EDITED:
        return None
    try:
        edited = json.loads(result.stdout.strip().splitlines()[-1])["edited"]
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    return [str(p) for p in edited] if isinstance(edited, list) and edited else None


def edited_warning(live: str, edited: list[str]) -> str:
    names = ", ".join(release_paths.shown(p) for p in edited[:10]) + (
        f" and {len(edited) - 10} more" if len(edited) > 10 else ""
    )
    return f"the live release {live} had been edited on the host: {names}; sent fresh from git"


def ship(
    c: Any,
    s: Settings,
    shipment: Shipment,
    plan: Plan,
    facts: HostFacts | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """Put the release on the host in releases/<name>.tmp, then rename it into place; say what was
    sent.

    Files copied from the live release are checked against git's blob ids as they are copied (one
    program in the assembly, no round trip of its own); any that differ are sent fresh from git,
    with one warning.
    """
    release = plan.manifest.release
    rdir = f"{s.releases_dir}/{release}"
    same = upload_delta(s, shipment, facts) if facts else None
    live = f"{s.releases_dir}/{facts.current_release}" if facts and facts.current_release else ""
    carry = shipment.app_env is None and bool(plan.manifest.app_env)
    for attempt in range(2):  # the second time with the edited files sent rather than copied
        unpack = send_files(c, s, shipment, plan, same)
        if (
            shipment.app_env is not None and attempt == 0
        ):  # the assembly stops before it takes the .env when files differ
            write_app_env(c, s, release, shipment.app_env)
        kept = [p for p in same.same if not under_shared(s, p)] if same else []
        copy = [copy_command(s, live)] if kept else []
        result = run(
            c,
            assemble_script(s, release, copy + unpack, live, carry, c),
            stdin=copy_records(shipment, kept) if copy else None,
            warn=True,
        )
        edited = edited_files(result) if copy and same else None
        if not edited:
            break
        assert same is not None and facts is not None
        if warn:
            warn(edited_warning(facts.current_release or live, edited))
        same = source.resend(same, edited)
    if not result.ok:
        remove_unfinished(c, s, release)
    if not result.ok and copy and shipment.source_dir:
        return ship(
            c, s, shipment, plan, None
        )  # the live release could not be copied from: send everything
    if not result.ok:
        raise fail(
            f"Could not unpack the release into {rdir}: {result.stderr.strip()[-500:]}. Check free"
            f" space and permissions under {s.deploy_root}; the live release is untouched."
        )
    return what_was_sent(release, shipment, same, facts)


def remove_unfinished(c: Any, s: Settings, release: str) -> None:
    """Delete what a failed assembly left: releases/<name>.tmp and the incoming .env."""
    rdir = f"{s.releases_dir}/{release}"
    run(
        c,
        f"rm -rf {q(rdir + '.tmp')} {q(s.state_dir + '/incoming/' + release + '.env')}"
        f" {q(s.state_dir + '/incoming/' + release + '.env.json')}",
        warn=True,
    )


def what_was_sent(release: str, shipment: Shipment, same: Any, facts: HostFacts | None) -> str:
    """What `ship` says it did: every file sent, the host's mirror used, or the changed files sent
    and the others copied from the live release."""
    if same is None:
        return (
            f"{release}: all {len(shipment.tree.blobs)} files sent"
            if shipment.source_dir
            else f"{release}: from the host's mirror"
        )
    return (
        f"{release}: {len(same.changed)} changed file(s) sent, {len(same.same)} copied from"
        f" {facts.current_release}"
        if facts
        else release
    )


def shipment_manifest(
    s: Settings, shipment: Shipment, now: datetime | None = None
) -> tuple[Manifest, dict[str, str]]:
    """The manifest and rendered configs of the release this shipment would become (`now`: its time
    stamp, shared by every host of a fleet so that the release has one name everywhere)."""
    app_env_digest = digest(shipment.app_env) if shipment.app_env is not None else None
    s = shipment_settings(s, shipment)
    tree = shipment.tree
    return make_manifest(
        s,
        sha=tree.sha,
        tree=tree.tree,
        python_code=tree.digest_for(s, App.PYTHON),
        node_code=tree.digest_for(s, App.NODEJS),
        requirements=shipment.requirements,
        package_lock=shipment.package_lock,
        app_env_digest=app_env_digest,
        who=who_text(who()),
        package_json=shipment.package_json,
        esm=shipment.esm,
        now=now,
    )


def shipment_inputs(s: Settings, shipment: Shipment) -> str:
    s = shipment_settings(s, shipment)
    app_env_digest = digest(shipment.app_env) if shipment.app_env is not None else None
    return release_inputs(
        s, shipment.tree.tree, shipment.requirements, shipment.package_lock, app_env_digest
    )


def changed_since_live(
    c: Any, s: Settings, shipment: Shipment, facts: HostFacts
) -> list[str] | None:
    """The paths that differ between the live release's tree and this one (None when the live tree
    is not known): read from the local repository, or from the host's mirror for SOURCE=git. Names
    only, for the reasons the plan gives.
    """
    old_tree = (facts.manifest or {}).get("tree")
    if not old_tree or not facts.current_release:
        return None
    if shipment.source_dir:
        old = source.tree_files(shipment.source_dir, old_tree)
        return source.changed_paths(
            shipment.tree.blobs, {p: b for p, (_, b) in old.items()} if old is not None else None
        )
    listing = run(
        c, f"git -C {q(s.state_dir + '/repo.git')} ls-tree -r -z {q(old_tree)}", warn=True
    )
    if not listing.ok:
        return None
    return source.changed_paths(
        shipment.tree.blobs, {p: b for p, (_, b) in source.parse_ls_tree(listing.stdout).items()}
    )
