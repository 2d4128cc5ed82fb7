"""The app's Procfile processes in a deploy: tried before the switch, moved after it without losing
a job, brought back to the serving release on a failure or a rollback.

- Trial: the new release's workers (not singletons: a second copy would run the schedule twice)
  start as `<APP_NAME>-<name>-trial`, one instance each, and must still be online with no restart
  after TRIAL_SECONDS; their own output is shown when they are not, and nothing switches.
- Move (`converge`): every process the host should run ends up running from its release. A
  worker's new instances start under its other PM2 name (PM2 cannot rename: a process alternates
  between `<APP_NAME>-<name>` and its twin `...-b`) and are online before the old ones get the stop
  signal; a singleton's old instance stops first (never two at once). The tool sends the stop
  signal itself, to every old instance at once (PM2's `stop` signals the instances of a fork-mode
  app one after the other), waits up to PROCESS_STOP_TIMEOUT for them to exit (a job in progress
  finishes), then deletes the old name from PM2. `pm2 save` comes after (the deploy's last step).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signalcraft_deploy.core.facts import Pm2Process
from signalcraft_deploy.core.plan import How, Plan, process_pm2_names
from signalcraft_deploy.core.procfile import Process
from signalcraft_deploy.core.render import process_entry
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import facts as host_facts
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.io import Background, fail, q, run, write_file_command
from signalcraft_deploy.host.pm2 import (
    app_output,
    delete_command,
    output_excerpt,
    start_config_command,
)
from signalcraft_deploy.host.upkeep import forget_logs_command

if TYPE_CHECKING:
    from signalcraft_deploy.steps.deploy import DeployRun

TRIAL_SECONDS = 3.0  # a tried process must stay online, without a restart, this long
ONLINE_SECONDS = 20.0  # how long started processes may take to be online
FINAL = ("restart", "errored", "exited by itself")  # problems no more waiting mends


@dataclass(frozen=True)
class Wanted:
    """A process the host should run: its declaration, and the release (folder and venv) it runs."""

    proc: Process
    release_dir: str
    venv: str

    @classmethod
    def of(cls, s: Settings, record: dict[str, Any]) -> Wanted:
        return cls(
            Process.from_record(record), f"{s.releases_dir}/{record['release']}", record["venv"]
        )


def wanted(s: Settings, records: Any) -> list[Wanted]:
    """The processes this host runs, from a manifest's records (a singleton off the fleet's first
    host runs nowhere here)."""
    found = [Wanted.of(s, r) for r in records or ()]
    return [w for w in found if s.singleton_host or not w.proc.singleton]


def trial_name(s: Settings, name: str) -> str:
    return f"{s.process_name(name)}-trial"


def pm2_processes(c: Any, s: Settings) -> list[Pm2Process]:
    """PM2's list as the apps' account's daemon has it now."""
    listed = run(c, as_app(c, s, host_facts.pm2_list_shell(s)), warn=True).stdout
    return host_facts.parse_pm2_jlist(listed)[0]


def start_command(s: Settings, config: str) -> str:
    """Shell that writes a PM2 config (stdin) in the apps' account's home and starts its apps."""
    return f"{write_file_command(config, '0600')} && {start_config_command(s, q(config))}"


def start(c: Any, s: Settings, entries: list[dict[str, Any]], config: str) -> None:
    if not entries:
        return
    result = run(
        c, as_app(c, s, start_command(s, config)), stdin=json.dumps({"apps": entries}), warn=True
    )
    if not result.ok:
        raise fail(f"pm2 could not start {', '.join(e['name'] for e in entries)}: {result.stderr}")


def stop_command(s: Settings, groups: list[tuple[list[int], str, int]], names: list[str]) -> str:
    """Shell that sends each group of pids its stop signal (all at once), waits up to its timeout
    for them to exit (each group beside the others), prints the pids still alive, then deletes
    `names` from PM2 (which kills what is left)."""
    waits = []
    for pids, signal, timeout in groups:
        if not pids:
            continue
        plist = " ".join(str(int(p)) for p in pids)
        alive = " || ".join(f"kill -0 {int(p)} 2>/dev/null" for p in pids)
        waits.append(
            f"( kill -{q(signal.removeprefix('SIG'))} {plist} 2>/dev/null; i=0;"
            f" while [ $i -lt {int(timeout) * 10} ] && {{ {alive}; }}; do sleep 0.1; i=$((i+1));"
            f" done; for p in {plist}; do kill -0 $p 2>/dev/null && echo left $p; done ) &"
        )
    return " ".join(waits) + f" wait; {delete_command(s, *names)} >/dev/null 2>&1; true"


def stop_group(procs: list[Pm2Process], proc: Process | None) -> tuple[list[int], str, int]:
    """The pids of a PM2 app's running instances, its stop signal and timeout."""
    signal, timeout = (proc.stop_signal, proc.stop_timeout) if proc else ("SIGTERM", 30)
    return [p.pid for p in procs if p.pid], signal, timeout


def stop(
    c: Any, s: Settings, apps: Mapping[str, tuple[list[Pm2Process], Process | None]]
) -> list[str]:
    """Stop PM2 apps gracefully (all at once) and delete them; the names of those whose job was cut
    short (still running at their timeout)."""
    if not apps:
        return []
    groups = [stop_group(procs, proc) for procs, proc in apps.values()]
    result = run(c, as_app(c, s, stop_command(s, groups, list(apps))), warn=True)
    left = {int(w) for line in result.stdout.splitlines() for w in line.split()[1:2]}
    return [name for name, (procs, _) in apps.items() if any(p.pid in left for p in procs)]


def wait_online(
    c: Any, s: Settings, counts: dict[str, int], seconds: float, steady: float = 0.0
) -> dict[str, str]:
    """Wait until each named app has its count of instances online (and, with `steady`, still so
    with no restart that much later); the problem of each app that is not."""
    deadline = time.monotonic() + seconds
    problems: dict[str, str] = {}
    online_since: float | None = None
    while True:
        listed = pm2_processes(c, s)
        problems = online_problems(listed, counts)
        if problems and any(w in p for p in problems.values() for w in FINAL):
            return problems
        if not problems:
            online_since = online_since or time.monotonic()
            if time.monotonic() - online_since >= steady:
                return {}
        if time.monotonic() >= deadline:
            return problems
        time.sleep(0.3)


def online_problems(listed: list[Pm2Process], counts: dict[str, int]) -> dict[str, str]:
    problems = {}
    for name, count in counts.items():
        procs = [p for p in listed if p.name == name]
        states = sorted(p.status for p in procs)
        if any(p.restarts for p in procs):
            problems[name] = f"{name} restarted {sum(p.restarts for p in procs)} time(s)"
        elif procs and all(st == "stopped" for st in states):  # exit 0: stop_exit_codes
            problems[name] = (
                f"{name} exited by itself with status 0 (a Procfile process must keep running: a"
                " one-off command such as a migration belongs in BEFORE_SWITCH)"
            )
        elif len(procs) != count or any(st != "online" for st in states):
            problems[name] = f"{name} is {','.join(states) or 'missing'}"
    return problems


# ----------------------------------------------------------------------------- the trial


def tried(s: Settings, plan: Plan) -> list[Process]:
    """The processes whose new code the trial runs: workers that start or move (not singletons)."""
    moving = {a.name for a in plan.processes if a.how in (How.START, How.OVERLAP)}
    return [p for p in s.processes if p.name in moving and not p.singleton]


def start_trial(c: Any, s: Settings, procs: list[Process], release_dir: str, venv: str) -> None:
    """The trial processes, one instance each, from the new release (leftovers and old logs
    cleared first)."""
    names = [trial_name(s, p.name) for p in procs]
    entries = []
    for proc, name in zip(procs, names, strict=True):
        entry = process_entry(s, proc, venv, release_dir, name)
        # One instance, told it is a trial (an app may honour it: take no job, say).
        entries.append({**entry, "instances": 1, "env": {**entry["env"], "SIGNALCRAFT_TRIAL": "1"}})
    clear = f"{{ {delete_command(s, *names)} >/dev/null 2>&1; {forget_logs_command(*names)}; }}"
    run(c, as_app(c, s, clear), warn=True)
    start(c, s, entries, f".{s.app_name}-process-trial.config.json")


def check_trial(
    c: Any, s: Settings, procs: list[Process], started: float, live: str | None
) -> Background:
    """Pass when every trial process is online, without a restart, TRIAL_SECONDS after its start;
    else stop them and fail with their own output. A passed trial's processes are being stopped
    (gracefully: a trial worker may have taken a job) when this returns."""
    counts = {trial_name(s, p.name): 1 for p in procs}
    time.sleep(max(0.0, started + TRIAL_SECONDS - time.monotonic()))
    problems = online_problems(pm2_processes(c, s), counts)
    if problems:
        problems = wait_online(c, s, counts, 0.5)  # a restart just done is a restart
    listed = pm2_processes(c, s)
    own = {trial_name(s, p.name): p for p in procs}
    stopping = {name: ([x for x in listed if x.name == name], own[name]) for name in counts}
    if not problems:
        groups = [stop_group(procs_, proc) for procs_, proc in stopping.values()]
        return Background(c, as_app(c, s, stop_command(s, groups, list(counts))))
    logs = {name: app_output(c, s, name) for name in problems}
    stop(c, s, stopping)
    raise trial_failed(s, list(problems.values()), logs, live)


def trial_failed(s: Settings, problems: list[str], logs: dict[str, str], live: str | None) -> Any:
    from signalcraft_deploy.steps.trial import still_serving

    lines = [f"  {p}" for p in problems]
    for name, text in logs.items():
        excerpt = output_excerpt(text)
        if excerpt:
            lines.append(f"  output of {name} (its trial run):\n    " + "\n    ".join(excerpt))
    return fail(
        "A Procfile process of the new release failed its trial run (it must stay online, without"
        f" a restart, for {TRIAL_SECONDS:g}s), so nothing was switched and {still_serving(live)}.\n"
        + "\n".join(lines)
        + "\nFix the process's code or its Procfile line and deploy again."
    )


# ----------------------------------------------------------------------------- the move


def ours(s: Settings, names: set[str], listed: list[Pm2Process]) -> dict[str, list[Pm2Process]]:
    """PM2's apps of the processes named (either PM2 name), by PM2 name."""
    pm2_names = {n for name in names for n in process_pm2_names(s, name)}
    found: dict[str, list[Pm2Process]] = {}
    for p in listed:
        if p.name in pm2_names:
            found.setdefault(p.name, []).append(p)
    return found


def runs(procs: list[Pm2Process], w: Wanted) -> bool:
    """A PM2 app runs this process as wanted: all its instances online, from its release."""
    return len(procs) == w.proc.instances and all(
        p.status == "online" and p.cwd.rstrip("/") == w.release_dir for p in procs
    )


def converge(c: Any, s: Settings, want: list[Wanted], known: set[str]) -> str:
    """Bring the host's processes to `want` (every other process of `known` names stops): the
    ones running as wanted stay; singletons stop before their new one starts; workers' new
    instances are online before the old ones get the stop signal."""
    listed = ours(s, known | {w.proc.name for w in want}, pm2_processes(c, s))
    keep = {
        w.proc.name: name
        for w in want
        for name in process_pm2_names(s, w.proc.name)
        if runs(listed.get(name, []), w)
    }
    decl = {w.proc.name: w.proc for w in want}
    owner = {n: name for name in known | set(decl) for n in process_pm2_names(s, name)}
    first = {
        n: (procs, decl.get(owner[n]))
        for n, procs in listed.items()
        if n not in keep.values() and (decl.get(owner[n]) is None or decl[owner[n]].singleton)
    }
    first.update(crowded(s, want, keep, listed))
    cut = stop_first(c, s, first)
    remaining = {n: p for n, p in listed.items() if n not in first}
    starting = {}
    for w in want:
        if w.proc.name in keep:
            continue
        free = [n for n in process_pm2_names(s, w.proc.name) if n not in remaining]
        starting[free[0] if free else process_pm2_names(s, w.proc.name)[0]] = w
    entries = [
        process_entry(s, w.proc, w.venv, w.release_dir, name) for name, w in starting.items()
    ]
    start(c, s, entries, f".{s.app_name}-processes.config.json")
    # Still online, with no restart, a trial's time later: a singleton has had no trial at all.
    counts = {n: w.proc.instances for n, w in starting.items()}
    problems = wait_online(c, s, counts, ONLINE_SECONDS, steady=TRIAL_SECONDS)
    if problems:
        raise started_failed(c, s, problems)
    rest = {n: (p, decl.get(owner[n])) for n, p in remaining.items() if n not in keep.values()}
    cut += stop(c, s, rest)
    return moved_text(starting, first, rest, cut)


def stop_first(
    c: Any, s: Settings, apps: Mapping[str, tuple[list[Pm2Process], Process | None]]
) -> list[str]:
    """Stop what must be gone before anything starts (singletons, processes no longer wanted, a
    crowded twin), and check that PM2 no longer has it: the stop's `pm2 delete` may fail, and a
    singleton's new copy must not start beside its old one."""
    if not apps:
        return []
    cut = stop(c, s, apps)
    left = sorted({p.name for p in pm2_processes(c, s)} & set(apps))
    if left:
        raise fail(
            f"PM2 still has {', '.join(left)} after its stop signal and `pm2 delete`, so no new copy"
            " was started (a singleton never runs twice at once). See `status` and PM2's log"
            " (`logs`), then deploy again."
        )
    return cut


def crowded(
    s: Settings, want: list[Wanted], keep: dict[str, str], listed: dict[str, list[Pm2Process]]
) -> dict[str, tuple[list[Pm2Process], Process]]:
    """Workers to move whose two PM2 names both run (a move cut short): the twin stops first, so
    the new instances have a name of their own (a `pm2 start` of a running name restarts it, job
    and all, instead of starting a second one)."""
    out = {}
    for w in want:
        plain, twin = process_pm2_names(s, w.proc.name)
        if w.proc.name not in keep and plain in listed and twin in listed:
            out[twin] = (listed[twin], w.proc)
    return out


def started_failed(c: Any, s: Settings, problems: dict[str, str]) -> Exception:
    lines = [f"  {p}" for p in problems.values()]
    for name in problems:
        excerpt = output_excerpt(app_output(c, s, name))
        if excerpt:
            lines.append(f"  output of {name}:\n    " + "\n    ".join(excerpt))
    return fail(
        f"Procfile processes did not stay online, without a restart, for {TRIAL_SECONDS:g}s:\n"
        + "\n".join(lines)
        + "\nFix the process's code or its Procfile line (PROCESS_APP chooses the venv's bin or"
        " node_modules/.bin first on its PATH) and deploy again."
    )


def moved_text(
    starting: dict[str, Wanted], first: dict[str, Any], rest: dict[str, Any], cut: list[str]
) -> str:
    parts = []
    if starting:
        parts.append("started " + ", ".join(starting))
    if first or rest:
        parts.append("stopped " + ", ".join([*first, *rest]))
    if cut:
        parts.append(
            "job cut short (still running at its PROCESS_STOP_TIMEOUT; raise it): " + ", ".join(cut)
        )
    return "; ".join(parts) or "all running as wanted"


def cut_warning(text: str) -> str | None:
    marker = "job cut short"
    return text[text.index(marker) :] if marker in text else None


# ----------------------------------------------------------------------------- the deploy's steps


def has_trial(r: DeployRun) -> bool:
    return bool(tried(r.s, r.plan))


def start_process_trial(r: DeployRun) -> str:
    procs = tried(r.s, r.plan)
    start_trial(r.c, r.s, procs, r.release_dir, r.plan.manifest.venv)
    r.process_trial = (procs, time.monotonic())
    return "started " + ", ".join(trial_name(r.s, p.name) for p in procs)


def check_process_trial(r: DeployRun) -> str:
    procs, started = r.process_trial
    r.stopping.append(check_trial(r.c, r.s, procs, started, r.facts.current_release))
    r.process_trial = ([], 0.0)
    return f"{len(procs)} process(es) online, no restart, after {TRIAL_SECONDS:g}s"


def remove_process_trial(r: DeployRun) -> str:
    """The undo of a trial that was started: its processes go (a failed check removed them)."""
    procs, _ = r.process_trial
    if not procs:
        return ""
    listed = pm2_processes(r.c, r.s)
    named = {trial_name(r.s, p.name): p for p in procs}  # each with its own signal and timeout
    stop(r.c, r.s, {n: ([x for x in listed if x.name == n], p) for n, p in named.items()})
    return "trial processes removed"


def moves_processes(r: DeployRun) -> bool:
    return any(a.how not in (How.NONE, How.ELSEWHERE) for a in r.plan.processes)


def known_names(r: DeployRun) -> set[str]:
    before = (r.facts.manifest or {}).get("processes") or ()
    return {rec["name"] for rec in before} | {a.name for a in r.plan.processes}


def move_processes(r: DeployRun) -> str:
    text = converge(r.c, r.s, wanted(r.s, r.plan.manifest.processes), known_names(r))
    ours = {n for name in known_names(r) for n in process_pm2_names(r.s, name)}
    for p in pm2_processes(r.c, r.s):  # the deploy's summary shows them beside the web apps
        if p.name in ours:
            row = {"pid": p.pid, "status": p.status, "restarts": p.restarts, "mode": p.exec_mode}
            r.seen.setdefault(p.name, []).append(row)
    cut = cut_warning(text)
    if cut:
        r.rep.warn(cut)
    return text


def restore_processes(r: DeployRun) -> str:
    """Every process back to the serving release (the previous one; none after a first deploy)."""
    before = (r.facts.manifest or {}).get("processes") if r.prev else ()
    return converge(r.c, r.s, wanted(r.s, before), known_names(r))
