"""Facts: what the host looks like now, read with one command and parsed by pure functions.

pyinfra's split: a fact is a command plus a parser. `gather(c, s)` sends a single shell script
(one SSH channel) and `parse_facts` turns its sectioned output into `HostFacts` (the type is
core/facts.py's). Nothing here changes the host.
"""

from __future__ import annotations

import json
import re
from typing import Any

from signalcraft_deploy.core import formats
from signalcraft_deploy.core.facts import HostFacts, Listener, Owner, Pm2Process
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root
from signalcraft_deploy.host.app_user import as_app, systemd_first
from signalcraft_deploy.host.io import q, run
from signalcraft_deploy.host.maintenance import facts_script as maintenance_script
from signalcraft_deploy.host.maintenance import parse_record as parse_maintenance
from signalcraft_deploy.host.root import APP_HELPER, HELPER
from signalcraft_deploy.remote import program, source
from signalcraft_deploy.remote.pm2_list import pm2_processes

MARK = "@@signalcraft:"
PM2_RPC_JS = source("pm2_rpc.js")
PM2_ASK_PY = program("pm2_ask")


# What WHEELS=local needs of the host's Python to fetch wheels for it: "version libc machine" ("3.12
# 2.39 x86_64"; "-" for a libc that is not glibc).
PYTHON_TAGS = (
    'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1] or "-", '
    "platform.machine())"
)


def site_ports(s: Settings) -> list[int]:
    """Every port the site listens on (HTTP, and HTTPS with TLS on)."""
    return list(dict.fromkeys(x.port for x in s.nginx_listen + (s.tls_listen if s.tls else ())))


def pm2_rpc_shell(s: Settings, op: str, *names: str, cli: str) -> str:
    """Shell that asks PM2's daemon over its socket (list, delete, save first from Python:
    pm2_ask.py; then pm2_rpc.js); if that cannot be done, runs `pm2 <cli>`.

    Exit status 3 alone means "could not ask": any other answer, an app not found included, is
    final.
    """
    args = " ".join(q(a) for a in (op, *names))
    node = f'node -e {q(PM2_RPC_JS)} "$P" {args} 2>/dev/null; r=$?;'
    if op in ("list", "delete", "save"):  # first from Python (pm2_ask.py): no Node.js start
        node = f"{socket_shell(s, args)} if [ $r = 3 ]; then {node} fi;"
    return (
        f"P=$(command -v {q(s.pm2)}) && {{ {node} "
        f'if [ $r = 3 ]; then "$P" {cli} 2>/dev/null; else [ $r = 0 ]; fi; }}'
    )


def socket_shell(s: Settings, args: str) -> str:
    """Shell that asks PM2's daemon from Python (pm2_ask.py `args`, quoted), its status in $r as
    pm2_rpc.js gives it: 0, 1 (no such app) or 3 (could not ask: also a Python that cannot run the
    program)."""
    return (
        f"{q(s.python)} -I -S -c {q(PM2_ASK_PY)} {args} 2>/dev/null;"
        " case $? in 0) r=0;; 4) r=1;; *) r=3;; esac;"
    )


def pm2_list_shell(s: Settings, spawn: bool = True) -> str:
    """Shell that prints PM2's process list: from the daemon's socket when it can, else `pm2 jlist`,
    which starts a daemon when none runs; without `spawn`, no socket means no daemon and an empty
    list (`[]`), starting none.
    """
    ask = pm2_rpc_shell(s, "list", cli="jlist")
    return (
        ask
        if spawn
        else f'if [ -S "${{PM2_HOME:-$HOME/.pm2}}/rpc.sock" ]; then {ask}; else echo "[]"; fi'
    )


def deploy_pm2_shell(s: Settings) -> str:
    """Shell that prints the deploy user's own PM2 list, when its daemon runs and the apps have an
    account of their own (apps deployed before APP_USER run there until their next deploy moves
    them); never starts a daemon.
    """
    return (
        f'if [ "$(id -un)" != {q(s.app_user)} ] && [ -S "${{PM2_HOME:-$HOME/.pm2}}/rpc.sock" ];'
        f" then {socket_shell(s, 'list')} if [ $r = 3 ]; then P=$(command -v {q(s.pm2)}) &&"
        f' node -e {q(PM2_RPC_JS)} "$P" list 2>/dev/null; fi; fi'
    )


def files_and_processes_script(
    s: Settings, c: Any = None, start_pm2: bool = False, spawn_pm2: bool = True
) -> str:
    """Shell for the facts that show whether anything changed: files, this user's processes, PM2's
    list. With `start_pm2` (a deploy or rollback, which will use the apps' PM2): under systemd, a
    PM2 daemon of the apps' account that is not running is started by its unit first
    (systemd_first), not spawned by the list as a child of this SSH session; the tasks that only
    look (status, releases) never start it. Without `spawn_pm2` (remove) the list starts no daemon
    either (pm2_list_shell)."""
    first = systemd_first(c, s) if start_pm2 else ""
    apps_pm2_list = first + as_app(c, s, pm2_list_shell(s, spawn=spawn_pm2))
    return "\n".join(
        [
            # PM2's list (the slowest part: a node start) is asked for first, in the background.
            "L=$(mktemp 2>/dev/null) && { (" + apps_pm2_list + ') > "$L" 2>/dev/null & LP=$!; }',
            "D=$(mktemp 2>/dev/null) && { ("
            + deploy_pm2_shell(s)
            + ') > "$D" 2>/dev/null & DP=$!; }',
            f"sec() {{ printf '\\n{MARK}%s\\n' \"$1\"; }}",
            f"R={q(s.deploy_root)}",
            "sec uid; id -u",
            *release_files_script(s),
            *processes_script(s, c, apps_pm2_list),
        ]
    )


def release_files_script(s: Settings) -> list[str]:
    """Shell for the sections read from files (after `R=DEPLOY_ROOT`): the live release, its
    manifest, .env and rendered configurations, the releases, the built venvs and node_modules,
    the site and whether it is enabled."""
    link = s.nginx_enabled_link
    return [
        'sec current; readlink "$R/current" 2>/dev/null || true',
        'sec manifest; cat "$R/current/.signalcraft/manifest.json" 2>/dev/null || true',
        'sec env; [ -e "$R/current/.env" ] && echo yes; true',
        'sec releases; ls -1 "$R/releases" 2>/dev/null || true',
        'sec bad; ls -1 "$R/.deploy/bad" 2>/dev/null || true',
        (
            'sec venvs; for f in "$R"/venvs/*/.ok; do [ -e "$f" ] && basename "$(dirname'
            ' "$f")"; done; true'
        ),
        (
            'sec node_modules; for f in "$R"/node_modules/*/.ok; do [ -e "$f" ] && basename'
            ' "$(dirname "$f")"; done; true'
        ),
        'sec conf:gunicorn.conf.py; cat "$R/current/gunicorn.conf.py" 2>/dev/null || true',
        ('sec conf:ecosystem.config.js; cat "$R/current/ecosystem.config.js" 2>/dev/null || true'),
        (
            'sec conf:ecosystem.config.cjs; cat "$R/current/ecosystem.config.cjs" 2>/dev/null'
            " || true"
        ),
        # 0640 root's: read through the helper (which shows a caller only its own or unclaimed
        # sites)
        (
            f"sec site; sudo -n {HELPER} site-read {q(s.nginx_site)} 2>/dev/null || cat"
            f" {q(s.nginx_site)} 2>/dev/null || true"
        ),
        'sec site_defaults; cat "$R/.deploy/site-defaults.json" 2>/dev/null || true',
        f"sec enabled; {'test -e ' + q(link) + ' && echo yes' if link else 'echo yes'}; true",
        *maintenance_script(s),
    ]


def processes_script(s: Settings, c: Any, apps_pm2_list: str) -> list[str]:
    """Shell for the sections about processes: the apps' account's processes and their working
    directories, then the two PM2 lists started in the background (the apps' account's is read
    with `apps_pm2_list` when no temporary file could be made)."""
    return [
        # The apps' processes: those of the apps' own account (APP_USER), read as it.
        "sec procs; " + as_app(c, s, 'ps -u "$(id -u)" -o pid=,ppid=') + " 2>/dev/null; true",
        # A folder's name is the app's to choose, newlines included: each entry ends with NUL,
        # and a newline in a name is shown as '?', so that no line of this section is the app's
        # own (a line of its own could open a section).
        "sec cwds; "
        + as_app(c, s, "find /proc/[0-9]*/cwd -maxdepth 0 -user \"$(id -u)\" -printf '%p %l\\0'")
        + " 2>/dev/null | tr '\\n\\000' '?\\n'; true",
        'sec pm2; if [ -n "$L" ]; then wait "$LP"; cat "$L"; rm -f "$L"; else '
        + apps_pm2_list
        + "; fi; true",
        'sec deploy_pm2; if [ -n "$D" ]; then wait "$DP"; cat "$D"; rm -f "$D"; fi; true',
    ]


def host_checks_script(s: Settings, c: Any = None) -> str:
    """Shell for what a deploy that changes something needs besides: tools present, who listens on
    our ports."""
    ports = "|".join(str(p) for p in (s.gunicorn_bind.port, s.node_port, *site_ports(s)))
    return "\n".join(
        [
            f"sec() {{ printf '\\n{MARK}%s\\n' \"$1\"; }}",
            *tools_script(s),
            *deploy_root_room_script(s, c),
            # for WHEELS=local: the wheels to fetch are this Python's (version, libc, machine)
            "sec python",
            f"{q(s.python)} -c {q(PYTHON_TAGS)} 2>/dev/null; true",
            listeners_script(ports),
            *owners_script(s, ports),
            # Open connections to the Node.js app (WebSockets, streams, requests in flight): what a
            # reload of its processes closes. Counted as the deploy user: no pid involved.
            "sec node_conns",
            f"ss -tnH state established '( sport = :{s.node_port} )' 2>/dev/null | wc -l",
            "sec helper",
            root.STATE_SCRIPT,
        ]
    )


def tools_script(s: Settings) -> list[str]:
    """Shell for the `tools` section: one line per tool or piece of `setup`'s work present."""
    return [
        "sec tools",
        f"command -v {q(s.pm2)} >/dev/null 2>&1 && echo pm2",
        "command -v node >/dev/null 2>&1 && echo node",
        "command -v flock >/dev/null 2>&1 && echo flock",
        # sudo: the root helper may run (the drop-in `setup` writes, or full sudo); nginx:
        # through sudo's PATH or /usr/sbin
        (
            f"sudo -n {HELPER} probe 2>/dev/null || sudo -n sh -c 'echo sudo; command -v nginx"
            f" >/dev/null && echo nginx' 2>/dev/null || {{ sudo -n -l {HELPER} >/dev/null 2>&1"
            " && echo sudo; }"
        ),
        "{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 && echo nginx",
        f"{q(s.python)} -c 'import venv, ensurepip' >/dev/null 2>&1 && echo python-venv",
        # The apps' own account, and the door to it `setup` gives the deploy user (unless it is
        # that account). (and the deploy user in its group, which lets it give the apps their
        # .env and shared/)
        f'{{ [ "$(id -un)" = {q(s.app_user)} ] || {{ sudo -n -l -u {q(s.app_user)} {APP_HELPER}'
        " /bin/true >/dev/null 2>&1 "
        f"&& {{ [ \"$(id -u)\" = 0 ] || id -Gn | tr ' ' '\\n' | grep -qxF {q(s.app_user)}; }};"
        " }; } && echo app-user",
        # What `setup` leaves behind: the apps' PM2 started at boot by a unit naming this PM2,
        # and log rotation.
        f"u={q(s.app_user)}; p=$(command -v "
        + q(s.pm2)
        + ') && [ -e "/etc/systemd/system/multi-user.target.wants/pm2-$u.service" ] && grep'
        ' -qxF "ExecStart=$(readlink -f "$p") resurrect" "/etc/systemd/system/pm2-$u.service"'
        " && echo boot",
        f"[ -e /etc/logrotate.d/pm2-{q(s.app_user)} ] && echo logrotate",
    ]


def deploy_root_room_script(s: Settings, c: Any) -> list[str]:
    """Shell for the `app_reach` and `disk` sections: whether the apps' account reaches
    DEPLOY_ROOT (or where it will be; a home above it may be closed to it), and the room left on
    its disk."""
    return [
        "sec app_reach; "
        + as_app(
            c,
            s,
            f'd={q(s.deploy_root)}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; '
            'test -x "$d" && echo yes',
        )
        + " 2>/dev/null; true",
        (
            f'sec disk; d={q(s.deploy_root)}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done;'
            ' df -Pk "$d" | tail -n 1'
        ),
    ]


def listeners_script(ports: str) -> str:
    """Shell for the `listen` section (and root's `commands`), read through the root helper, else
    full sudo, else as the deploy user; it leaves what it printed in $O for owners_script."""
    # Root's view of the listening sockets and of the command lines holding our ports, in one sudo.
    as_root = "\n".join(
        [
            "ss -ltnpH",
            f"printf '\\n{MARK}commands\\n'",
            (
                f"for pid in $(ss -ltnpH | grep -E ':({ports})[[:space:]]' | grep -o 'pid=[0-9]*' |"
                " cut -d= -f2 | sort -u); do"
            ),
            "  printf '%s ' \"$pid\"; tr '\\0\\n\\r' '   ' < /proc/$pid/cmdline 2>/dev/null; echo",
            "done",
        ]
    )
    return (
        f"sec listen; O=$(sudo -n {HELPER} listeners"
        f" {q(','.join(dict.fromkeys(ports.split('|'))))} 2>/dev/null || sudo -n sh -c"
        f" {q(as_root)} 2>/dev/null || ss -ltnH 2>/dev/null); printf '%s\\n' \"$O\""
    )


def owners_script(s: Settings, ports: str) -> list[str]:
    """Shell (as the deploy user, after `listen` set $O): the deploy user's name, then for each
    process listening on our ports `PID UID USER HOLDS CWD`, HOLDS `yes` when CWD holds WSGI_APP's
    module. CWD is readable for the deploy user's own processes, and for the apps' own account's
    through the app helper (as that account).
    """
    holds = " || ".join(f'[ -e "$c"/{q(name)} ]' for name in app_module_files(s))
    as_apps = (
        f"sudo -n -u {q(s.app_user)} {APP_HELPER} /bin/sh -c "
        + q(f'c=$(readlink /proc/"$1"/cwd) && printf "%s\\n" "$c" && {{ {holds}; }} && echo yes')
        + ' sh "$pid"'
    )
    return [
        "sec owners; id -un",
        (
            f"for pid in $(printf '%s\\n' \"$O\" | grep -E ':({ports})[[:space:]]' | grep -o"
            " 'pid=[0-9]*' | cut -d= -f2 | sort -u); do"
        ),
        (
            "  u=$(stat -c '%u %U' /proc/\"$pid\" 2>/dev/null) || continue; c=$(readlink"
            ' /proc/"$pid"/cwd 2>/dev/null); h=no'
        ),
        f'  [ -n "$c" ] && {{ {holds}; }} && h=yes',
        # (only for GUNICORN_BIND's, the one port a bare server is taken over from)
        f'  if [ -z "$c" ] && [ "${{u#* }}" = {q(s.app_user)} ] && printf \'%s\\n\' "$O" '
        f"| grep -E ':{s.gunicorn_bind.port}[[:space:]]' | grep -q \"pid=$pid,\"; then"
        f" r=$({as_apps} 2>/dev/null); "
        '[ "$(printf \'%s\\n\' "$r" | sed -n 2p)" = yes ] && h=yes; c=$(printf \'%s\\n\' "$r" | sed'
        " -n 1p); fi",
        '  printf \'%s %s %s %s\\n\' "$pid" "$u" "$h" "$c"',
        "done; true",
    ]


def app_module_files(s: Settings) -> list[str]:
    """The files, relative to the app's folder, that hold WSGI_APP's module (app:create_app() ->
    app.py, app/__init__.py)."""
    module = s.wsgi_app.split(":", 1)[0].strip().replace(".", "/")
    return [f"{module}.py", f"{module}/__init__.py"]


def facts_script(
    s: Settings, quick: bool = False, c: Any = None, start_pm2: bool = False, spawn_pm2: bool = True
) -> str:
    """The shell that prints every fact in marked sections. Read-only, but for `start_pm2`
    (files_and_processes_script).

    `quick` leaves out what only a deploy that changes something needs (tools, listening sockets
    and who holds them): enough to see that nothing changed, in a few milliseconds on the host.
    """
    if quick:
        return files_and_processes_script(s, c, start_pm2, spawn_pm2)
    return files_and_processes_script(s, c, start_pm2, spawn_pm2) + "\n" + host_checks_script(s, c)


def split_sections(output: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(MARK):
            current = sections.setdefault(line[len(MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


def parse_pm2_jlist(text: str) -> tuple[list[Pm2Process], bool]:
    """Parse `pm2 jlist`, which may print non-JSON lines (daemon start-up notes) before the list."""
    procs = pm2_processes(text)
    if procs is None:
        return [], False
    return [Pm2Process(**{**p, "args": tuple(p["args"])}) for p in procs], True


def parse_listeners(text: str) -> list[Listener]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] != "LISTEN":
            continue
        host, _, port = parts[3].rpartition(":")
        if not port.isdigit():
            continue
        users = " ".join(parts[5:])
        pids = tuple(int(p) for p in re.findall(r"pid=(\d+)", users))
        names = tuple(re.findall(r'\("([^"]*)"', users))
        out.append(Listener(host=host.strip("[]"), port=int(port), pids=pids, names=names))
    return out


def read_manifest(text: str, current: str) -> dict[str, Any] | None:
    """The live release's manifest in the current format (an older one migrated); None if absent or
    not JSON. A newer format, which this version cannot read, stops the task with a clear
    message."""
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return formats.read(formats.MANIFEST, data, f"The live release {current}")
    except formats.FormatError as err:
        from signalcraft_deploy.host.io import fail

        raise fail(f"{err} Nothing was changed.") from None


def parse_facts(output: str) -> HostFacts:
    sec = split_sections(output)
    facts = HostFacts()
    read_release_files(sec, facts)
    facts.tools = {line.strip() for line in sec.get("tools", "").splitlines() if line.strip()}
    facts.pm2, facts.pm2_readable = parse_pm2_jlist(sec.get("pm2", ""))
    facts.deploy_pm2 = parse_pm2_jlist(sec.get("deploy_pm2", ""))[0]
    facts.app_reaches_root = "app_reach" not in sec or sec["app_reach"].strip() == "yes"
    facts.listeners = parse_listeners(sec.get("listen", ""))
    facts.procs = parse_procs(sec.get("procs", ""), sec.get("cwds", ""))
    facts.complete = "tools" in sec
    facts.helper = root.parse_state(sec["helper"]) if "helper" in sec else None
    python = sec.get("python", "").split()
    facts.python = (python[0], python[1], python[2]) if len(python) == 3 else None
    disk = sec.get("disk", "").split()
    facts.free_mb = int(disk[3]) // 1024 if len(disk) > 3 and disk[3].isdigit() else None
    facts.commands = parse_commands(sec.get("commands", ""))
    facts.user, facts.owners = parse_owners(sec.get("owners", ""))
    conns = sec.get("node_conns", "").strip()
    facts.node_connections = int(conns) if conns.isdigit() else None
    return facts


def read_release_files(sec: dict[str, str], facts: HostFacts) -> None:
    """Fill `facts` with what release_files_script's sections (and `uid`) show."""
    uid = sec.get("uid", "").strip()
    facts.uid = int(uid) if uid.isdigit() else None
    current = sec.get("current", "").strip()
    facts.current_release = current.rstrip("/").rsplit("/", 1)[-1] if current else None
    facts.releases = sorted(line for line in sec.get("releases", "").splitlines() if line.strip())
    facts.bad_releases = {line.strip() for line in sec.get("bad", "").splitlines() if line.strip()}
    facts.manifest = read_manifest(sec.get("manifest", ""), facts.current_release or "current")
    facts.venvs_ready = {line.strip() for line in sec.get("venvs", "").splitlines() if line.strip()}
    facts.node_modules_ready = {
        line.strip() for line in sec.get("node_modules", "").splitlines() if line.strip()
    }
    facts.configs = {
        name[5:]: text + "\n" for name, text in sec.items() if name.startswith("conf:") and text
    }
    site = sec.get("site")
    facts.site_text = (site + "\n") if site else None
    facts.site_enabled = sec.get("enabled", "").strip() == "yes"
    facts.live_env = sec.get("env", "").strip() == "yes"
    facts.maintenance = parse_maintenance(
        sec.get("maintenance", ""), sec.get("maintenance_on", "").strip() == "yes"
    )
    try:
        defaults = json.loads(sec.get("site_defaults") or "{}")
        facts.site_defaults = (
            {str(k): str(v) for k, v in defaults.items()} if isinstance(defaults, dict) else {}
        )
    except ValueError:
        facts.site_defaults = {}


def parse_procs(procs: str, cwds: str) -> dict[int, tuple[int, str]]:
    """The `procs` section (`PID PPID` lines) joined with `cwds` (`/proc/PID/cwd DIR` lines):
    {pid: (parent pid, working directory or "")}."""
    cwd_of = {}
    for line in cwds.splitlines():
        path, _, cwd = line.partition(" ")
        pid = path.removeprefix("/proc/").removesuffix("/cwd")
        if pid.isdigit():
            cwd_of[int(pid)] = cwd
    found = {}
    for line in procs.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            found[int(parts[0])] = (int(parts[1]), cwd_of.get(int(parts[0]), ""))
    return found


def parse_commands(text: str) -> dict[int, str]:
    """The `commands` section: `PID COMMAND LINE` lines."""
    commands = {}
    for line in text.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if pid.isdigit():
            commands[int(pid)] = cmd.strip()
    return commands


def parse_owners(text: str) -> tuple[str, dict[int, Owner]]:
    """The `owners` section: the deploy user's name, then `PID UID USER HOLDS CWD` lines."""
    lines = text.splitlines()
    owners = {}
    for line in lines[1:]:
        parts = line.split(" ", 4)
        if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
            owners[int(parts[0])] = Owner(
                int(parts[1]), parts[2], parts[4] if len(parts) > 4 else "", parts[3] == "yes"
            )
    return (lines[0].strip() if lines else ""), owners


def add_host_checks(c: Any, s: Settings, facts: HostFacts) -> None:
    """Add to a quick read what a deploy that changes something needs (tools, listeners, their
    commands)."""
    more = parse_facts(run(c, "sh -s", stdin=host_checks_script(s, c) + "\n", warn=True).stdout)
    facts.tools, facts.listeners, facts.commands, facts.complete = (
        more.tools,
        more.listeners,
        more.commands,
        True,
    )
    facts.owners, facts.user = more.owners, more.user
    facts.python = more.python
    facts.free_mb = more.free_mb
    facts.helper = more.helper
    facts.app_reaches_root = more.app_reaches_root
    facts.node_connections = more.node_connections


def gather(
    c: Any, s: Settings, quick: bool = False, start_pm2: bool = False, spawn_pm2: bool = True
) -> HostFacts:
    """Read every fact about the host in one command (`quick`: only what shows that nothing changed;
    `start_pm2`: see files_and_processes_script)."""
    return parse_facts(
        run(
            c, "sh -s", stdin=facts_script(s, quick, c, start_pm2, spawn_pm2) + "\n", warn=True
        ).stdout
    )


def live_release(c: Any, s: Settings) -> tuple[HostFacts, str]:
    """Facts and the live release's directory, for the tasks that act on what is deployed."""
    from signalcraft_deploy.host.io import fail

    facts = gather(c, s)
    if not facts.current_release:
        raise fail(f"No release at {s.current_dir} yet: run `deploy` first.")
    return facts, f"{s.releases_dir}/{facts.current_release}"


def node_public_warning(s: Settings, facts: HostFacts) -> str | None:
    """A warning when the Node.js app listens beyond loopback: anyone who reaches that port bypasses
    Nginx."""
    public = facts.beyond_loopback(s.node_port)
    if not public:
        return None
    return (
        f"{s.node_app} listens on {', '.join(public)}, beyond loopback: anyone who can reach port"
        f" {s.node_port} bypasses Nginx. Make the app listen on 127.0.0.1"
        f" (server.listen(process.env.PORT, '127.0.0.1')), or close port {s.node_port} in the"
        " host's firewall."
    )
