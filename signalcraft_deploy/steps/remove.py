"""`remove` as a list of steps, each with its undo where one exists: an app taken off a host, other
apps untouched.

Under the deploy lock, as the deploy user. The site goes first (no request reaches the apps once
Nginx has reloaded without it), then the apps' PM2 entries (the apps' own account's, through the app
door, and any left in the deploy user's own PM2), each PM2 list saved so that no boot brings them
back, then their logs and the `current` link; with `--purge --confirm APP_NAME`, DEPLOY_ROOT itself
(shared/ first, as the apps' account: what it wrote there is its own). A failure in the site or PM2
steps puts back what was done (the site as these settings render it, the apps started from
`current`); what follows them removes files only and converges when run again.

What `setup` made for the app (the apps' account, its boot unit and log rotation, the sudoers line,
root's record of the account) needs full sudo: `remove` prints the admin's command, `setup
--remove-app`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from invoke.exceptions import Exit

from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import as_recorded_host, process_pm2_names
from signalcraft_deploy.core.render import certbot_hook_path, render_nginx_site, site_description
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host import nginx as nginx_ops
from signalcraft_deploy.host import pm2 as pm2_ops
from signalcraft_deploy.host import root
from signalcraft_deploy.host.app_user import as_app, runs_as_deploy_user
from signalcraft_deploy.host.connect import reconnect
from signalcraft_deploy.host.io import fail, q, run, target_name
from signalcraft_deploy.host.lock import DeployLock, audit, who
from signalcraft_deploy.host.upkeep import forget_logs_command
from signalcraft_deploy.steps import processes
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Failure, Step, run_steps
from signalcraft_deploy.steps.trial import trial_names


@dataclass
class RemoveRun:
    """What the steps of one `remove` share."""

    c: Any
    s: Settings
    rep: Reporter
    facts: HostFacts
    purge: bool
    record: dict[str, Any]
    site_removed: bool = False
    purged: bool = False

    @property
    def names(self) -> list[str]:
        """Every PM2 name of this app: the two apps, their handover and trial copies, and the live
        release's Procfile processes (both names of each, and its trial)."""
        s = self.s
        recorded = [r["name"] for r in (self.facts.manifest or {}).get("processes") or ()]
        processes = [
            n
            for name in recorded
            for n in (*process_pm2_names(s, name), f"{s.process_name(name)}-trial")
        ]
        return [
            s.python_app,
            s.node_app,
            s.handover_app,
            s.node_handover_app,
            *trial_names(s),
            *processes,
        ]

    @property
    def in_app_pm2(self) -> list[str]:
        return sorted({p.name for p in self.facts.pm2} & set(self.names))

    @property
    def in_deploy_pm2(self) -> list[str]:
        return sorted({p.name for p in self.facts.deploy_pm2} & set(self.names))

    def write_audit(self) -> None:
        if (
            not self.purged
        ):  # a purged DEPLOY_ROOT keeps no audit log (writing one would make it again)
            audit(self.c, self.s, self.record)

    def mask(self, text: str) -> str:
        return masked(self.s, text)

    def settle(self) -> None:
        """Nothing runs in the background."""

    def reconnect(self) -> str | None:
        return reconnect(self.c)

    def again(self) -> str:
        """What finishes a remove a lost connection cut short: the same remove (it converges)."""
        return f"fab -H {self.rep.target} remove" + (
            f" --purge --confirm {self.s.app_name}" if self.purge else ""
        )


# ----------------------------------------------------------------------------- the steps


def remove_site(r: RemoveRun) -> str:
    r.site_removed = nginx_ops.remove_site(r.c, r.s)
    if not r.site_removed:
        return f"{r.s.nginx_site}: none of ours"
    verdict = nginx_ops.reload_nginx(r.c, r.s)
    return (
        f"{r.s.nginx_site} removed; Nginx reloaded without it (new workers of pid"
        f" {verdict['master']})"
    )


def put_site_back(r: RemoveRun) -> str:
    """The site as a deploy with these settings renders it, verified like a deploy's reload."""
    if not r.site_removed:
        return "nothing to put back"
    nginx_ops.install_site(r.c, r.s, site_description(r.s), backup=False)
    nginx_ops.reload_nginx(r.c, r.s, render_nginx_site(r.s))
    return f"{r.s.nginx_site} back, and served"


def delete_apps(r: RemoveRun) -> str:
    names = r.in_app_pm2
    done = run(r.c, as_app(r.c, r.s, pm2_ops.delete_command(r.s, *names)), warn=True)
    if not done.ok:
        raise fail(
            f"PM2 could not delete {', '.join(names)} (as {r.s.app_user}): "
            f"{(done.stderr or done.stdout).strip()[-400:]}"
        )
    saved = run(r.c, as_app(r.c, r.s, pm2_ops.pm2(r.s, "save", "--force")), warn=True)
    if not saved.ok:
        raise fail(
            f"pm2 save failed as {r.s.app_user}: {(saved.stderr or saved.stdout).strip()[-400:]}"
        )
    return f"deleted {', '.join(names)} ({r.s.app_user}'s PM2); its list saved"


def start_apps_again(r: RemoveRun) -> str:
    """The apps started again from `current` (as a deploy's first start), and PM2's list saved."""
    started = [name for name in (r.s.python_app, r.s.node_app) if name in r.in_app_pm2]
    recorded = (r.facts.manifest or {}).get("processes") or ()
    if not (started or recorded) or r.facts.current_release is None:
        return "nothing to start"
    for name in started:
        pm2_ops.start(r.c, r.s, name)
    moved = ""
    if recorded:  # the Procfile's processes, each from the release it ran
        here = as_recorded_host(r.s, r.facts.manifest)
        moved = "; processes: " + processes.converge(
            r.c, here, processes.wanted(here, recorded), {rec["name"] for rec in recorded}
        )
    pm2_ops.save(r.c, r.s)
    return "started " + ", ".join(started) + f" from {r.facts.current_release}{moved}"


def delete_deploy_users_apps(r: RemoveRun) -> str:
    pm2_ops.delete_as_deploy_user(r.c, r.s, *r.in_deploy_pm2)
    pm2_ops.save_as_deploy_user(r.c, r.s)
    return f"deleted {', '.join(r.in_deploy_pm2)} from the deploy user's own PM2; its list saved"


def forget_logs(r: RemoveRun) -> str:
    command = forget_logs_command(*r.names)
    run(
        r.c,
        as_app(r.c, r.s, command) + (f"; {command}" if not runs_as_deploy_user(r.c, r.s) else ""),
        warn=True,
    )
    return (
        "PM2's log files of "
        + ", ".join((r.s.python_app, r.s.node_app))
        + " removed, rotated ones too"
    )


def unlink_current(r: RemoveRun) -> str:
    done = run(r.c, f"rm -f {q(r.s.current_dir)}", warn=True)
    if not done.ok:
        raise fail(f"Could not remove {r.s.current_dir}: {done.stderr.strip()[-300:]}")
    return (
        f"{r.s.current_dir} removed (it named {r.facts.current_release}); releases kept in"
        f" {r.s.releases_dir}"
    )


def link_current_again(r: RemoveRun) -> str:
    if r.facts.current_release is None:
        return "no link to put back"
    run(r.c, f"ln -sfn {q('releases/' + r.facts.current_release)} {q(r.s.current_dir)}")
    return f"{r.s.current_dir} names {r.facts.current_release} again"


# What this tool makes in DEPLOY_ROOT (settings' *_dir, releases.py's .current.tmp, wheels.py's
# caches): a folder holding anything else (a home's .ssh, another app's deploy root) is not provably
# this app's, and --purge leaves it.
TOOL_ENTRIES = (
    ".deploy",
    "releases",
    "current",
    ".current.tmp",
    "shared",
    "venvs",
    "node_modules",
    "wheels",
    "npm-cache",
)


def purge_guard(s: Settings) -> str:
    """Shell (as the deploy user) that passes only for a DEPLOY_ROOT --purge may delete: exit 3
    unless it is a real folder holding the deploy user's own .deploy/; exit 5 (why on stderr) if it
    is or holds the deploy user's home (its .ssh: DEPLOY_ROOT=/home/deploy passes the settings'
    check), or holds anything this tool does not make.
    """
    names = "|".join(q(n) for n in TOOL_ENTRIES)
    return (
        f'R={q(s.deploy_root)}; if [ -L "$R" ] || [ ! -d "$R" ] || [ -L "$R/.deploy" ] || [ ! -d'
        ' "$R/.deploy" ] || [ ! -O "$R/.deploy" ]; then echo "no .deploy/ of this user in it: not'
        ' a deploy root of this tool" >&2; exit 3; fi; r=$(cd -P -- "$R" && pwd -P) || exit 4;'
        ' h=$(cd -P -- "${HOME:-/nonexistent}" 2>/dev/null && pwd -P); case "$h/" in "$r"/*)'
        ' printf "%s is the deploy user\'s home (%s), or holds it\\n" "$R" "$h" >&2; exit 5;;'
        ' esac; for e in "$R"/* "$R"/.[!.]* "$R"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } ||'
        f' continue; case "${{e##*/}}" in {names}) ;; *) printf "%s holds %s, which this tool does'
        ' not make\\n" "$R" "${e##*/}" >&2; exit 5;; esac; done'
    )


def purge_command(c: Any, s: Settings) -> str:
    """Shell (as the deploy user) that deletes DEPLOY_ROOT, if purge_guard passes, after the apps'
    account has deleted what it owns in shared/; .deploy/ last, so that a purge stopped part way
    (something in shared/ the deploy user may not delete) is still, by its sign, a deploy root this
    tool made, and a second purge converges.
    """
    shared = q(s.shared_dir)
    # find -delete removes links, never what they name; as the apps' account it can delete only what
    # it may
    empty = as_app(c, s, f"find {shared} -mindepth 1 -delete")
    rest = " ".join(q(f"{s.deploy_root}/{name}") for name in TOOL_ENTRIES if name != ".deploy")
    return (
        f"{purge_guard(s)}; if [ -d {shared} ] && [ ! -L {shared} ]; then {empty} || exit 4; fi; "
        f"rm -rf -- {rest} && rm -rf -- {q(s.deploy_root)}"
    )


def refused_purge(s: Settings, done: Any, changed: str) -> Exit | None:
    """The one message of a purge_guard refusal (exit 3 or 5), or None."""
    if done.exited == 3:
        return fail(
            f"DEPLOY_ROOT {s.deploy_root} holds no .deploy/ folder of the deploy user's, so it is"
            " not a deploy root this tool made: nothing in it was deleted. Check DEPLOY_ROOT."
            + (f" {changed}" if changed else "")
        )
    if done.exited == 5:
        return fail(
            f"--purge refuses: {done.stderr.strip()[-300:]}: nothing in it was deleted. Set"
            " DEPLOY_ROOT to the app's own folder (one that holds only what deploys made there),"
            " or move what is named out of it, then run remove --purge again."
            + (f" {changed}" if changed else "")
        )
    return None


def run_purge_script(r: RemoveRun, command: str, changed: str, doing: str, after: str) -> None:
    """Run the guard or the purge: its refusal, or any other failure ("Could not <doing> DEPLOY_ROOT
    ...<after>")."""
    done = run(r.c, command, warn=True)
    refusal = refused_purge(r.s, done, changed)
    if refusal is not None:
        raise refusal
    if not done.ok:
        raise fail(
            f"Could not {doing} DEPLOY_ROOT {r.s.deploy_root}:"
            f" {(done.stderr or done.stdout).strip()[-400:]}{after}"
        )


def check_purge(r: RemoveRun) -> str:
    """Before anything changes: a DEPLOY_ROOT --purge would refuse stops the whole removal."""
    run_purge_script(r, purge_guard(r.s), "Nothing was changed.", "read", ". Nothing was changed.")
    return f"{r.s.deploy_root} holds only what deploys made"


def purge(r: RemoveRun) -> str:
    gone = "The apps, their site and PM2 entries are gone already"
    run_purge_script(
        r,
        purge_command(r.c, r.s),
        f"{gone}.",
        "delete",
        f"\n{gone}; fix what is named and run remove --purge again.",
    )
    r.purged = True
    return f"{r.s.deploy_root} deleted (releases, venvs, node_modules, shared/, the audit log)"


REMOVE_STEPS: list[Step[RemoveRun]] = [
    Step("check deploy root", check_purge, when=lambda r: r.purge),
    # undoes_itself: a site removed whose reload did not take is put back too (the running Nginx
    # still serves it)
    Step("remove site", remove_site, undo=put_site_back, undoes_itself=True),
    Step("delete apps", delete_apps, undo=start_apps_again, when=lambda r: bool(r.in_app_pm2)),
    Step("clear deploy user pm2", delete_deploy_users_apps, when=lambda r: bool(r.in_deploy_pm2)),
    Step("delete logs", forget_logs),
    Step(
        "unlink current",
        unlink_current,
        undo=link_current_again,
        when=lambda r: r.facts.current_release is not None and not r.purge,
    ),
]

# Run on their own after REMOVE_STEPS: a purge that fails part way puts back nothing (no site for a
# half-deleted root).
PURGE_STEPS: list[Step[RemoveRun]] = [Step("delete deploy root", purge, when=lambda r: r.purge)]


# ----------------------------------------------------------------------------- what it would do
# (--dry-run), what is setup's


def plan_lines(s: Settings, facts: HostFacts, purge: bool, deploy_user: str) -> list[str]:
    """Each action `remove` would take on this host, as read now."""
    r = RemoveRun(None, s, Reporter(""), facts, purge, {})
    hook = certbot_hook_path(s)
    site = (
        f"remove {s.nginx_site}"
        + (f" and its link {s.nginx_enabled_link}" if s.nginx_enabled_link else "")
        + ", its backups and kept locations"
        + (f", certbot's hook {hook}" if hook else "")
        + "; nginx -t, then a verified reload"
        if facts.site_text is not None
        else f"{s.nginx_site}: none of ours to remove"
    )
    lines = [
        f"  site      {site}",
        (
            f"  pm2       delete {', '.join(r.in_app_pm2) or 'nothing (none running)'} from"
            f" {s.app_user}'s PM2; pm2 save"
        ),
    ]
    if r.in_deploy_pm2:
        lines.append(
            f"  pm2       delete {', '.join(r.in_deploy_pm2)} from"
            f" {deploy_user or 'the deploy user'}'s own PM2; pm2 save"
        )
    lines.append(
        f"  logs      remove PM2's log files of {s.python_app} and {s.node_app} (rotated ones too)"
    )
    if purge:
        lines.append(
            f"  purge     delete {s.shared_dir} (as {s.app_user}), then all of {s.deploy_root}"
        )
    elif facts.current_release is not None:
        lines.append(
            f"  current   remove {s.current_dir} (names {facts.current_release}); keep"
            f" {s.deploy_root} (--purge --confirm APP_NAME deletes it)"
        )
    return lines


def nothing_left(s: Settings, facts: HostFacts) -> bool:
    """Whether the host, read without DEPLOY_ROOT there, keeps nothing of the app: no site of ours,
    no PM2 app of it."""
    r = RemoveRun(None, s, Reporter(""), facts, False, {})
    return facts.site_text is None and not r.in_app_pm2 and not r.in_deploy_pm2


def admin_note(s: Settings, target: str, deploy_user: str) -> str | None:
    """What is `setup`'s to remove (full sudo), as the admin's command; None when the apps run as
    the deploy user."""
    if deploy_user and deploy_user == s.app_user:
        return None
    how = (
        "invoke setup"
        if target == "this machine"
        else f"fab -H <admin>@{target.partition('@')[2] or target} setup"
    )
    return (
        f"The apps' account {s.app_user}, its boot unit pm2-{s.app_user}.service, its log rotation,"
        " its sudoers line and root's record of it are setup's (full sudo). When no other app runs"
        f" as {s.app_user}, an admin removes them with: {how} --remove-app {s.app_user} --user"
        f" {deploy_user or '<deploy user>'}"
    )


def check_confirm(s: Settings, purge: bool, confirm: str | None) -> None:
    """--purge deletes DEPLOY_ROOT only when --confirm names the app: else one message, before the
    host is touched."""
    if purge and confirm != s.app_name:
        said = f"--confirm {confirm}" if confirm else "no --confirm"
        raise fail(
            f"--purge deletes DEPLOY_ROOT {s.deploy_root} and everything in it (releases, shared/"
            f" data): pass --confirm {s.app_name} (APP_NAME) to say so ({said} was given). Nothing"
            " was changed.",
            code=2,
        )
    if confirm and not purge:
        raise fail(
            "--confirm goes with --purge (which deletes DEPLOY_ROOT); without --purge DEPLOY_ROOT"
            " is kept. Nothing was changed.",
            code=2,
        )


def remove_from_host(c: Any, s: Settings, *, purge: bool, dry_run: bool) -> None:
    """`remove` on a connected host: the plan with --dry-run, a word when nothing of the app is
    left, else the steps under the deploy lock; then what is setup's to remove, if anything."""
    rep = Reporter(target_name(c))
    deploy_user = run(c, "id -un", warn=True).stdout.strip()
    note = admin_note(s, rep.target, deploy_user)
    if dry_run:
        say_removal_plan(c, s, rep, purge, deploy_user)
        return
    if nothing_to_remove(c, s):
        rep.say(
            f"Nothing of {s.app_name} is left on {rep.target} (no {s.deploy_root}, no site of its,"
            " no PM2 app of its). Nothing was changed."
        )
    else:
        remove_under_lock(c, s, rep, purge)
        rep.say(removed_message(s, rep.target, purge))
    if note:
        rep.say(note)


def say_removal_plan(c: Any, s: Settings, rep: Reporter, purge: bool, deploy_user: str) -> None:
    """--dry-run: each action remove would take on this host, and what a purge would refuse."""
    facts = host_facts.gather(c, s, quick=True, spawn_pm2=False)  # a look: no PM2 daemon started
    rep.say(f"Plan for {rep.target}: remove {s.app_name}")
    for line in plan_lines(s, facts, purge, deploy_user):
        rep.say(line)
    refused = (
        run(c, purge_guard(s), warn=True) if purge else None
    )  # a read: what the purge would refuse
    if refused is not None and not refused.ok:
        rep.say(
            f"  purge     refused: {(refused.stderr or refused.stdout).strip()[-300:]}; remove"
            " --purge would stop before anything changes"
        )
    note = admin_note(s, rep.target, deploy_user)
    if note:
        rep.say(f"  setup's   {note}")
    rep.say("Dry run: nothing was changed.")


def nothing_to_remove(c: Any, s: Settings) -> bool:
    """A rerun after --purge: no DEPLOY_ROOT and nothing else of the app. Checked before the lock,
    whose script makes DEPLOY_ROOT/.deploy and would leave a deploy root behind."""
    root_gone = not run(c, f"[ -e {q(s.deploy_root)} ] || [ -L {q(s.deploy_root)} ]", warn=True).ok
    return root_gone and nothing_left(s, host_facts.gather(c, s, quick=True, spawn_pm2=False))


def remove_under_lock(c: Any, s: Settings, rep: Reporter, purge: bool) -> None:
    """REMOVE_STEPS (then PURGE_STEPS with --purge) under the deploy lock, on the host as read
    under it; a failure ends in one message saying what was undone."""
    info = {"event": "remove", "since": datetime.now(UTC).isoformat(timespec="seconds"), **who()}
    look = host_facts.facts_script(
        s, quick=True, c=c, spawn_pm2=False
    )  # a read that starts no PM2 daemon
    with DeployLock(c, s, info, 0, rep.say, rep.warn, then=look) as lock:
        facts = host_facts.parse_facts(lock.read_then())
        root.ensure(
            c
        )  # before anything changes: the root helper is this version's (installed if we may)
        audit_entry = {
            "event": "remove",
            "by": who(),
            "host": rep.target,
            "from": facts.current_release,
            "purge": purge,
        }
        state = RemoveRun(c, s, rep, facts, purge, audit_entry)
        try:
            run_steps(state, REMOVE_STEPS, last=not purge)
            if purge:  # a part of its own: its failure undoes none of the above (see PURGE_STEPS)
                run_steps(state, PURGE_STEPS, done=[])
        except Failure as failure:
            undone = f"\nUndone: {', '.join(failure.undone)}." if failure.undone else ""
            notes = "".join(f"\n  {n}" for n in failure.notes)
            raise fail(
                f"{failure.message}{undone}{notes}\nRun remove again once the cause is fixed: it"
                " converges."
            ) from None


def removed_message(s: Settings, target: str, purge: bool) -> str:
    """What a finished remove says: what went, and what is kept without --purge."""
    return f"Removed {s.app_name} from {target}" + (
        f", {s.deploy_root} included."
        if purge
        else (
            f"; {s.releases_dir} and {s.shared_dir} are kept (remove --purge --confirm"
            f" {s.app_name} deletes them)."
        )
    )
