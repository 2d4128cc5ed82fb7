"""One host's deploy, rollback and list of releases: connect, take the deploy lock and read the
host, plan, run the steps, report and audit.

The order of a deploy is steps/deploy.py's `DEPLOY_STEPS`, run by steps/runner.py (which also
makes the connection again after a loss and retakes the lock). tasks/deploy.py calls these with one
host; steps/fleet.py reads and plans each host of a fleet with the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core import oldsite
from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.formats import FormatError
from signalcraft_deploy.core.plan import (
    How,
    Manifest,
    Plan,
    PlanError,
    as_recorded_host,
    make_plan,
    manifest_from,
    release_settings,
    unchanged,
)
from signalcraft_deploy.core.render import GUNICORN_CONF, render_nginx_site, written_by_us
from signalcraft_deploy.core.secrets import visible
from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import gunicorn as gunicorn_ops
from signalcraft_deploy.host import root
from signalcraft_deploy.host import takeover as takeover_ops
from signalcraft_deploy.host import tls as tls_ops
from signalcraft_deploy.host.connect import open_host
from signalcraft_deploy.host.io import ConnectionLost, fail, q, run, target_name
from signalcraft_deploy.host.lock import DeployLock, audit, who
from signalcraft_deploy.host.releases import previous_release, site_settings
from signalcraft_deploy.host.upkeep import require_space
from signalcraft_deploy.steps.deploy import DEPLOY_STEPS, DeployRun, after_undo
from signalcraft_deploy.steps.plan_report import print_plan
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import (
    Ended,
    Failure,
    Outcome,
    RunFailed,
    lost_outside_steps,
    run_steps,
)
from signalcraft_deploy.steps.upload import (
    Shipment,
    changed_since_live,
    git_shipment,
    local_shipment,
    redact,
    shipment_inputs,
    shipment_manifest,
    shipment_settings,
)


@dataclass(frozen=True)
class DeployOptions:
    """What a deploy or rollback was asked for besides its settings: its command-line flags."""

    dry_run: bool = False
    lock_wait: int = 0  # seconds to wait for another deploy's lock (0: stop at once)
    drop_directives: bool = False  # take over an old site even though directives are dropped
    known_hosts: str | None = None
    accept_new_host: bool = False
    batch: str = "1"  # several hosts: how many switch at once after the first
    on_failure: str = "rollback"  # several hosts: what the hosts already switched do on a failure


@dataclass(frozen=True)
class HostDeploy:
    """What one host's deploy (or rollback) shares once the host is read."""

    c: Any  # the host's Connection (a Context for this machine)
    s: Settings  # the settings for this host: its old site's, then its shipment's, applied
    rep: Reporter
    facts: HostFacts
    shipment: Shipment | None = None  # None: the release is on the host already (a rollback)


REQUIRED_TOOLS = {
    "pm2": "PM2 (npm install -g pm2)",
    "node": "Node.js (apt install nodejs)",
    "nginx": "Nginx (apt install nginx)",
    "python-venv": "a Python able to make a venv (apt install python3-venv, or set PYTHON)",
    "sudo": "passwordless sudo for this user (a sudoers line with NOPASSWD)",
    "flock": "flock (apt install util-linux)",
    "app-user": (
        "the apps' own account APP_USER, the deploy user's way to run them as it, and its place in"
        " their group"
    ),
}


def require_tools(facts: HostFacts) -> None:
    missing = [text for tool, text in REQUIRED_TOOLS.items() if tool not in facts.tools]
    if (
        "sudo" not in facts.tools
    ):  # nginx is looked for through sudo: without it, only sudo is the cause
        missing = [REQUIRED_TOOLS["sudo"]] + [
            m for m in missing if m not in (REQUIRED_TOOLS["sudo"], REQUIRED_TOOLS["nginx"])
        ]
    if missing:
        fix = (
            "Install it and deploy again."
            if "sudo" not in facts.tools
            else (
                "Run `setup` (fab -H <admin>@<host> setup --user <deploy user>, with the same"
                " settings, so that it knows APP_USER), which installs and creates what is missing,"
                " and deploy again; or set APP_USER to the deploy user's own name to run the apps"
                " as it."
            )
        )
        raise fail("The host lacks what a deploy needs: " + "; ".join(missing) + ". " + fix)


def warn_not_set_up(rep: Reporter, facts: HostFacts) -> None:
    """What `setup` leaves behind and a deploy does without: say so, and name `setup`."""
    missing = [
        text
        for tool, text in (
            ("boot", "PM2 does not start at boot (no enabled pm2-<user>.service naming this PM2)"),
            ("logrotate", "PM2's logs are not rotated (no /etc/logrotate.d/pm2-<user>)"),
        )
        if tool not in facts.tools
    ]
    if missing:
        user, _, where = rep.target.partition("@")
        how = (
            "invoke setup"
            if rep.target == "this machine"
            else f"by an account with full sudo: fab -H <admin>@{where} setup --user {user}"
        )
        rep.warn("; ".join(missing) + f". Run `setup` ({how}) once to fix this.")


# ----------------------------------------------------------------------------- deploy


def deploy_one(
    c: Any, s: Settings, rep: Reporter, shipment: Shipment | None, options: DeployOptions
) -> Ended | None:
    """Deploy to one host: connect, lock and read it, then report it unchanged, print the plan (a
    dry run) or carry the plan out. What is live at the end (None: a dry run)."""
    with rep.step("connect") as st:
        open_host(c, s, known_hosts=options.known_hosts, accept_new_host=options.accept_new_host)
        st.detail = target_name(c)
    info = {
        "who": who(),
        "sha": shipment.tree.sha if shipment else s.ref,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        **who(),
    }
    # One channel takes the lock and reads the host (files, processes, PM2): all a deploy that
    # changes nothing needs. The tool and port checks follow only when something will change.
    lock = (
        None
        if options.dry_run
        else DeployLock(
            c,
            s,
            info,
            options.lock_wait,
            rep.say,
            rep.warn,
            then=host_facts.facts_script(s, quick=True, c=c, start_pm2=True),
        )
    )
    # A lock whose connection was lost is released already: leaving it raises nothing.
    with lock if lock else nullcontext():
        try:
            with rep.step("read host") as st:
                h, plan = plan_host(read_host(c, s, rep, lock), shipment, options)
                st.detail = f"live: {h.facts.current_release or 'nothing yet'}"
            return deploy_read(h, plan, options)
        except ConnectionLost as lost:
            # a loss during the steps is a step's failure: this one was outside them
            raise fail(lost_outside_steps(lost, rep, f"fab -H {rep.target} deploy")) from None


def deploy_read(h: HostDeploy, plan: Plan | None, options: DeployOptions) -> Ended | None:
    """The host read and planned: say it has nothing to deploy, print the plan, or carry it out."""
    if h.shipment is None:
        h.rep.say(
            f"Dry run: the host's mirror of {redact(h.s.repo_url)} does not have {h.s.ref} yet (or"
            " there is no mirror): a deploy would fetch it first. Nothing was fetched or changed."
        )
    elif plan is None or (plan.nothing_to_do and not options.dry_run):
        release, sha = (
            (plan.manifest.release, plan.manifest.sha)
            if plan
            else (h.facts.current_release or "", h.shipment.tree.sha)
        )
        report_unchanged(h, release, sha)
        return Ended(release, changed=False)
    elif options.dry_run:
        print_plan(h.rep, h.s, plan, h.facts)
        h.rep.say("Dry run: nothing was changed.")
    else:
        return deploy_planned(h, plan, options.drop_directives)
    return None


def local_shipment_or_exit(s: Settings, rep: Reporter) -> Shipment | None:
    try:
        shipment = local_shipment(s) if s.source == "upload" else None
    except SettingsError as err:
        raise Exit(f"Settings error: {err}", code=2) from None
    if shipment and shipment.tree.dirty:
        rep.warn(
            f"{shipment.tree.dirty} uncommitted change(s) in {s.source_dir} are not deployed; "
            f"deploying commit {shipment.tree.sha[:12]}"
        )
    return shipment


def read_host(c: Any, s: Settings, rep: Reporter, lock: DeployLock | None) -> HostDeploy:
    """The host as it is (read as the lock was taken; without a lock, a dry run, read now), with the
    settings a site taken over kept."""
    if lock:
        facts = host_facts.parse_facts(lock.read_then())
    else:
        facts = host_facts.gather(c, s)
        require_tools(facts)
    s = host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json")
    return HostDeploy(c, as_recorded_host(s, facts.manifest), rep, facts)


def plan_host(
    h: HostDeploy, shipment: Shipment | None, options: DeployOptions, now: datetime | None = None
) -> tuple[HostDeploy, Plan | None]:
    """The host with its shipment (None: a dry run whose REF the host's mirror lacks) and the
    settings for it (the shipment's Node.js entry point, what a takeover kept of its old site); and
    the plan (None when nothing changed: decided from digests, nothing rendered)."""
    if shipment is None:
        try:
            shipment = git_shipment(h.c, h.s, dry_run=options.dry_run)
        except SettingsError as err:
            raise fail(str(err), code=2) from None
        if shipment is None:
            return h, None  # a dry run, and the host's mirror does not have REF yet
    try:  # a Procfile or NODE_INSTANCES the app refuses (a session-bound app)
        h = replace(h, s=shipment_settings(h.s, shipment), shipment=shipment)
    except SettingsError as err:
        raise fail(f"Settings error: {err}", code=2) from None
    if (
        not options.dry_run
        and h.facts.current_release is not None
        and unchanged(h.s, shipment_inputs(h.s, shipment), h.facts)
    ):
        return h, None
    s, plan = site_plan(h, options.drop_directives, now=now)
    if plan.action(App.PYTHON).how is How.HUP and h.facts.gunicorn is None:
        # Whether a HUP can load the new code is Gunicorn's configuration's to say (preload_app).
        h.facts.gunicorn = gunicorn_ops.effective_config(
            h.c, s, h.facts, plan.configs[GUNICORN_CONF]
        )
        s, plan = site_plan(replace(h, s=s), options.drop_directives, made=plan)
    return replace(h, s=s), plan


def host_settings(s: Settings, values: dict[str, str], where: str) -> Settings:
    try:
        return oldsite.apply(s, values, where)
    except SettingsError as err:
        raise fail(str(err), code=2) from None


def plan_or_exit(
    s: Settings,
    manifest: Manifest,
    configs: dict[str, str],
    facts: HostFacts,
    changed: list[str] | None = None,
) -> Plan:
    try:
        return make_plan(s, manifest, configs, facts, changed)
    except PlanError as err:
        raise fail(f"Nothing was changed: {err}") from None


def site_plan(
    h: HostDeploy, drop: bool, now: datetime | None = None, made: Plan | None = None
) -> tuple[Settings, Plan]:
    """The plan (from `made`'s manifest when there is one, so the release keeps its name); at a
    takeover of a site we did not write, with the settings its old site implies."""
    s, facts = h.s, h.facts
    foreign = facts.complete and facts.site_text is not None and not written_by_us(facts.site_text)
    old = oldsite.read(s, facts.site_text or "") if foreign else None
    if old:  # taken over with the Python server, or refused by make_plan
        s = host_settings(s, old.settings, f"the old site {s.nginx_site}")
    if made is not None:
        manifest, configs, changed = made.manifest, made.configs, made.changed
    else:
        assert h.shipment is not None
        manifest, configs = shipment_manifest(s, h.shipment, now)
        changed = changed_since_live(h.c, s, h.shipment, facts)
    plan = plan_or_exit(s, manifest, configs, facts, changed)
    if old is None or plan.action(App.PYTHON).how is not How.TAKEOVER:
        return s, plan
    if old.dropped and not drop:
        raise fail(
            f"Nothing was changed: the site {s.nginx_site} being taken over has directives the new"
            " site would drop:\n  "
            + "\n  ".join(old.dropped)
            + "\nKeep them as named, or pass --drop-directives to go ahead without them."
        )
    plan.extras, plan.extras_lines, plan.site_defaults = (
        old.extras_text(),
        tuple(old.extras_lines),
        old.settings,
    )
    return s, plan


def check_tls(c: Any, s: Settings, rep: Reporter) -> None:
    """Before a site with TLS is written: the certificate and key can serve it (else stop, host
    untouched)."""
    verdict = tls_ops.inspect(c, s)
    if verdict.get("problems"):
        raise fail(
            "Nothing was changed: the TLS certificate cannot serve this site:\n  "
            + "\n  ".join(verdict["problems"])
        )
    warning = tls_ops.expiry_warning(verdict.get("days_left"))
    if warning:
        rep.warn(warning)


def plan_step(h: HostDeploy, plan: Plan, drop: bool = False) -> tuple[HostDeploy, Plan]:
    """The rest of the host's facts (tools, who listens on our ports), and the plan made again with
    them."""
    with h.rep.step("plan") as st:
        host_facts.add_host_checks(h.c, h.s, h.facts)
        require_tools(h.facts)
        # before anything changes: the root helper is this version's (installed if we may)
        root.ensure(h.c, h.facts.helper)
        require_space(h.c, h.s, h.facts)
        s, plan = site_plan(h, drop, made=plan)  # again, now with who listens on our ports
        h = replace(h, s=s)
        if s.tls and plan.action(App.NGINX).how is How.WRITE_AND_RELOAD:
            check_tls(h.c, s, h.rep)
        st.detail = ", ".join(
            [a.shown for a in plan.actions] + [f"{a.name}: {a.how}" for a in plan.processes]
        )
    warn_not_set_up(h.rep, h.facts)
    return h, plan


def deploy_planned(h: HostDeploy, plan: Plan, drop: bool = False) -> Ended:
    h, plan = plan_step(h, plan, drop)
    try:
        done = carry_out(h, plan, "deploy")
    except Exit as err:
        h.rep.error(str(err.message))
        summarize(h, plan, ok=False)
        raise
    summarize(h, plan, ok=True, pm2_state=done.seen)
    return Ended(plan.manifest.release)


def carry_out(h: HostDeploy, plan: Plan, event: str) -> DeployRun:
    """Run the deploy's steps for a plan."""
    state = new_run(h, plan, event)
    try:
        run_steps(state, DEPLOY_STEPS, after_undo=after_undo)
    except SettingsError as err:
        raise fail(str(err), code=2) from None
    except Failure as failure:
        back = failure.outcome is Outcome.ROLLED_BACK
        message = rolled_back_message(state, failure) if back else str(failure.error.message)
        code = failure.error.code if not back else 1
        raise RunFailed(
            visible(message), failure.step, failure.outcome, state.release, code
        ) from None
    return state


def new_run(h: HostDeploy, plan: Plan, event: str, **extra: Any) -> DeployRun:
    """The state the steps of one host's deploy (or rollback) share; `extra` goes into its audit
    record."""
    m, facts = plan.manifest, h.facts
    prev = (
        facts.current_release
        if facts.current_release != m.release
        else previous_release(facts, m.release)
    )
    record: dict[str, Any] = {
        "event": event,
        "by": who(),
        "host": h.rep.target,
        "from": facts.current_release,
        "to": m.release,
        "sha": m.sha,
        "actions": {str(a.app): str(a.how) for a in plan.actions},
        **({"processes": {a.name: str(a.how) for a in plan.processes}} if plan.processes else {}),
        **extra,
    }
    return DeployRun(h.c, h.s, h.rep, plan, facts, h.shipment, record, prev=prev)


def rolled_back_message(state: DeployRun, failure: Failure) -> str:
    back_to = (
        "the state before the takeover"
        if state.takeover_restored
        else state.prev or "nothing (first deploy)"
    )
    notes = "".join(f"\n  {note}" for note in failure.notes)
    tails = "\n".join(
        f"--- last output of {name} ---\n{text}"
        for name, text in state.error_logs.items()
        if text.strip()
    )
    return (
        f"{failure.message}\nRolled back to {back_to}; release {state.release} is marked"
        f" bad.{notes}\n{tails}"
    )


def report_unchanged(h: HostDeploy, release: str, sha: str, **extra: Any) -> None:
    h.rep.say(
        f"Nothing to deploy: {release} (commit {sha[:12]}) is live and unchanged; no file written,"
        " no app reloaded."
    )
    audit(
        h.c,
        h.s,
        {
            "event": "deploy",
            "result": str(Outcome.UNCHANGED),
            "by": who(),
            "host": h.rep.target,
            "to": release,
            "sha": sha,
            **extra,
        },
    )


def pm2_lines(s: Settings, state: dict[str, list[dict[str, Any]]]) -> list[str]:
    """PM2's view of our two apps, one line each (mode, count, states, restarts, pids; never env
    values)."""
    lines = []
    # the web apps, then the Procfile's processes a deploy moved (steps/processes.py)
    for name in (s.python_app, s.node_app, *sorted(set(state) - {s.python_app, s.node_app})):
        mine = state.get(name, [])
        states = ",".join(sorted({str(p["status"]) for p in mine})) or "missing"
        lines.append(
            f"  {name:<28} {(mine[0]['mode'] if mine else '-'):<8} x{len(mine)}  {states:<8}"
            f" restarts {sum(int(p['restarts'] or 0) for p in mine)}  pids"
            f" {' '.join(str(p['pid']) for p in mine)}"
        )
    return lines


def drain_lines(rep: Reporter) -> list[str]:
    """What the old processes were still finishing when the deploy went on (the health gate's and
    a handover's words), for the summary."""
    return [
        part.strip()
        for step in rep.steps
        for part in step.detail.split("; ")
        if "drained in" in part or "still finishing" in part
    ]


def summarize(h: HostDeploy, plan: Plan, ok: bool, pm2_state: dict[str, Any] | None = None) -> None:
    rep, s, m = h.rep, h.s, plan.manifest
    total = sum(step.seconds for step in rep.steps)
    if ok:
        host = getattr(h.c, "host", "127.0.0.1") or "127.0.0.1"
        scheme, first = ("https", s.tls_listen[0]) if s.tls else ("http", s.nginx_listen[0])
        port = "" if first.port == (443 if s.tls else 80) else f":{first.port}"
        host = first.host if first.host and not first.wildcard and ":" not in first.host else host
        rep.say(f"Deployed {m.release} (commit {m.sha[:12]}) to {rep.target} in {total:.1f}s.")
        rep.say(f"  Node.js: {scheme}://{host}{port}{s.health_node}")
        rep.say(
            "  Flask:   "
            + "  ".join(
                f"{scheme}://{host}{port}{p}" for p, app in s.route_table if app == App.PYTHON
            )
        )
        for line in pm2_lines(s, pm2_state or {}):
            rep.say(line)
        for drain in drain_lines(rep):
            rep.say(f"  {drain}")
        if h.facts.maintenance and h.facts.maintenance["on"]:
            rep.say(f"  {MAINTENANCE_STILL_ON}")
    reloads = ", ".join(a.shown for a in plan.actions)
    rep.write_github_summary(
        f"Deploy {'succeeded' if ok else 'failed'}: {m.release}",
        [
            f"- commit `{m.sha[:12]}`, apps: {reloads}",
            f"- roll back with `fab -H {rep.target} rollback`",
        ],
    )


# ----------------------------------------------------------------------------- rollback


def rollback_one(
    c: Any, s: Settings, rep: Reporter, to: str | None, options: DeployOptions
) -> Ended:
    """Return one host to the release before its current one (or `to`), under the deploy lock."""
    open_host(c, s, known_hosts=options.known_hosts, accept_new_host=options.accept_new_host)
    info = {"event": "rollback", "since": datetime.now(UTC).isoformat(timespec="seconds"), **who()}
    with DeployLock(c, s, info, 0, rep.say, rep.warn):
        facts = host_facts.gather(c, s, start_pm2=True)
        root.ensure(c, facts.helper)  # before anything changes
        s = host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json")
        s = as_recorded_host(s, facts.manifest)
        target = to or previous_release(facts, facts.current_release)
        if (to == "before-takeover" or not target) and takeover_ops.recorded(c, s):
            rollback_takeover(c, s, rep, facts)
            return Ended("before-takeover")
        if not target or target not in facts.releases:
            raise fail(
                f"No release to roll back to (asked for {to or 'the previous one'}; on the host: "
                f"{', '.join(facts.releases) or 'none'}). See `releases`."
            )
        own, plan = rollback_plan(c, s, facts, target, rep.warn)
        rep.say(f"Rolling back {facts.current_release} -> {target}")
        warn_of_migrations(c, s, rep, facts.current_release)
        carry_out(HostDeploy(c, own, rep, facts), plan, "rollback")
        run(c, f"rm -f {q(s.state_dir)}/bad/{q(target)}", warn=True)
    rep.say(f"Rolled back to {target}.")
    if facts.maintenance and facts.maintenance["on"]:
        rep.say(f"  {MAINTENANCE_STILL_ON}")
    return Ended(target)


MAINTENANCE_STILL_ON = (
    "Maintenance mode is still ON: clients get its 503 page; `maintenance off` opens the site."
)


def rollback_plan(
    c: Any, s: Settings, facts: HostFacts, target: str, warn: Callable[[str], None]
) -> tuple[Settings, Plan]:
    """The plan that returns to a release already on the host: its own manifest, configs and Nginx
    site, nothing uploaded; with the settings the release runs with."""
    raw = run(
        c, f"cat {q(s.releases_dir + '/' + target)}/.signalcraft/manifest.json", warn=True
    ).stdout
    try:
        manifest = manifest_from(json.loads(raw), f"Release {target}")
    except FormatError as err:
        raise fail(f"{err} Nothing was changed.") from None
    except (ValueError, TypeError, AttributeError):
        raise fail(
            f"Release {target} has no readable manifest; roll back with --to another release."
        ) from None
    configs = {}
    for name in (GUNICORN_CONF, manifest.ecosystem):
        configs[name] = run(
            c, f"cat {q(s.releases_dir + '/' + target + '/' + name)}", warn=True
        ).stdout
    here = s.singleton_host  # the fleet's first host or not: what validating settings again loses
    s = replace(
        release_settings(site_settings(c, s, target, warn), json.loads(raw)), singleton_host=here
    )
    plan = plan_or_exit(s, manifest, configs, facts)
    if plan.action(App.PYTHON).how is How.HUP and facts.gunicorn is None:
        # As in a deploy: a preloaded master (now, or the target's conf) needs a new master.
        facts.gunicorn = gunicorn_ops.effective_config(c, s, facts, configs[GUNICORN_CONF])
        plan = plan_or_exit(s, manifest, configs, facts)
    plan.new_release, plan.build_venv = (
        False,
        manifest.venv.rsplit("/", 1)[-1] not in facts.venvs_ready,
    )
    plan.site = render_nginx_site(s)
    return s, plan


def warn_of_migrations(c: Any, s: Settings, rep: Reporter, release: str | None) -> None:
    """A release that ran BEFORE_SWITCH (a migration, say) leaves it in place: the older code meets
    what it did."""
    raw = run(
        c,
        f"cat {q(s.releases_dir + '/' + (release or '-'))}/.signalcraft/hooks.json 2>/dev/null",
        warn=True,
    ).stdout
    try:
        ran = json.loads(raw).get("before_switch") if raw.strip() else None
    except ValueError:
        ran = None
    if ran:
        rep.warn(
            f"{release} ran BEFORE_SWITCH (`{ran.get('command')}`) when it was deployed; a rollback"
            " does not undo it (a database migration stays applied): the release rolled back to"
            " must work with it."
        )


def rollback_takeover(c: Any, s: Settings, rep: Reporter, facts: HostFacts) -> None:
    rep.say(f"Rolling back {facts.current_release} -> the state before the first deploy took over")
    note = takeover_ops.restore(c, s)
    audit(
        c,
        s,
        {
            "event": "rollback",
            "result": str(Outcome.OK),
            "by": who(),
            "host": rep.target,
            "from": facts.current_release,
            "to": "before-takeover",
        },
    )
    rep.say(f"Rolled back: {note}; the old Node.js entry and Nginx site are back.")


# ----------------------------------------------------------------------------- releases


def print_releases(c: Any, s: Settings) -> None:
    """The releases on the host, newest first, marking the current one and bad ones."""
    facts = host_facts.gather(c, s)
    if not facts.releases:
        print(f"No releases under {s.releases_dir}.")
        return
    for name in reversed(facts.releases):
        mark = "* " if name == facts.current_release else "  "
        flag = "  (bad: failed its deploy)" if name in facts.bad_releases else ""
        print(f"{mark}{name}{flag}")
