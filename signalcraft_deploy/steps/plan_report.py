"""The plan as `deploy --dry-run` prints it: what each step would do, the reloads, the hooks, and
the diffs of the files a deploy would write."""

from __future__ import annotations

from signalcraft_deploy.core.apps import App
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import How, Plan
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.hooks import Hook
from signalcraft_deploy.steps.deploy import config_diffs
from signalcraft_deploy.steps.report import Reporter


def print_plan(rep: Reporter, s: Settings, plan: Plan, facts: HostFacts) -> None:
    m = plan.manifest
    rep.say(f"Plan for {rep.target}:")
    if plan.nothing_to_do:
        rep.say(f"  nothing to do: {m.release} is live and both apps are online.")
        return
    for line in release_lines(s, plan, facts):
        rep.say(line)
    rep.say("  trial     " + trial_line(s, plan.tried))
    for a in plan.actions:
        closes = f"; closes {a.closes} open connection(s) (WebSockets, streams)" if a.closes else ""
        rep.say(f"  {a.app:<9} {a.how.description} ({a.why}{closes})")
    for line in process_lines(plan):
        rep.say(line)
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


def process_lines(plan: Plan) -> list[str]:
    """One line per Procfile process (how it moves, and why), then what the Procfile says that is
    not run."""
    lines = [
        f"  {a.name:<9} {a.how}: {a.how.description} ({a.why})"
        if a.how is not How.NONE
        else f"  {a.name:<9} unchanged"
        for a in plan.processes
    ]
    return lines + [f"  Procfile  {note}" for note in plan.notes]


def release_lines(s: Settings, plan: Plan, facts: HostFacts) -> list[str]:
    """What the plan says of the release itself: its upload, its venv and node_modules, its Node.js
    entry, its shared paths and its .env."""
    m = plan.manifest
    lines = []
    if plan.new_release:
        lines.append(
            f"  release   {m.release} (commit {m.sha[:12]}) replaces"
            f" {facts.current_release or 'nothing'}"
        )
        lines.append(f"  upload    git archive of {m.tree[:12]} -> {s.releases_dir}/{m.release}")
    lines.append(
        f"  install   venv {m.venv}:"
        f" {'build (requirements changed)' if plan.build_venv else 'reuse'}"
    )
    if m.node_modules:
        lines.append(f"            node_modules {m.node_modules}: {node_modules_how(plan)}")
    if m.node_script:
        lines.append(
            f"  node      entry {m.node_script} ({s.origins.get('NODE_SCRIPT', 'default')}), PM2"
            f" file {m.ecosystem}"
        )
    if s.shared_paths:
        lines.append(
            f"  shared    {', '.join(s.shared_paths)}: kept in {s.shared_dir}/, linked into the"
            " release"
        )
    if m.app_env:
        lines.append(
            "  secrets   the release's own .env (mode 0600)"
            + (" carried from the live release" if not s.app_env_file else " from APP_ENV_FILE")
        )
    return lines


def node_modules_how(plan: Plan) -> str:
    """How node_modules is made: reused, or the install command (and when `npm install` reruns)."""
    m = plan.manifest
    if not plan.build_node_modules:
        return "reuse"
    return f"{m.node_install or 'npm ci'}" + (
        ""
        if m.node_install != "npm install"
        else " (no package-lock.json: once per distinct package.json)"
    )


def trial_line(s: Settings, tried: tuple[App, ...]) -> str:
    """What the plan says of the trial run: which apps it starts (those whose own processes load
    new code)."""
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
