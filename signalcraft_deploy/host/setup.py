"""Setup: make a fresh host ready for deploys, and keep it so. Facts, a pure plan, then the changes.

pyinfra's shape: `gather` reads everything in one command (remote/setup_facts.sh, run as root with a
fixed PATH), `plan_setup` (pure) lists each item as already right or to change, and the functions
below it make only the changes. `setup` is an admin's step: the connecting account needs full
passwordless sudo (apt, `npm -g`, files in /etc); the deploy user it sets the host up for (`--user`,
by default the connecting one) needs none. What `setup` owns on a host:

- apt packages: nginx, python3-venv, logrotate, and Node.js (nodejs, npm) when root has no `node`;
- PM2 at PM2_VERSION (npm install -g, as root) when root has no `pm2`;
- the boot unit /etc/systemd/system/pm2-<user>.service, enabled by its multi-user.target.wants link:
  the unit `pm2 startup systemd -u <user> --hp <home>` writes, rendered here from the bundled
  templates/pm2-boot.service.j2 (PM2 7.0's systemd.tpl), so that root never runs PM2. It embeds
  Node's and PM2's real paths as root finds them on its fixed PATH, and each must be root's (the
  file and every folder above it root-owned, not group- or other-writable) or setup refuses; it is
  redone when either path changes (a Node upgrade otherwise breaks it);
- /etc/logrotate.d/pm2-<user>: PM2's logs rotated by size (templates/logrotate.conf.j2, bundled
  only); its postrotate runs as the user;
- the root helper /usr/local/sbin/signalcraft-root and its programs in
  /usr/local/lib/signalcraft-deploy/ (host/root.py), redone when they differ from this version's;
- the apps' own account APP_USER (unless it is the deploy user): a system account with no shell, a
  locked password and no sudo, home /var/lib/signalcraft-apps/<app>, in a group of its own that the
  deploy user joins (it gives the apps' account its files: .env 0640, shared/); its own boot unit
  and log rotation; root's record of the deploy user's app users
  (/var/lib/signalcraft-deploy/app-users/<user>.json), which the root helper reads to know whose
  processes are the caller's;
- /etc/nginx/modules-enabled/99-signalcraft-drain.conf: `worker_shutdown_timeout` (NGINX_DRAIN_SECONDS),
  a main-context directive that Debian's nginx.conf reaches through its `include
  /etc/nginx/modules-enabled/*.conf` (nginx.conf itself is never edited; one that sets the
  directive itself, or does not include that folder, is left as it is and said so);
- /etc/sudoers.d/signalcraft-<user> (0440, checked with `visudo -cf` first): the deploy user may run
  that helper as root without a password, and the app helper /usr/local/sbin/signalcraft-app as its
  apps' accounts, and nothing else.

Root writes each file from a temporary file of its own (`mktemp`, checked first where a checker
exists), installed root-owned under a random name in the destination's folder and renamed over the
destination: never a fixed name in /tmp, never through a symlink.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from signalcraft_deploy.core.render import SITE_HEADER, render_boot_unit, render_logrotate
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root
from signalcraft_deploy.host.facts import split_sections
from signalcraft_deploy.host.io import fail, q, run, sudo
from signalcraft_deploy.host.programs import program_command

PM2_VERSION = "7.0.4"
UNIT_DIR = "/etc/systemd/system"
STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
ROOT_PATH = ":".join(STANDARD_PATH)  # the only PATH root looks programs up on
USER_RE = re.compile(r"[a-z_][a-z0-9_-]*")
APP_HOMES = "/var/lib/signalcraft-apps"
NO_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def check_user(name: str) -> str:
    """The deploy user's name, if it is a plain one (what sudoers, unit and file names can hold as
    they are)."""
    if not USER_RE.fullmatch(name or "") or len(name) > 32:
        raise fail(
            f"--user {name!r} is not a plain user name (lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_'): name the deploy account, e.g. --user deploy."
        )
    return name


@dataclass
class SetupFacts:
    user: str = ""
    group: str = ""
    home: str = ""
    pm2_home: str = ""
    sudo: bool = (
        False  # the connecting account could run the facts as root (full passwordless sudo)
    )
    apt: bool = False
    packages: dict[str, str] = field(default_factory=dict)  # installed package -> version
    commands: set[str] = field(default_factory=set)
    venv: bool = False
    node: str = ""  # real path of `node`, "" if none
    npm: str = ""
    pm2: str = ""  # real path of PM2's bin/pm2 on root's PATH, "" if none
    pm2_version: str = ""
    owners_node: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (uid, mode, path): node, then each folder up
    owners_pm2: list[tuple[str, str, str]] = field(default_factory=list)
    systemd_running: bool = False
    unit: str | None = None
    wants: str | None = None
    logrotate_conf: str | None = None
    helper_digest: str = ""  # sha256 of the installed root helper's files
    sudoers: str | None = None  # the drop-in's text (None: absent)
    user_groups: list[str] = field(default_factory=list)
    acl: bool = (
        False  # setfacl is there (the deploy user opens its home to the apps' account with it)
    )
    app: str = (
        ""  # the apps' own account (APP_USER); the deploy user's own name: the apps run as it
    )
    app_entry: list[str] | None = None  # its passwd fields (None: no such account)
    app_password: str = ""  # passwd -S: L locked, P usable, NP none
    app_groups: list[str] = field(default_factory=list)
    app_sudo: str = ""  # the last line of `sudo -l -U APP`
    app_unit: str | None = None
    app_wants: str | None = None
    app_logrotate_conf: str | None = None
    app_active: str = ""  # systemctl is-active pm2-APP.service, when systemd runs
    app_daemon: str = ""  # the pid of a PM2 daemon of APP, if one runs
    nginx_drain: str | None = None  # setup's worker_shutdown_timeout file (None: absent)
    nginx_conf_drain: str = ""  # nginx.conf's own worker_shutdown_timeout line, if any
    app_records: dict[str, Any] = field(
        default_factory=dict
    )  # root's record of this deploy user's app users
    other_app_records: list[dict[str, Any]] = field(
        default_factory=list
    )  # root's records of the other deploy users

    @property
    def separate_app(self) -> bool:
        return bool(self.app) and self.app != self.user

    @property
    def app_home(self) -> str:
        return self.app_entry[5] if self.app_entry else f"{APP_HOMES}/{self.app}"

    @property
    def apps(self) -> tuple[str, ...]:
        """Every app user of this deploy user: root's record, and this one."""
        known = set(self.app_records.get("apps", {}))
        return tuple(sorted(known | ({self.app} if self.separate_app else set())))

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/pm2-{self.user}.service"

    @property
    def wants_path(self) -> str:
        return f"{UNIT_DIR}/multi-user.target.wants/pm2-{self.user}.service"

    @property
    def logrotate_path(self) -> str:
        return f"/etc/logrotate.d/pm2-{self.user}"


@dataclass(frozen=True)
class SetupSections:
    """setup_facts.sh's output by section, read the ways its sections are written."""

    sections: dict[str, str]

    def one(self, name: str) -> str:
        """A one-line section."""
        return self.sections.get(name, "").strip()

    def lines(self, name: str) -> list[str]:
        return self.sections.get(name, "").splitlines()

    def owners(self, name: str) -> list[tuple[str, str, str]]:
        """An `owners` section: `UID MODE PATH` lines."""
        return [
            (parts[0], parts[1], parts[2])
            for parts in (line.split(" ", 2) for line in self.lines(name))
            if len(parts) == 3
        ]

    def text(self, name: str) -> str | None:
        """A file's text; None for an absent or blank file."""
        return (self.sections[name] + "\n") if self.one(name) else None

    def packages(self) -> dict[str, str]:
        """{package: version} of the installed ones in the `packages` section (`NAME STATUS
        VERSION` lines)."""
        packages = {}
        for line in self.lines("packages"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "installed":
                packages[parts[0]] = parts[2]
        return packages


def parse_setup_facts(output: str) -> SetupFacts:
    sec = SetupSections(split_sections(output))
    one = sec.one
    return SetupFacts(
        user=one("user"),
        group=one("group"),
        home=one("home"),
        pm2_home=one("pm2_home"),
        sudo=one("root") == "yes",
        apt=one("apt") == "yes",
        packages=sec.packages(),
        commands=set(sec.sections.get("commands", "").split()),
        venv=one("venv") == "yes",
        node=one("node"),
        npm=one("npm"),
        pm2=one("pm2"),
        pm2_version=one("pm2_version"),
        owners_node=sec.owners("owners_node"),
        owners_pm2=sec.owners("owners_pm2"),
        systemd_running=one("systemd_running") == "yes",
        unit=sec.text("unit"),
        wants=one("wants") or None,
        logrotate_conf=sec.text("logrotate_conf"),
        user_groups=one("user_groups").split(),
        acl=one("acl") == "yes",
        nginx_drain=sec.text("nginx_drain"),
        nginx_conf_drain=one("nginx_conf_drain"),
        app_records=_records(one("app_records")),
        other_app_records=[
            _records(line) for line in sec.lines("other_app_records") if line.strip()
        ],
        app_entry=one("app_entry").split(":") if one("app_entry").count(":") == 6 else None,
        app_password=one("app_password"),
        app_groups=one("app_groups").split(),
        app_sudo=one("app_sudo"),
        app_unit=sec.text("app_unit"),
        app_wants=one("app_wants") or None,
        app_logrotate_conf=sec.text("app_logrotate_conf"),
        app_active=one("app_active"),
        app_daemon=one("app_daemon"),
    )


def _records(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def facts_command(s: Settings, user: str) -> tuple[str, str]:
    """setup_facts.sh as root with root's fixed PATH and nothing of the caller's environment (the
    text on stdin); nothing on stdout when the connecting account has no passwordless sudo."""
    command, text = program_command(s, "setup_facts.sh", s.pm2, s.python, user, s.app_user)
    return (
        (
            f"if sudo -n true 2>/dev/null; then sudo -n env -i PATH={ROOT_PATH} {command}; else cat"
            " >/dev/null; fi"
        ),
        text,
    )


def gather(c: Any, s: Settings, user: str) -> SetupFacts:
    """The facts about the host and the deploy user `user` (validated first)."""
    command, text = facts_command(s, check_user(user))
    facts = parse_setup_facts(run(c, command, stdin=text, warn=True).stdout)
    facts.app = s.app_user
    if facts.user:
        out = run(
            c,
            f"{root.digest_command()}; echo; sudo -n cat {q(root.sudoers_path(facts.user))}"
            " 2>/dev/null",
            warn=True,
        ).stdout
        found, _, text = out.partition("\n")
        facts.helper_digest, facts.sudoers = found.strip(), text.lstrip("\n") or None
    return facts


# ----------------------------------------------------------------------------- the plan (pure)


class State(StrEnum):
    """What an item needs; the values are the words printed in front of it."""

    OK = "ok"
    INSTALL = "install"
    WRITE = "write"
    REFUSED = "refused"  # setup will not do it as things are; the reason is printed below the plan
    REMOVE = "remove"  # setup --remove-app takes it off


@dataclass(frozen=True)
class Item:
    name: str
    state: State
    detail: str


def unit_path_env(node: str) -> str:
    """The PATH the boot unit gives PM2: Node's own directory first, then the standard ones."""
    node_dir = node.rsplit("/", 1)[0] if "/" in node else "/usr/bin"
    return ":".join([node_dir] + [d for d in STANDARD_PATH if d != node_dir])


def boot_unit(f: SetupFacts) -> str:
    """The unit `pm2 startup systemd -u <user> --hp <home>` writes (PM2 7.0's template, as PM2 fills
    it in), rendered from the bundled template: PM2 never runs as root."""
    return render_boot_unit(f.user, f.home, f.pm2, unit_path_env(f.node))


def unsafe_folder(owners: list[tuple[str, str, str]]) -> str | None:
    """The first of a file and the folders above it (setup_facts.sh's `owners`) that is not
    root-owned or is group- or other-writable, as "PATH (why)"; None when root alone can change the
    file."""
    if not owners:
        return "(not found)"
    for uid, mode, path in owners:
        if uid != "0":
            return f"{path} (owned by uid {uid})"
        if not re.fullmatch(r"[0-7]{3,4}", mode) or int(mode, 8) & 0o022:
            return f"{path} (mode {mode}: writable by its group or others)"
    return None


def path_problems(f: SetupFacts) -> list[str]:
    """Why Node.js's or PM2's path cannot go into a unit root installs: each must be root's
    alone."""
    out = []
    if f.pm2:
        bad = unsafe_folder(f.owners_pm2)
        if bad:
            out.append(
                f"PM2 on root's PATH is {f.pm2}, and {bad} can be changed by an account other than"
                " root, which the boot unit would then run. Install PM2 globally as root with"
                f" `sudo npm install -g pm2@{PM2_VERSION}` (and take the other one off root's PATH:"
                f" {ROOT_PATH}), then run setup again."
            )
    if f.node:
        bad = unsafe_folder(f.owners_node)
        if bad:
            out.append(
                f"Node.js on root's PATH is {f.node}, and {bad} can be changed by an account other"
                " than root. Install Node.js as root (apt-get install nodejs, or into /usr/local"
                f" as root) and take the other one off root's PATH ({ROOT_PATH}), then run setup"
                " again."
            )
    return out


def missing_packages(f: SetupFacts) -> list[str]:
    missing = [p for p in ("nginx", "logrotate") if p not in f.packages and p not in f.commands]
    if not f.venv:
        missing.append("python3-venv")
    if f.separate_app and not f.acl:
        missing.append("acl")
    if not f.node:
        missing += ["nodejs", "npm"]
    elif not f.pm2 and not f.npm:
        missing.append("npm")
    return missing


def package_items(f: SetupFacts) -> list[Item]:
    items = []
    missing = missing_packages(f)
    for name, present in (
        ("nginx", f.packages.get("nginx", "present" if "nginx" in f.commands else "")),
        ("python3-venv", "python3 -m venv works" if f.venv else ""),
        ("logrotate", f.packages.get("logrotate", "present" if "logrotate" in f.commands else "")),
        ("node", f.node),
    ):
        if present:
            items.append(Item(name, State.OK, present))
    if missing:
        items.append(Item("apt packages", State.INSTALL, "apt-get install " + " ".join(missing)))
    if f.pm2:
        items.append(Item("pm2", State.OK, f"{f.pm2_version or '?'} at {f.pm2}"))
    else:
        items.append(Item("pm2", State.INSTALL, f"npm install -g pm2@{PM2_VERSION}"))
    return items


def boot_item(f: SetupFacts) -> Item:
    if not f.pm2 or not f.node:
        return Item("boot unit", State.WRITE, f"{f.unit_path}, once Node.js and PM2 are installed")
    if path_problems(f):
        return Item(
            "boot unit", State.REFUSED, f"{f.unit_path}: Node.js or PM2 is not root's alone (below)"
        )
    if f.unit != boot_unit(f):
        why = (
            "missing"
            if f.unit is None
            else "names another Node.js or PM2 path than the installed ones"
        )
        return Item(
            "boot unit",
            State.WRITE,
            f"{f.unit_path} ({why}): as pm2 startup systemd -u {f.user} --hp {f.home}",
        )
    if f.wants != f.unit_path:
        return Item("boot unit", State.WRITE, f"{f.unit_path} is not enabled: link {f.wants_path}")
    return Item("boot unit", State.OK, f"{f.unit_path} enabled (PM2 {f.pm2}, Node.js {f.node})")


def logrotate_text(s: Settings, f: SetupFacts) -> str:
    return render_logrotate(
        s, f.user, f.group, f.home, f.pm2 or "/usr/bin/pm2", unit_path_env(f.node)
    )


def logrotate_item(s: Settings, f: SetupFacts) -> Item:
    if path_problems(f):
        return Item(
            "log rotation",
            State.REFUSED,
            f"{f.logrotate_path}: Node.js or PM2 is not root's alone (below)",
        )
    if f.logrotate_conf == logrotate_text(s, f):
        return Item(
            "log rotation",
            State.OK,
            f"{f.logrotate_path} (size {s.log_rotate_size}, keep {s.log_rotate_count})",
        )
    why = "missing" if f.logrotate_conf is None else "differs"
    return Item(
        "log rotation",
        State.WRITE,
        f"{f.logrotate_path} ({why}; size {s.log_rotate_size}, keep {s.log_rotate_count})",
    )


DRAIN_CONF = "/etc/nginx/modules-enabled/99-signalcraft-drain.conf"


def drain_text(s: Settings) -> str | None:
    """The main-context file that bounds old Nginx workers (None: NGINX_DRAIN_SECONDS=0)."""
    if not s.nginx_drain_seconds:
        return None
    return (
        f"{SITE_HEADER} NGINX_DRAIN_SECONDS: after a reload, old workers close what they still"
        f" hold.\nworker_shutdown_timeout {s.nginx_drain_seconds}s;\n"
    )


def drain_item(s: Settings, f: SetupFacts) -> Item:
    if f.nginx_conf_drain and f.nginx_drain is None:
        return Item(
            "nginx drain",
            State.OK,
            f"/etc/nginx/nginx.conf sets {f.nginx_conf_drain.strip()} itself: left as it is"
            " (NGINX_DRAIN_SECONDS is not applied)",
        )
    want = None if f.nginx_conf_drain else drain_text(s)
    if f.nginx_drain == want:
        bound = f"{s.nginx_drain_seconds}s" if want else "none (NGINX_DRAIN_SECONDS=0)"
        return Item("nginx drain", State.OK, f"old workers' bound after a reload: {bound}")
    what = f"worker_shutdown_timeout {s.nginx_drain_seconds}s" if want else "removed"
    return Item("nginx drain", State.WRITE, f"{DRAIN_CONF} ({what})")


def write_drain(c: Any, s: Settings, f: SetupFacts) -> str:
    """Write (or remove) the drain file, keep it only if Nginx reads it at main level and `nginx -t`
    passes, and reload a running Nginx so that its workers carry the bound (a worker is bounded by
    the configuration it was started with: measured)."""
    want = None if f.nginx_conf_drain else drain_text(s)
    if want is None:
        run(c, sudo(f"rm -f {q(DRAIN_CONF)}"))
    else:
        result = run(c, root_install_command(DRAIN_CONF), stdin=want, warn=True)
        if not result.ok:
            raise fail(f"Could not write {DRAIN_CONF}: {(result.stderr or result.stdout).strip()}")
    check = (
        f'f={q(DRAIN_CONF)}; if [ -e "$f" ] && ! nginx -T 2>/dev/null | grep -qxF'
        f' "# configuration file $f:"; then rm -f "$f"; exit 5; fi;'
        f' {s.nginx_test_cmd} >/dev/null 2>&1 || {{ rm -f "$f"; exit 6; }};'
        f" if pgrep -f '^nginx: master' >/dev/null; then {s.nginx_reload_cmd}; fi"
    )
    result = run(c, "sudo -n sh -c " + q(check), warn=True)
    if result.exited == 5:
        raise fail(
            "/etc/nginx/nginx.conf does not include /etc/nginx/modules-enabled/*.conf at its top"
            " level (Debian's does), so NGINX_DRAIN_SECONDS cannot be applied: add"
            f" `worker_shutdown_timeout {s.nginx_drain_seconds}s;` to its top level yourself, or"
            " set NGINX_DRAIN_SECONDS=0."
        )
    if not result.ok:
        raise fail(
            f"nginx -t fails with {DRAIN_CONF}, so it was removed: check Nginx's main"
            " configuration, or set NGINX_DRAIN_SECONDS=0."
        )
    return f"{DRAIN_CONF} ({'removed' if want is None else want.splitlines()[-1]})"


def helper_item(f: SetupFacts) -> Item:
    if f.helper_digest == root.digest():
        return Item("root helper", State.OK, f"{root.HELPER} (this version's)")
    why = (
        "another version's"
        if f.helper_digest and f.helper_digest != root.digest_of_nothing()
        else "missing"
    )
    return Item("root helper", State.WRITE, f"{root.HELPER} and {root.LIB}/ ({why})")


def sudoers_item(f: SetupFacts) -> Item:
    path = root.sudoers_path(f.user)
    apps = f" and {root.APP_HELPER} as {', '.join(f.apps)}" if f.apps else ""
    if f.sudoers == root.sudoers_text(f.user, f.apps):
        return Item(
            "sudoers",
            State.OK,
            f"{path}: {f.user} may run only {root.HELPER} as root{apps}, without a password",
        )
    why = "missing" if f.sudoers is None else "differs"
    return Item(
        "sudoers", State.WRITE, f"{path} ({why}): {f.user} ALL=(root) NOPASSWD: {root.HELPER}{apps}"
    )


# ----------------------------------------------------------------------------- the apps' own
# account


APP_COMMENT = "signalcraft-deploy apps of "  # the comment (GECOS) setup gives the accounts it makes


def app_account_problem(f: SetupFacts) -> str | None:
    """Why an existing account cannot be the apps' own: it must be a system account with no way in
    and no sudo."""
    assert f.app_entry is not None
    uid, comment, home, shell = f.app_entry[2], f.app_entry[4], f.app_entry[5], f.app_entry[6]
    if not uid.isdigit() or int(uid) == 0:
        return "has root's uid"
    if shell not in NO_SHELLS:
        return f"has the login shell {shell}"
    if f.app_password not in ("L", "LK"):
        return "has a password that is not locked"
    if "not allowed" not in f.app_sudo:
        return f"may use sudo ({f.app_sudo.strip() or 'sudo -l says so'})"
    if f.app_groups[1:]:
        return (
            f"is in other groups than its own ({', '.join(f.app_groups[1:])}), whose files the apps"
            " could reach"
        )
    if not comment.startswith(APP_COMMENT) or home != f"{APP_HOMES}/{f.app}":
        # Another service's account (www-data, redis, nobody): its processes would become the deploy
        # user's own.
        return (
            f"is not an account setup made (its comment is {comment!r}, not"
            f" {APP_COMMENT + '<deploy user>'!r}, or its home is {home}, not {APP_HOMES}/{f.app}):"
            " it may be another service's"
        )
    return None


def app_user_item(f: SetupFacts) -> Item:
    other = next((r.get("deploy") for r in f.other_app_records if f.app in r.get("apps", {})), None)
    if other:
        return Item(
            "app user",
            State.REFUSED,
            f"{f.app} is already the apps' account of the deploy user {other}: one account runs one"
            f" deploy user's apps (it would let {f.user} see and reach {other}'s). Name another"
            " APP_USER (setup creates it)",
        )
    if f.app_entry is None:
        return Item(
            "app user",
            State.WRITE,
            f"{f.app}: a system account (no shell, locked password, no sudo), home {f.app_home}",
        )
    problem = app_account_problem(f)
    if problem:
        return Item(
            "app user",
            State.REFUSED,
            f"{f.app} {problem}: the apps' account must have no way in and no rights "
            "of its own; name another APP_USER (setup creates it), or APP_USER="
            + f.user
            + " to run the apps as the deploy user",
        )
    return Item(
        "app user",
        State.OK,
        f"{f.app} (uid {f.app_entry[2]}, home {f.app_home}, no shell, no sudo)",
    )


def app_group_item(f: SetupFacts) -> Item:
    group = f.app_groups[0] if f.app_groups else f.app
    if group in f.user_groups:
        return Item(
            "app group",
            State.OK,
            f"{f.user} is in {group} (it gives the apps their .env and shared/)",
        )
    return Item(
        "app group",
        State.WRITE,
        f"usermod -aG {group} {f.user} (it gives the apps their .env and shared/; from "
        f"{f.user}'s next login)",
    )


def app_unit_path(f: SetupFacts) -> str:
    return f"{UNIT_DIR}/pm2-{f.app}.service"


def app_boot_unit(f: SetupFacts) -> str:
    return render_boot_unit(f.app, f.app_home, f.pm2, unit_path_env(f.node))


def app_boot_item(f: SetupFacts) -> Item:
    unit = app_unit_path(f)
    if not f.pm2 or not f.node:
        return Item("app boot unit", State.WRITE, f"{unit}, once Node.js and PM2 are installed")
    if path_problems(f):
        return Item(
            "app boot unit", State.REFUSED, f"{unit}: Node.js or PM2 is not root's alone (below)"
        )
    if f.app_unit != app_boot_unit(f) or f.app_wants != unit:
        return Item(
            "app boot unit",
            State.WRITE,
            f"{unit}: {f.app}'s PM2 started at boot, and enabled"
            + ("; started now" if app_unit_to_start(f) or not f.app_unit else ""),
        )
    if app_unit_to_start(f):
        return Item(
            "app boot unit",
            State.WRITE,
            f"{unit} enabled; start it now (systemd then runs {f.app}'s PM2)",
        )
    if f.systemd_running and f.app_active != "active":
        return Item(
            "app boot unit",
            State.OK,
            f"{unit} enabled; {f.app}'s PM2 (pid {f.app_daemon}) was started outside "
            "it, before setup: systemd runs it from the next boot",
        )
    return Item(
        "app boot unit", State.OK, f"{unit} enabled" + ("; active" if f.systemd_running else "")
    )


def app_unit_to_start(f: SetupFacts) -> bool:
    """Whether setup starts the app's unit: systemd runs, the unit is not active, and no PM2 daemon
    of the apps' account runs (one started outside the unit would not become systemd's; two daemons
    cannot share a PM2 home).
    """
    return f.systemd_running and f.app_active != "active" and not f.app_daemon


def app_logrotate_text(s: Settings, f: SetupFacts) -> str:
    group = f.app_groups[0] if f.app_groups else f.app
    return render_logrotate(
        s, f.app, group, f.app_home, f.pm2 or "/usr/bin/pm2", unit_path_env(f.node)
    )


def app_logrotate_item(s: Settings, f: SetupFacts) -> Item:
    path = f"/etc/logrotate.d/pm2-{f.app}"
    if path_problems(f):
        return Item(
            "app rotation", State.REFUSED, f"{path}: Node.js or PM2 is not root's alone (below)"
        )
    if f.app_logrotate_conf == app_logrotate_text(s, f):
        return Item("app rotation", State.OK, path)
    return Item(
        "app rotation",
        State.WRITE,
        f"{path} ({'missing' if f.app_logrotate_conf is None else 'differs'})",
    )


def app_record(f: SetupFacts) -> dict[str, Any]:
    """Root's record of the deploy user's app users, with this one (its uid as the passwd entry says
    now)."""
    assert f.app_entry is not None
    apps = dict(f.app_records.get("apps", {}))
    apps[f.app] = {"uid": int(f.app_entry[2]), "home": f.app_home}
    return {"deploy": f.user, "apps": dict(sorted(apps.items()))}


def app_record_item(f: SetupFacts) -> Item:
    path = f"{root.APP_RECORDS}/{f.user}.json"
    if f.app_entry is not None and f.app_records == app_record(f):
        return Item("app record", State.OK, f"{path}: {', '.join(f.apps)}")
    return Item(
        "app record",
        State.WRITE,
        f"{path}: {f.user}'s apps run as {', '.join(f.apps)} (what the root helper reads)",
    )


def app_items(s: Settings, f: SetupFacts) -> list[Item]:
    if not f.separate_app:
        return []
    return [
        app_user_item(f),
        app_group_item(f),
        app_boot_item(f),
        app_logrotate_item(s, f),
        app_record_item(f),
    ]


def plan_setup(s: Settings, f: SetupFacts) -> list[Item]:
    """Every item `setup` owns, each already right (OK) or what it would change."""
    return (
        package_items(f)
        + [boot_item(f), logrotate_item(s, f), drain_item(s, f)]
        + app_items(s, f)
        + [helper_item(f), sudoers_item(f)]
    )


# ----------------------------------------------------------------------------- the changes


def install_packages(c: Any, f: SetupFacts) -> None:
    missing = missing_packages(f)
    if missing and not f.apt:
        raise fail(
            f"The host lacks {', '.join(missing)} and has no apt-get: install them with its package"
            " manager and run setup again."
        )
    if missing:
        command = "env DEBIAN_FRONTEND=noninteractive sh -c " + q(
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
            + " ".join(missing)
        )
        result = run(c, sudo(command), warn=True, timeout=1200)
        if not result.ok:
            raise fail(
                f"apt-get could not install {' '.join(missing)}:"
                f" {(result.stderr or result.stdout).strip()[-800:]}"
            )
    if not f.pm2:
        result = run(
            c,
            sudo(f"env PATH={ROOT_PATH} npm install -g --no-fund --no-audit pm2@{PM2_VERSION}"),
            warn=True,
            timeout=900,
        )
        if not result.ok:
            raise fail(
                f"npm could not install pm2@{PM2_VERSION}:"
                f" {(result.stderr or result.stdout).strip()[-800:]}"
            )


def root_install_command(dest: str, mode: str = "0644", check: str = "") -> str:
    """One root shell that writes stdin to `dest`, root-owned with `mode`, atomically and never
    through a symlink.

    The text goes to a temporary file root makes (`mktemp`: a new name, root's alone), `check` (a
    command with "$t" for that file) must accept it, then `install` puts a root-owned copy under a
    random name in `dest`'s folder (ending in '~', which logrotate and systemd skip) and `mv -T`
    renames it over `dest`, replacing a symlink there rather than following it. Both temporary files
    are gone afterwards, whatever happened.
    """
    folder, name = dest.rsplit("/", 1)
    script = (
        f't=$(mktemp) && n=$(mktemp -p {q(folder)} --suffix="~" {q("." + name)}.XXXXXX) || exit 1;'
        f' cat > "$t" {("&& " + check + " ") if check else ""}&& install -o root -g root -m {mode}'
        f' "$t" "$n" && mv -fT "$n" {q(dest)}; rc=$?; rm -f "$t" "$n"; exit $rc'
    )
    return "sudo -n sh -c " + q(script)


def enable_boot(c: Any, f: SetupFacts) -> str:
    """Write the boot unit rendered here (root runs no PM2: `pm2 startup` is not used) and enable it
    by its link."""
    if path_problems(f):
        raise fail(" ".join(path_problems(f)))
    result = run(c, root_install_command(f.unit_path), stdin=boot_unit(f), warn=True)
    if not result.ok:
        raise fail(
            f"Could not write {f.unit_path}: {(result.stderr or result.stdout).strip()[-400:]}"
        )
    how = f"wrote {f.unit_path} (as pm2 startup systemd -u {f.user} --hp {f.home} would)"
    if f.wants != f.unit_path:
        # ln -sfn: a new link renamed over the old name (a link there is replaced, not followed)
        link = (
            f"mkdir -p {q(UNIT_DIR)}/multi-user.target.wants && ln -sfn {q(f.unit_path)}"
            f" {q(f.wants_path)}"
        )
        run(c, "sudo -n sh -c " + q(link))
        how += f"; enabled by the link {f.wants_path}"
    if f.systemd_running:
        run(c, sudo("systemctl daemon-reload"), warn=True)
    return how


def write_logrotate(c: Any, s: Settings, f: SetupFacts) -> str:
    """Write /etc/logrotate.d/pm2-<user> once `logrotate -d` accepts it (logrotate reads only root's
    files: the draft it checks is root's too), in one root shell."""
    if path_problems(f):
        raise fail(" ".join(path_problems(f)))
    check = run(
        c,
        root_install_command(f.logrotate_path, "0644", check='logrotate -d "$t" 2>&1'),
        stdin=logrotate_text(s, f),
        warn=True,
    )
    if not check.ok:
        raise fail(
            "logrotate refuses the rotation file:"
            f" {(check.stderr or check.stdout).strip()[-600:]}\nCheck LOG_ROTATE_SIZE and"
            " LOG_ROTATE_COUNT."
        )
    return f.logrotate_path


def create_app_user(c: Any, f: SetupFacts) -> str:
    """The apps' account: a system account of its own group, no shell, a locked password; its home
    0750."""
    home = f.app_home
    command = (
        f"useradd --system --user-group --home-dir {q(home)} --create-home --shell"
        f" /usr/sbin/nologin --comment {q(APP_COMMENT + f.user)} {q(f.app)} && chmod 0750 {q(home)}"
    )
    result = run(
        c, f"sudo -n mkdir -p -m 0755 {APP_HOMES} && " + sudo(f"sh -c {q(command)}"), warn=True
    )
    if not result.ok:
        raise fail(
            f"Could not create the apps' account {f.app}:"
            f" {(result.stderr or result.stdout).strip()[-400:]}"
        )
    return f"created {f.app} (home {home}, no shell, locked password)"


def join_app_group(c: Any, f: SetupFacts) -> str:
    group = f.app_groups[0] if f.app_groups else f.app
    result = run(c, sudo(f"usermod -aG {q(group)} {q(f.user)}"), warn=True)
    if not result.ok:
        raise fail(
            f"Could not add {f.user} to {group}: {(result.stderr or result.stdout).strip()[-400:]}"
        )
    return f"{f.user} is in {group} from its next login"


def enable_app_boot(c: Any, f: SetupFacts) -> str:
    """Write the apps' account's unit and its link (when they differ), and start it under a running
    systemd, so that its PM2 daemon is systemd's (Restart=on-failure) rather than a process of
    whichever SSH session ran PM2 first.
    """
    if path_problems(f):
        raise fail(" ".join(path_problems(f)))
    unit = app_unit_path(f)
    link = f"{UNIT_DIR}/multi-user.target.wants/pm2-{f.app}.service"
    done = []
    if f.app_unit != app_boot_unit(f) or f.app_wants != unit:
        result = run(c, root_install_command(unit), stdin=app_boot_unit(f), warn=True)
        if not result.ok:
            raise fail(f"Could not write {unit}: {(result.stderr or result.stdout).strip()[-400:]}")
        run(
            c,
            "sudo -n sh -c "
            + q(f"mkdir -p {q(UNIT_DIR)}/multi-user.target.wants && ln -sfn {q(unit)} {q(link)}"),
        )
        done.append(f"wrote {unit}, enabled by the link {link}")
        if f.systemd_running:
            run(c, sudo("systemctl daemon-reload"), warn=True)
    if app_unit_to_start(f):
        done.append(start_app_unit(c, f))
    return "; ".join(done) or f"{unit} as it was"


def start_app_unit(c: Any, f: SetupFacts) -> str:
    """`systemctl start pm2-APP`: PM2's daemon of the apps' account, in the unit's cgroup (PM2_HOME
    made 0700 by the account itself first, as the app helper keeps it)."""
    name = f"pm2-{f.app}.service"
    pm2_home = f"{f.app_home}/.pm2"
    made = run(c, sudo(f"runuser -u {q(f.app)} -- mkdir -p -m 0700 {q(pm2_home)}"), warn=True)
    result = run(c, sudo(f"systemctl start {q(name)}"), warn=True, timeout=120) if made.ok else made
    if not result.ok:
        raise fail(
            f"Could not start {name}: {(result.stderr or result.stdout).strip()[-400:]} "
            f"(see `journalctl -u {name}`)"
        )
    return f"started {name} (systemd runs {f.app}'s PM2)"


def write_app_logrotate(c: Any, s: Settings, f: SetupFacts) -> str:
    path = f"/etc/logrotate.d/pm2-{f.app}"
    check = run(
        c,
        root_install_command(path, "0644", check='logrotate -d "$t" 2>&1'),
        stdin=app_logrotate_text(s, f),
        warn=True,
    )
    if not check.ok:
        raise fail(
            "logrotate refuses the rotation file:"
            f" {(check.stderr or check.stdout).strip()[-600:]}\nCheck LOG_ROTATE_SIZE and"
            " LOG_ROTATE_COUNT."
        )
    return path


def write_app_record(c: Any, f: SetupFacts) -> str:
    """Root's record of the deploy user's app users: written by this admin's step only, read by the
    root helper."""
    path = f"{root.APP_RECORDS}/{f.user}.json"
    run(c, sudo(f"install -d -o root -g root -m 0700 {q(root.APP_RECORDS)}"))
    result = run(
        c,
        root_install_command(path, "0600"),
        stdin=json.dumps(app_record(f), indent=1) + "\n",
        warn=True,
    )
    if not result.ok:
        raise fail(f"Could not write {path}: {(result.stderr or result.stdout).strip()[-400:]}")
    return path


# ----------------------------------------------------------------------------- an apps' account
# taken off (setup --remove-app)


def removal_problem(f: SetupFacts) -> str | None:
    """Why `setup --remove-app` will not take APP_USER off: only an account setup made for this
    deploy user, and one root's record names as its (never the deploy user itself, another service's
    or another deploy user's).
    """
    recorded = f.app in f.app_records.get("apps", {})
    if not f.separate_app:
        return (
            f"{f.app} is the deploy user itself, not an apps' account of its own: there is nothing"
            " of setup's to remove"
        )
    if f.app_entry is None:
        return None  # gone already (a second run), or never made: removal_items is empty
    comment, home = f.app_entry[4], f.app_entry[5]
    if not recorded or comment != APP_COMMENT + f.user or home != f"{APP_HOMES}/{f.app}":
        return (
            f"{f.app} is not an apps' account setup made for {f.user} (root's record of {f.user}'s"
            f" apps, its comment {comment!r} and its home {home} must say so): it was left as it is"
        )
    return None


def removal_items(f: SetupFacts) -> list[Item]:
    """What `setup --remove-app` takes off, each as it is on the host."""
    items = []
    if f.app_unit is not None or f.app_wants:
        items.append(
            Item("app boot unit", State.REMOVE, f"{app_unit_path(f)}: stopped, disabled, removed")
        )
    if f.app_logrotate_conf is not None:
        items.append(Item("app rotation", State.REMOVE, f"/etc/logrotate.d/pm2-{f.app}"))
    if f.app_entry is not None:
        items.append(
            Item(
                "app user",
                State.REMOVE,
                f"userdel --remove {f.app} (its home {f.app_home}: PM2's logs and "
                "saved list), its group; its ACL entries on the folders above DEPLOY_ROOT",
            )
        )
    if f.app in f.app_records.get("apps", {}):
        items.append(
            Item("app record", State.REMOVE, f"{f.app} from {root.APP_RECORDS}/{f.user}.json")
        )
        rest = tuple(a for a in f.apps if a != f.app)
        items.append(
            Item(
                "sudoers",
                State.WRITE,
                f"{root.sudoers_path(f.user)}: {f.user} may run {root.APP_HELPER} as "
                + (", ".join(rest) if rest else "no apps' account any more"),
            )
        )
    return items


def running_apps(c: Any, f: SetupFacts) -> list[str]:
    """The pids of the account's processes other than its PM2 daemon (its apps: `remove` deletes
    them first)."""
    out = run(c, sudo(f"pgrep -u {q(f.app)}"), warn=True).stdout.split()
    return [pid for pid in out if pid.isdigit() and pid != f.app_daemon.strip()]


def files_left(c: Any, s: Settings, f: SetupFacts) -> list[str]:
    """Up to five paths in DEPLOY_ROOT that the account or its group owns (a plain `remove` keeps
    shared/, the app's data in it): once the account is gone their uid and gid are free, and
    `useradd --system` gives the highest free ones to the next account it makes, the next app's,
    which would own them. Read as root, following no link.
    """
    if f.app_entry is None:
        return []
    found = run(
        c,
        sudo(f"find {q(s.deploy_root)} -xdev \\( -user {q(f.app)} -o -group {q(f.app)} \\) -print")
        + " 2>/dev/null | head -n 5",
        warn=True,
    )
    return [line for line in found.stdout.splitlines() if line]


def removal_refusal(c: Any, s: Settings, f: SetupFacts) -> str | None:
    """Why `setup --remove-app` will not take the account off as the host is now (read only; every
    reason), or None."""
    reasons = []
    busy = running_apps(c, f)
    if busy:
        reasons.append(
            f"The apps' account {f.app} still runs {len(busy)} process(es) besides its PM2 daemon"
            f" (pids {' '.join(busy[:8])}): run `remove` for each app that runs as it"
            f" (APP_USER={f.app}) first."
        )
    left = files_left(c, s, f)
    if left:
        reasons.append(
            f"The apps' account {f.app} still owns files in DEPLOY_ROOT {s.deploy_root}"
            f" ({', '.join(left)}): once it is gone, its uid and group would be the next new"
            " account's (the next app's), and with them these files. Delete them with `remove"
            f" --purge --confirm {s.app_name}` (as the deploy user), or give them to the deploy"
            f" user (sudo chown -hR {f.user}:{f.user} {s.shared_dir}), then run setup --remove-app"
            " again."
        )
    return " ".join(reasons) or None


def acl_removal_command(s: Settings, app: str, user: str) -> str:
    """Shell (as root) that takes the account's ACL entries off the folders above DEPLOY_ROOT where
    reach_command put them: only a folder the deploy user owns (whatever a link in the path names),
    and with -n, since setfacl recomputes a folder's mask otherwise, even for an entry that is not
    there (a mask narrowed by an admin widens).
    """
    return (
        f'd={q(s.deploy_root)}; while [ "$d" != / ]; do d=$(dirname "$d"); '
        f'if [ ! -L "$d" ] && [ "$(stat -c %U "$d" 2>/dev/null)" = {q(user)} ]; then '
        f'setfacl -n -x u:{q(app)} "$d" 2>/dev/null; fi; done; true'
    )


def remove_app_user(c: Any, s: Settings, f: SetupFacts) -> list[str]:
    """Take the apps' account off: its unit (stopped), rotation, ACL entries, the account and its
    home, root's record of it and its sudoers line. Refused while it runs anything but its PM2
    daemon, or owns files in DEPLOY_ROOT.
    """
    refusal = removal_refusal(c, s, f)
    if refusal:
        raise fail(f"{refusal} Nothing was removed.")
    done = []
    recorded = f.app in f.app_records.get("apps", {})
    apps = {k: v for k, v in f.app_records.get("apps", {}).items() if k != f.app}
    if recorded:
        # The deploy user's door to the account closed first: a process it started as the account
        # after the kill would outlive it, keep userdel from finishing, or run while root removes
        # the home it writes in.
        done.append("sudoers: wrote " + root.install_sudoers(c, f.user, tuple(sorted(apps))))
    unit, link = app_unit_path(f), f"{UNIT_DIR}/multi-user.target.wants/pm2-{f.app}.service"
    if f.systemd_running and f.app_unit is not None:
        run(c, sudo(f"systemctl disable --now {q(f'pm2-{f.app}.service')}"), warn=True, timeout=120)
    if f.app_unit is not None or f.app_wants or f.app_logrotate_conf is not None:
        run(c, sudo(f"rm -f {q(unit)} {q(link)} {q(f'/etc/logrotate.d/pm2-{f.app}')}"))
        if f.systemd_running:
            run(c, sudo("systemctl daemon-reload"), warn=True)
        done.append(f"removed {unit}, its link and /etc/logrotate.d/pm2-{f.app}")
    if f.app_entry is not None:
        acl = acl_removal_command(s, f.app, f.user)
        # its crontab and at jobs (userdel leaves both) would start it again now, and run as the
        # next account of its name
        jobs = (
            f"{{ command -v crontab >/dev/null && crontab -u {q(f.app)} -r; }} 2>/dev/null; {{"
            f" command -v atq >/dev/null && atq | awk -v u={q(f.app)} '$NF == u {{print $1}}' |"
            " xargs -r atrm; } 2>/dev/null; "
        )
        gone = (
            f"{jobs}pkill -KILL -u {q(f.app)}; i=0; while pgrep -u {q(f.app)} >/dev/null && [ $i"
            f" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done; userdel --remove {q(f.app)} 2>&1 | grep"
            f" -v 'mail spool' >&2; getent group {q(f.app)} >/dev/null && groupdel {q(f.app)}; !"
            f" getent passwd {q(f.app)} >/dev/null"
        )
        result = run(c, "sudo -n sh -c " + q(f"{acl}; {gone}"), warn=True)
        if not result.ok:
            raise fail(
                f"Could not remove the account {f.app}:"
                f" {(result.stderr or result.stdout).strip()[-400:]}"
            )
        done.append(f"removed the account {f.app}, its home {f.app_home} and its group")
    if recorded:
        path = f"{root.APP_RECORDS}/{f.user}.json"
        result = run(
            c,
            root_install_command(path, "0600"),
            stdin=json.dumps({"deploy": f.user, "apps": apps}, indent=1) + "\n",
            warn=True,
        )
        if not result.ok:
            raise fail(f"Could not write {path}: {(result.stderr or result.stdout).strip()[-400:]}")
        done.append(f"{path} without {f.app}")
    return done
