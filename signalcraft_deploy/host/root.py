"""What runs as root on the host: only the tool's own helper, `sudo -n
/usr/local/sbin/signalcraft-root VERB ARGS`.

The helper (remote/root_helper.py) and the programs it runs (remote/<name>, installed in
/usr/local/lib/signalcraft-deploy/) are root-owned files on the host, put there by `setup`
(`install`), which also writes the sudoers drop-in /etc/sudoers.d/signalcraft-<user> that lets the
deploy user run that one file as root and nothing else.

Every root step of a task goes through `call`. Before the first one on a connection, `ensure`
compares the installed files with this version's (one sha256 over them all, `digest`): when they
differ or are missing and the user has full passwordless sudo (a host set up before the helper
existed), they are installed now, the same way `setup` does; with only the drop-in, the task stops
before it changes anything and names `setup`.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from signalcraft_deploy.core.facts import HelperState
from signalcraft_deploy.host.io import fail, q, run, target_name
from signalcraft_deploy.remote import program, script

HELPER = "/usr/local/sbin/signalcraft-root"
# The deploy user's door to its apps' accounts (sudo -u APP_USER): one environment for everything
# run as them.
APP_HELPER = "/usr/local/sbin/signalcraft-app"
LIB = "/usr/local/lib/signalcraft-deploy"
SUDOERS_DIR = "/etc/sudoers.d"
# The programs the helper runs, as installed beside it (with their remote imports inlined), and the
# crossplane parser it reads the site a takeover replaced with (copied from this tool's own pinned
# install).
LIB_FILES = ("reload_nginx.py", "tls_check.py")
# What older versions installed beside the helper and this one no longer runs: removed by `install`.
RETIRED = (
    "install_site.sh",
    "restore_site.sh",
    "stop_pid.sh",
    "takeover_record.py",
    "takeover_restore.py",
)
PASSWORD_HINT = (
    "passwordless sudo for this user (a sudoers line with NOPASSWD: `fab setup` writes one for the"
    f" tool's root helper {HELPER})"
)


def lib_text(name: str) -> str:
    stem, _, kind = name.rpartition(".")
    return program(stem) if kind == "py" else script(stem)


def crossplane_files() -> dict[str, str]:
    """{path under LIB: text} of the crossplane package (standard library only) as installed
    here."""
    import crossplane

    top = Path(crossplane.__file__).parent
    return {
        f"crossplane/{p.relative_to(top).as_posix()}": p.read_text()
        for p in sorted(top.rglob("*.py"))
        if p.name != "__main__.py"
    }


@functools.lru_cache(maxsize=1)
def files() -> dict[str, tuple[str, str]]:
    """{host path: (text, mode)} of everything the helper is made of: the helper first, then LIB's
    files by path (the helper's `version` verb reads them in the same order)."""
    beside = {f"{LIB}/{name}": lib_text(name) for name in LIB_FILES}
    beside.update({f"{LIB}/{name}": text for name, text in crossplane_files().items()})
    out = {HELPER: (program("root_helper"), "0755"), APP_HELPER: (program("app_helper"), "0755")}
    out.update({path: (beside[path], "0644") for path in sorted(beside)})
    return out


def digest() -> str:
    """sha256 over the helper's files in order, as `digest_command` computes it on the host."""
    h = hashlib.sha256()
    for text, _ in files().values():
        h.update(text.encode())
    return h.hexdigest()


def digest_of_nothing() -> str:
    """What `digest_command` prints when none of the files is there."""
    return hashlib.sha256(b"").hexdigest()


def digest_command() -> str:
    """Shell (any user) printing the installed files' digest; a missing file makes it differ."""
    return "cat " + " ".join(q(p) for p in files()) + " 2>/dev/null | sha256sum | cut -d' ' -f1"


def command(verb: str, *args: str) -> str:
    """`sudo -n HELPER VERB ARGS`, every argument quoted."""
    return " ".join(["sudo -n", HELPER, q(verb), *(q(str(a)) for a in args)])


# ----------------------------------------------------------------------------- is the helper there?


def is_current(state: HelperState) -> bool:
    """The installed helper is this version's."""
    return state.installed == digest()


STATE_SCRIPT = "\n".join(
    [
        "printf 'digest %s\\n' \"$(" + digest_command() + ')"',
        "sudo -n true 2>/dev/null && echo full",
        f"sudo -n -l {HELPER} >/dev/null 2>&1 && echo allowed",
        "true",
    ]
)


def parse_state(out: str) -> HelperState:
    words = out.split()
    found = words[words.index("digest") + 1] if "digest" in words[:-1] else ""
    return HelperState(
        installed=found, full_sudo="full" in words, allowed="allowed" in words or "full" in words
    )


def read_state(c: Any) -> HelperState:
    return parse_state(run(c, "sh -s", stdin=STATE_SCRIPT + "\n", warn=True).stdout)


_ready: dict[
    int, Any
] = {}  # id -> the context itself: kept alive, its id is never reused while listed


def ensure(c: Any, state: HelperState | None = None) -> None:
    """Make sure this connection may use the current helper; install it when the user may (full
    sudo). Once per connection."""
    if _ready.get(id(c)) is c:
        return
    state = state or read_state(c)
    if not is_current(state):
        if not state.full_sudo:
            if state.allowed:
                raise fail(
                    f"The root helper {HELPER} on {target_name(c)} is missing or from another"
                    " version of signalcraft-deploy, and this user may run only it as root."
                    f" Nothing was changed. Run `fab -H {target_name(c)} setup` as a user with full"
                    " sudo (an admin) to install it, then run this again."
                )
            raise fail(
                f"The host lacks what a deploy needs: {PASSWORD_HINT}. Nothing was changed. Add it "
                "(or run `fab setup` as an admin) and run this again."
            )
        install(c)
    _ready[id(c)] = c


def call(c: Any, verb: str, *args: str, stdin: str | None = None, warn: bool = False) -> Any:
    """Run one helper verb as root (ensuring first that the helper is this version's)."""
    ensure(c)
    return run(c, command(verb, *args), stdin=stdin, warn=warn)


# ----------------------------------------------------------------------------- installing (full
# sudo: setup's part)


def install_command(path: str, mode: str) -> str:
    """Root shell: write stdin to `path` root-owned with `mode`, atomically: a temporary file root
    makes in the (root-owned, 0755) folder, then renamed; folders under LIB are made root's
    first."""
    folder = path.rsplit("/", 1)[0]
    own = (
        f" && chown root:root {q(folder)} && chmod 0755 {q(folder)}"
        if folder.startswith(LIB)
        else ""
    )
    return "sudo -n sh -c " + q(
        f"umask 022 && mkdir -p {q(folder)}{own} && t=$(mktemp {q(folder)}/.signalcraft-XXXXXX) && "
        f'cat > "$t" && chown root:root "$t" && chmod {mode} "$t" && mv -f "$t" {q(path)}'
    )


def install(c: Any) -> str:
    """Install (or refresh) the helper and its programs; needs full sudo."""
    for path, (text, mode) in files().items():
        result = run(c, install_command(path, mode), stdin=text, warn=True)
        if not result.ok:
            raise fail(
                f"Could not install the root helper ({path}):"
                f" {(result.stderr or result.stdout).strip()[-400:]}. Installing it needs full"
                " passwordless sudo (run `fab setup` as an admin)."
            )
    run(c, "sudo -n rm -f " + " ".join(q(f"{LIB}/{name}") for name in RETIRED), warn=True)
    _ready[id(c)] = c
    return f"{HELPER} and {LIB}/ ({len(LIB_FILES)} programs and the crossplane parser)"


def sudoers_path(user: str) -> str:
    # sudo skips files in sudoers.d whose name holds a '.' (or ends in '~')
    return f"{SUDOERS_DIR}/signalcraft-{user.replace('.', '_')}"


APP_RECORDS = (  # root's record of each deploy user's app users (setup's)
    "/var/lib/signalcraft-deploy/app-users"
)


def sudoers_text(user: str, apps: tuple[str, ...] = ()) -> str:
    """The drop-in: `user` may run the root helper as root and, with app users, the app helper as
    each of them.

    The app helper's own Defaults: no variable of the caller's passes (env_reset, !setenv), and it
    never gets the caller's terminal (use_pty, whatever the host's sudoers says for everything
    else): a program of the apps' account holding an operator's terminal could push keystrokes into
    the operator's shell. Without a terminal (the tool's SSH commands) use_pty does nothing: the
    output is the program's bytes."""
    if not apps:
        return (
            "# Rendered by signalcraft-deploy (fab setup): this user may run the tool's root"
            f" helper as root, nothing else.\n{user} ALL=(root) NOPASSWD: {HELPER}\n"
        )
    return (
        "# Rendered by signalcraft-deploy (fab setup): this user may run the tool's root helper as"
        f" root and its app helper as its apps' accounts, nothing else.\nDefaults!{APP_HELPER}"
        f" use_pty, env_reset, !setenv\n{user} ALL=(root) NOPASSWD: {HELPER}\n{user}"
        f" ALL=({', '.join(apps)}) NOPASSWD: {APP_HELPER}\n"
    )


def install_sudoers(c: Any, user: str, apps: tuple[str, ...] = ()) -> str:
    """Write the drop-in once `visudo -cf` accepts it (0440, root-owned); a rejected one is never
    installed."""
    path = sudoers_path(user)
    script_text = (
        't=$(mktemp) && cat > "$t" && visudo -cqf "$t" && install -o root -g root -m 0440 "$t"'
        f' {q(path)}; rc=$?; rm -f "$t"; exit $rc'
    )
    result = run(c, "sudo -n sh -c " + q(script_text), stdin=sudoers_text(user, apps), warn=True)
    if not result.ok:
        raise fail(
            f"visudo refused the sudoers drop-in for {user}:"
            f" {(result.stderr or result.stdout).strip()[-400:]}"
        )
    return path
