"""Deploy: ship a release, install, render, check Nginx, reload by what changed, health-gate, roll back.

The order of a deploy, and the one place to read it, is `execute`. Steps run inside this task
(never as `pre=` tasks, which under `fab -H` would run locally). Until the `current` link is
switched, a failure leaves the live release untouched; after it, a failure switches back.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from invoke import Collection, task
from invoke.exceptions import Exit

from signalcraft_deploy.core import source
from signalcraft_deploy.core.plan import Manifest, Plan, PlanError, make_manifest, make_plan, release_inputs, unchanged
from signalcraft_deploy.core.render import ECOSYSTEM, GUNICORN_CONF, digest, render_nginx_site
from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.core.source import SourceTree, make_tarball, read_blob, read_source
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import health
from signalcraft_deploy.host import install as install_ops
from signalcraft_deploy.host import nginx as nginx_ops
from signalcraft_deploy.host import pm2 as pm2_ops
from signalcraft_deploy.host import takeover as takeover_ops
from signalcraft_deploy.host.connect import COMMON_HELP, open_host, settings_for
from signalcraft_deploy.host.io import Background, command_log, fail, q, run, target_name, upload
from signalcraft_deploy.host.lock import DeployLock, audit, who, who_text
from signalcraft_deploy.steps import handover as handover_ops
from signalcraft_deploy.steps import trial
from signalcraft_deploy.steps.report import Reporter

REQUIRED_TOOLS = {
    "pm2": "PM2 (npm install -g pm2)",
    "node": "Node.js (apt install nodejs)",
    "nginx": "Nginx (apt install nginx)",
    "python-venv": "a Python able to make a venv (apt install python3-venv, or set PYTHON)",
    "sudo": "passwordless sudo for this user (a sudoers line with NOPASSWD)",
    "flock": "flock (apt install util-linux)",
}


@dataclass
class Shipment:
    """The code of one release: its tree, the files deploy must read, and how to put it on the host."""

    tree: SourceTree
    requirements: str
    package_lock: str | None
    app_env: str | None
    source_dir: str | None  # local checkout (SOURCE=upload), None for SOURCE=git


def _wsgi_module_paths(wsgi_app: str) -> tuple[str, str]:
    module = wsgi_app.split(":", 1)[0].replace(".", "/")
    return f"{module}.py", f"{module}/__init__.py"


def check_shipment(s: Settings, tree: SourceTree, where: str) -> None:
    """The app must have what the configs point at, or it would crash-loop on the host."""
    if not tree.has("requirements.txt"):
        source_key = "SOURCE_DIR" if s.source == "upload" else "REPO_URL"
        raise SettingsError(f"{source_key} ({s.origins.get(source_key, 'default')}): requirements.txt is missing in {where} "
                            f"at {tree.sha[:12]}; the Python app needs one (with gunicorn pinned: run `invoke freeze`).")
    if not tree.has(s.node_script):
        raise SettingsError(f"NODE_SCRIPT ({s.origins.get('NODE_SCRIPT', 'default')}): {s.node_script} is not in "
                            f"{where} at {tree.sha[:12]}; set NODE_SCRIPT to the Node.js entry point.")
    if not any(tree.has(p) for p in _wsgi_module_paths(s.wsgi_app)):
        raise SettingsError(f"WSGI_APP ({s.origins.get('WSGI_APP', 'default')}): module {s.wsgi_app.split(':')[0]} "
                            f"({' or '.join(_wsgi_module_paths(s.wsgi_app))}) is not in {where} at {tree.sha[:12]}.")


def read_app_env(s: Settings) -> str | None:
    if not s.app_env_file:
        return None
    try:
        with open(s.app_env_file, encoding="utf-8") as fh:
            return fh.read()
    except OSError as err:
        raise SettingsError(f"APP_ENV_FILE ({s.origins.get('APP_ENV_FILE')}): cannot read {s.app_env_file}: "
                            f"{err.strerror}.") from None


def local_shipment(s: Settings) -> Shipment:
    tree = read_source(s.source_dir)
    check_shipment(s, tree, f"SOURCE_DIR {s.source_dir}")
    return Shipment(tree=tree, requirements=read_blob(s.source_dir, tree, "requirements.txt") or "",
                    package_lock=read_blob(s.source_dir, tree, "package-lock.json"), app_env=read_app_env(s),
                    source_dir=s.source_dir)


def git_shipment(c: Any, s: Settings) -> Shipment:
    """SOURCE=git: the host keeps a mirror of REPO_URL and resolves REF itself."""
    repo = q(f"{s.state_dir}/repo.git")
    fetch = (f"mkdir -p {q(s.state_dir)} && if [ -d {repo} ]; then git -C {repo} fetch --quiet --prune --force origin "
             f"'+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'; else git clone --quiet --mirror {q(s.repo_url or '')} {repo}; fi"
             f" && git -C {repo} rev-parse --verify --quiet {q(s.ref + '^{commit}')}")
    result = run(c, fetch, warn=True)
    if not result.ok:
        raise fail(f"The host could not fetch {s.repo_url} at {s.ref}: {(result.stderr or result.stdout).strip()[-500:]}. "
                   "Check REPO_URL, REF and the host's access to the repository (a deploy key).")
    sha = result.stdout.strip().splitlines()[-1]
    listing = run(c, f"git -C {repo} rev-parse {q(sha + '^{tree}')} && git -C {repo} ls-tree -r {q(sha)}").stdout.splitlines()
    blobs = {}
    for line in listing[1:]:
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            blobs[path] = parts[2]
    tree = SourceTree(sha=sha, tree=listing[0].strip(), blobs=blobs, dirty=0, subdir="")
    check_shipment(s, tree, f"{s.repo_url}")

    def show(path: str) -> str | None:
        if path not in blobs:
            return None
        return run(c, f"git -C {repo} cat-file blob {q(blobs[path])}").stdout

    return Shipment(tree=tree, requirements=show("requirements.txt") or "", package_lock=show("package-lock.json"),
                    app_env=read_app_env(s), source_dir=None)


def require_tools(facts: host_facts.HostFacts) -> None:
    missing = [text for tool, text in REQUIRED_TOOLS.items() if tool not in facts.tools]
    if "sudo" not in facts.tools:  # nginx is looked for through sudo: without it, only sudo is the cause
        missing = [REQUIRED_TOOLS["sudo"]] + [m for m in missing if m not in (REQUIRED_TOOLS["sudo"], REQUIRED_TOOLS["nginx"])]
    if missing:
        raise fail("The host lacks what a deploy needs: " + "; ".join(missing) + ". Install it and deploy again.")


def extras_tar(plan: Plan) -> bytes:
    """The files deploy adds to a release: rendered configs, REVISION and the manifest."""
    import tarfile  # here: only a deploy that makes a release needs it
    files = {**plan.configs, "REVISION": plan.manifest.release + "\n", ".signalcraft/manifest.json": plan.manifest.to_json()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload_delta(s: Settings, shipment: Shipment, facts: host_facts.HostFacts) -> source.Delta | None:
    """Hash, don't copy: the files the live release already has (same path, mode and blob) are copied
    on the host; only the others are sent. None when the live release's tree is not known here."""
    old_tree = (facts.manifest or {}).get("tree")
    if not (shipment.source_dir and facts.current_release and old_tree):
        return None
    return source.delta(source.file_ids(shipment.tree), source.tree_files(shipment.source_dir, old_tree))


def ship(c: Any, s: Settings, shipment: Shipment, plan: Plan, facts: host_facts.HostFacts | None = None) -> str:
    """Put the release on the host in releases/<name>.tmp, then rename it into place; say what was sent."""
    release = plan.manifest.release
    rdir = f"{s.releases_dir}/{release}"
    incoming = f"{s.state_dir}/incoming"
    same = upload_delta(s, shipment, facts) if facts else None
    with tempfile.TemporaryDirectory() as tmp:
        extras = os.path.join(tmp, "extras.tar")
        with open(extras, "wb") as fh:
            fh.write(extras_tar(plan))
        run(c, f"mkdir -p {q(incoming)} {q(s.releases_dir)} {q(s.shared_dir)}/logs && chmod 0755 {q(s.deploy_root)}")
        code_tar = q(incoming + "/" + release + ".tar")
        unpack = []
        if shipment.source_dir:
            if same is None or same.changed:
                code = os.path.join(tmp, "code.tar")
                make_tarball(shipment.source_dir, shipment.tree, code, same.changed if same else None)
                upload(c, code, f"{incoming}/{release}.tar")
                unpack = [f"tar -xf {code_tar} -C \"$t\""]
        else:
            unpack = [f"git -C {q(s.state_dir + '/repo.git')} archive {q(shipment.tree.sha)} | tar -x -C \"$t\""]
        upload(c, extras, f"{incoming}/{release}.extras.tar")
    if shipment.app_env is not None:
        # The app's secrets: written from stdin (never on a command line), mode 0600, linked into releases.
        run(c, f"umask 077 && cat > {q(s.shared_dir)}/.env.tmp && mv -f {q(s.shared_dir)}/.env.tmp {q(s.shared_dir)}/.env",
            stdin=shipment.app_env)
    live = f"{s.releases_dir}/{facts.current_release}" if facts and facts.current_release else ""
    copy = ([f"tar -C {q(live)} --null --verbatim-files-from -T - -cf - | tar -xf - -C \"$t\""]
            if same and same.same else [])

    def script(parts: list[str]) -> str:
        return "\n".join([
            "set -e",
            f"t={q(rdir + '.tmp')}",
            'rm -rf "$t" && mkdir -p "$t"',
            *parts,
            f"tar -xf {q(incoming + '/' + release + '.extras.tar')} -C \"$t\"",
            f"if [ -e {q(s.shared_dir)}/.env ]; then ln -sfn {q(s.shared_dir)}/.env \"$t/.env\"; fi",
            f"ln -sfn {q(s.shared_dir)}/logs \"$t/logs\" 2>/dev/null || true",
            f"rm -rf {q(rdir)} && mv \"$t\" {q(rdir)}",
            f"rm -f {code_tar} {q(incoming + '/' + release + '.extras.tar')}",
        ])

    names = "".join(f"{p}\0" for p in same.same) if copy and same else None
    result = run(c, script(copy + unpack), stdin=names, warn=True)
    if not result.ok and copy and shipment.source_dir:
        # The live release lost a file it shipped with: send everything instead.
        run(c, f"rm -rf {q(rdir + '.tmp')}", warn=True)
        return ship(c, s, shipment, plan, None)
    if not result.ok:
        run(c, f"rm -rf {q(rdir + '.tmp')}", warn=True)
        raise fail(f"Could not unpack the release into {rdir}: {result.stderr.strip()[-500:]}. "
                   f"Check free space and permissions under {s.deploy_root}; the live release is untouched.")
    if same is None:
        return f"{release}: all {len(shipment.tree.blobs)} files sent" if shipment.source_dir else f"{release}: from the host's mirror"
    return (f"{release}: {len(same.changed)} changed file(s) sent, {len(same.same)} copied from {facts.current_release}"
            if facts else release)


def switch(c: Any, s: Settings, release: str) -> None:
    """Point `current` at a release atomically (a temporary link renamed over the old one)."""
    tmp = f"{s.deploy_root}/.current.tmp"
    run(c, f"ln -sfn {q('releases/' + release)} {q(tmp)} && mv -Tf {q(tmp)} {q(s.current_dir)}")


def previous_release(facts: host_facts.HostFacts, before: str | None) -> str | None:
    older = [r for r in facts.releases if (before is None or r < before) and r not in facts.bad_releases]
    return older[-1] if older else None


def config_diffs(facts: host_facts.HostFacts, plan: Plan, s: Settings) -> list[str]:
    """Unified diffs of every file the deploy would write, against what the host has."""
    out = []
    pairs = [(name, facts.configs.get(name, ""), text, f"{s.current_dir}/{name}") for name, text in plan.configs.items()]
    pairs.append(("nginx site", facts.site_text or "", plan.site, s.nginx_site))
    for _name, old, new, path in pairs:
        if old.rstrip("\n") != new.rstrip("\n"):
            diff = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a{path}", f"b{path}")
            out.append("".join(diff))
    return out


def print_plan(rep: Reporter, s: Settings, plan: Plan, facts: host_facts.HostFacts, shipment: Shipment) -> None:
    m = plan.manifest
    rep.say(f"Plan for {rep.target}:")
    if plan.nothing_to_do:
        rep.say(f"  nothing to do: {m.release} is live and both apps are online.")
        return
    if plan.new_release:
        rep.say(f"  release   {m.release} (commit {m.sha[:12]}) replaces {facts.current_release or 'nothing'}")
        rep.say(f"  upload    git archive of {m.tree[:12]} -> {s.releases_dir}/{m.release}")
    rep.say(f"  install   venv {m.venv}: {'build (requirements changed)' if plan.build_venv else 'reuse'}")
    if m.node_modules:
        rep.say(f"            node_modules {m.node_modules}: {'npm ci' if plan.build_node_modules else 'reuse'}")
    rep.say("  trial     start both apps from the new release on spare loopback ports; call their health routes")
    for a in plan.actions:
        how = {"none": "leave as is", "start": "pm2 start --only", "hup": "pm2 sendSignal SIGHUP (graceful)",
               "new-master": "new Gunicorn master on the handover address, Nginx switch, old master drains",
               "takeover": "record the unmanaged server, start Gunicorn on the handover address, Nginx switch, stop it",
               "reload": "pm2 reload --only (rolling, cluster mode)",
               "restart": "new processes on the handover port, Nginx switch, old ones stopped",
               "write-and-reload": "write site, nginx -t, graceful reload"}[a.how]
        rep.say(f"  {a.app:<9} {how} ({a.why})")
    rep.say("  health    both apps directly and through Nginx, from the new release; roll back on failure")
    for diff in config_diffs(facts, plan, s):
        rep.say(diff.rstrip("\n"))


def settle(pending: list[Background | None]) -> None:
    """Wait for the commands left running in the background."""
    for command in pending:
        if command is not None:
            command.wait()
    pending.clear()


def mark_bad(c: Any, s: Settings, release: str) -> None:
    """Remember a release that failed, so `rollback` and `previous_release` never pick it."""
    run(c, f"mkdir -p {q(s.state_dir)}/bad && touch {q(s.state_dir)}/bad/{q(release)}", warn=True)


def rollback_after_failure(c: Any, s: Settings, rep: Reporter, plan: Plan, prev: str | None, site_written: bool) -> list[str]:
    """Undo a deploy that failed after the switch (or during a handover); say what now serves."""
    notes = []
    if prev:
        switch(c, s, prev)
    py, node = plan.action("python").how, plan.action("nodejs").how
    running = {p.name for p in host_facts.gather(c, s).pm2}
    if py == "hup" and prev:
        pm2_ops.hup_python(c, s)
    elif py == "new-master" and prev and s.handover_app in running:
        # Nginx is on the temporary master (new release): bring the previous master back, then move Nginx to it.
        pm2_ops.delete(c, s, s.python_app)
        pm2_ops.start(c, s, s.python_app)
        handover_ops.end_handover(c, s, "python")
    elif py == "start" or not prev:
        pm2_ops.delete(c, s, s.python_app)
    if node == "reload" and prev:
        pm2_ops.reload_node(c, s)
    elif node == "restart" and prev and s.node_handover_app in running:
        pm2_ops.delete(c, s, s.node_app)
        pm2_ops.start(c, s, s.node_app)
        handover_ops.end_handover(c, s, "nodejs")
    elif node == "start" or not prev:
        pm2_ops.delete(c, s, s.node_app)
    if not prev:  # a first deploy leaves nothing of its own behind
        for app in (s.handover_app, s.node_handover_app):
            if app in running:
                pm2_ops.delete(c, s, app)
    if site_written:
        nginx_ops.restore_site(c, s)
        nginx_ops.reload_nginx(c, s)
    if prev:
        problems = health.gate(c, s, prev, f"{s.releases_dir}/{prev}", {"python": py in ("hup", "new-master"),
                                                                         "nodejs": node != "none"})
        notes.append(f"previous release {prev} is serving" if not problems else
                     "previous release is NOT healthy either: " + "; ".join(problems))
    mark_bad(c, s, plan.manifest.release)
    pm2_ops.save(c, s)
    return notes


def prune(c: Any, s: Settings, keep: int, current: str, prev: str | None) -> list[str]:
    """Remove old releases beyond KEEP_RELEASES; never current, previous, or one a live process runs from."""
    listing = run(c, f"ls -1 {q(s.releases_dir)}; echo @@; find /proc/[0-9]*/cwd -maxdepth 0 -printf '%l\\n' 2>/dev/null | sort -u",
                  warn=True).stdout
    names, _, cwds = listing.partition("@@")
    releases = sorted(n for n in names.split() if n and not n.endswith(".tmp"))
    in_use = {line.strip().rstrip("/").split("/releases/")[-1].split("/")[0] for line in cwds.splitlines() if "/releases/" in line}
    protected = {current, prev} | in_use
    doomed = [r for r in releases[:-keep] if r not in protected] if len(releases) > keep else []
    if doomed:
        run(c, "rm -rf " + " ".join(q(f"{s.releases_dir}/{r}") for r in doomed))
    return doomed


def execute(c: Any, s: Settings, rep: Reporter, plan: Plan, facts: host_facts.HostFacts,
            shipment: Shipment | None, event: str) -> dict[str, Any]:
    """Carry out a plan. `shipment` is None when the release is already on the host (rollback)."""
    m = plan.manifest
    rdir = f"{s.releases_dir}/{m.release}"
    prev = facts.current_release if facts.current_release != m.release else previous_release(facts, m.release)
    record: dict[str, Any] = {"event": event, "by": who(), "host": rep.target, "from": facts.current_release,
                              "to": m.release, "sha": m.sha, "actions": {a.app: a.how for a in plan.actions}}
    site_written = False
    takeover = plan.action("python")
    # Stops of temporary PM2 apps (trial, handover), each 0.5 s of PM2 waiting for an exit: they run
    # beside the next steps and are waited for before PM2's list is saved or anything is undone.
    stopping: list[Background | None] = []
    try:
        if takeover.how == "takeover":
            with rep.step("record takeover") as st:
                takeover_ops.record(c, s, takeover.pid or 0)
                record["takeover"] = {"pid": takeover.pid, "why": takeover.why}
                st.detail = f"pid {takeover.pid}: command, environment, Node.js entry and Nginx site saved"
        if shipment is not None and plan.new_release:
            with rep.step("upload") as st:
                st.detail = ship(c, s, shipment, plan, facts)
        with rep.step("install") as st:
            if plan.build_venv:
                version = install_ops.ensure_venv(c, s, m.venv, f"{rdir}/requirements.txt")
                st.detail = f"built {m.venv} (gunicorn {version})"
            else:
                st.detail = "Python environment unchanged"
            if plan.new_release or plan.build_node_modules:
                install_ops.ensure_node_modules(c, s, rdir, m.node_modules)
                if plan.build_node_modules:
                    st.detail += "; node_modules built"
        changed_files = [name for name in plan.configs if facts.configs.get(name, "").rstrip("\n") != plan.configs[name].rstrip("\n")]
        with rep.step("render-configs") as st:
            st.detail = ("changed: " + ", ".join(changed_files)) if changed_files else "unchanged"
            for diff in config_diffs(facts, plan, s):
                rep.say(diff.rstrip("\n"))
        # Try each app that will run new code before anything is switched. An app handed over
        # (new-master, restart) is tried by the handover itself: its copy on the handover address
        # must answer before Nginx moves. An unchanged app runs no new code.
        tried = tuple(a.app for a in plan.actions[:2] if a.how in ("start", "hup", "reload", "takeover"))
        if tried:
            with rep.step("trial run") as st:
                stopping.append(trial.canary(c, s, m.release, rdir, m.venv, tried,
                                               {p.name for p in facts.pm2} if facts.pm2_readable else None))
                app_name = {"python": s.python_app, "nodejs": s.node_app}
                st.detail = ("both apps answer their health routes" if len(tried) == 2
                             else f"{app_name[tried[0]]} answers its health route")
        site_written = plan.action("nginx").how == "write-and-reload"
        with rep.step("nginx-check") as st:
            if site_written:
                nginx_ops.install_site(c, s, plan.site)
            routes, problems = nginx_ops.check(c, s)
            if problems:
                if site_written:
                    nginx_ops.restore_site(c, s)
                raise fail("Nginx check failed; nothing was switched:\n  " + "\n  ".join(problems))
            st.detail = f"{len(routes)} routes ok" + ("; new site passes nginx -t" if site_written else "")
    except Exit as err:
        settle(stopping)
        # Nothing was switched: the live release still serves. Keep the evidence, mark the release bad.
        if plan.new_release:
            mark_bad(c, s, m.release)
        record.update(result="failed before switch", reason=str(err.message).splitlines()[0], steps=rep.durations())
        audit(c, s, record)
        raise
    py, node = plan.action("python").how, plan.action("nodejs").how
    # A new Gunicorn master is started from the release directory; `current` moves only once
    # Nginx sends nothing to the old master, whose recycled workers would otherwise load new code
    # against the old environment.
    python_handover = py in ("new-master", "takeover")
    in_pm2 = {p.name for p in facts.pm2} if facts.pm2_readable else None
    with rep.step("switch") as st:
        if python_handover:
            st.detail = "deferred until Nginx has moved to the new Gunicorn"
        else:
            switch(c, s, m.release)
            st.detail = f"current -> {m.release}"
    seen: dict[str, Any] = {}  # PM2's view of both apps, as the passing health check saw it
    try:
        with rep.step("pm2-reload") as st:
            if py == "start":
                pm2_ops.start(c, s, s.python_app)
            elif py == "hup":
                pm2_ops.hup_python(c, s, next((p.pid_path for p in facts.apps(s.python_app)), ""))
            elif py == "new-master":
                stopping.append(handover_ops.handover(c, s, "python", m.release, rdir, m.venv, rep, switch=lambda: switch(c, s, m.release),
                                 present=in_pm2))
            elif py == "takeover":
                stopping.append(handover_ops.handover(c, s, "python", m.release, rdir, m.venv, rep, switch=lambda: switch(c, s, m.release),
                                 stop_old=handover_ops.stop_unmanaged(c, s, takeover.pid or 0), present=in_pm2))
            if node == "start":
                pm2_ops.start(c, s, s.node_app)
            elif node == "reload":
                pm2_ops.reload_node(c, s)
            elif node == "restart":
                stopping.append(handover_ops.handover(c, s, "nodejs", m.release, rdir, m.venv, rep, present=in_pm2))
            done = [f"{s.python_app}: {py}", f"{s.node_app}: {node}"]
            st.detail = ", ".join(done)
        if site_written:
            with rep.step("nginx reload"):
                nginx_ops.reload_nginx(c, s)
        with rep.step("health") as st:
            problems = health.gate(c, s, m.release, rdir, {"python": py != "none", "nodejs": node != "none"}, report=seen)
            if problems:
                raise fail("Health check failed after the switch:\n  " + "\n  ".join(problems))
            st.detail = "both apps answer, directly and through Nginx"
    except Exit as err:
        settle(stopping)
        reason = str(err.message)
        logs = {name: pm2_ops.error_tail(c, s, name) for name in (s.python_app, s.node_app)}
        with rep.step("rollback") as st:
            if takeover.how == "takeover":
                notes = [takeover_ops.restore(c, s)]
                mark_bad(c, s, m.release)
                prev = "the state before the takeover"
            else:
                notes = rollback_after_failure(c, s, rep, plan, prev if prev != m.release else None, site_written)
            st.detail = "; ".join(notes)
        record.update(result="rolled back", reason=reason.splitlines()[0], steps=rep.durations())
        audit(c, s, record)
        tails = "\n".join(f"--- last error output of {name} ---\n{text}" for name, text in logs.items() if text.strip())
        raise fail(f"{reason}\nRolled back to {prev or 'nothing (first deploy)'}; release {m.release} is marked bad.\n"
                   f"{tails}") from None
    with rep.step("finish") as st:
        settle(stopping)
        # A HUP leaves PM2's process list as it was; anything else changes what a reboot must resurrect.
        saved = (py, node) not in (("hup", "none"), ("none", "none"))
        if saved:
            pm2_ops.save(c, s)
        pruned = prune(c, s, s.keep_releases, m.release, prev)
        st.detail = ("pm2 save" if saved else "PM2 list unchanged") + (f"; pruned {len(pruned)} old release(s)" if pruned else "")
    record.update(result="ok", steps=rep.durations(), files_changed=changed_files + (["nginx site"] if site_written else []))
    audit(c, s, record)
    return {**record, "pm2": seen}


def shipment_manifest(s: Settings, shipment: Shipment) -> tuple[Manifest, dict[str, str]]:
    """The manifest and rendered configs of the release this shipment would become."""
    app_env_digest = digest(shipment.app_env) if shipment.app_env is not None else None
    return make_manifest(
        s, sha=shipment.tree.sha, tree=shipment.tree.tree, python_code=shipment.tree.python_digest,
        node_code=shipment.tree.node_digest, requirements=shipment.requirements, package_lock=shipment.package_lock,
        app_env_digest=app_env_digest, who=who_text(who()))


def plan_or_exit(s: Settings, manifest: Manifest, configs: dict[str, str], facts: host_facts.HostFacts) -> Plan:
    try:
        return make_plan(s, manifest, configs, facts)
    except PlanError as err:
        raise fail(f"Nothing was changed: {err}") from None


def report_unchanged(c: Any, s: Settings, rep: Reporter, release: str, sha: str) -> None:
    rep.say(f"Nothing to deploy: {release} (commit {sha[:12]}) is live and unchanged; no file written, no app reloaded.")
    audit(c, s, {"event": "deploy", "result": "unchanged", "by": who(), "host": rep.target, "to": release, "sha": sha})


def shipment_inputs(s: Settings, shipment: Shipment) -> str:
    app_env_digest = digest(shipment.app_env) if shipment.app_env is not None else None
    return release_inputs(s, shipment.tree.tree, shipment.requirements, shipment.package_lock, app_env_digest)


DEPLOY_HELP = {
    **COMMON_HELP,
    "dry-run": "read the host and print the plan (steps, diffs, reloads) without changing anything",
    "lock-wait": "seconds to wait for another deploy to finish (default 0: stop at once)",
    "ref": "git ref to deploy when SOURCE=git (overrides REF)",
    "source-dir": "local app folder to ship when SOURCE=upload (overrides SOURCE_DIR)",
    "known-hosts": "extra known_hosts file to verify the host key with",
    "accept-new-host": "trust and record the key of a host not yet in known_hosts",
}


@task(iterable=["set_"], help=DEPLOY_HELP)
def deploy(c, dry_run=False, lock_wait=0, ref=None, source_dir=None, known_hosts=None, accept_new_host=False,
           env_file=None, set_=None):
    """Deploy the app: ship, install, render-configs, nginx-check, pm2-reload by what changed, health-check."""
    s = settings_for(env_file, set_, REF=ref, SOURCE_DIR=source_dir)
    rep = Reporter(target_name(c))
    try:
        shipment = local_shipment(s) if s.source == "upload" else None
    except SettingsError as err:
        raise Exit(f"Settings error: {err}", code=2) from None
    if shipment and shipment.tree.dirty:
        rep.warn(f"{shipment.tree.dirty} uncommitted change(s) in {s.source_dir} are not deployed; "
                 f"deploying commit {shipment.tree.sha[:12]}")
    with rep.step("connect") as st:
        open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host,
                  flag_hint=", pass --known-hosts FILE, or run again with --accept-new-host to trust and record it")
        st.detail = target_name(c)
    info = {"who": who(), "sha": shipment.tree.sha if shipment else s.ref, "since": datetime.now(UTC).isoformat(timespec="seconds"),
            **who()}
    # One channel takes the lock and reads the host (files, processes, PM2): all a deploy that
    # changes nothing needs. The tool and port checks follow only when something will change.
    lock = None if dry_run else DeployLock(c, s, info, int(lock_wait or 0), rep.say, rep.warn,
                                           then=host_facts.facts_script(s, quick=True))
    if lock:
        lock.__enter__()
    try:
        with rep.step("read host") as st:
            if lock:
                facts = host_facts.parse_facts(lock.read_then())
            else:
                facts = host_facts.gather(c, s)
                require_tools(facts)
            if shipment is None:
                try:
                    shipment = git_shipment(c, s)
                except SettingsError as err:
                    raise fail(str(err), code=2) from None
            st.detail = f"live: {facts.current_release or 'nothing yet'}"
            # Nothing changed and all runs as recorded: decided from digests, nothing rendered.
            same = not dry_run and facts.current_release is not None and unchanged(s, shipment_inputs(s, shipment), facts)
            if not same:
                manifest, configs = shipment_manifest(s, shipment)
                plan = plan_or_exit(s, manifest, configs, facts)
        if same:
            report_unchanged(c, s, rep, facts.current_release or "", shipment.tree.sha)
            return
        if dry_run:
            print_plan(rep, s, plan, facts, shipment)
            rep.say("Dry run: nothing was changed.")
            return
        if plan.nothing_to_do:
            report_unchanged(c, s, rep, plan.manifest.release, plan.manifest.sha)
            return
        with rep.step("plan") as st:
            host_facts.add_host_checks(c, s, facts)
            require_tools(facts)
            plan = plan_or_exit(s, manifest, configs, facts)  # again, now with who listens on our ports
            st.detail = ", ".join(f"{a.app}: {a.how}" for a in plan.actions)
        try:
            record = execute(c, s, rep, plan, facts, shipment, "deploy")
        except SettingsError as err:
            raise fail(str(err), code=2) from None
        except Exit as err:
            rep.error(str(err.message))
            summarize(rep, s, plan, ok=False)
            raise
        summarize(rep, s, plan, ok=True, c=c, pm2_state=record.pop("pm2", {}))
    finally:
        if lock:
            lock.__exit__(None, None, None)


def pm2_lines(s: Settings, state: dict[str, list[dict[str, Any]]]) -> list[str]:
    """PM2's view of our two apps, one line each (mode, count, states, restarts, pids; never env values)."""
    lines = []
    for name in (s.python_app, s.node_app):
        mine = state.get(name, [])
        states = ",".join(sorted({str(p["status"]) for p in mine})) or "missing"
        lines.append(f"  {name:<28} {(mine[0]['mode'] if mine else '-'):<8} x{len(mine)}  {states:<8} "
                     f"restarts {sum(int(p['restarts'] or 0) for p in mine)}  pids {' '.join(str(p['pid']) for p in mine)}")
    return lines


def summarize(rep: Reporter, s: Settings, plan: Plan, ok: bool, c: Any = None, pm2_state: dict[str, Any] | None = None) -> None:
    m = plan.manifest
    total = sum(step.seconds for step in rep.steps)
    if ok:
        host = getattr(c, "host", "127.0.0.1") or "127.0.0.1"
        port = "" if s.nginx_listen == 80 else f":{s.nginx_listen}"
        rep.say(f"Deployed {m.release} (commit {m.sha[:12]}) to {rep.target} in {total:.1f}s.")
        rep.say(f"  Node.js: http://{host}{port}{s.health_node}")
        rep.say("  Flask:   " + "  ".join(f"http://{host}{port}/{r}" for r in s.py_routes))
        for line in pm2_lines(s, pm2_state or {}):
            rep.say(line)
    reloads = ", ".join(f"{a.app}: {a.how}" for a in plan.actions)
    rep.write_github_summary(
        f"Deploy {'succeeded' if ok else 'failed'}: {m.release}",
        [f"- commit `{m.sha[:12]}`, apps: {reloads}", f"- roll back with `fab -H {rep.target} rollback`"])


@task(iterable=["set_"], help={**COMMON_HELP, "to": "release to return to (default: the one before the current; "
                                                  "'before-takeover' returns to the host as it was before the first deploy)",
            "known-hosts": DEPLOY_HELP["known-hosts"]})
def rollback(c, to=None, known_hosts=None, env_file=None, set_=None):
    """Return to the previous release (or --to RELEASE) with the same graceful reloads as a deploy."""
    s = settings_for(env_file, set_)
    rep = Reporter(target_name(c))
    open_host(c, s, known_hosts=known_hosts, flag_hint=", or pass --known-hosts FILE")
    info = {"event": "rollback", "since": datetime.now(UTC).isoformat(timespec="seconds"), **who()}
    with DeployLock(c, s, info, 0, rep.say, rep.warn):
        facts = host_facts.gather(c, s)
        target = to or previous_release(facts, facts.current_release)
        if (to == "before-takeover" or not target) and takeover_ops.recorded(c, s):
            rep.say(f"Rolling back {facts.current_release} -> the state before the first deploy took over")
            note = takeover_ops.restore(c, s)
            audit(c, s, {"event": "rollback", "result": "ok", "by": who(), "host": rep.target,
                         "from": facts.current_release, "to": "before-takeover"})
            rep.say(f"Rolled back: {note}; the old Node.js entry and Nginx site are back.")
            return
        if not target or target not in facts.releases:
            raise fail(f"No release to roll back to (asked for {to or 'the previous one'}; on the host: "
                       f"{', '.join(facts.releases) or 'none'}). See `releases`.")
        raw = run(c, f"cat {q(s.releases_dir + '/' + target)}/.signalcraft/manifest.json", warn=True).stdout
        try:
            manifest = Manifest(**json.loads(raw))
        except (ValueError, TypeError):
            raise fail(f"Release {target} has no readable manifest; roll back with --to another release.") from None
        configs = {}
        for name in (GUNICORN_CONF, ECOSYSTEM):
            configs[name] = run(c, f"cat {q(s.releases_dir + '/' + target + '/' + name)}", warn=True).stdout
        plan = plan_or_exit(s, manifest, configs, facts)
        plan.new_release, plan.build_venv = False, manifest.venv.rsplit("/", 1)[-1] not in facts.venvs_ready
        plan.site = render_nginx_site(s)
        rep.say(f"Rolling back {facts.current_release} -> {target}")
        execute(c, s, rep, plan, facts, None, "rollback")
        run(c, f"rm -f {q(s.state_dir)}/bad/{q(target)}", warn=True)
    rep.say(f"Rolled back to {target}.")


@task(iterable=["set_"], help={**COMMON_HELP})
def releases(c, env_file=None, set_=None):
    """List the releases on the host, newest first, marking the current one and bad ones."""
    s = settings_for(env_file, set_)
    open_host(c, s)
    facts = host_facts.gather(c, s)
    if not facts.releases:
        print(f"No releases under {s.releases_dir}.")
        return
    for name in reversed(facts.releases):
        mark = "* " if name == facts.current_release else "  "
        flag = "  (bad: failed its deploy)" if name in facts.bad_releases else ""
        print(f"{mark}{name}{flag}")


def commands_sent(c: Any) -> int:
    return command_log(c).count


ns = Collection(deploy, rollback, releases)
