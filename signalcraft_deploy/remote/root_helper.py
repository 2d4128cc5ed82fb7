#!/usr/bin/python3 -I
"""signalcraft-root: the only program the deploy user may run as root (issue 15).

Installed ON THE HOST by `setup` (or by a deploy whose user has full sudo) as
/usr/local/sbin/signalcraft-root, root-owned 0755, with the programs it runs beside it in
/usr/local/lib/signalcraft-deploy/ (root-owned, not writable by others). The sudoers drop-in
/etc/sudoers.d/signalcraft-<user> lets the deploy user run this file and nothing else:

    sudo -n /usr/local/sbin/signalcraft-root VERB ARGS...

It takes fixed VERBS (see VERBS below, or run it with `help`) and checks every argument before
anything runs: paths must be absolute and normalised (no `.`, `..` or `//`), Nginx files must be
in /etc/nginx/sites-available, sites-enabled or conf.d with a plain file name, commands must be one
of the fixed Nginx test/reload commands, and numbers must be in range. Anything else is refused
with one line on stderr and exit 2; nothing has run then. Text (a site file) comes on stdin.
Standard library only, Python 3.8+.
"""

import hashlib
import json
import os
import pwd
import re
import subprocess
import sys

HELPER = "/usr/local/sbin/signalcraft-root"
LIB = "/usr/local/lib/signalcraft-deploy"
STATE = "/var/lib/signalcraft-deploy"  # root's own copies (takeover records), 0700
NGINX_DIRS = ("/etc/nginx/sites-available", "/etc/nginx/sites-enabled", "/etc/nginx/conf.d")
DEFAULT_LINK = "/etc/nginx/sites-enabled/default"
HOOK_DIR = "/etc/letsencrypt/renewal-hooks/deploy"
CERTBOT_LIVE = "/etc/letsencrypt/live/"
HEADER = "# Rendered by signalcraft-deploy."  # core.render.SITE_HEADER
MARK = "@@signalcraft:"  # host.facts.MARK
PARKED = "nginx-default-site.link"
REFUSED = 2

_NGINX = r"(/usr/sbin/|/usr/bin/|/usr/local/sbin/|/usr/local/bin/|/usr/local/nginx/sbin/)?nginx"
TEST_RE = re.compile(rf"{_NGINX}( -q)? -t( -q)?")  # core.settings: NGINX_TEST_CMD
RELOAD_RE = re.compile(rf"{_NGINX} -s reload|(/usr/bin/|/bin/)?systemctl reload nginx(\.service)?|"
                       r"(/usr/sbin/)?service nginx reload")  # core.settings: NGINX_RELOAD_CMD
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
PATH_CHARS = re.compile(r"/[A-Za-z0-9_.@+/-]*")
PROGRAM = re.compile(r"[A-Za-z0-9._/+][A-Za-z0-9._/+-]*")
APP = re.compile(r"[a-z][a-z0-9-]{0,39}")
PM2_APP = re.compile(r"[a-z][a-z0-9-]{0,79}")
TOOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,79}")
HOST_NAME = re.compile(r"[A-Za-z0-9*_]([A-Za-z0-9_.*-]{0,252})")
MARKER_URL = re.compile(r"http://(\[[0-9A-Fa-f:.]+\]|[0-9.]+|localhost):[0-9]{1,5}/\.signalcraft-deploy-site")


# Nginx's master runs as root and opens some files itself: a site may name those only where Nginx keeps its own.
ROOT_OPENED = {"access_log": ("/var/log/nginx/",), "error_log": ("/var/log/nginx/",), "include": ("/etc/nginx/",)}
NEVER_IN_A_SITE = {"load_module", "perl", "perl_modules", "perl_require", "pid", "user", "env", "lock_file", "ssl_engine",
                   "js_import", "js_path", "working_directory", "daemon", "master_process"}
TEMP_DIRS = ("/var/lib/nginx/", "/var/cache/nginx/")


class Refused(Exception):
    """An argument the helper does not accept: nothing has run."""


# ----------------------------------------------------------------------------- argument checks (pure)


def clean_path(value: str, what: str) -> str:
    """An absolute, normalised path of plain characters (no `.`, `..`, `//`, spaces or newlines)."""
    if not value.startswith("/"):
        raise Refused(f"{what} must be an absolute path, not {value!r}")
    if ".." in value.split("/"):
        raise Refused(f"{what} must not contain '..': {value!r}")
    if not PATH_CHARS.fullmatch(value):
        raise Refused(f"{what} has characters a path of ours never has: {value!r}")
    if os.path.normpath(value) != value or value.startswith("//"):
        raise Refused(f"{what} is not a normalised path (no '.', '//' or trailing '/'): {value!r}")
    return value


def nginx_file(value: str, what: str) -> str:
    """A file directly in one of Nginx's site folders, with a plain name."""
    path = clean_path(value, what)
    folder, name = os.path.split(path)
    if folder not in NGINX_DIRS:
        raise Refused(f"{what} must be in {', '.join(NGINX_DIRS)}: {value!r}")
    if not FILE_NAME.fullmatch(name) or name == "default":
        raise Refused(f"{what} has a file name this tool never uses: {value!r}")
    return path


def site_link(value: str, site: str) -> str:
    """The enabled link of `site` ('' or '-': none, for a site in conf.d)."""
    if value in ("", "-"):
        return ""
    link = nginx_file(value, "the enabled link")
    if os.path.dirname(site) != NGINX_DIRS[0] or link != f"{NGINX_DIRS[1]}/{os.path.basename(site)}":
        raise Refused(f"the enabled link of {site} must be {NGINX_DIRS[1]}/{os.path.basename(site)}, not {value!r}")
    return link


def extras_file(value: str) -> str:
    path = nginx_file(value, "the extras file")
    if not path.endswith(".locations"):
        raise Refused(f"the extras file must end in .locations: {value!r}")
    return path


def integer(value: str, what: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value) or not low <= int(value) <= high:
        raise Refused(f"{what} must be a whole number from {low} to {high}, not {value!r}")
    return int(value)


def token(value: str, pattern: "re.Pattern[str]", what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Refused(f"{what} is not accepted: {value!r}")
    return value


def command(value: str, pattern: "re.Pattern[str]", what: str) -> list:
    """One of the fixed Nginx commands (as in the settings), as an argv: never run by a shell."""
    return token(value, pattern, what).split()


def caller() -> pwd.struct_passwd:
    """The user sudo ran us for (SUDO_USER, which sudo sets itself), else root."""
    name = os.environ.get("SUDO_USER") or "root"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise Refused(f"unknown calling user {name!r}") from None


def state_dir(value: str, owner: pwd.struct_passwd) -> str:
    """<DEPLOY_ROOT>/.deploy of the calling user: a real folder (no symlink) that user owns."""
    path = clean_path(value, "the state folder")
    if os.path.basename(path) != ".deploy":
        raise Refused(f"the state folder must be <DEPLOY_ROOT>/.deploy, not {value!r}")
    try:
        st = os.lstat(path)
    except OSError:
        raise Refused(f"the state folder {value!r} does not exist") from None
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != owner.pw_uid:
        raise Refused(f"the state folder {value!r} is not a folder owned by {owner.pw_name}")
    return path


def takeover_folder(value: str, owner: pwd.struct_passwd) -> str:
    path = clean_path(value, "the takeover folder")
    if os.path.basename(path) != "takeover":
        raise Refused(f"the takeover folder must be <DEPLOY_ROOT>/.deploy/takeover, not {value!r}")
    state_dir(os.path.dirname(path), owner)
    if os.path.islink(path):
        raise Refused(f"the takeover folder {value!r} is a symlink")
    return path


def reload_spec(text: str) -> str:
    """reload_nginx.py's SPEC with every field checked, as canonical JSON."""
    spec = _json(text, "the reload spec")
    if set(spec) - {"cmd", "wait", "marker"}:
        raise Refused(f"the reload spec has unknown keys: {sorted(set(spec) - {'cmd', 'wait', 'marker'})}")
    out = {"cmd": " ".join(command(spec.get("cmd", ""), RELOAD_RE, "the reload command")),
           "wait": integer(str(spec.get("wait", "")), "the reload wait", 0, 600), "marker": None}
    marker = spec.get("marker")
    if marker is not None:
        if not isinstance(marker, dict) or set(marker) != {"url", "host", "expect"}:
            raise Refused("the reload marker must be {url, host, expect}")
        out["marker"] = {"url": token(marker["url"], MARKER_URL, "the marker URL"),
                         "host": None if marker["host"] is None else token(marker["host"], HOST_NAME, "the marker host"),
                         "expect": token(marker["expect"], re.compile(r"[0-9a-f]{16}"), "the marker id")}
    return json.dumps(out)


def tls_spec(text: str) -> str:
    spec = _json(text, "the TLS spec")
    if set(spec) != {"cert", "key", "names"} or not isinstance(spec["names"], list):
        raise Refused("the TLS spec must be {cert, key, names}")
    return json.dumps({"cert": clean_path(str(spec["cert"]), "TLS_CERT"), "key": clean_path(str(spec["key"]), "TLS_KEY"),
                       "names": [token(n, HOST_NAME, "a server name") for n in spec["names"]]})


def _json(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise Refused(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise Refused(f"{what} must be a JSON object")
    return value


def statements(text: str) -> list:
    """(directive, first argument) of every statement of an Nginx file, quotes and backslashes dropped (conservative:
    text inside a quoted string that looks like a statement counts as one)."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out = []
    for part in re.split(r"[;{}]", code):
        words = [re.sub(r"[\"'\\]", "", w) for w in part.split()]
        if words:
            out.append((words[0], words[1] if len(words) > 1 else ""))
    return out


def site_text(text: str) -> str:
    """A site or extras file's text: refused if it makes Nginx's master (root) open a file outside Nginx's own
    folders, load code, or change how the master runs."""
    for directive, arg in statements(text):
        if directive in NEVER_IN_A_SITE or "lua" in directive:
            raise Refused(f"the site may not use `{directive}` (Nginx's master runs it as root)")
        allowed = ROOT_OPENED.get(directive) or (TEMP_DIRS if directive.endswith("_path") else None)
        if allowed is None or arg in ("off", "") or arg.startswith("syslog:") or "$" in arg:
            continue
        path = arg if arg.startswith("/") else "/etc/nginx/" + arg
        if ".." in path.split("/") or not path.startswith(allowed):
            raise Refused(f"the site's `{directive} {arg}` is outside {', '.join(allowed)} (Nginx's master opens it as root)")
    return text


def certbot_hook(app: str, cert: str, site: str, test: str, reload: str) -> tuple:
    """(path, text) of certbot's deploy hook: a fixed path and a fixed shape (core.render.render_certbot_hook)."""
    token(app, APP, "APP_NAME")
    cert = clean_path(cert, "TLS_CERT")
    if not cert.startswith(CERTBOT_LIVE):
        raise Refused(f"TLS_CERT must be under {CERTBOT_LIVE} for a certbot hook: {cert!r}")
    site = nginx_file(site, "NGINX_SITE")
    test, reload = " ".join(command(test, TEST_RE, "the test command")), " ".join(command(reload, RELOAD_RE, "the reload command"))
    text = f"#!/bin/sh\n{HEADER} Reloads Nginx after certbot renews {cert} (site {site}).\n{test} && {reload}\n"
    return f"{HOOK_DIR}/signalcraft-{app}", text


# ----------------------------------------------------------------------------- what runs


def lib(name: str) -> str:
    """A program beside the helper, refused unless root owns it and no one else can write it."""
    path = os.path.join(LIB, name)
    for p in (LIB, path):
        st = os.stat(p)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise Refused(f"{p} must be owned by root and writable by root only: run `fab setup` again")
    return path


def run_lib(name: str, *args: str, stdin: "str | None" = None) -> int:
    """Run a program beside the helper (`stdin`: text for it; else it shares ours)."""
    runner = [sys.executable, "-I"] if name.endswith(".py") else ["/bin/sh"]
    return subprocess.run([*runner, lib(name), *args], input=stdin, text=stdin is not None).returncode


def run_argv(argv: list) -> int:
    try:
        return subprocess.run(argv).returncode
    except OSError as err:
        print(f"signalcraft-root: {argv[0]}: {err.strerror}", file=sys.stderr)
        return 127


def read_text(path: str) -> int:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            sys.stdout.write(fh.read())
        return 0
    except OSError:
        return 1


def write_atomic(path: str, data: bytes, mode: int) -> None:
    tmp = path + ".signalcraft-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def parked_target(state: str) -> str:
    """The stock site's link target that site-install parked in STATE/nginx-default-site.link ('' if none)."""
    parked = os.path.join(state, PARKED)
    if not os.path.lexists(parked):
        return ""
    if os.path.islink(parked):
        raise Refused(f"{parked} is a symlink")
    with open(parked) as fh:
        target = fh.read().strip()
    folder, name = os.path.split(target)
    if folder != NGINX_DIRS[0] or not FILE_NAME.fullmatch(name) or clean_path(target, "the parked site") != target:
        raise Refused(f"{parked} does not name a site in {NGINX_DIRS[0]}")
    return target


def record_copy(folder: str) -> str:
    """Root's own copy of a takeover record (the deploy user can edit theirs; restore trusts only this one)."""
    return os.path.join(STATE, "takeover", hashlib.sha256(folder.encode()).hexdigest()[:24])


def read_bytes(path: str) -> "bytes | None":
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def keep_record(folder: str, site: str, pid: int, files: bool) -> None:
    """Root's copy of the record's files (`files`: a record just made), and always the site and pid now taken over."""
    copy = record_copy(folder)
    os.makedirs(copy, mode=0o700, exist_ok=True)
    os.chmod(STATE, 0o700)
    for name in ("legacy.json", "nginx-site") if files else ():
        data = read_bytes(os.path.join(folder, name))
        if data is None:
            if os.path.exists(os.path.join(copy, name)):
                os.remove(os.path.join(copy, name))
        else:
            write_atomic(os.path.join(copy, name), data, 0o600)
    write_atomic(os.path.join(copy, "meta.json"), json.dumps({"folder": folder, "site": site, "pid": pid}).encode(), 0o600)


def check_record(folder: str, owner: pwd.struct_passwd) -> None:
    """The record in `folder` is the one root made; a record from before the helper (no copy) only for the caller's own process."""
    copy = record_copy(folder)
    mine = read_bytes(os.path.join(folder, "legacy.json"))
    if mine is None:
        raise Refused(f"no takeover record in {folder}")
    if not os.path.isdir(copy):
        user = json.loads(mine).get("legacy", {}).get("user")
        if user != owner.pw_name:
            raise Refused(f"the takeover record in {folder} was not made by this helper and names another user's process")
        return
    for name in ("legacy.json", "nginx-site"):
        if read_bytes(os.path.join(folder, name)) != read_bytes(os.path.join(copy, name)):
            raise Refused(f"{folder}/{name} was changed after the takeover recorded it: restore refused")


# ----------------------------------------------------------------------------- the verbs


def v_probe(args: list) -> int:
    """probe: prints `sudo` (the helper runs) and `nginx` if Nginx is installed."""
    print("sudo")
    if any(os.access(os.path.join(d, "nginx"), os.X_OK) for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")):
        print("nginx")
    return 0


def v_listeners(args: list) -> int:
    """listeners PORT[,PORT...]: `ss -ltnpH`, then the command line of each pid listening on those ports."""
    ports = [str(integer(p, "a port", 1, 65535)) for p in args[0].split(",")]
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    sys.stdout.write(out)
    print(f"\n{MARK}commands")
    pids = set()
    for line in out.splitlines():
        if re.search(r":(" + "|".join(ports) + r")\s", line):
            pids.update(int(p) for p in re.findall(r"pid=([0-9]+)", line))
    for pid in sorted(pids):
        raw = read_bytes(f"/proc/{pid}/cmdline") or b""
        print(f"{pid} " + raw.replace(b"\0", b" ").decode(errors="replace"))
    return 0


def v_nginx_test(args: list) -> int:
    """nginx-test CMD: NGINX_TEST_CMD ('nginx -t', optionally with its path and -q)."""
    return run_argv(command(args[0], TEST_RE, "the test command"))


def v_nginx_dump(args: list) -> int:
    """nginx-dump: `nginx -T` (the whole configuration)."""
    return run_argv(["nginx", "-T"])


def v_nginx_reload(args: list) -> int:
    """nginx-reload SPEC: reload Nginx with NGINX_RELOAD_CMD and prove the reload took (reload_nginx.py)."""
    return run_lib("reload_nginx.py", reload_spec(args[0]))


def v_site_read(args: list) -> int:
    """site-read FILE: print a site or extras file of Nginx's folders."""
    return read_text(nginx_file(args[0], "the file"))


def v_site_install(args: list) -> int:
    """site-install SITE LINK STATE_DIR backup|replace guard|takeover PORT|- TEST_CMD: put the site on stdin in place,
    enable it, disable the stock default site when ours is the default server on PORT, keep it only if the test passes."""
    site, link = nginx_file(args[0], "the site"), site_link(args[1], args[0])
    state = state_dir(args[2], caller())
    backup = token(args[3], re.compile(r"backup|replace"), "the backup mode")
    mode = token(args[4], re.compile(r"guard|takeover"), "the mode")
    port = "-" if args[5] == "-" else str(integer(args[5], "the default server's port", 1, 65535))
    test = " ".join(command(args[6], TEST_RE, "the test command"))
    if mode == "takeover":
        meta = read_bytes(os.path.join(record_copy(os.path.join(state, "takeover")), "meta.json"))
        if meta is None or json.loads(meta).get("site") != site:
            raise Refused(f"a takeover may write over {site} only after takeover-record saved it")
    if port != "-" and not link:
        port = "-"
    text = site_text(sys.stdin.read())
    return run_lib("install_site.sh", site, link, os.path.join(state, PARKED), DEFAULT_LINK, port, backup, mode, test,
                   stdin=text)


def v_site_restore(args: list) -> int:
    """site-restore SITE LINK STATE_DIR TEST_CMD: the previous site back (rollback), or ours removed and the stock
    default site enabled again after a first deploy; then the test."""
    site, link = nginx_file(args[0], "the site"), site_link(args[1], args[0])
    state = state_dir(args[2], caller())
    test = " ".join(command(args[3], TEST_RE, "the test command"))
    default_link = os.path.join(os.path.dirname(link or "/etc/nginx/sites-enabled/x"), "default")
    parked_target(state)  # refuses a parked file that names anything but a site in sites-available
    return run_lib("restore_site.sh", site, site + ".signalcraft-prev", link, os.path.join(state, PARKED), default_link, test)


def v_unpark_default(args: list) -> int:
    """unpark-default STATE_DIR: enable the stock default site again that site-install disabled."""
    state = state_dir(args[0], caller())
    target = parked_target(state)
    if target:
        tmp = DEFAULT_LINK + ".signalcraft-tmp"
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, DEFAULT_LINK)
        os.remove(os.path.join(state, PARKED))
    return 0


def v_extras_write(args: list) -> int:
    """extras-write FILE: the location blocks kept from a site taken over (stdin); never over a file not ours (exit 66)."""
    path = extras_file(args[0])
    old = read_bytes(path)
    if old and not old.decode(errors="replace").lstrip("\ufeff").startswith(HEADER):
        print(f"{path} exists and was not written by signalcraft-deploy", file=sys.stderr)
        return 66
    write_atomic(path, site_text(sys.stdin.read()).encode(), 0o644)
    return 0


def v_extras_remove(args: list) -> int:
    """extras-remove FILE."""
    path = extras_file(args[0])
    if os.path.lexists(path):
        os.remove(path)
    return 0


def v_tls_check(args: list) -> int:
    """tls-check SPEC: can Nginx serve this certificate and key (tls_check.py)?"""
    return run_lib("tls_check.py", tls_spec(args[0]))


def v_certbot_hook(args: list) -> int:
    """certbot-hook APP_NAME TLS_CERT NGINX_SITE TEST_CMD RELOAD_CMD: write certbot's deploy hook if it differs."""
    path, text = certbot_hook(*args)
    if read_bytes(path) == text.encode():
        print(f"certbot hook {path} in place")
        return 0
    os.makedirs(HOOK_DIR, mode=0o755, exist_ok=True)
    write_atomic(path, text.encode(), 0o755)
    print(f"certbot hook {path} written")
    return 0


def v_takeover_record(args: list) -> int:
    """takeover-record PID FOLDER PM2 NODE_APP SITE FORMAT TOOL: save the state before a takeover (takeover_record.py),
    and root's own copy of it (restore trusts only that)."""
    owner = caller()
    pid = integer(args[0], "the pid", 2, 2 ** 22)
    folder = takeover_folder(args[1], owner)
    pm2, node_app = token(args[2], PROGRAM, "PM2"), token(args[3], PM2_APP, "the Node.js app")
    site = nginx_file(args[4], "the site")
    number, tool = str(integer(args[5], "the format", 1, 99)), token(args[6], TOOL, "the tool")
    fresh = not os.path.exists(os.path.join(folder, "legacy.json"))
    code = run_lib("takeover_record.py", str(pid), folder, pm2, node_app, site, owner.pw_name, number, tool)
    if code == 0:
        keep_record(folder, site, pid, fresh or not os.path.isdir(record_copy(folder)))
    return code


def v_stop_pid(args: list) -> int:
    """stop-pid PID TENTHS STATE_DIR: stop the unmanaged server the takeover recorded (stop_pid.sh); no other pid."""
    pid = integer(args[0], "the pid", 2, 2 ** 22)
    tenths = integer(args[1], "the wait", 0, 36000)
    state = state_dir(args[2], caller())
    meta = read_bytes(os.path.join(record_copy(os.path.join(state, "takeover")), "meta.json"))
    if meta is None or json.loads(meta).get("pid") != pid:
        raise Refused(f"pid {pid} is not the server the takeover recorded: not stopped")
    return run_lib("stop_pid.sh", str(pid), str(tenths), caller().pw_name)  # only the calling user's own process


def v_takeover_restore(args: list) -> int:
    """takeover-restore FOLDER PM2 SITE LINK READS TOOL: bring back the state before the takeover (takeover_restore.py)."""
    owner = caller()
    folder = takeover_folder(args[0], owner)
    pm2 = token(args[1], PROGRAM, "PM2")
    site = nginx_file(args[2], "the site")
    link = site_link(args[3], site)
    reads, tool = str(integer(args[4], "the format", 1, 99)), token(args[5], TOOL, "the tool")
    check_record(folder, owner)
    return run_lib("takeover_restore.py", folder, pm2, site, owner.pw_name, link, reads, tool)


def v_version(args: list) -> int:
    """version: the sha256 of the installed helper and its programs (as `fab setup` computes it)."""
    print(installed_digest())
    return 0


def installed_digest() -> str:
    digest = hashlib.sha256()
    for path in [HELPER] + [os.path.join(LIB, n) for n in sorted(os.listdir(LIB))]:
        digest.update(read_bytes(path) or b"")
    return digest.hexdigest()


VERBS = {
    "probe": (v_probe, 0), "listeners": (v_listeners, 1), "nginx-test": (v_nginx_test, 1), "nginx-dump": (v_nginx_dump, 0),
    "nginx-reload": (v_nginx_reload, 1), "site-read": (v_site_read, 1), "site-install": (v_site_install, 7),
    "site-restore": (v_site_restore, 4), "unpark-default": (v_unpark_default, 1), "extras-write": (v_extras_write, 1),
    "extras-remove": (v_extras_remove, 1), "tls-check": (v_tls_check, 1), "certbot-hook": (v_certbot_hook, 5),
    "takeover-record": (v_takeover_record, 7), "stop-pid": (v_stop_pid, 3), "takeover-restore": (v_takeover_restore, 6),
    "version": (v_version, 0),
}


def usage() -> str:
    return "usage: signalcraft-root VERB ARGS...\n" + "\n".join(f"  {(fn.__doc__ or '').strip()}" for fn, _ in VERBS.values())


def check_call(argv: list) -> tuple:
    """(handler, args) for a command line, or Refused: a known verb with its exact number of arguments."""
    if not argv or argv[0] not in VERBS:
        raise Refused(f"unknown verb {argv[0] if argv else ''!r}; the verbs are: {', '.join(VERBS)}")
    handler, count = VERBS[argv[0]]
    if len(argv) - 1 != count:
        raise Refused(f"{argv[0]} takes {count} argument(s), got {len(argv) - 1}")
    if any("\0" in a or "\n" in a for a in argv[1:]) and argv[0] not in ("nginx-reload", "tls-check"):
        raise Refused(f"{argv[0]}: an argument holds a newline or NUL")
    return handler, argv[1:]


def main(argv: list) -> int:
    if argv in (["help"], ["--help"], ["-h"]):
        print(usage())
        return 0
    try:
        handler, args = check_call(argv)
        if os.geteuid() != 0:
            raise Refused("must run as root: sudo -n " + HELPER + " VERB ARGS")
        return handler(args)
    except Refused as err:
        print(f"signalcraft-root: refused: {err}", file=sys.stderr)
        return REFUSED


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main(sys.argv[1:]))
