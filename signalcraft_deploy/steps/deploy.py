"""A deploy as a list of steps, each with its undo: the one place to read the order of a deploy.

`DEPLOY_STEPS` is carried out by `runner.run_steps` for both `deploy` and `rollback` (a rollback
is a plan whose release is already on the host: its `put release on host` step does not apply).
Until the `switch current` step, a failure leaves the live release untouched; after it, the undos
switch back and bring the previous processes and Nginx site back, then `after_undo` checks what
serves.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import How, Plan
from signalcraft_deploy.core.render import certbot_hook_path, site_description
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import app_user as app_user_ops
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import health, releases, upkeep, wheels
from signalcraft_deploy.host import install as install_ops
from signalcraft_deploy.host import nginx as nginx_ops
from signalcraft_deploy.host import pm2 as pm2_ops
from signalcraft_deploy.host import takeover as takeover_ops
from signalcraft_deploy.host import tls as tls_ops
from signalcraft_deploy.host.connect import reconnect
from signalcraft_deploy.host.hooks import Hook, HookResult, run_hook
from signalcraft_deploy.host.io import Background, ConnectionLost, Waiting, fail, q, run
from signalcraft_deploy.host.lock import audit
from signalcraft_deploy.steps import handover as handover_ops
from signalcraft_deploy.steps import processes, trial
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Outcome, Step
from signalcraft_deploy.steps.upload import Shipment, ship

# GUNICORN_GRACEFUL_TIMEOUT's own upper bound: the longest the health gate waits for old workers.
MAX_GRACEFUL = 3600


@dataclass
class DeployRun:
    """What the steps of one deploy (or rollback) share."""

    c: Any
    s: Settings
    rep: Reporter
    plan: Plan
    facts: HostFacts
    shipment: Shipment | None
    record: dict[str, Any]
    prev: str | None = None  # the release to return to if this one fails after the switch
    stopping: list[Background | None] = field(default_factory=list)  # temporary apps being stopped
    nginx_read: Background | None = (
        None  # the running Nginx's configuration, asked for while the trial runs
    )
    started_gate: Waiting | None = None  # the health gate, started ahead of the switch
    seen: dict[str, Any] = field(
        default_factory=dict
    )  # PM2's view of both apps, as the passing health check saw it
    error_logs: dict[str, str] = field(default_factory=dict)
    takeover_restored: bool = False
    not_moved: bool = (
        False  # a handover's reload did not take: Nginx still sends to the old processes
    )
    deploy_pm2_changed: bool = (
        False  # an app was deleted from the deploy user's own PM2 (moved to APP_USER's)
    )
    # the Procfile processes being tried, and when their trial started (steps/processes.py)
    process_trial: tuple[list[Any], float] = ([], 0.0)

    @property
    def release(self) -> str:
        return self.plan.manifest.release

    @property
    def release_dir(self) -> str:
        return f"{self.s.releases_dir}/{self.release}"

    @property
    def py(self) -> How:
        return self.plan.action(App.PYTHON).how

    @property
    def node(self) -> How:
        return self.plan.action(App.NODEJS).how

    @property
    def site_written(self) -> bool:
        return self.plan.action(App.NGINX).how is How.WRITE_AND_RELOAD

    @property
    def in_pm2(self) -> set[str] | None:
        return {p.name for p in self.facts.pm2} if self.facts.pm2_readable else None

    @property
    def moving(self) -> bool:
        """Apps that ran under the deploy user's own PM2 move to their account's (APP_USER) in this
        deploy."""
        return any(a.moves for a in self.plan.actions)

    @property
    def changed_files(self) -> list[str]:
        configs, old = self.plan.configs, self.facts.configs
        return [
            name for name in configs if old.get(name, "").rstrip("\n") != configs[name].rstrip("\n")
        ]

    @property
    def is_deploy(self) -> bool:
        """A deploy (not a rollback): the user's hooks run only then."""
        return self.record.get("event") == "deploy"

    def write_audit(self) -> None:
        audit(self.c, self.s, self.record)

    def reconnect(self) -> str | None:
        return reconnect(self.c)

    def again(self) -> str:
        """The command a lost connection leaves to run: this deploy again (or this rollback)."""
        if self.is_deploy:
            return f"fab -H {self.rep.target} deploy"
        return f"fab -H {self.rep.target} rollback --to {self.release}"

    def mask(self, text: str) -> str:
        return masked(self.s, text)

    @property
    def reloaded(self) -> dict[App, bool]:
        """Which apps this deploy (re)loads: the ones the health gate must see on the new
        release."""
        return {App.PYTHON: self.py is not How.NONE, App.NODEJS: self.node is not How.NONE}

    def start_gate(self) -> None:
        """Start the health gate's program now (once), so that the gate after the switch checks at
        once."""
        if self.started_gate is None:
            self.started_gate = health.start_gate(
                self.c, self.s, self.release, self.release_dir, self.reloaded, self.graceful
            )

    @property
    def graceful(self) -> int | None:
        """Gunicorn's graceful_timeout as Gunicorn reads the new gunicorn.conf.py, when the plan
        read it (host/gunicorn.py); None: GUNICORN_GRACEFUL_TIMEOUT's."""
        value = ((self.facts.gunicorn or {}).get("new") or {}).get("graceful_timeout")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return None
        # Read as the apps' account, with the master's GUNICORN_CMD_ARGS (that account's PM2 sets
        # them): bounded as GUNICORN_GRACEFUL_TIMEOUT is, so the gate never waits for ever.
        return min(value, MAX_GRACEFUL)

    def wait_stopped(self) -> None:
        """Wait for the temporary apps being stopped in the background (the trial's, a
        handover's)."""
        stopping, self.stopping = self.stopping, []
        for command in stopping:
            if command is not None:
                try:
                    command.wait()
                except ConnectionLost:
                    # it went with the connection; the undos, on a new one, deal with what it left
                    pass

    def settle(self) -> None:
        """Wait for the commands left running in the background (and drop a gate started but not
        needed)."""
        self.wait_stopped()
        gate, self.started_gate = self.started_gate, None
        if gate is not None:
            gate.drop()


def config_diffs(facts: HostFacts, plan: Plan, s: Settings) -> list[str]:
    """Unified diffs of every file the deploy would write, against what the host has."""
    out = []
    pairs = [
        (facts.configs.get(name, ""), text, f"{s.current_dir}/{name}")
        for name, text in plan.configs.items()
    ]
    pairs.append((facts.site_text or "", plan.site, s.nginx_site))
    if plan.extras:
        pairs.append(("", plan.extras, s.nginx_extras))
    for old, new, path in pairs:
        if old.rstrip("\n") != new.rstrip("\n"):
            diff = difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), f"a{path}", f"b{path}"
            )
            out.append("".join(diff))
    return out


# ----------------------------------------------------------------------------- before the switch


def record_takeover(r: DeployRun) -> str:
    pid = r.plan.action(App.PYTHON).pid or 0
    takeover_ops.record(r.c, r.s, pid, r.plan.action(App.PYTHON).apps_own)
    r.record["takeover"] = {"pid": pid, "why": r.plan.action(App.PYTHON).why}
    kept = takeover_ops.keep_site_defaults(r.c, r.s, r.plan.site_defaults)
    return f"pid {pid}: command, environment, Node.js entry and Nginx site saved" + (
        f"; kept from the old site: {kept}" if kept else ""
    )


def upload(r: DeployRun) -> str:
    assert r.shipment is not None
    return ship(r.c, r.s, r.shipment, r.plan, r.facts, warn=r.rep.warn)


def mark_release_bad(r: DeployRun) -> str:
    """The release stays on the host as evidence, marked so that `rollback` never picks it."""
    releases.mark_bad(r.c, r.s, r.release)
    return ""


def install(r: DeployRun) -> str:
    """The venv and node_modules the release needs; a node_modules build runs beside the venv's."""
    m, local = r.plan.manifest, r.s.wheels == "local"
    node, cache = None, None
    if not r.plan.new_release:  # a rollback: its release may be one an older version made
        releases.give_loader(r.c, r.s, r.release_dir)
    if r.plan.new_release or r.plan.build_node_modules:
        cache = (
            wheels.ship_npm_cache(r.c, r.s, r.shipment.package_lock)
            if local and r.shipment and r.plan.build_node_modules
            else None
        )
        node = install_ops.start_node_modules(r.c, r.s, r.release_dir, m.node_modules, cache)
    try:
        detail = build_venv(r, local)
    except BaseException:
        if node:
            node.wait()  # never left running behind the failure reported
        raise
    if node:
        install_ops.check_node_modules(node.wait(), cache)
        if r.plan.build_node_modules:
            detail += f"; node_modules built ({m.node_install})"
    return detail


def build_venv(r: DeployRun, local: bool) -> str:
    m = r.plan.manifest
    if not r.plan.build_venv:
        return "Python environment unchanged"
    requirements = (
        r.shipment.requirements
        if r.shipment
        else run(r.c, f"cat {q(r.release_dir)}/requirements.txt").stdout
    )
    links = wheels.ship_wheels(r.c, r.s, requirements, r.facts.python) if local else None
    version = install_ops.ensure_venv(r.c, r.s, m.venv, f"{r.release_dir}/requirements.txt", links)
    return f"built {m.venv} (gunicorn {version})" + (" from the shipped wheels" if links else "")


def prepare_app_user(r: DeployRun) -> str:
    return app_user_ops.prepare(r.c, r.s, r.moving)


def show_config_changes(r: DeployRun) -> str:
    for diff in config_diffs(r.facts, r.plan, r.s):
        r.rep.say(diff.rstrip("\n"))
    return ("changed: " + ", ".join(r.changed_files)) if r.changed_files else "unchanged"


def trial_run(r: DeployRun) -> str:
    m = r.plan.manifest
    if (
        not r.site_written and not r.plan.extras
    ):  # `write and check site` then reads a configuration the trial leaves alone
        r.nginx_read = nginx_ops.start_check(r.c)
    r.stopping.append(
        trial.run_trial(
            r.c,
            r.s,
            m.release,
            r.release_dir,
            m.venv,
            r.plan.tried,
            r.in_pm2,
            live=r.facts.current_release,
        )
    )
    if len(r.plan.tried) == 2:
        return "both apps answer their health routes"
    return f"{r.plan.tried[0].pm2_name(r.s)} answers its health route"


def check_nginx(r: DeployRun) -> str:
    if r.plan.extras:
        nginx_ops.write_extras(r.c, r.s, r.plan.extras_lines)
    if r.site_written:
        nginx_ops.install_site(r.c, r.s, site_description(r.s), takeover=r.py is How.TAKEOVER)
    read, r.nginx_read = (
        r.nginx_read,
        None,
    )  # asked for by the trial only when nothing above changes what it reads
    routes, problems = nginx_ops.check(r.c, r.s, read)
    public = host_facts.node_public_warning(
        r.s, r.facts
    )  # the running Node.js, as the plan read it (as `status` does)
    if public:
        r.rep.warn(public)
    if problems:
        if r.site_written:
            nginx_ops.restore_site(r.c, r.s)
        raise fail("Nginx check failed; nothing was switched:\n  " + "\n  ".join(problems))
    return f"{len(routes)} routes ok" + ("; new site passes nginx -t" if r.site_written else "")


def restore_site(r: DeployRun) -> str:
    if r.site_written and not r.takeover_restored:
        nginx_ops.restore_site(r.c, r.s)
        nginx_ops.reload_nginx(r.c, r.s, r.facts.site_text)
        return "previous Nginx site back, and Nginx serves it"
    return ""


# ----------------------------------------------------------------------------- the switch and after


def switch_current(r: DeployRun) -> str:
    # A new Gunicorn master is started from the release directory; `current` moves only once Nginx
    # sends nothing to the old master, whose recycled workers would otherwise load new code against
    # the old environment.
    r.start_gate()  # its start-up overlaps the switch and the reload
    if r.py.hands_over:
        return "deferred until Nginx has moved to the new Gunicorn"
    releases.switch(r.c, r.s, r.release)
    return f"current -> {r.release}"


def switch_back(r: DeployRun) -> str:
    if r.prev and not r.takeover_restored:
        releases.switch(r.c, r.s, r.prev)
        return f"current -> {r.prev}"
    return ""


def stop_in_deploy_pm2(r: DeployRun, name: str) -> Callable[[], None]:
    """The old processes of an app that moves to its own account: deleted from the deploy user's own
    PM2."""

    def stop() -> None:
        r.deploy_pm2_changed = True
        pm2_ops.delete_as_deploy_user(r.c, r.s, name)

    return stop


def reload_python(r: DeployRun) -> None:
    m, c, s = r.plan.manifest, r.c, r.s
    if r.py is How.START:
        pm2_ops.start(c, s, s.python_app)
    elif r.py is How.HUP:
        pm2_ops.hup_python(c, s, next((p.pid_path for p in r.facts.apps(s.python_app)), ""))
    elif r.py.hands_over:
        action = r.plan.action(App.PYTHON)
        stop_old = (
            handover_ops.stop_unmanaged(c, s, action.pid or 0, action.apps_own)
            if r.py is How.TAKEOVER
            else None
        )
        if r.plan.action(App.PYTHON).moves:
            stop_old = stop_in_deploy_pm2(r, s.python_app)
        r.stopping.append(
            handover_ops.handover(
                c,
                s,
                App.PYTHON,
                m.release,
                r.release_dir,
                m.venv,
                r.rep,
                switch=lambda: releases.switch(c, s, m.release),
                stop_old=stop_old,
                present=r.in_pm2,
            )
        )


def reload_node(r: DeployRun) -> None:
    m, c, s = r.plan.manifest, r.c, r.s
    if r.node is How.START:
        pm2_ops.start(c, s, s.node_app)
    elif r.node is How.RELOAD:
        pm2_ops.reload_node(c, s)
    elif r.node is How.HANDOVER:
        stop_old = stop_in_deploy_pm2(r, s.node_app) if r.plan.action(App.NODEJS).moves else None
        r.stopping.append(
            handover_ops.handover(
                c,
                s,
                App.NODEJS,
                m.release,
                r.release_dir,
                m.venv,
                r.rep,
                present=r.in_pm2,
                stop_old=stop_old,
            )
        )


def reload_apps(r: DeployRun) -> str:
    # PM2 numbers its apps from 0 again whenever its list empties. An app started into a list that
    # holds only the trial's apps being deleted (a first deploy; the first deploy into the apps' own
    # account) could be given the id of an app started after the list emptied, and a later delete of
    # that id takes both: wait for the trial's end.
    if How.START in (r.py, r.node) or any(
        r.plan.action(app).moves for app in (App.PYTHON, App.NODEJS)
    ):
        r.wait_stopped()
    try:
        reload_python(r)
        reload_node(r)
    except handover_ops.NotMoved:
        r.not_moved = True
        raise
    closes = r.plan.action(App.NODEJS).closes if r.node in (How.RELOAD, How.HANDOVER) else None
    closed = f" (closed {closes} open connection(s) of the old processes)" if closes else ""
    return f"{r.s.python_app}: {r.py}, {r.s.node_app}: {r.node}{closed}"


def restore_apps(r: DeployRun) -> str:
    """Bring the previous processes back (the undo of `reload apps`, also after a partial one)."""
    r.settle()
    touched = [
        name
        for name, how in ((r.s.python_app, r.py), (r.s.node_app, r.node))
        if how is not How.NONE
    ]
    r.error_logs = {name: pm2_ops.error_output(r.c, r.s, name) for name in touched}
    if r.py is How.TAKEOVER and r.not_moved:
        return "nothing was stopped: the unmanaged server still serves, and Nginx still sends to it"
    if r.py is How.TAKEOVER:
        r.takeover_restored = True
        return takeover_ops.restore(r.c, r.s)
    switch_back(r)
    running = {p.name for p in host_facts.gather(r.c, r.s).pm2}
    restore_python(r, running)
    restore_node(r, running)
    if not r.prev:  # a first deploy leaves nothing of its own behind
        for app in (r.s.handover_app, r.s.node_handover_app):
            if app in running:
                run(r.c, handover_ops.stop_temporary_command(r.c, r.s, app), warn=True)
    return (
        f"{r.s.python_app} and {r.s.node_app} back on {r.prev}"
        if r.prev
        else "apps of the first deploy removed"
    )


def restore_python(r: DeployRun, running: set[str]) -> None:
    c, s = r.c, r.s
    if r.py is How.HUP and r.prev:
        pm2_ops.hup_python(c, s)
    elif r.py is How.NEW_MASTER and r.prev and s.handover_app in running:
        # Nginx is on the temporary master (new release): bring the previous master back, then move
        # Nginx to it.
        pm2_ops.delete(c, s, s.python_app)
        pm2_ops.start(c, s, s.python_app)
        handover_ops.end_handover(c, s, App.PYTHON)
    elif r.py is How.START or not r.prev:
        pm2_ops.delete(c, s, s.python_app)


def restore_node(r: DeployRun, running: set[str]) -> None:
    c, s = r.c, r.s
    if r.node is How.RELOAD and r.prev:
        pm2_ops.reload_node(c, s)
    elif r.node is How.HANDOVER and r.prev and s.node_handover_app in running:
        pm2_ops.delete(c, s, s.node_app)
        pm2_ops.start(c, s, s.node_app)
        handover_ops.end_handover(c, s, App.NODEJS)
    elif r.node is How.HANDOVER and r.prev and s.node_app in running:
        # The handover was done: its processes run the new code from `current`, which points at the
        # previous release again: a rolling reload loads that, unless the handover was for what a
        # reload does not apply (mode, instances, script): then the previous entry starts anew.
        if r.plan.action(App.NODEJS).entry_changes:
            pm2_ops.delete(c, s, s.node_app)
            pm2_ops.start(c, s, s.node_app)
        else:
            pm2_ops.reload_node(c, s)
    elif r.node is How.START or not r.prev:
        pm2_ops.delete(c, s, s.node_app)


def reload_site(r: DeployRun) -> str:
    verdict = nginx_ops.reload_nginx(r.c, r.s, r.plan.site)
    return (
        f"Nginx serves the new site (new workers of pid {verdict['master']}, {verdict['seconds']}s)"
        + nginx_ops.draining_note(r.s, verdict)
    )


def health_gate(r: DeployRun) -> str:
    started, r.started_gate = r.started_gate, None
    drained: dict[str, Any] = {}
    problems = health.gate(
        r.c,
        r.s,
        r.release,
        r.release_dir,
        r.reloaded,
        report=r.seen,
        started=started,
        drained=drained,
        graceful=r.graceful,
    )
    if problems:
        raise fail("Health check failed after the switch:\n  " + "\n  ".join(problems))
    return "; ".join(
        filter(None, ["both apps answer, directly and through Nginx", health.drain_text(drained)])
    )


def finish(r: DeployRun) -> str:
    r.settle()
    # A HUP leaves PM2's process list as it was; anything else changes what a reboot must resurrect.
    saved = (r.py, r.node) not in (
        (How.HUP, How.NONE),
        (How.NONE, How.NONE),
    ) or processes.moves_processes(r)
    retired: list[str] = []
    if saved:
        pm2_ops.save(r.c, r.s)
        retired = upkeep.settle(
            r.c, r.s
        )  # restart counts from here on are crashes; gone pm_ids' logs removed
    # Our apps left in the deploy user's own PM2 in any state (stopped, errored: never moved) go
    # too, and its list is saved: else that PM2 would start them again at boot, beside the apps'
    # account's.
    ours = {r.s.python_app, r.s.node_app, r.s.handover_app, r.s.node_handover_app}
    left = sorted({p.name for p in r.facts.deploy_pm2} & ours)
    if left:  # one PM2 call for all of them
        pm2_ops.delete_as_deploy_user(r.c, r.s, *left)
        r.deploy_pm2_changed = True
    if r.deploy_pm2_changed:
        pm2_ops.save_as_deploy_user(r.c, r.s)
    m = r.plan.manifest
    running = (m.python_release, m.node_release, *(p["release"] for p in m.processes))
    pruned = releases.prune(r.c, r.s, r.s.keep_releases, r.release, r.prev, running)
    # Pruned releases may leave venvs and node_modules that no kept release names.
    unused = upkeep.prune_environments(r.c, r.s) if pruned else []
    r.record["files_changed"] = r.changed_files + (["nginx site"] if r.site_written else [])
    return (
        ("pm2 save" if saved else "PM2 list unchanged")
        + (f"; pruned {len(pruned)} old release(s)" if pruned else "")
        + (f"; removed {len(unused)} unused venv(s)/node_modules" if unused else "")
        + (f"; removed {len(retired)} log file(s) of processes gone" if retired else "")
    )


# ----------------------------------------------------------------------------- the user's hooks


def run_user_hook(r: DeployRun, hook: Hook, **extra_env: str) -> HookResult:
    env = {
        "DEPLOY_RELEASE": r.release,
        "DEPLOY_PREVIOUS": r.prev or "",
        "DEPLOY_SHA": r.plan.manifest.sha,
        **extra_env,
    }
    result = run_hook(
        r.c, r.s, hook, release_dir=r.release_dir, venv=r.plan.manifest.venv, env=env, say=r.rep.say
    )
    r.record.setdefault("hooks", {})[str(hook)] = result.record()
    return result


def before_switch(r: DeployRun) -> str:
    result = run_user_hook(r, Hook.BEFORE_SWITCH)
    if not result.ok:
        raise fail(
            f"{result.describe(r.s)}\nNothing was switched;"
            f" {trial.still_serving(r.facts.current_release)}. Fix the command (or BEFORE_SWITCH)"
            " and deploy again."
        )
    # The release remembers that it ran it: `rollback` warns that a migration is not undone.
    ran = {"before_switch": {"command": r.s.before_switch, "seconds": result.seconds}}
    run(r.c, f"cat > {q(r.release_dir)}/.signalcraft/hooks.json", stdin=json.dumps(ran) + "\n")
    return f"done in {result.seconds:.1f}s"


def after_switch(r: DeployRun) -> str:
    result = run_user_hook(r, Hook.AFTER_SWITCH)
    if result.ok:
        return f"done in {result.seconds:.1f}s"
    if r.s.after_switch_failure == "rollback":
        raise fail(
            f"{result.describe(r.s)}\nAFTER_SWITCH_FAILURE=rollback, so the deploy is rolled back."
        )
    r.rep.warn(f"{result.describe(r.s)}\nAFTER_SWITCH_FAILURE=warn: the deploy stands.")
    return f"failed ({result.record()['result']}); the deploy stands (AFTER_SWITCH_FAILURE=warn)"


def on_failure(r: DeployRun, outcome: Outcome) -> list[str]:
    """Best effort: its own failure is reported beside the deploy's error, never instead of it."""
    if not (r.s.on_failure and r.is_deploy):
        return []
    try:
        result = run_user_hook(
            r, Hook.ON_FAILURE, DEPLOY_RESULT=str(outcome), DEPLOY_ERROR=r.record.get("reason", "")
        )
    except Exit as err:
        return [f"ON_FAILURE could not run: {str(err.message).splitlines()[0]}"]
    return [] if result.ok else [f"ON_FAILURE failed too ({result.record()['result']})"]


def after_undo(r: DeployRun, outcome: Outcome) -> list[str]:
    """Once the steps are undone: after a switch, check what serves now and save PM2's list; then
    ON_FAILURE."""
    return restored_state(r, outcome) + on_failure(r, outcome)


def restored_state(r: DeployRun, outcome: Outcome) -> list[str]:
    if outcome is not Outcome.ROLLED_BACK:
        return []
    releases.mark_bad(r.c, r.s, r.release)
    if r.takeover_restored:
        return []  # the takeover's restore saved PM2's list of the old state
    if not r.prev:
        pm2_ops.save(r.c, r.s)
        return []
    checked = {App.PYTHON: r.py in (How.HUP, How.NEW_MASTER), App.NODEJS: r.node is not How.NONE}
    problems = health.gate(r.c, r.s, r.prev, f"{r.s.releases_dir}/{r.prev}", checked)
    pm2_ops.save(r.c, r.s)
    if r.deploy_pm2_changed:
        pm2_ops.save_as_deploy_user(r.c, r.s)
    return [
        (
            f"previous release {r.prev} is serving"
            if not problems
            else "previous release is NOT healthy either: " + "; ".join(problems)
        )
    ]


DEPLOY_STEPS: list[Step[DeployRun]] = [
    Step("record takeover", record_takeover, when=lambda r: r.py is How.TAKEOVER),
    Step(
        "put release on host",
        upload,
        undo=mark_release_bad,
        when=lambda r: r.shipment is not None and r.plan.new_release,
    ),
    Step("install dependencies", install),
    Step(
        "prepare app user",
        prepare_app_user,
        when=lambda r: r.moving or not r.facts.app_reaches_root,
    ),
    Step("show config changes", show_config_changes),
    Step(
        "start process trial",
        processes.start_process_trial,
        undo=processes.remove_process_trial,
        when=processes.has_trial,
        undoes_itself=True,
    ),
    Step("trial run", trial_run, when=lambda r: bool(r.plan.tried)),
    Step("check process trial", processes.check_process_trial, when=processes.has_trial),
    Step("write and check site", check_nginx, undo=restore_site),
    Step(
        "install certbot hook",
        lambda r: tls_ops.install_certbot_hook(r.c, r.s),
        when=lambda r: r.site_written and certbot_hook_path(r.s) is not None,
    ),
    Step(
        "before-switch hook", before_switch, when=lambda r: bool(r.s.before_switch) and r.is_deploy
    ),
    Step("switch current", switch_current, undo=switch_back, commits=True),
    Step("reload apps", reload_apps, undo=restore_apps, undoes_itself=True),
    # A handover has already moved Nginx to this site, verified, on its way back.
    Step(
        "reload nginx",
        reload_site,
        when=lambda r: r.site_written and not (r.py.hands_over or r.node.hands_over),
    ),
    Step("check health", health_gate),
    Step(
        "move processes",
        processes.move_processes,
        undo=processes.restore_processes,
        when=processes.moves_processes,
        undoes_itself=True,
    ),
    Step("after-switch hook", after_switch, when=lambda r: bool(r.s.after_switch) and r.is_deploy),
    Step("save and prune", finish),
]
