"""What every task does first: load settings, and over SSH verify the host's key.

Fabric 3 connects with paramiko's AutoAddPolicy and never reads known_hosts, so any host key
would be accepted. Here the user's ~/.ssh/known_hosts (and KNOWN_HOSTS / --known-hosts) are
loaded and an unknown or changed key is refused, unless the user explicitly accepts a new host.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from invoke import Context
from invoke.exceptions import Exit

from signalcraft_deploy.core.settings import (
    KEY_NAMES,
    Settings,
    SettingsError,
    settings_from_task,
)
from signalcraft_deploy.host.io import is_remote, target_name
from signalcraft_deploy.host.lock import held_by, retake_held

# The flags every task shares; tasks merge these into their own help={...}.
COMMON_HELP = {
    "env-file": "settings file (default ./.env, or $ENV_FILE)",
    "set": "override one setting, KEY=VALUE (repeatable), e.g. --set NODE_PORT=3100",
    "environment": (
        "read deploy.NAME.env over the settings file (default $SIGNALCRAFT_ENV), e.g. staging"
    ),
}
# The flags of every task that connects to a host (it takes `known_hosts=None,
# accept_new_host=False` and passes both to `open_host`): a user who verified a host with one task
# can reach it with any other the same way.
CONNECT_HELP = {
    "known-hosts": "extra known_hosts file to verify the host key with",
    "accept-new-host": "trust and record the key of a host not yet in known_hosts",
}
HOST_HELP = {**COMMON_HELP, **CONNECT_HELP}
FLAG_HINT = ", pass --known-hosts FILE, or run again with --accept-new-host to trust and record it"


def settings_for(
    env_file: str | None, set_: list[str] | None, environment: str | None = None, **named: Any
) -> Settings:
    """Settings for a task, or a clean exit (code 2) naming the bad value. Nothing has touched a
    host yet."""
    try:
        given = {k: v for k, v in named.items() if v is not None}
        s = settings_from_task(env_file, set_, given, environment)
    except SettingsError as err:
        raise Exit(f"Settings error: {err}", code=2) from None
    if warning := unread_env_file(s, Path.cwd()):
        print(warning, file=sys.stderr)
    return s


# Keys an app's own .env sets for the app itself as well: not a sign of misplaced deploy settings.
APP_VARIABLES_TOO = frozenset({"NODE_ENV"})


def unread_env_file(s: Settings, cwd: Path) -> str | None:
    """A warning when a `.env` beside the settings file that was read (or in the current folder)
    holds deploy settings: it is not read (init's deploy.env is, through ENV_FILE), and a user who
    put them there would otherwise see them ignored without a word. Names only, never values."""
    if not s.settings_file:
        return None
    read = Path(s.settings_file)
    for env in dict.fromkeys([read.parent / ".env", cwd / ".env"]):
        keys = _deploy_keys_in(env) if env.resolve() != read.resolve() else []
        if keys:
            return (
                f"warning: {env} sets deploy settings ({', '.join(keys)}) that are not read: the"
                f" settings come from {read}. Move them there, or name {env} with ENV_FILE or"
                " --env-file."
            )
    return None


def _deploy_keys_in(env: Path) -> list[str]:
    try:
        found = dotenv_values(env) if env.is_file() else {}
    except (OSError, UnicodeDecodeError):
        return []
    return sorted(set(found).intersection(KEY_NAMES) - APP_VARIABLES_TOO)


class _AcceptNewPolicy:
    """Accept a host not yet known (explicit --accept-new-host) and record it in known_hosts."""

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        print(f"Added host key for {hostname} ({key.get_name()}) to {self.path}")


class QuickAckSocket(socket.socket):
    """A socket that acknowledges what it receives at once (Linux's TCP_QUICKACK, re-armed on every
    read).

    The SSH server writes two small packets in a row after the login; without an immediate ACK
    the second waits for our delayed one (40 ms) and the first command with it.
    """

    def recv(self, bufsize: int, *flags: int) -> bytes:
        try:
            self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return super().recv(bufsize, *flags)


def nodelay_socket(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection for SSH with Nagle's algorithm off (and, on Linux, delayed ACKs too).

    SSH sends small packets; with Nagle on, each command's channel request waits for the delayed
    ACK of the one before (40 ms on Linux), so every remote command cost 40 ms more and the
    handshake 50 ms more.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    if hasattr(socket, "TCP_QUICKACK"):
        quick = QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        quick.settimeout(timeout)
        sock = quick
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def fingerprint(key: Any) -> str:
    """A host key's fingerprint as OpenSSH shows it: SHA256:<base64, unpadded>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts (and `ssh-keygen -R`) name a host: bare on port 22, [host]:port elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def open_host(
    c: Context,
    s: Settings,
    *,
    known_hosts: str | None = None,
    accept_new_host: bool = False,
    flag_hint: str = FLAG_HINT,
) -> None:
    """Verify the host key (and every ProxyJump gateway's) and open the connection, or exit with the
    cause and the fix."""
    if not is_remote(c):
        return
    import paramiko

    files = _trust_chain(c, s, known_hosts, accept_new_host)
    where = target_name(c)
    _quiet_paramiko()
    try:
        _connect(c)
    except paramiko.BadHostKeyException as err:
        hop = _hop(c, err.hostname)
        raise Exit(
            f"Host key for {_label(c, hop)} has CHANGED (got {err.key.get_name()}"
            f" {fingerprint(err.key)}, expected {fingerprint(err.expected_key)}). This may be an"
            " attack or a rebuilt host. If the host was rebuilt, remove its old line with"
            f" `ssh-keygen -R '{known_hosts_name(hop.host, hop.port)}' -f {_shown(files[0])}` (or"
            " the file that has it) and connect again.",
            code=3,
        ) from None
    except paramiko.SSHException as err:
        if "not found in known_hosts" in str(err):
            hop = _hop(c, _unknown_name(str(err)))
            raise Exit(
                f"Host key for {_label(c, hop)} is unknown: it is in none of {', '.join(files)}."
                f" Add it with `ssh-keyscan -p {hop.port} {hop.host} >> {_shown(files[0])}` after"
                " checking its fingerprint, or point KNOWN_HOSTS at a file that has"
                f" it{flag_hint}.",
                code=3,
            ) from None
        raise Exit(
            f"SSH to {where} failed: {err}. Check the host, port, user and key.", code=3
        ) from None
    except OSError as err:
        raise Exit(
            f"Cannot connect to {where}: {err}. Check that the host is up and the port is right.",
            code=3,
        ) from None


def _quiet_paramiko() -> None:
    """paramiko logs a dropped connection ("Socket exception: Connection reset by peer") through
    Python's last-resort handler, onto stderr between the step lines: every failure it logs reaches
    the user as this tool's own message (a refused key, a lost connection), so its log goes nowhere
    unless the caller configures logging.
    """
    log = logging.getLogger("paramiko")
    if not log.handlers:
        log.addHandler(logging.NullHandler())


def _unknown_name(message: str) -> str:
    """The host paramiko names in "Server '[host]:port' not found in known_hosts"."""
    start, end = message.find("'"), message.rfind("'")
    return message[start + 1 : end] if 0 <= start < end else ""


def _chain(c: Context) -> list[Any]:
    """The connection and the ProxyJump gateways it goes through."""
    hops, hop = [c], c.gateway
    while is_remote(hop):
        hops.append(hop)
        hop = hop.gateway
    return hops


def _hop(c: Context, name: str) -> Any:
    """The connection in the chain that paramiko's error names (a bare host, or [host]:port)."""
    for hop in _chain(c):
        if name in (hop.host, known_hosts_name(hop.host, hop.port)):
            return hop
    return c


def _shown(path: str) -> str:
    """A path as a hint shows it: ~/ for the home folder, as the user would type it."""
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if path.startswith(home + "/") else path


def _label(c: Context, hop: Any) -> str:
    return (
        target_name(c)
        if hop is c
        else f"{target_name(hop)} (the ProxyJump gateway to {target_name(c)})"
    )


def known_hosts_files(c: Context, s: Settings, known_hosts: str | None) -> list[str]:
    """The files host keys are checked against: the SSH config's UserKnownHostsFile (else
    ~/.ssh/known_hosts), KNOWN_HOSTS and --known-hosts."""
    configured = str(c.ssh_config.get("userknownhostsfile") or "").split()
    user_files = [os.path.expanduser(f) for f in configured] or [
        os.path.expanduser("~/.ssh/known_hosts")
    ]
    return [f for f in (*user_files, s.known_hosts, known_hosts) if f and f != "/dev/null"]


def _trust_chain(
    c: Context, s: Settings, known_hosts: str | None, accept_new_host: bool
) -> list[str]:
    """The same host-key checks for the host and each ProxyJump gateway before it (Fabric accepts
    any key)."""
    files = _trust_known_hosts(c, s, known_hosts, accept_new_host)
    for gateway in _chain(c)[1:]:
        _trust_known_hosts(gateway, s, known_hosts, accept_new_host)
    return files


def _trust_known_hosts(
    c: Context, s: Settings, known_hosts: str | None, accept_new_host: bool
) -> list[str]:
    """Load every known_hosts file into the client and refuse unknown keys (unless accepting a new
    host). Returns the files looked in, for the message when a key is unknown."""
    import paramiko

    files = known_hosts_files(c, s, known_hosts)
    client = c.client
    for path in files:
        if os.path.exists(path):
            try:
                client.load_host_keys(path)
            except (OSError, paramiko.SSHException) as err:
                raise Exit(f"Cannot read known_hosts file {path}: {err}", code=2) from None
    if accept_new_host:
        client.set_missing_host_key_policy(
            _AcceptNewPolicy(known_hosts or s.known_hosts or files[0])
        )
    else:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return files


RECONNECT_TRIES, RECONNECT_WITHIN = 3, 20.0


def reconnect(
    c: Context, tries: int = RECONNECT_TRIES, within: float = RECONNECT_WITHIN
) -> str | None:
    """A new connection after the last one was lost (the host keys checked as before: the client
    keeps them and its policy), holding the deploy lock again if the lost one held it. None when
    done, else why not (the last error, or why the lock could not be taken again)."""
    if not is_remote(c):
        return None
    import paramiko

    why = "not tried"
    for attempt in range(tries):
        if attempt:
            time.sleep(within / tries)
        try:
            c.close()  # the SFTP session of the dead connection too
        except (OSError, EOFError, paramiko.SSHException):
            pass
        try:
            _connect(c)
        except (OSError, EOFError, paramiko.SSHException) as err:
            why = str(err) or type(err).__name__
            continue
        return retake_held(c)  # an undo runs under the deploy lock, as the steps it undoes did
    lock = (
        "; the host frees the deploy lock once it sees the connection closed" if held_by(c) else ""
    )
    return f"connecting again failed ({why}){lock}"


def _connect(c: Context) -> None:
    """Open the SSH connection, over a socket with Nagle off unless a gateway or a socket was
    given."""
    if c.gateway is None and "sock" not in c.connect_kwargs:
        c.connect_kwargs["sock"] = nodelay_socket(c.host, c.port, c.connect_timeout)
    try:
        c.open()
    finally:
        c.connect_kwargs.pop("sock", None)  # used once; a reconnect makes its own
