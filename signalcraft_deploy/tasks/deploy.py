"""`deploy`, `rollback` and `releases`: read the host, plan, and carry the plan out as steps.

The order of a deploy is `steps/deploy.py`'s `DEPLOY_STEPS`, run by `steps/runner.py`. Steps run
inside this task (never as `pre=` tasks, which under `fab -H` would run locally).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from invoke import Collection, task
from invoke.exceptions import Exit

from signalcraft_deploy.core import oldsite
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.formats import FormatError
from signalcraft_deploy.core.plan import (
    App,
    How,
    Manifest,
    Plan,
    PlanError,
    make_plan,
    manifest_from,
    release_settings,
    unchanged,
)
from signalcraft_deploy.core.render import GUNICORN_CONF, render_nginx_site, written_by_us
from signalcraft_deploy.core.settings import Settings, SettingsError
from signalcraft_deploy.executor import fleet_aware, fleet_hosts
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import root
from signalcraft_deploy.host import takeover as takeover_ops
from signalcraft_deploy.host import tls as tls_ops
from signalcraft_deploy.host.connect import HOST_HELP, open_host, settings_for
from signalcraft_deploy.host.hooks import Hook
from signalcraft_deploy.host.io import ConnectionLost, fail, q, run, target_name
from signalcraft_deploy.host.lock import DeployLock, audit, who
from signalcraft_deploy.host.releases import previous_release, site_settings
from signalcraft_deploy.host.upkeep import require_space
from signalcraft_deploy.steps import fleet as fleet_steps
from signalcraft_deploy.steps.deploy import DEPLOY_STEPS, DeployRun, after_undo, config_diffs
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Failure, Outcome, lost_outside_steps, run_steps
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


def print_plan(rep: Reporter, s: Settings, plan: Plan, facts: HostFacts) -> None:
    m = plan.manifest
    rep.say(f"Plan for {rep.target}:")
    if plan.nothing_to_do:
        rep.say(f"  nothing to do: {m.release} is live and both apps are online.")
        return
    if plan.new_release:
        rep.say(
            f"  release   {m.release} (commit {m.sha[:12]}) replaces"
            f" {facts.current_release or 'nothing'}"
        )
        rep.say(f"  upload    git archive of {m.tree[:12]} -> {s.releases_dir}/{m.release}")
    rep.say(
        f"  install   venv {m.venv}:"
        f" {'build (requirements changed)' if plan.build_venv else 'reuse'}"
    )
    if m.node_modules:
        how = (
            (
                f"{m.node_install or 'npm ci'}"
                + (
                    ""
                    if m.node_install != "npm install"
                    else " (no package-lock.json: once per distinct package.json)"
                )
            )
            if plan.build_node_modules
            else "reuse"
        )
        rep.say(f"            node_modules {m.node_modules}: {how}")
    if m.node_script:
        rep.say(
            f"  node      entry {m.node_script} ({s.origins.get('NODE_SCRIPT', 'default')}), PM2"
            f" file {m.ecosystem}"
        )
    if s.shared_paths:
        rep.say(
            f"  shared    {', '.join(s.shared_paths)}: kept in {s.shared_dir}/, linked into the"
            " release"
        )
    if m.app_env:
        rep.say(
            "  secrets   the release's own .env (mode 0600)"
            + (" carried from the live release" if not s.app_env_file else " from APP_ENV_FILE")
        )
    rep.say("  trial     " + trial_line(s, plan.tried))
    for a in plan.actions:
        rep.say(f"  {a.app:<9} {a.how.description} ({a.why})")
    rep.say(
        "  health    both apps directly and through Nginx, from the new release; roll back on"
        " failure"
    )
    for line in hook_lines(s):
        rep.say(line)
    if plan.site_defaults:
        rep.say(
            "  site      kept from the old site: "
            + ", ".join(f"{k}={v}" for k, v in sorted(plan.site_defaults.items()))
        )
    for diff in config_diffs(facts, plan, s):
        rep.say(diff.rstrip("\n"))


def trial_line(s: Settings, tried: tuple[App, ...]) -> str:
    """What the plan says of the trial run: which apps it starts (those whose own processes load new code)."""
    if len(tried) == 2:
        return (
            "start both apps from the new release on spare loopback ports; call their health routes"
        )
    if tried:
        return (
            f"start {tried[0].pm2_name(s)} from the new release on a spare loopback port; call its"
            " health route"
        )
    return (
        "none: no app's own processes load new code (a handover copy is checked before Nginx moves"
        " to it)"
    )


HOOK_PLACES = {
    Hook.BEFORE_SWITCH: (
        "once, in the new release after the trial run, before the switch; a failure stops the"
        " deploy"
    ),
    Hook.AFTER_SWITCH: "in the new release once the health gate has passed",
    Hook.ON_FAILURE: "after a failed deploy has been undone (best effort)",
}


def hook_lines(s: Settings) -> list[str]:
    """The hooks a deploy would run, and where (for --dry-run)."""
    lines = []
    for hook, where in HOOK_PLACES.items():
        command = hook.command(s)
        if command:
            on_fail = f"; on failure: {s.after_switch_failure}" if hook is Hook.AFTER_SWITCH else ""
            lines.append(
                f"  hook      {hook.key} `{command}`: {where}{on_fail} (time limit"
                f" {s.hook_timeout} s)"
            )
    return lines


def carry_out(
    c: Any,
    s: Settings,
    rep: Reporter,
    plan: Plan,
    facts: HostFacts,
    shipment: Shipment | None,
    event: str,
) -> DeployRun:
    """Run the deploy's steps for a plan. `shipment` is None when the release is already on the host (rollback)."""
    state = new_run(c, s, rep, plan, facts, shipment, event)
    try:
        run_steps(state, DEPLOY_STEPS, after_undo=after_undo)
    except SettingsError as err:
        raise fail(str(err), code=2) from None
    except Failure as failure:
        if failure.outcome is not Outcome.ROLLED_BACK:
            raise failure.error from None
        raise fail(rolled_back_message(state, failure)) from None
    return state


def new_run(
    c: Any,
    s: Settings,
    rep: Reporter,
    plan: Plan,
    facts: HostFacts,
    shipment: Shipment | None,
    event: str,
    **extra: Any,
) -> DeployRun:
    """The state the steps of one host's deploy (or rollback) share; `extra` goes into its audit record."""
    m = plan.manifest
    prev = (
        facts.current_release
        if facts.current_release != m.release
        else previous_release(facts, m.release)
    )
    record: dict[str, Any] = {
        "event": event,
        "by": who(),
        "host": rep.target,
        "from": facts.current_release,
        "to": m.release,
        "sha": m.sha,
        "actions": {str(a.app): str(a.how) for a in plan.actions},
        **extra,
    }
    return DeployRun(c, s, rep, plan, facts, shipment, record, prev=prev)


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


def report_unchanged(
    c: Any, s: Settings, rep: Reporter, release: str, sha: str, **extra: Any
) -> None:
    rep.say(
        f"Nothing to deploy: {release} (commit {sha[:12]}) is live and unchanged; no file written,"
        " no app reloaded."
    )
    audit(
        c,
        s,
        {
            "event": "deploy",
            "result": str(Outcome.UNCHANGED),
            "by": who(),
            "host": rep.target,
            "to": release,
            "sha": sha,
            **extra,
        },
    )


DEPLOY_HELP = {
    **HOST_HELP,
    "dry-run": "read the host and print the plan (steps, diffs, reloads) without changing anything",
    "lock-wait": "seconds to wait for another deploy to finish (default 0: stop at once)",
    "ref": "git ref to deploy when SOURCE=git (overrides REF)",
    "source-dir": "local app folder to ship when SOURCE=upload (overrides SOURCE_DIR)",
    "batch": (
        "with several hosts (-H a,b,c): how many switch at once after the first, a count or a"
        " percentage (default 1)"
    ),
    "on-failure": (
        "with several hosts: 'rollback' (default) returns the hosts already switched when one"
        " fails; 'keep' leaves them on the new release"
    ),
    "drop-directives": (
        "take over the old Nginx site even though the new one drops the directives listed"
    ),
}


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


def read_host(
    c: Any,
    s: Settings,
    lock: DeployLock | None,
    shipment: Shipment | None,
    dry_run: bool,
    now: datetime | None = None,
    drop: bool = False,
) -> tuple[HostFacts, Shipment | None, Plan | None, Settings]:
    """The host as it is, the shipment (None: a dry run whose REF the host's mirror lacks), the plan (None when nothing
    changed: decided from digests, nothing rendered), and the settings for this host (the shipment's Node.js entry
    point, and what a takeover kept of its old site)."""
    if lock:
        facts = host_facts.parse_facts(lock.read_then())
    else:
        facts = host_facts.gather(c, s)
        require_tools(facts)
    s = host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json")
    if shipment is None:
        try:
            shipment = git_shipment(c, s, dry_run=dry_run)
        except SettingsError as err:
            raise fail(str(err), code=2) from None
        if shipment is None:
            return facts, None, None, s  # a dry run, and the host's mirror does not have REF yet
    s = shipment_settings(s, shipment)
    if (
        not dry_run
        and facts.current_release is not None
        and unchanged(s, shipment_inputs(s, shipment), facts)
    ):
        return facts, shipment, None, s
    s, plan = site_plan(c, s, shipment, facts, drop, now=now)
    return facts, shipment, plan, s


def host_settings(s: Settings, values: dict[str, str], where: str) -> Settings:
    try:
        return oldsite.apply(s, values, where)
    except SettingsError as err:
        raise fail(str(err), code=2) from None


def site_plan(
    c: Any,
    s: Settings,
    shipment: Shipment | None,
    facts: HostFacts,
    drop: bool,
    now: datetime | None = None,
    made: Plan | None = None,
) -> tuple[Settings, Plan]:
    """The plan (from `made`'s manifest when there is one, so the release keeps its name); at a takeover of a site we
    did not write, with the settings its old site implies."""
    foreign = facts.complete and facts.site_text is not None and not written_by_us(facts.site_text)
    old = oldsite.read(s, facts.site_text or "") if foreign else None
    if old:  # taken over with the Python server, or refused by make_plan
        s = host_settings(s, old.settings, f"the old site {s.nginx_site}")
    if made is not None:
        manifest, configs, changed = made.manifest, made.configs, made.changed
    else:
        assert shipment is not None
        manifest, configs = shipment_manifest(s, shipment, now)
        changed = changed_since_live(c, s, shipment, facts)
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
    """Before a site with TLS is written: the certificate and key can serve it (else stop, host untouched)."""
    verdict = tls_ops.inspect(c, s)
    if verdict.get("problems"):
        raise fail(
            "Nothing was changed: the TLS certificate cannot serve this site:\n  "
            + "\n  ".join(verdict["problems"])
        )
    warning = tls_ops.expiry_warning(verdict.get("days_left"))
    if warning:
        rep.warn(warning)


def plan_step(
    c: Any, s: Settings, rep: Reporter, facts: HostFacts, plan: Plan, drop: bool = False
) -> tuple[Settings, Plan]:
    """The rest of the host's facts (tools, who listens on our ports), and the plan made again with them."""
    with rep.step("plan") as st:
        host_facts.add_host_checks(c, s, facts)
        require_tools(facts)
        root.ensure(
            c, facts.helper
        )  # before anything changes: the root helper is this version's (installed if we may)
        require_space(c, s, facts)
        s, plan = site_plan(
            c, s, None, facts, drop, made=plan
        )  # again, now with who listens on our ports
        if s.tls and plan.action(App.NGINX).how is How.WRITE_AND_RELOAD:
            check_tls(c, s, rep)
        st.detail = ", ".join(f"{a.app}: {a.how}" for a in plan.actions)
    warn_not_set_up(rep, facts)
    return s, plan


def deploy_planned(
    c: Any,
    s: Settings,
    rep: Reporter,
    facts: HostFacts,
    shipment: Shipment,
    plan: Plan,
    drop: bool = False,
) -> None:
    s, plan = plan_step(c, s, rep, facts, plan, drop)
    try:
        done = carry_out(c, s, rep, plan, facts, shipment, "deploy")
    except Exit as err:
        rep.error(str(err.message))
        summarize(rep, s, plan, ok=False)
        raise
    summarize(rep, s, plan, ok=True, c=c, pm2_state=done.seen)


@fleet_aware
@task(iterable=["set_"], help=DEPLOY_HELP)
def deploy(
    c,
    dry_run=False,
    lock_wait=0,
    ref=None,
    source_dir=None,
    known_hosts=None,
    accept_new_host=False,
    batch=None,
    on_failure=None,
    drop_directives=False,
    env_file=None,
    set_=None,
):
    """Deploy the app: ship, install, render-configs, nginx-check, pm2-reload by what changed, health-check."""
    s = settings_for(env_file, set_, REF=ref, SOURCE_DIR=source_dir)
    batch, on_failure = fleet_steps.check_batch(batch), fleet_steps.check_on_failure(on_failure)
    rep = Reporter(target_name(c))
    shipment = local_shipment_or_exit(s, rep)
    if len(hosts := fleet_hosts(c)) > 1:
        return fleet_tasks.deploy_fleet(
            hosts,
            s,
            shipment,
            dry_run=dry_run,
            lock_wait=int(lock_wait or 0),
            known_hosts=known_hosts,
            accept_new_host=accept_new_host,
            batch=batch,
            on_failure=on_failure,
        )
    with rep.step("connect") as st:
        open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
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
        if dry_run
        else DeployLock(
            c,
            s,
            info,
            int(lock_wait or 0),
            rep.say,
            rep.warn,
            then=host_facts.facts_script(s, quick=True, c=c, start_pm2=True),
        )
    )
    # A lock whose connection was lost is released already: leaving it raises nothing.
    with lock if lock else nullcontext():
        try:
            with rep.step("read host") as st:
                facts, shipment, plan, s = read_host(
                    c, s, lock, shipment, dry_run, drop=drop_directives
                )
                st.detail = f"live: {facts.current_release or 'nothing yet'}"
            if shipment is None:
                rep.say(
                    f"Dry run: the host's mirror of {redact(s.repo_url)} does not have {s.ref} yet"
                    " (or there is no mirror): a deploy would fetch it first. Nothing was fetched"
                    " or changed."
                )
            elif plan is None or (plan.nothing_to_do and not dry_run):
                release, sha = (
                    (plan.manifest.release, plan.manifest.sha)
                    if plan
                    else (facts.current_release or "", shipment.tree.sha)
                )
                report_unchanged(c, s, rep, release, sha)
            elif dry_run:
                print_plan(rep, s, plan, facts)
                rep.say("Dry run: nothing was changed.")
            else:
                deploy_planned(c, s, rep, facts, shipment, plan, drop_directives)
        except ConnectionLost as lost:
            # a loss during the steps is a step's failure: this one was outside them
            raise fail(lost_outside_steps(lost, rep, f"fab -H {rep.target} deploy")) from None


def pm2_lines(s: Settings, state: dict[str, list[dict[str, Any]]]) -> list[str]:
    """PM2's view of our two apps, one line each (mode, count, states, restarts, pids; never env values)."""
    lines = []
    for name in (s.python_app, s.node_app):
        mine = state.get(name, [])
        states = ",".join(sorted({str(p["status"]) for p in mine})) or "missing"
        lines.append(
            f"  {name:<28} {(mine[0]['mode'] if mine else '-'):<8} x{len(mine)}  {states:<8}"
            f" restarts {sum(int(p['restarts'] or 0) for p in mine)}  pids"
            f" {' '.join(str(p['pid']) for p in mine)}"
        )
    return lines


def summarize(
    rep: Reporter,
    s: Settings,
    plan: Plan,
    ok: bool,
    c: Any = None,
    pm2_state: dict[str, Any] | None = None,
) -> None:
    m = plan.manifest
    total = sum(step.seconds for step in rep.steps)
    if ok:
        host = getattr(c, "host", "127.0.0.1") or "127.0.0.1"
        scheme, first = ("https", s.tls_listen[0]) if s.tls else ("http", s.nginx_listen[0])
        port = "" if first.port == (443 if s.tls else 80) else f":{first.port}"
        host = first.host if first.host and not first.wildcard and ":" not in first.host else host
        rep.say(f"Deployed {m.release} (commit {m.sha[:12]}) to {rep.target} in {total:.1f}s.")
        rep.say(f"  Node.js: {scheme}://{host}{port}{s.health_node}")
        rep.say(
            "  Flask:   "
            + "  ".join(
                f"{scheme}://{host}{port}{p}" for p, app in s.route_table if app == "python"
            )
        )
        for line in pm2_lines(s, pm2_state or {}):
            rep.say(line)
    reloads = ", ".join(f"{a.app}: {a.how}" for a in plan.actions)
    rep.write_github_summary(
        f"Deploy {'succeeded' if ok else 'failed'}: {m.release}",
        [
            f"- commit `{m.sha[:12]}`, apps: {reloads}",
            f"- roll back with `fab -H {rep.target} rollback`",
        ],
    )


ROLLBACK_HELP = {
    **HOST_HELP,
    "batch": DEPLOY_HELP["batch"],
    "on-failure": DEPLOY_HELP["on-failure"],
    "to": (
        "release to return to (default: the one before the current; "
        "'before-takeover' returns to the host as it was before the first deploy)"
    ),
}


def rollback_plan(
    c: Any, s: Settings, facts: HostFacts, target: str, warn: Callable[[str], None]
) -> tuple[Settings, Plan]:
    """The plan that returns to a release already on the host: its own manifest, configs and Nginx site, nothing
    uploaded; with the settings the release runs with."""
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
    s = release_settings(site_settings(c, s, target, warn), json.loads(raw))
    plan = plan_or_exit(s, manifest, configs, facts)
    plan.new_release, plan.build_venv = (
        False,
        manifest.venv.rsplit("/", 1)[-1] not in facts.venvs_ready,
    )
    plan.site = render_nginx_site(s)
    return s, plan


def warn_of_migrations(c: Any, s: Settings, rep: Reporter, release: str | None) -> None:
    """A release that ran BEFORE_SWITCH (a migration, say) leaves it in place: the older code meets what it did."""
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


@fleet_aware
@task(iterable=["set_"], help=ROLLBACK_HELP)
def rollback(
    c,
    to=None,
    known_hosts=None,
    accept_new_host=False,
    batch=None,
    on_failure=None,
    env_file=None,
    set_=None,
):
    """Return to the previous release (or --to RELEASE) with the same graceful reloads as a deploy."""
    s = settings_for(env_file, set_)
    if len(hosts := fleet_hosts(c)) > 1:
        return fleet_tasks.rollback_fleet(
            hosts,
            s,
            to,
            known_hosts,
            fleet_steps.check_batch(batch),
            fleet_steps.check_on_failure(on_failure),
            accept_new_host,
        )
    rep = Reporter(target_name(c))
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    info = {"event": "rollback", "since": datetime.now(UTC).isoformat(timespec="seconds"), **who()}
    with DeployLock(c, s, info, 0, rep.say, rep.warn):
        facts = host_facts.gather(c, s, start_pm2=True)
        root.ensure(c, facts.helper)  # before anything changes
        s = host_settings(s, facts.site_defaults, f"{s.state_dir}/site-defaults.json")
        target = to or previous_release(facts, facts.current_release)
        if (to == "before-takeover" or not target) and takeover_ops.recorded(c, s):
            rollback_takeover(c, s, rep, facts)
            return
        if not target or target not in facts.releases:
            raise fail(
                f"No release to roll back to (asked for {to or 'the previous one'}; on the host: "
                f"{', '.join(facts.releases) or 'none'}). See `releases`."
            )
        own, plan = rollback_plan(c, s, facts, target, rep.warn)
        rep.say(f"Rolling back {facts.current_release} -> {target}")
        warn_of_migrations(c, s, rep, facts.current_release)
        carry_out(c, own, rep, plan, facts, None, "rollback")
        run(c, f"rm -f {q(s.state_dir)}/bad/{q(target)}", warn=True)
    rep.say(f"Rolled back to {target}.")


@fleet_aware
@task(iterable=["set_"], help={**HOST_HELP})
def releases(c, known_hosts=None, accept_new_host=False, env_file=None, set_=None):
    """List the releases on the host, newest first, marking the current one and bad ones."""
    s = settings_for(env_file, set_)
    if len(hosts := fleet_hosts(c)) > 1:
        return fleet_tasks.releases_fleet(hosts, s, known_hosts, accept_new_host)
    open_host(c, s, known_hosts=known_hosts, accept_new_host=accept_new_host)
    facts = host_facts.gather(c, s)
    if not facts.releases:
        print(f"No releases under {s.releases_dir}.")
        return
    for name in reversed(facts.releases):
        mark = "* " if name == facts.current_release else "  "
        flag = "  (bad: failed its deploy)" if name in facts.bad_releases else ""
        print(f"{mark}{name}{flag}")


# Last: it uses this module's functions.
from signalcraft_deploy.tasks import fleet as fleet_tasks  # noqa: E402

ns = Collection(deploy, rollback, releases)
