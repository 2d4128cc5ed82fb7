"""Setup: make a fresh host ready for deploys, and keep it so. Facts, a pure plan, then the changes.

pyinfra's shape: `gather` reads everything in one command (remote/setup_facts.sh), `plan_setup`
(pure) lists each item as already right or to change, and `apply` makes only the changes. What
`setup` owns on a host:

- apt packages: nginx, python3-venv, logrotate, and Node.js (nodejs, npm) when there is no `node`;
- PM2 at PM2_VERSION (npm install -g) when there is no `pm2`;
- the boot unit /etc/systemd/system/pm2-<user>.service that `pm2 startup systemd -u <user> --hp
  <home>` writes, enabled by its multi-user.target.wants link. It embeds Node's and PM2's paths,
  so it is redone when either changes (a Node upgrade otherwise breaks it). Where `pm2 startup`
  cannot finish (no systemd running: its `systemctl enable` fails), the same unit is rendered
  from PM2's own template and the link is written;
- /etc/logrotate.d/pm2-<user>: PM2's logs rotated by size (templates/logrotate.conf.j2);
- the root helper /usr/local/sbin/signalcraft-root and its programs in /usr/local/lib/signalcraft-deploy/
  (host/root.py), redone when they differ from this version's;
- /etc/sudoers.d/signalcraft-<user> (0440, checked with `visudo -cf` first): the deploy user may run
  that helper as root without a password, and nothing else. Setup itself needs full sudo (apt, npm -g).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from signalcraft_deploy.core.render import render_logrotate
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host import root
from signalcraft_deploy.host.facts import split_sections
from signalcraft_deploy.host.io import fail, q, run, sudo, write_file
from signalcraft_deploy.host.programs import run_program

PM2_VERSION = "7.0.4"
UNIT_DIR = "/etc/systemd/system"
STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass
class SetupFacts:
    user: str = ""
    group: str = ""
    home: str = ""
    pm2_home: str = ""
    sudo: bool = False
    apt: bool = False
    packages: dict[str, str] = field(default_factory=dict)  # installed package -> version
    commands: set[str] = field(default_factory=set)
    venv: bool = False
    node: str = ""  # real path of `node`, "" if none
    npm: str = ""
    pm2: str = ""  # real path of PM2's bin/pm2, "" if none
    pm2_version: str = ""
    template: str = ""  # PM2's systemd.tpl
    systemd_running: bool = False
    unit: str | None = None
    wants: str | None = None
    logrotate_conf: str | None = None
    helper_digest: str = ""  # sha256 of the installed root helper's files
    sudoers: str | None = None  # the drop-in's text (None: absent)

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/pm2-{self.user}.service"

    @property
    def wants_path(self) -> str:
        return f"{UNIT_DIR}/multi-user.target.wants/pm2-{self.user}.service"

    @property
    def logrotate_path(self) -> str:
        return f"/etc/logrotate.d/pm2-{self.user}"


def parse_setup_facts(output: str) -> SetupFacts:
    sec = split_sections(output)

    def one(name: str) -> str:
        return sec.get(name, "").strip()

    def text(name: str) -> str | None:
        return (sec[name] + "\n") if sec.get(name, "").strip() else None

    packages = {}
    for line in sec.get("packages", "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "installed":
            packages[parts[0]] = parts[2]
    return SetupFacts(
        user=one("user"), group=one("group"), home=one("home"), pm2_home=one("pm2_home"), sudo=one("sudo") == "yes",
        apt=one("apt") == "yes", packages=packages, commands=set(sec.get("commands", "").split()),
        venv=one("venv") == "yes", node=one("node"), npm=one("npm"), pm2=one("pm2"), pm2_version=one("pm2_version"),
        template=text("template") or "", systemd_running=one("systemd_running") == "yes", unit=text("unit"),
        wants=one("wants") or None, logrotate_conf=text("logrotate_conf"))


def gather(c: Any, s: Settings) -> SetupFacts:
    facts = parse_setup_facts(run_program(c, s, "setup_facts.sh", s.pm2, s.python, warn=True).stdout)
    if facts.user:
        out = run(c, f"{root.digest_command()}; echo; sudo -n cat {q(root.sudoers_path(facts.user))} 2>/dev/null", warn=True).stdout
        found, _, text = out.partition("\n")
        facts.helper_digest, facts.sudoers = found.strip(), text.lstrip("\n") or None
    return facts


# ----------------------------------------------------------------------------- the plan (pure)


class State(StrEnum):
    """What an item needs; the values are the words printed in front of it."""

    OK = "ok"
    INSTALL = "install"
    WRITE = "write"


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
    """The unit `pm2 startup systemd -u <user> --hp <home>` writes, from PM2's own template (as PM2 fills it in)."""
    return (f.template.replace("%PM2_PATH%", f.pm2).replace("%NODE_PATH%", unit_path_env(f.node))
            .replace("%USER%", f.user).replace("%HOME_PATH%", f"{f.home.rstrip('/')}/.pm2")
            .replace("%SERVICE_NAME%", f"pm2-{f.user}"))


def missing_packages(f: SetupFacts) -> list[str]:
    missing = [p for p in ("nginx", "logrotate") if p not in f.packages and p not in f.commands]
    if not f.venv:
        missing.append("python3-venv")
    if not f.node:
        missing += ["nodejs", "npm"]
    elif not f.pm2 and not f.npm:
        missing.append("npm")
    return missing


def package_items(f: SetupFacts) -> list[Item]:
    items = []
    missing = missing_packages(f)
    for name, present in (("nginx", f.packages.get("nginx", "present" if "nginx" in f.commands else "")),
                          ("python3-venv", "python3 -m venv works" if f.venv else ""),
                          ("logrotate", f.packages.get("logrotate", "present" if "logrotate" in f.commands else "")),
                          ("node", f.node)):
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
    if not f.pm2 or not f.node or not f.template:
        return Item("boot unit", State.WRITE, f"{f.unit_path}, once Node.js and PM2 are installed")
    if f.unit != boot_unit(f):
        why = "missing" if f.unit is None else "names another Node.js or PM2 path than the installed ones"
        return Item("boot unit", State.WRITE, f"{f.unit_path} ({why}): pm2 startup systemd -u {f.user} --hp {f.home}")
    if f.wants != f.unit_path:
        return Item("boot unit", State.WRITE, f"{f.unit_path} is not enabled: link {f.wants_path}")
    return Item("boot unit", State.OK, f"{f.unit_path} enabled (PM2 {f.pm2}, Node.js {f.node})")


def logrotate_text(s: Settings, f: SetupFacts) -> str:
    return render_logrotate(s, f.user, f.group, f.home, f.pm2 or "/usr/bin/pm2", unit_path_env(f.node))


def logrotate_item(s: Settings, f: SetupFacts) -> Item:
    if f.logrotate_conf == logrotate_text(s, f):
        return Item("log rotation", State.OK, f"{f.logrotate_path} (size {s.log_rotate_size}, keep {s.log_rotate_count})")
    why = "missing" if f.logrotate_conf is None else "differs"
    return Item("log rotation", State.WRITE, f"{f.logrotate_path} ({why}; size {s.log_rotate_size}, keep {s.log_rotate_count})")


def helper_item(f: SetupFacts) -> Item:
    if f.helper_digest == root.digest():
        return Item("root helper", State.OK, f"{root.HELPER} (this version's)")
    why = "another version's" if f.helper_digest and f.helper_digest != root.digest_of_nothing() else "missing"
    return Item("root helper", State.WRITE, f"{root.HELPER} and {root.LIB}/ ({why})")


def sudoers_item(f: SetupFacts) -> Item:
    path = root.sudoers_path(f.user)
    if f.sudoers == root.sudoers_text(f.user):
        return Item("sudoers", State.OK, f"{path}: {f.user} may run only {root.HELPER} as root without a password")
    why = "missing" if f.sudoers is None else "differs"
    return Item("sudoers", State.WRITE, f"{path} ({why}): {f.user} ALL=(root) NOPASSWD: {root.HELPER}")


def plan_setup(s: Settings, f: SetupFacts) -> list[Item]:
    """Every item `setup` owns, each already right (OK) or what it would change."""
    return package_items(f) + [boot_item(f), logrotate_item(s, f), helper_item(f), sudoers_item(f)]


# ----------------------------------------------------------------------------- the changes


def install_packages(c: Any, f: SetupFacts) -> None:
    missing = missing_packages(f)
    if missing and not f.apt:
        raise fail(f"The host lacks {', '.join(missing)} and has no apt-get: install them with its package manager "
                   "and run setup again.")
    if missing:
        command = ("env DEBIAN_FRONTEND=noninteractive sh -c " + q("apt-get update -qq && apt-get install -y -qq "
                   "--no-install-recommends " + " ".join(missing)))
        result = run(c, sudo(command), warn=True, timeout=1200)
        if not result.ok:
            raise fail(f"apt-get could not install {' '.join(missing)}: {(result.stderr or result.stdout).strip()[-800:]}")
    if not f.pm2:
        result = run(c, sudo(f"npm install -g --no-fund --no-audit pm2@{PM2_VERSION}"), warn=True, timeout=900)
        if not result.ok:
            raise fail(f"npm could not install pm2@{PM2_VERSION}: {(result.stderr or result.stdout).strip()[-800:]}")


def enable_boot(c: Any, f: SetupFacts) -> str:
    """`pm2 startup systemd` for the user, with absolute paths; its unit rendered here if it cannot finish."""
    expected = boot_unit(f)
    startup = (f"env PATH={q(unit_path_env(f.node))} {q(f.pm2)} startup systemd -u {q(f.user)} --hp {q(f.home)}")
    result = run(c, sudo(f"mkdir -p {UNIT_DIR}/multi-user.target.wants") + " && " + sudo(startup), warn=True, timeout=120)
    written = run(c, f"cat {q(f.unit_path)}", warn=True).stdout
    how = f"pm2 startup systemd -u {f.user} --hp {f.home}"
    if written.rstrip("\n") != expected.rstrip("\n"):
        write_file(c, f.unit_path, expected, "0644", as_root=True)
        reason = (result.stdout + result.stderr).strip().splitlines()
        how = f"rendered from PM2's template (pm2 startup: {reason[-1][:120] if reason else 'no output'})"
    if run(c, f"readlink {q(f.wants_path)}", warn=True).stdout.strip() != f.unit_path:
        run(c, sudo(f"ln -sfn {q(f.unit_path)} {q(f.wants_path)}"))
        how += f"; enabled by the link {f.wants_path}"
    if f.systemd_running:
        run(c, sudo("systemctl daemon-reload"), warn=True)
    return how


def write_logrotate(c: Any, s: Settings, f: SetupFacts) -> str:
    text = logrotate_text(s, f)
    # logrotate reads only files root owns: the draft checked with `logrotate -d` is root's too.
    tmp = f"/tmp/signalcraft-logrotate-{f.user}.conf"
    write_file(c, tmp, text, "0644", as_root=True)
    check = run(c, sudo(f"logrotate -d {q(tmp)}"), warn=True)
    run(c, sudo(f"rm -f {q(tmp)}"), warn=True)
    if not check.ok:
        raise fail(f"logrotate refuses the rotation file: {(check.stderr or check.stdout).strip()[-600:]}\n"
                   "Check LOG_ROTATE_SIZE and LOG_ROTATE_COUNT.")
    write_file(c, f.logrotate_path, text, "0644", as_root=True)
    return f.logrotate_path
