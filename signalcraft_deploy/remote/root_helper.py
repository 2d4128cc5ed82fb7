#!/usr/bin/python3 -IS
"""signalcraft-root: the only program a deploy user may run as root.

Installed ON THE HOST by `setup` as /usr/local/sbin/signalcraft-root (root-owned 0755), with the
programs it runs and the crossplane parser beside it in /usr/local/lib/signalcraft-deploy/
(root-owned, writable by root only). The sudoers drop-in /etc/sudoers.d/signalcraft-<user> lets the
deploy user run this file and nothing else:

    sudo -n /usr/local/sbin/signalcraft-root VERB ARGS...

What makes it sound by construction, not by a deny-list:
- Root never acts on a path the caller controls. Root's records (who owns which site, the stock
  default site it parked, a takeover's copy of the old site) live in STATE
  (/var/lib/signalcraft-deploy, 0700). Root writes only in root's folders (/etc/nginx's site
  folders, STATE, certbot's hook folder), through a temporary file made there and renamed. The
  caller's `<DEPLOY_ROOT>/.deploy` is a name only: root never opens it. Every file root reads is
  opened once, without following a last-component link, non-blocking, and used only if it is a
  regular file.
- Root runs no program the caller names: the Nginx test and reload commands are one of a fixed few;
  the programs it runs are its own, beside it.
- Root renders the Nginx site itself (nginx_site.py, inlined below) from a JSON description whose
  every field is checked; the caller never sends Nginx text. The location blocks a takeover keeps
  come from root's own copy of the site it replaced, parsed with crossplane. Maintenance mode's
  files are rendered the same way; its two pages are the only bytes root writes as sent, as files
  Nginx serves.
- Every site is claimed by the user and deploy root that first installed it (STATE/sites/); another
  caller is refused, and the read verbs show a caller only what is its own.
- A cleared environment with a fixed PATH, `python3 -I -S`, and a timeout on every child.

Anything refused is one line on stderr and exit 2, before anything has changed. Standard library
only.
"""

import fcntl
import fnmatch
import hashlib
import json
import os
import pwd
import re
import stat
import subprocess
import sys

# ipaddress, shutil, socket and tempfile are imported where they are used, typing nowhere: each
# verb is a run of its own, and an import no verb needs costs every one of them.
from signalcraft_deploy.remote.nginx_site import (
    BadSite,
    check,
    extras_path,
    maintenance_files,
    maintenance_include,
    render,
    render_maintenance,
    site_path,
    tls_file,
    upstream_for,
)

HELPER = "/usr/local/sbin/signalcraft-root"
APP_HELPER = (  # the deploy user's door to its apps' accounts (host/root.py)
    "/usr/local/sbin/signalcraft-app"
)
LIB = "/usr/local/lib/signalcraft-deploy"
STATE = "/var/lib/signalcraft-deploy"  # root's own records, 0700
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AVAILABLE, ENABLED = "/etc/nginx/sites-available", "/etc/nginx/sites-enabled"
DEFAULT_LINK = ENABLED + "/default"
HOOK_DIR = "/etc/letsencrypt/renewal-hooks/deploy"
CERTBOT_LIVE = "/etc/letsencrypt/live/"
HEADER = "# Rendered by signalcraft-deploy."  # core.render.SITE_HEADER
MARK = "@@signalcraft:"  # host.facts.MARK
REFUSED = 2
CHILD_TIMEOUT = 120  # seconds any program the helper runs may take
MAX_READ = 4 * 1024 * 1024

_NGINX = r"(/usr/sbin/|/usr/bin/|/usr/local/sbin/|/usr/local/bin/|/usr/local/nginx/sbin/)?nginx"
TEST_RE = re.compile(rf"{_NGINX}( -q)? -t( -q)?")  # core.settings: NGINX_TEST_CMD
RELOAD_RE = re.compile(
    rf"{_NGINX} -s reload|(/usr/bin/|/bin/)?systemctl reload nginx(\.service)?|"
    r"(/usr/sbin/)?service nginx reload"
)  # core.settings: NGINX_RELOAD_CMD
PATH_CHARS = re.compile(r"/[A-Za-z0-9_.@+/-]*")
APP = re.compile(r"[a-z][a-z0-9-]{0,39}")
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # core.settings: APP_USER
UNIT_DIR = "/etc/systemd/system"
SYSTEMD_RUNNING = "/run/systemd/system"  # there while systemd is pid 1 (sd_booted)
PM2_DAEMON = re.compile(
    rb"PM2 v[0-9][0-9A-Za-z.-]*: God Daemon"
)  # the title PM2's daemon gives itself
TOOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,79}")
HOST_NAME = re.compile(r"[A-Za-z0-9*_]([A-Za-z0-9_.*-]{0,252})")
MARKER_URL = re.compile(
    r"http://(\[[0-9A-Fa-f:.]+\]|[0-9.]+|localhost):[0-9]{1,5}"
    r"/\.signalcraft-deploy-(site|maintenance)"
)


class Refused(Exception):
    """An argument or state the helper does not accept: nothing has changed."""


# ----------------------------------------------------------------------------- argument checks
# (pure)


def clean_path(value: str, what: str) -> str:
    """An absolute, normalised path of plain characters (no `.`, `..`, `//`, `$`, `#`, spaces or
    newlines)."""
    if not value.startswith("/"):
        raise Refused(f"{what} must be an absolute path, not {value!r}")
    if ".." in value.split("/"):
        raise Refused(f"{what} must not contain '..': {value!r}")
    if not PATH_CHARS.fullmatch(value):
        raise Refused(f"{what} has characters a path of ours never has: {value!r}")
    if os.path.normpath(value) != value or value.startswith("//"):
        raise Refused(f"{what} is not a normalised path (no '.', '//' or trailing '/'): {value!r}")
    return value


def a_site(value: str) -> str:
    try:
        return site_path(value)
    except BadSite as err:
        raise Refused(str(err)) from None


def link_of(site: str) -> str:
    """The enabled link of a site in sites-available ('' for one in conf.d, which Nginx includes
    itself)."""
    return f"{ENABLED}/{os.path.basename(site)}" if os.path.dirname(site) == AVAILABLE else ""


def state_name(value: str) -> str:
    """<DEPLOY_ROOT>/.deploy of the caller: only a name that keys root's records; root never opens
    it."""
    path = clean_path(value, "the state folder")
    if os.path.basename(path) != ".deploy":
        raise Refused(f"the state folder must be <DEPLOY_ROOT>/.deploy, not {value!r}")
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


def reload_spec(text: str) -> str:
    """reload_nginx.py's SPEC with every field checked, as canonical JSON."""
    spec = _json(text, "the reload spec")
    if set(spec) - {"cmd", "wait", "marker"}:
        raise Refused(
            f"the reload spec has unknown keys: {sorted(set(spec) - {'cmd', 'wait', 'marker'})}"
        )
    out = {
        "cmd": " ".join(command(spec.get("cmd", ""), RELOAD_RE, "the reload command")),
        "wait": integer(str(spec.get("wait", "")), "the reload wait", 0, 600),
        "marker": None,
    }
    marker = spec.get("marker")
    if marker is not None:
        if not isinstance(marker, dict) or set(marker) != {"url", "host", "expect"}:
            raise Refused("the reload marker must be {url, host, expect}")
        out["marker"] = {
            "url": local_url(token(marker["url"], MARKER_URL, "the marker URL")),
            "host": (
                None
                if marker["host"] is None
                else token(marker["host"], HOST_NAME, "the marker host")
            ),
            "expect": token(marker["expect"], re.compile(r"[0-9a-f]{16}"), "the marker id"),
        }
    return json.dumps(out)


def local_url(url: str) -> str:
    """A marker URL whose address is one of this host's own (root asks nothing of another
    machine)."""
    found = re.match(r"http://\[?([^\]/]+?)\]?:[0-9]+/", url)
    assert found, url  # MARKER_URL matched it
    host = found.group(1)
    if host == "localhost":
        return url
    try:
        import ipaddress

        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if (
        ip is None
        or ip.is_unspecified
        or ip.is_multicast
        or host == "255.255.255.255"
        or not is_local(host)
    ):
        raise Refused(f"the marker URL {url} is not on an address of this host")
    return url


def tls_spec(text: str) -> str:
    spec = _json(text, "the TLS spec")
    if set(spec) != {"cert", "key", "names"} or not isinstance(spec["names"], list):
        raise Refused("the TLS spec must be {cert, key, names}")
    try:
        files = {key: tls_real(tls_file(spec[key], key), key) for key in ("cert", "key")}
    except BadSite as err:
        raise Refused(str(err)) from None
    return json.dumps(
        {**files, "names": [token(n, HOST_NAME, "a server name") for n in spec["names"]]}
    )


def tls_real(path: str, what: str) -> str:
    """The file a certificate path resolves to (certbot's live/ names are links into archive/):
    still in root's TLS folders, a regular file root owns. A missing file is passed on as it is, for
    tls_check.py to name.
    """
    try:
        real = tls_file(os.path.realpath(path), what)
    except BadSite as err:
        raise Refused(str(err)) from None
    try:
        info = os.lstat(real)
    except FileNotFoundError:
        return path  # absent (or a dangling link): tls_check.py names it
    if not stat.S_ISREG(info.st_mode) or info.st_uid != 0:
        raise Refused(f"TLS {what} {path} is not a regular file owned by root")
    return real


def site_description(text: str) -> dict:
    try:
        return check(_json(text, "the site description"))
    except BadSite as err:
        raise Refused(f"the site description: {err}") from None


def _json(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused(f"{what} is not JSON (or nests too deep)") from None
    if not isinstance(value, dict):
        raise Refused(f"{what} must be a JSON object")
    return value


def line_numbers(value: str) -> list:
    if value == "-":
        return []
    return [integer(n, "a line number", 1, 10**6) for n in value.split(",")]


def certbot_hook(app: str, cert: str, site: str, test: str, reload: str) -> tuple:
    """(path, text) of certbot's deploy hook: a fixed path and a fixed shape
    (core.render.render_certbot_hook)."""
    token(app, APP, "APP_NAME")
    cert = clean_path(cert, "TLS_CERT")
    if not cert.startswith(CERTBOT_LIVE):
        raise Refused(f"TLS_CERT must be under {CERTBOT_LIVE} for a certbot hook: {cert!r}")
    site = a_site(site)
    test, reload = (
        " ".join(command(test, TEST_RE, "the test command")),
        " ".join(command(reload, RELOAD_RE, "the reload command")),
    )
    text = (
        f"#!/bin/sh\n{HEADER} Reloads Nginx after certbot renews {cert} (site {site}).\n{test} &&"
        f" {reload}\n"
    )
    return f"{HOOK_DIR}/signalcraft-{app}", text


# ----------------------------------------------------------------------------- files: read once,
# written in root's folders


def read_regular(path: str) -> "bytes | None":
    """A regular file's bytes, opened once without following a last-component link and without
    blocking on a FIFO; None if absent. Anything but a regular file (a link, FIFO, device, folder)
    is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Refused(f"{path} cannot be read as a plain file: {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_READ)


def write_in(path: str, data: bytes, mode: int) -> None:
    """Write a file in one of root's folders: a temporary file made there, then renamed over
    `path`."""
    folder = os.path.dirname(path)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".signalcraft-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)


def remove_tree(path: str) -> None:
    """A folder of root's records and all in it (shutil.rmtree does not follow links in it)."""
    import shutil

    shutil.rmtree(path)


def ours(data: "bytes | None") -> bool:
    return bool(data and data.decode(errors="replace").lstrip("\ufeff").startswith(HEADER))


def state_folder(*parts: str) -> str:
    """A folder of root's records (made 0700, root's): STATE/<parts>."""
    path = os.path.join(STATE, *parts)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for folder in (STATE, path):
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
            raise Refused(f"{folder} is not root's own folder")
        os.chmod(folder, 0o700)
    return path


def record(path: str) -> "dict | None":
    data = read_regular(path)
    return None if data is None else json.loads(data)


# ----------------------------------------------------------------------------- who owns what


def caller() -> pwd.struct_passwd:
    """The user sudo ran us for (SUDO_UID, which sudo sets itself); root when run by root
    directly."""
    uid = CALLER_UID
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        raise Refused(f"unknown calling uid {uid}") from None


def app_accounts() -> dict:
    """The caller's apps' accounts, name -> uid, from root's record that `setup` (an admin's step)
    wrote in STATE/app-users/<caller>.json. An entry whose name is gone or now has another uid (a
    deleted and reused account) or uid 0 is not one; nor is any entry of a record that names another
    deploy user."""
    me = caller()
    try:
        found = record(os.path.join(STATE, "app-users", me.pw_name + ".json")) or {}
    except ValueError:
        found = {}
    if found.get("deploy") != me.pw_name or not isinstance(found.get("apps"), dict):
        return {}
    accounts = {}
    for name, entry in found["apps"].items():
        try:
            uid = pwd.getpwnam(str(name)).pw_uid
        except KeyError:
            continue
        if isinstance(entry, dict) and entry.get("uid") == uid and uid != 0:
            accounts[str(name)] = uid
    return accounts


def own_uids() -> set:
    """The caller's uid and its apps' accounts' (app_accounts): their processes are the caller's
    own."""
    return {caller().pw_uid} | set(app_accounts().values())


def owner_key(user: pwd.struct_passwd, state: str) -> dict:
    return {"user": user.pw_name, "uid": user.pw_uid, "state": state}


def claim_path(site: str) -> str:
    return os.path.join(
        state_folder("sites"),
        os.path.basename(os.path.dirname(site)) + "--" + os.path.basename(site) + ".json",
    )


def claim_of(site: str) -> "dict | None":
    return record(claim_path(site))


def must_own(site: str, state: str, may_claim: bool = False) -> None:
    """The site is claimed by this caller and deploy root (or unclaimed, when `may_claim`): else
    refused."""
    mine = owner_key(caller(), state)
    claim = claim_of(site)
    if claim is None and may_claim:
        return
    if claim is None:
        raise Refused(f"{site} was not installed by this helper for this user and deploy root")
    if {k: claim.get(k) for k in mine} != mine:
        raise Refused(
            f"{site} belongs to another user or deploy root ({claim.get('user')}): not yours to"
            " change"
        )


def not_others(site: str) -> None:
    """Refused if another user claimed the site (reads: a caller sees only its own sites and
    unclaimed ones)."""
    claim = claim_of(site)
    if claim is not None and claim.get("uid") != caller().pw_uid:
        raise Refused(f"{site} belongs to another user")


def listen_of(value: str) -> tuple:
    """(address, port) of a listen address as Nginx reads it: a bare port is every IPv4 address."""
    if re.fullmatch(r"[0-9]+", value):
        return "*", str(int(value))
    host, _, port = value.rpartition(":")
    return ("*" if host in ("*", "0.0.0.0") else host), str(int(port))


def desc_facts(desc: dict) -> dict:
    """What a site described serves: its names, TLS files (resolved), listen addresses and upstream
    ports."""
    tls = desc["tls"]
    return {
        "names": sorted(set(desc["server_name"].lower().split(" ")) - {"_"}),
        # as named and as resolved: a renewal moves certbot's links to new files, the names stay
        "tls": (
            sorted({p for k in ("cert", "key") for p in (tls[k], tls_real(tls[k], k))})
            if tls
            else []
        ),
        "listens": sorted(
            {listen_of(a) for a in desc["listen"] + (desc["tls_listen"] if tls else [])}
        ),
        "upstream_ports": sorted(
            {str(int(desc[k].rsplit(":", 1)[-1])) for k in ("python", "node")}
        ),
    }


def text_facts(path: str) -> dict:
    """The same facts, read with crossplane from a site's file (one root wrote before: a backup,
    root's copy)."""
    names: set[str] = set()
    files: set[str] = set()
    listens: set[tuple] = set()
    ports: set[str] = set()

    def walk(block: list) -> None:
        for d in block:
            args = d.get("args", [])
            if d["directive"] == "server_name":
                names.update(a.lower() for a in args if a != "_")
            elif d["directive"] in ("ssl_certificate", "ssl_certificate_key") and args:
                files.update(
                    {args[0], tls_real(args[0], d["directive"])}
                    if args[0].startswith("/")
                    else {args[0]}
                )
            elif d["directive"] == "listen" and args:
                listens.add(listen_of(args[0]))
            elif d["directive"] == "server" and args and re.fullmatch(r".+:[0-9]+", args[0]):
                ports.add(str(int(args[0].rsplit(":", 1)[-1])))
            walk(d.get("block", []))

    walk(parse_site(path))
    return {
        "names": sorted(names),
        "tls": sorted(files),
        "listens": sorted(listens),
        "upstream_ports": sorted(ports),
    }


def claim_text(site: str, state: str, facts: dict) -> bytes:
    """The claim of a site: who installed it from which deploy root, and what it serves."""
    return json.dumps({**owner_key(caller(), state), "site": site, **facts}).encode()


def all_claims() -> list:
    """Every site's claim, read once."""
    folder = state_folder("sites")
    return [
        c
        for c in (record(os.path.join(folder, n)) for n in sorted(os.listdir(folder)))
        if isinstance(c, dict)
    ]


def other_claims(site: str) -> list:
    """Every claim on a site other than `site`."""
    return [c for c in all_claims() if c.get("site") != site]


def names_overlap(a: str, b: str) -> bool:
    """Whether two server names can match one host (`*.example.com`, `example.*` included; a leading
    and a trailing wildcard always can: `shop.example.com` matches both `*.example.com` and
    `shop.example.*`)."""
    if (a.startswith("*.") and b.endswith(".*")) or (b.startswith("*.") and a.endswith(".*")):
        return True
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


def check_facts(site: str, facts: dict) -> None:
    """Refused if the site would serve what another user's site serves: an overlapping name, the
    same certificate or key file, its port on another address (Nginx picks the server by address
    before name: the more specific address takes every request to it), a port it proxies to; or a
    port a program other than Nginx listens on.
    """
    for other in other_claims(site):
        if other.get("uid") == caller().pw_uid:
            continue
        for name in facts["names"]:
            if any(names_overlap(name, theirs) for theirs in other.get("names", [])):
                raise Refused(
                    f"the server name {name} is served by another user's site: not yours to serve"
                )
        if set(facts["tls"]) & set(other.get("tls", [])):
            raise Refused("the certificate or key is another user's site's: not yours to serve")
        for address, port in facts["listens"]:
            theirs = {a for a, p in (tuple(x) for x in other.get("listens", [])) if p == port}
            if theirs and address not in theirs:
                raise Refused(
                    f"port {port} is served by another user's site on {sorted(theirs)[0]}: listen"
                    " there too, or on a port of your own"
                )
            if port in other.get("upstream_ports", []):
                raise Refused(
                    f"port {port} is where another user's site sends its requests: not yours to"
                    " listen on"
                )
    held = {port for _, port, _, names in listening_sockets() if any(n != "nginx" for n in names)}
    for _, port in facts["listens"]:
        if port in held:
            raise Refused(
                f"port {port} is held by a program other than Nginx: choose another listen port"
            )


def ss_lines() -> list:
    """`ss -ltnpH` as root: this host's listening TCP sockets, one line each, with their
    processes."""
    done = run_captured(["ss", "-ltnpH"])
    return [
        line
        for line in ("" if isinstance(done, int) else done.stdout).splitlines()
        if len(line.split()) > 3
    ]


def listening_sockets() -> list:
    """[(host, port, pids, process names)] of this host's listening TCP sockets."""
    return [
        (
            *host_port(line.split()[3]),
            {int(p) for p in re.findall(r"pid=([0-9]+)", line)},
            set(re.findall(r'\("([^"]*)"', line)),
        )
        for line in ss_lines()
    ]


LOCK = ".lock"


def hold_lock() -> None:
    """One writing verb at a time on the host (the claim checked is the claim written): held until
    exit."""
    global LOCK_FD
    LOCK_FD = os.open(
        os.path.join(state_folder(), LOCK),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    fcntl.flock(LOCK_FD, fcntl.LOCK_EX)


LOCK_FD = -1


class Changes:
    """The files one verb changes in root's folders, each kept as it was; `undo` puts every one
    back. A verb that changes Nginx's configuration ends with `tested`: the test passes, or
    everything is as it was (exit 65).
    """

    def __init__(self) -> None:
        self.saved: dict = {}

    def __enter__(self) -> "Changes":
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is not None:  # a refusal or failure part way: nothing untested stays
            self.undo()

    def keep(self, path: str) -> None:
        if path in self.saved:
            return
        if os.path.islink(path):
            self.saved[path] = ("link", os.readlink(path))
        elif os.path.lexists(path):
            self.saved[path] = ("file", read_regular(path), stat.S_IMODE(os.lstat(path).st_mode))
        else:
            self.saved[path] = ("absent",)

    def write(self, path: str, data: bytes, mode: int) -> None:
        self.keep(path)
        write_in(path, data, mode)

    def link(self, path: str, target: str) -> None:
        self.keep(path)
        tmp = os.path.join(os.path.dirname(path), ".signalcraft-link-" + os.path.basename(path))
        remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)

    def remove(self, path: str) -> None:
        self.keep(path)
        remove(path)

    def undo(self) -> None:
        for path, was in reversed(list(self.saved.items())):
            remove(path)
            if was[0] == "link":
                os.symlink(was[1], path)
            elif was[0] == "file":
                write_in(path, was[1], was[2])

    def tested(self, test: list, names: "list | None" = None) -> int:
        ok, said = test_passes(test)
        clash = [n for n in names or [] if f'conflicting server name "{n}"' in said]
        if ok and not clash:
            return 0
        self.undo()
        print(
            said
            + (
                f"\nthe server name {clash[0]} is also served by a site of this host"
                if clash
                else ""
            ),
            file=sys.stderr,
        )
        return 65


def takeover_folder(state: str) -> str:
    key = hashlib.sha256(f"{caller().pw_uid}\0{state}".encode()).hexdigest()[:24]
    return os.path.join(STATE, "takeover", key)


def takeover_meta(state: str, site: str) -> "dict | None":
    meta = record(os.path.join(takeover_folder(state), "meta.json"))
    return (
        meta
        if meta is not None and meta.get("site") == site and meta.get("uid") == caller().pw_uid
        else None
    )


PARKED = "parked-default.json"


def parked() -> "dict | None":
    return record(os.path.join(state_folder(), PARKED))


# ----------------------------------------------------------------------------- what runs


def lib(name: str) -> str:
    """A program beside the helper, refused unless root owns it and no one else can write it."""
    path = os.path.join(LIB, name)
    for p in (LIB, path):
        st = os.lstat(p)
        if st.st_uid != 0 or st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
            raise Refused(
                f"{p} must be owned by root and writable by root only: run `fab setup` again"
            )
    return path


def run_lib(name: str, *args: str) -> int:
    return run_argv([sys.executable, "-IS", lib(name), *args])


def run_argv(argv: list) -> int:
    """Run a program with a time limit: its exit status (127: it cannot start, 124: it took too
    long)."""
    done = run_child(argv, False)
    return done if isinstance(done, int) else done.returncode


def run_captured(argv: list) -> "int | subprocess.CompletedProcess":
    """Run a program with a time limit: its result with its output (text), or 127 or 124."""
    return run_child(argv, True)


def run_child(argv: list, capture: bool) -> "int | subprocess.CompletedProcess":
    """Run a program with a time limit: its result when `capture` (its output, text), else its exit
    status; 127 when it cannot start, 124 when it took too long."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            errors="replace",
            timeout=CHILD_TIMEOUT,
        )
    except OSError as err:
        print(f"signalcraft-root: {argv[0]}: {err.strerror}", file=sys.stderr)
        return 127
    except subprocess.TimeoutExpired:
        print(
            f"signalcraft-root: {argv[0]} took longer than {CHILD_TIMEOUT}s: stopped",
            file=sys.stderr,
        )
        return 124
    return done if capture else done.returncode


def nginx_test(test: list) -> "subprocess.CompletedProcess | int":
    return run_captured(test)


def test_passes(test: list) -> "tuple[bool, str]":
    done = nginx_test(test)
    if isinstance(done, int):
        return False, f"{' '.join(test)} could not run"
    return done.returncode == 0, (done.stderr or done.stdout).strip()


def crossplane():
    """The crossplane package installed beside the helper (root's copy; never the caller's Python
    path)."""
    lib("crossplane")
    sys.dont_write_bytecode = True
    sys.path.insert(0, LIB)
    import crossplane as parser  # noqa: PLC0415 - only the verbs that parse load it

    return parser


# ----------------------------------------------------------------------------- the verbs


def v_probe(args: list) -> int:
    """probe: prints `sudo` (the helper runs) and `nginx` if Nginx is installed."""
    print("sudo")
    if any(
        os.access(os.path.join(d, "nginx"), os.X_OK)
        for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
    ):
        print("nginx")
    return 0


def shown(text: str) -> str:
    """One line of text for the caller: control characters (a newline in a process's name or command
    line, which its owner chooses, an app's included) as '?', so that no line printed is the
    process's own."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)


def v_listeners(args: list) -> int:
    """listeners PORT[,PORT...]: the listening sockets on those ports (`ss -ltnpH`), then the
    command line of each of the caller's own processes among them (another user's: its pid and name
    only, as `ps` shows).
    """
    ports = [str(integer(p, "a port", 1, 65535)) for p in args[0].split(",")][:32]
    mine = [line for line in ss_lines() if re.search(r":(" + "|".join(ports) + r")\s", line)]
    print("\n".join(shown(line) for line in mine))
    print(f"\n{MARK}commands")
    for pid in sorted({int(p) for line in mine for p in re.findall(r"pid=([0-9]+)", line)}):
        if uid_of(pid) not in own_uids():
            continue
        raw = read_regular(f"/proc/{pid}/cmdline") or b""
        print(f"{pid} " + shown(raw.replace(b"\0", b" ").decode(errors="replace")))
    return 0


def v_nginx_test(args: list) -> int:
    """nginx-test CMD: NGINX_TEST_CMD ('nginx -t', optionally with its path and -q)."""
    return run_argv(command(args[0], TEST_RE, "the test command"))


def v_nginx_dump(args: list) -> int:
    """nginx-dump: `nginx -T` (the whole configuration), showing only files anyone may read and the
    caller's own sites (another user's, or a file root alone may read, is named and left out)."""
    done = run_captured(["nginx", "-T"])
    if isinstance(done, int):
        return done
    showing, claims = True, all_claims()
    for line in done.stdout.splitlines():
        found = re.match(r"^# configuration file (.+):$", line)
        if found:
            showing = may_see(found.group(1), claims)
            if not showing:
                print(f"{line}\n# (not yours to read: not shown)")
                continue
        if showing:
            print(line)
    sys.stderr.write(done.stderr)
    return done.returncode


def may_see(path: str, claims: list) -> bool:
    """A configuration file the caller may read through root: its own site's, or one anyone may
    read."""
    for claim in claims:
        site = claim.get("site", "")
        if site and path in (site, link_of(site), extras_path(site)):
            return claim.get("uid") == caller().pw_uid
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False


def v_nginx_reload(args: list) -> int:
    """nginx-reload SPEC: reload Nginx with NGINX_RELOAD_CMD and prove the reload took
    (reload_nginx.py)."""
    return run_lib("reload_nginx.py", reload_spec(args[0]))


def v_site_read(args: list) -> int:
    """site-read SITE: print a site file: the caller's own, or an unclaimed one anyone may read."""
    site = a_site(args[0])
    not_others(site)
    if claim_of(site) is None and os.path.lexists(site) and not may_see(site, all_claims()):
        raise Refused(f"{site} is not yours to read")
    data = read_regular(site)
    if data is None:
        return 1
    sys.stdout.write(data.decode(errors="replace"))
    return 0


def v_site_install(args: list) -> int:
    """site-install STATE_DIR backup|replace guard|takeover TEST_CMD: render the site described on
    stdin (JSON), put it in place, enable it, disable the stock default site when ours is the
    default server on its port, and keep it only if the test passes (else everything is put back:
    exit 65). A file there that this tool did not write is left alone (exit 66), except in a
    takeover that takeover-record prepared."""
    state = state_name(args[0])
    backup = token(args[1], re.compile(r"backup|replace"), "the backup mode") == "backup"
    takeover = token(args[2], re.compile(r"guard|takeover"), "the mode") == "takeover"
    test = command(args[3], TEST_RE, "the test command")
    desc = site_description(read_stdin())
    site = desc["site"]
    must_own(site, state, may_claim=True)
    facts = desc_facts(desc)
    check_facts(site, facts)
    old = read_regular(site)
    if takeover:
        still_as_recorded(state, site, old)
    if old is not None and not ours(old) and not takeover:
        print(f"{site} exists and was not written by signalcraft-deploy", file=sys.stderr)
        return 66
    link = link_of(site)
    if link and os.path.lexists(link) and not is_link_to(link, site):
        raise Refused(f"{link} exists and is not the link to {site}: move it away")
    with Changes() as changes:
        if old is not None and backup:
            changes.write(site + ".signalcraft-prev", old, 0o640)
        changes.write(claim_path(site), claim_text(site, state, facts), 0o600)
        changes.write(site, render(desc).encode(), 0o640)
        if link and not os.path.lexists(link):
            changes.link(link, site)
        if link and desc["server_name"] == "_":
            park_default(changes, site, desc)
        else:
            unpark(changes, site)  # a site that was the default server and is no longer
        return changes.tested(test, facts["names"])


def still_as_recorded(state: str, site: str, now: "bytes | None") -> None:
    """A takeover writes over (or removes) only the file takeover-record saw, or the caller's own
    site since."""
    meta = takeover_meta(state, site)
    if meta is None:
        raise Refused(f"a takeover of {site} needs takeover-record first")
    mine = (claim_of(site) or {}).get("uid") == caller().pw_uid
    seen = hashlib.sha256(now).hexdigest() if now is not None else None
    if seen != meta.get("digest") and not (mine and ours(now)):
        raise Refused(
            f"{site} changed since takeover-record saw it: not the site that was taken over"
        )


def is_link_to(link: str, site: str) -> bool:
    return (
        os.path.islink(link)
        and os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link))) == site
    )


def read_stdin() -> str:
    try:
        return sys.stdin.buffer.read(1024 * 1024).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("stdin is not UTF-8 text") from None


def park_default(changes: Changes, site: str, desc: dict) -> None:
    """Disable the stock default site when it is the default server on our first port: its target
    kept in STATE."""
    port = desc["listen"][0].rsplit(":", 1)[-1]
    if not os.path.islink(DEFAULT_LINK):
        return  # none, or parked already (an admin who enables it again makes the old record moot)
    target = os.path.normpath(os.path.join(ENABLED, os.readlink(DEFAULT_LINK)))
    if os.path.dirname(target) != AVAILABLE:
        return  # a stock site elsewhere is not one root reads on a caller's behalf
    code = b"\n".join(line.split(b"#", 1)[0] for line in (read_regular(target) or b"").splitlines())
    if not re.search(rf"listen\s+([^;]*:)?{port}\s[^;]*default_server".encode(), code):
        return
    changes.write(
        os.path.join(state_folder(), PARKED),
        json.dumps({"target": target, "site": site}).encode(),
        0o600,
    )
    changes.remove(DEFAULT_LINK)


def unpark(changes: Changes, site: str) -> None:
    """Enable the stock default site again, if `site`'s install parked it."""
    found = parked()
    if found is None or found.get("site") != site:
        return
    if not os.path.lexists(DEFAULT_LINK):
        changes.link(DEFAULT_LINK, clean_path(found["target"], "the parked site"))
    changes.remove(os.path.join(STATE, PARKED))


def v_site_restore(args: list) -> int:
    """site-restore STATE_DIR SITE TEST_CMD: the previous site back (rollback), or ours removed, its
    claim dropped and the stock default site enabled again after a first deploy; kept only if the
    test passes (else exit 65).
    """
    state, site = state_name(args[0]), a_site(args[1])
    test = command(args[2], TEST_RE, "the test command")
    must_own(site, state)
    prev = read_regular(site + ".signalcraft-prev")
    with Changes() as changes:
        if prev is None:
            remove_site(changes, site)
            return changes.tested(test)
        return put_back_ours(changes, site, state, prev, 0o640, test)


def put_back_ours(
    changes: Changes, site: str, state: str, text: bytes, mode: int, test: list
) -> int:
    """Write back a site root rendered before (a backup, root's takeover copy): what it serves is
    checked against the other users' sites as a new one is, and becomes the claim."""
    changes.write(site, text, mode)
    facts = text_facts(site)
    check_facts(site, facts)
    changes.write(claim_path(site), claim_text(site, state, facts), 0o600)
    return changes.tested(test, facts["names"])


def remove_site(changes: Changes, site: str) -> None:
    """Our site gone: the file, its link (only a link to it), its kept locations (only ours), a
    parked stock site enabled again, its claim dropped."""
    changes.remove(site)
    changes.remove(site + ".signalcraft-prev")  # never a later owner's to put back
    link = link_of(site)
    if link and is_link_to(link, site):
        changes.remove(link)
    if ours(read_regular(extras_path(site))):
        changes.remove(extras_path(site))
    maintenance_gone(changes, site)
    unpark(changes, site)
    changes.remove(claim_path(site))


PAGES = ("503.html", "503.json")


def maintenance_gone(changes: Changes, site: str, pages: bool = True) -> bool:
    """The site's maintenance configuration removed, and its pages unless `pages` is False (Nginx
    serves them until its reload, which comes after: `maintenance-off` leaves them); whether it was
    on."""
    files = maintenance_files(upstream_for(site))
    found = os.path.lexists(files["server"]) or os.path.lexists(files["maps"])
    for path in [files["server"], files["maps"]]:
        changes.remove(path)
    for name in PAGES if pages else ():
        changes.remove(os.path.join(files["pages"], name))
    return found


def root_folder(path: str) -> str:
    """A folder of root's that Nginx's workers may read (made 0755): refused if it is anything
    else."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise Refused(f"{path} is not root's own folder")
    return path


def v_maintenance_on(args: list) -> int:
    """maintenance-on STATE_DIR SITE TEST_CMD: serve the caller's site in maintenance mode, as the
    description on stdin (JSON: nginx_site.check_maintenance) says: its configuration rendered
    by root, its two pages as sent; kept only if the test passes (else everything is as it was:
    exit 65). Prints the id /.signalcraft-deploy-maintenance answers once Nginx is reloaded."""
    state, site = state_name(args[0]), a_site(args[1])
    test = command(args[2], TEST_RE, "the test command")
    must_own(site, state)
    up = upstream_for(site)
    text = read_regular(site) or b""
    # Every server of the site includes it (an older version left the TLS redirect's out).
    if not ours(text) or text.count(maintenance_include(up, "server").encode()) != text.count(
        b"\nserver {"
    ):
        raise Refused(
            f"{site} was rendered by an older version, without maintenance mode: deploy once, then"
            " turn it on"
        )
    try:
        desc = _json(read_stdin(), "the maintenance description")
        rendered = render_maintenance(up, desc)
    except BadSite as err:
        raise Refused(f"the maintenance description: {err}") from None
    files = maintenance_files(up)
    root_folder(os.path.dirname(files["pages"]))
    pages = root_folder(files["pages"])
    with Changes() as changes:
        changes.write(os.path.join(pages, "503.html"), desc["html"].encode(), 0o644)
        changes.write(os.path.join(pages, "503.json"), desc["json"].encode(), 0o644)
        changes.write(files["maps"], rendered["maps"].encode(), 0o640)
        changes.write(files["server"], rendered["server"].encode(), 0o640)
        code = changes.tested(test)
    if code == 0:
        print(rendered["id"])
    return code


def v_maintenance_off(args: list) -> int:
    """maintenance-off STATE_DIR SITE TEST_CMD: the caller's site out of maintenance mode (its
    configuration removed; its pages stay for the Nginx running until the reload); kept only if
    the test passes (else exit 65). Prints `off`, or `absent` when it was not on."""
    state, site = state_name(args[0]), a_site(args[1])
    test = command(args[2], TEST_RE, "the test command")
    must_own(site, state)
    with Changes() as changes:
        if not maintenance_gone(changes, site, pages=False):
            print("absent")
            return 0
        code = changes.tested(test)
    if code == 0:
        print("off")
    return code


# What older versions left beside a site (a shell install's temporary copy and backup): the site's
# own names, gone with it.
LEFTOVERS = (".signalcraft-tmp", ".signalcraft-tmpprev")


def v_site_remove(args: list) -> int:
    """site-remove STATE_DIR SITE APP_NAME TEST_CMD: take the caller's site off for good (`remove`):
    the site, its link, its kept locations, its backup and older versions' leftovers, the stock
    default site it parked enabled again, its claim and takeover record dropped, and certbot's hook
    signalcraft-APP_NAME if root wrote it for this very site; kept only if the test passes (else
    everything is as it was: exit 65). Prints `removed`, or `absent` when nothing of it is left (a
    second run)."""
    state, site, app = state_name(args[0]), a_site(args[1]), token(args[2], APP, "APP_NAME")
    test = command(args[3], TEST_RE, "the test command")
    if claim_of(site) is None and not os.path.lexists(site):
        print("absent")
        return 0
    must_own(site, state)
    now = read_regular(site)
    if now is not None and not ours(now):
        print(f"{site} was not written by signalcraft-deploy: left as it is", file=sys.stderr)
        return 66
    hook = f"{HOOK_DIR}/signalcraft-{app}"
    with Changes() as changes:
        remove_site(changes, site)
        for suffix in LEFTOVERS:
            changes.remove(
                site + suffix
            )  # a link there is removed, never followed (keep/remove do not follow)
        if hook_of(hook, site):
            changes.remove(hook)
        code = changes.tested(test)
    if code == 0:
        if (
            takeover_meta(state, site) is not None
        ):  # root's copy of the site taken over: nothing to put it back for
            remove_tree(takeover_folder(state))
        print("removed")
    return code


def hook_site(text: bytes) -> "str | None":
    """The site a hook of ours names (certbot_hook's `(site SITE).`), if it names a site path."""
    found = re.search(r"\(site (/[^)\n]*)\)\.\n", text.decode(errors="replace"))
    try:
        return a_site(found.group(1)) if found else None
    except Refused:
        return None


def not_mine(site: str) -> bool:
    """Whether another user claimed the site."""
    claim = claim_of(site)
    return claim is not None and claim.get("uid") != caller().pw_uid


def hook_of(path: str, site: str) -> bool:
    """Whether `path` is certbot's hook as root wrote it for `site` (certbot_hook's fixed text,
    naming the site)."""
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    text = (read_regular(path) or b"").decode(errors="replace")
    return text.startswith("#!/bin/sh\n" + HEADER) and f"(site {site}).\n" in text


def v_extras_write(args: list) -> int:
    """extras-write STATE_DIR SITE LINES TEST_CMD: keep, beside SITE, the location blocks at LINES
    (comma-separated; '-': none) of the site root saved at takeover-record: parsed from root's own
    copy, never sent by the caller; kept only if the test passes (else exit 65)."""
    state, site, lines = state_name(args[0]), a_site(args[1]), line_numbers(args[2])
    test = command(args[3], TEST_RE, "the test command")
    must_own(site, state, may_claim=True)
    if takeover_meta(state, site) is None:
        raise Refused(f"no takeover of {site} was recorded for this user and deploy root")
    path = extras_path(site)
    old = read_regular(path)
    if old is not None and not ours(old):
        print(f"{path} exists and was not written by signalcraft-deploy", file=sys.stderr)
        return 66
    blocks = kept_locations(os.path.join(takeover_folder(state), "nginx-site"), set(lines))
    header = (
        f"{HEADER} Location blocks kept from the site it took over (included by its site; "
        "the next takeover's record is what changes them).\n"
    )
    with Changes() as changes:
        changes.write(
            path, (header + crossplane().build(blocks, indent=4, tabs=False) + "\n").encode(), 0o640
        )
        return changes.tested(test)


def parse_site(path: str) -> list:
    parsed = crossplane().parse(
        path, single=True, catch_errors=False, check_ctx=False, check_args=False, comments=False
    )
    return parsed["config"][0]["parsed"]


def kept_locations(copy: str, lines: set) -> list:
    """The `location` blocks of the saved site's server blocks that start on `lines` (each must be
    one)."""
    if read_regular(copy) is None:
        raise Refused("root's copy of the site taken over is missing")
    found = [
        d
        for server in parse_site(copy)
        if server["directive"] == "server"
        for d in server.get("block", [])
        if d["directive"] == "location" and d["line"] in lines
    ]
    if sorted(d["line"] for d in found) != sorted(lines):
        raise Refused(
            f"not every line of {sorted(lines)} starts a location block of the saved site"
        )
    return found


def host_port(address: str) -> tuple:
    """(host, port) of HOST:PORT or [IPv6]:PORT, the port as a plain number (`08001` is 8001 to
    Nginx)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), (str(int(port)) if port.isdigit() else port)


PASSES = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass")


def proxied_addresses(block: list, upstreams: dict) -> set:
    """The (host, port) a site's proxy_pass lines send to (through its upstream blocks too)."""
    found = set()
    for d in block:
        if d["directive"] in PASSES and d.get("args"):
            where = re.sub(r"^[a-z]+://", "", d["args"][0]).split("/", 1)[0]
            found |= upstreams.get(where, {host_port(where)} if ":" in where else set())
        found |= proxied_addresses(d.get("block", []), upstreams)
    return found


def is_local(host: str) -> bool:
    """An address of this host's own (loopback, localhost, or one its interfaces hold)."""
    if host == "localhost":
        return True
    import socket

    try:
        with socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        ) as probe:
            probe.bind((host, 0))
        return True
    except (OSError, ValueError):
        return False


ANY_ADDRESS = ("0.0.0.0", "*", "::")


def serves_pid(copy: str, pid: int) -> bool:
    """Whether the saved site proxies to an address the caller's process listens on (on that port,
    at that address or at every address): the site a takeover may take."""
    parsed = parse_site(copy)
    upstreams = {
        d["args"][0]: {
            host_port(s["args"][0]) for s in d.get("block", []) if s["directive"] == "server"
        }
        for d in parsed
        if d["directive"] == "upstream" and d.get("args")
    }
    proxied, sockets = proxied_addresses(parsed, upstreams), listening_sockets()
    for (
        host,
        port,
        pids,
        _,
    ) in sockets:  # a site that also proxies to another user's server is not the caller's
        if any(reaches(target, (host, port)) for target in proxied) and any(
            uid_of(p) not in own_uids() for p in pids
        ):
            return False
    return any(
        reaches(target, (host, port))
        for target in proxied
        for host, port, pids, _ in sockets
        if pid in pids
    )


def reaches(target: tuple, held: tuple) -> bool:
    """Whether a proxy_pass to `target` (host, port) lands on a socket listening at `held` on this
    host."""
    (host, port), (lhost, lport) = target, held
    if port != lport:
        return False
    if host == lhost or (host == "localhost" and lhost in LOOPBACKS):
        return True
    return lhost in ANY_ADDRESS and is_local(host)


def uid_of(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


LOOPBACKS = ("127.0.0.1", "::1")  # where `localhost` in a site may send


def v_tls_check(args: list) -> int:
    """tls-check SPEC: can Nginx serve this certificate and key (tls_check.py)? Only files in root's
    TLS folders."""
    return run_lib("tls_check.py", tls_spec(args[0]))


def v_certbot_hook(args: list) -> int:
    """certbot-hook APP_NAME TLS_CERT NGINX_SITE TEST_CMD RELOAD_CMD: write certbot's deploy hook if
    it differs (never over a file this tool did not write)."""
    path, text = certbot_hook(*args)
    not_others(args[2])
    old = read_regular(path)
    if old == text.encode():
        print(f"certbot hook {path} in place")
        return 0
    if old is not None and not old.decode(errors="replace").startswith("#!/bin/sh\n" + HEADER):
        raise Refused(f"{path} exists and was not written by signalcraft-deploy")
    site = hook_site(old) if old is not None else None
    if site is not None and site != args[2] and not_mine(site):
        # APP_NAME is the caller's to choose: another user's hook is neither rewritten to name the
        # caller's site (which site-remove would then take for the caller's own and delete) nor
        # changed at all
        raise Refused(f"{path} is certbot's hook of another user's site: not yours to change")
    os.makedirs(HOOK_DIR, mode=0o755, exist_ok=True)
    write_in(path, text.encode(), 0o755)
    print(f"certbot hook {path} written")
    return 0


def v_takeover_record(args: list) -> int:
    """takeover-record STATE_DIR PID SITE: before a takeover of the caller's own server PID, keep
    root's copy of SITE (the one record root trusts when it puts the site back); SITE must proxy to
    a port PID listens on. A second call keeps the first, true 'before' record."""
    state, pid, site = state_name(args[0]), integer(args[1], "the pid", 2, 2**22), a_site(args[2])
    must_own(site, state, may_claim=True)
    try:
        if os.stat(f"/proc/{pid}").st_uid not in own_uids():
            raise Refused(
                f"pid {pid} is not a process of {caller().pw_name} or its apps' account: a takeover"
                " touches only the caller's own"
            )
    except FileNotFoundError:
        raise Refused(f"no process {pid}") from None
    if takeover_meta(state, site) is None:
        folder = os.path.join(state_folder("takeover"), os.path.basename(takeover_folder(state)))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        old, copy = read_regular(site), os.path.join(folder, "nginx-site")
        remove(copy)
        if old is not None:
            write_in(copy, old, 0o600)
            if claim_of(site) is None and not serves_pid(copy, pid):
                remove_tree(folder)
                raise Refused(
                    f"{site} does not proxy to a port pid {pid} listens on: not the site of the"
                    " server taken over"
                )
        mode = stat.S_IMODE(os.lstat(site).st_mode) if old is not None else 0o640
        meta = {
            **owner_key(caller(), state),
            "site": site,
            "pid": pid,
            "site_existed": old is not None,
            "mode": mode,
            "digest": hashlib.sha256(old).hexdigest() if old is not None else None,
        }
        write_in(os.path.join(folder, "meta.json"), json.dumps(meta).encode(), 0o600)
    print("recorded")
    return 0


def v_takeover_restore(args: list) -> int:
    """takeover-restore STATE_DIR SITE TEST_CMD: put back the site takeover-record saved (with its
    mode; ours, still ours) or remove ours and its link if there was none; kept only if the test
    passes (else exit 65); then the record is dropped."""
    state, site = state_name(args[0]), a_site(args[1])
    test = command(args[2], TEST_RE, "the test command")
    must_own(site, state, may_claim=True)
    meta = takeover_meta(state, site)
    if meta is None:
        raise Refused(f"no takeover of {site} was recorded for this user and deploy root")
    folder = takeover_folder(state)
    saved = read_regular(os.path.join(folder, "nginx-site"))
    still_as_recorded(state, site, read_regular(site))
    with Changes() as changes:
        if not meta.get("site_existed") or saved is None:
            remove_site(changes, site)
            code = changes.tested(test)
        else:
            unpark(changes, site)
            changes.remove(site + ".signalcraft-prev")
            maintenance_gone(changes, site)
            if ours(read_regular(extras_path(site))):
                changes.remove(extras_path(site))
            if ours(saved):  # the caller's own site from before: still its own, checked like any
                code = put_back_ours(
                    changes, site, state, saved, meta.get("mode", 0o640) & 0o644, test
                )
            else:
                changes.write(site, saved, meta.get("mode", 0o640) & 0o644)
                changes.remove(claim_path(site))
                code = changes.tested(test)
    if code == 0:
        remove_tree(folder)
    return code


def pm2_daemon_of(uid: int) -> "int | None":
    """The pid of a PM2 daemon of `uid` (by the title PM2 gives its daemon, in /proc), if one
    runs."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or uid_of(int(name)) != uid:
            continue
        try:
            title = read_regular(f"/proc/{name}/cmdline") or b""
        except Refused:
            continue
        if PM2_DAEMON.match(title):
            return int(name)
    return None


def v_pm2_boot(args: list) -> int:
    """pm2-boot APP_USER: under a running systemd, start pm2-APP_USER.service (setup's unit,
    enabled) when no PM2 daemon of that account runs, so that systemd runs it (Restart=on-failure)
    rather than the deploy's SSH session; APP_USER must be one of the caller's apps' accounts in
    root's record. Prints started, running, not-enabled or no-systemd."""
    name = token(args[0], USER_NAME, "an account name")
    uid = app_accounts().get(name)
    if uid is None:
        raise Refused(
            f"{name} is not one of your apps' accounts in root's record ({STATE}/app-users): run"
            " setup"
        )
    unit = f"pm2-{name}.service"
    link = os.path.join(UNIT_DIR, "multi-user.target.wants", unit)
    if not os.path.isdir(SYSTEMD_RUNNING):
        state = "no-systemd"
    elif not (os.path.islink(link) and os.readlink(link) == os.path.join(UNIT_DIR, unit)):
        state = "not-enabled"
    elif pm2_daemon_of(uid) is not None:
        state = "running"
    else:
        done = run_captured(["systemctl", "start", unit])
        if isinstance(done, int) or done.returncode != 0:
            why = done if isinstance(done, int) else (done.stderr or done.stdout).strip()
            print(f"signalcraft-root: systemctl start {unit} failed: {why}"[:500], file=sys.stderr)
            return 1
        state = "started"
    print(state)
    return 0


def v_version(args: list) -> int:
    """version: the sha256 of the installed helper and its programs (as `fab setup` computes it)."""
    digest = hashlib.sha256()
    for path in installed_files():
        digest.update(read_regular(path) or b"")
    print(digest.hexdigest())
    return 0


def installed_files() -> list:
    """The helper, the app user's door, then every file beside the helper by path (host.root.files()
    lists them in the same order)."""
    found = [os.path.join(folder, n) for folder, _, names in os.walk(LIB) for n in names]
    return [HELPER, APP_HELPER] + sorted(p for p in found if "__pycache__" not in p)


VERBS = {
    "probe": (v_probe, 0),
    "listeners": (v_listeners, 1),
    "nginx-test": (v_nginx_test, 1),
    "nginx-dump": (v_nginx_dump, 0),
    "nginx-reload": (v_nginx_reload, 1),
    "site-read": (v_site_read, 1),
    "site-install": (v_site_install, 4),
    "site-restore": (v_site_restore, 3),
    "extras-write": (v_extras_write, 4),
    "tls-check": (v_tls_check, 1),
    "certbot-hook": (v_certbot_hook, 5),
    "takeover-record": (v_takeover_record, 3),
    "takeover-restore": (v_takeover_restore, 3),
    "version": (v_version, 0),
    "pm2-boot": (v_pm2_boot, 1),
    "site-remove": (v_site_remove, 4),
    "maintenance-on": (v_maintenance_on, 3),
    "maintenance-off": (v_maintenance_off, 3),
}


def usage() -> str:
    return "usage: signalcraft-root VERB ARGS...\n" + "\n".join(
        f"  {(fn.__doc__ or '').strip()}" for fn, _ in VERBS.values()
    )


def check_call(argv: list) -> tuple:
    """(handler, args) for a command line, or Refused: a known verb with its exact number of
    arguments."""
    if not argv or argv[0] not in VERBS:
        raise Refused(
            f"unknown verb {argv[0] if argv else ''!r}; the verbs are: {', '.join(VERBS)}"
        )
    handler, count = VERBS[argv[0]]
    if len(argv) - 1 != count:
        raise Refused(f"{argv[0]} takes {count} argument(s), got {len(argv) - 1}")
    if any("\0" in a or "\n" in a for a in argv[1:]) and argv[0] not in (
        "nginx-reload",
        "tls-check",
    ):
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
        if argv[0] in WRITERS:
            hold_lock()
        return handler(args)
    except Refused as err:
        print(f"signalcraft-root: refused: {err}", file=sys.stderr)
        return REFUSED
    except (
        OSError,
        ValueError,
        RecursionError,
        KeyError,
        TypeError,
    ) as err:  # one line, never a traceback
        print(
            f"signalcraft-root: {argv[0] if argv else ''} failed: {type(err).__name__}: {err}"[
                :500
            ],
            file=sys.stderr,
        )
        return 1


# The verbs that change root's files: one at a time on the host (hold_lock).
WRITERS = {
    "site-install",
    "site-restore",
    "extras-write",
    "certbot-hook",
    "takeover-record",
    "takeover-restore",
    "site-remove",
    "maintenance-on",
    "maintenance-off",
}


def caller_uid(environ: dict) -> int:
    """sudo's SUDO_UID (sudo sets it; a caller cannot), else the real uid."""
    value = environ.get("SUDO_UID", "")
    return int(value) if os.getuid() == 0 and value.isdigit() else os.getuid()


CALLER_UID = os.getuid()

if __name__ == "__main__":
    CALLER_UID = caller_uid(dict(os.environ))
    os.environ.clear()
    os.environ.update({"PATH": PATH, "LC_ALL": "C.UTF-8"})
    os.umask(0o022)
    os.chdir("/")
    sys.exit(main(sys.argv[1:]))
