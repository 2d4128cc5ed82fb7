"""End-to-end fixtures: this worker's test host (tests/e2e/hosts.py), a git copy of the example app,
and `fab`.

The tests drive the documented front doors (`fab -H ... deploy`, `invoke ...`) as subprocesses
and look at what a user would see: HTTP answers through Nginx, `pm2 jlist`, files on the host.
They run through tests/e2e/run, which starts the test hosts and puts each pytest-xdist worker on
one of its own; the deploy user `ubuntu` there holds only the sudoers drop-in of an admin's
`setup --user ubuntu`, so every deploy proves least privilege.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench import legacy
from bench.loadgen import Load
from tests.e2e.hosts import TestHost, move_onto_own_host, on_this_machine, own_host

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "signalcraft"
EXAMPLE_DB = REPO / "examples" / "signalcraft-db"  # with a database and migrations
sys.path.insert(0, str(REPO))


def pytest_configure(config):
    # in an xdist worker of tests/e2e/run: the tests run as a root login on the worker's host
    move_onto_own_host()
    if (
        os.environ.get("TESTHOST") and config.option.basetemp
    ):  # xdist's <controller's temp>/popen-gwN: the host's /tmp
        Path(config.option.basetemp).parent.mkdir(
            parents=True, exist_ok=True
        )  # is its own, without the controller's


# The modules that take longest first, so that pytest-xdist's workers finish together (--dist
# loadfile keeps each module on one worker, in the order collected; tests/e2e/run passes
# --no-loadscope-reorder, without which xdist reorders modules by their number of tests). Modules
# not named here follow, alphabetically; the systemd host's come last, as its host may still be
# booting (on a new machine its root file system is built first). The order is that of each module's
# summed time in a CI run (tests/e2e/run writes them to /tmp/e2e-junit.xml).
LONGEST_FIRST = (
    "test_adoption",
    "test_fleet",
    "test_app_changes",
    "test_nginx_sites",
    "test_deploy",
    "test_processes",
    "test_streams",
    "test_long_requests",
    "test_websockets",
    "test_hooks",
    "test_faults",
    "test_host_life",
    "test_security",
    "test_zero_downtime",
    "test_takeover_scope",
    "test_docs_commands",
    "test_app_user_move",
    "test_app_user_reach",
    "test_root_helper",
    "test_operator",
    "test_release_integrity",
    "test_root_attacks",
    "test_takeover",
    "test_app_attacks",
    "test_routes",
    "test_least_privilege",
    "test_secret_masking",
    "test_app_user",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)} | {
        "test_systemd_host": len(LONGEST_FIRST) + 1
    }
    items.sort(
        key=lambda item: rank.get(Path(str(item.fspath)).stem, len(LONGEST_FIRST))
    )  # stable: tests keep their order
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


Sandbox = TestHost  # the host a test deploys to; `user` is the login (see add_deploy_user)
# The apps' own account every profile runs its apps as (the default APP_NAME's, which the sandbox's
# setup creates).
APP_USER = "signalcraft"
APP_HOME = f"/var/lib/signalcraft-apps/{APP_USER}"


@pytest.fixture(scope="session")
def sandbox() -> TestHost:
    """This worker's own host, set up by its admin for the deploy user `ubuntu` (the sudoers drop-in
    only)."""
    host = own_host()
    with on_this_machine():
        setup = subprocess.run(
            [
                "fab",
                "-H",
                host.as_user("admin").target,
                "-i",
                host.key,
                "setup",
                "--user",
                "ubuntu",
                "--known-hosts",
                host.known_hosts,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return host


def add_deploy_user(sandbox: Sandbox, user: str, sudoers: str) -> Sandbox:
    """A deploy user of a test's own on the sandbox host (key login like ubuntu's, passwordless sudo
    from the file `sudoers`), for tests that kill every process of their user or change its sudo:
    ubuntu's PM2 is shared.
    """
    sh(
        f"id {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}; usermod -p"
        f" '*' {user}"
    )
    home = f"/home/{user}"
    sh(
        f"install -d -o {user} -g {user} -m 0700 {home}/.ssh && install -o {user} -g {user} -m 0600"
        f" {sandbox.key}.pub {home}/.ssh/authorized_keys"
    )
    sh(
        f"t=$(mktemp) && printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {user} > $t && visudo -cqf $t && "
        f"install -m 0440 $t {sudoers}; rm -f $t"
    )
    return replace(sandbox, user=user)


def kill_user(user: str) -> None:
    """Kill every process of `user` (its PM2 daemon and apps), by pid, as a power cut would."""
    for _ in range(20):
        pids = sh(f"ps -u {user} -o pid=", check=False).stdout.split()
        if not pids:
            return
        sh("kill -9 " + " ".join(pids), check=False)
        time.sleep(0.2)
    raise AssertionError(f"processes of {user} survive: {pids}")


def legacy_site(p: Profile) -> str:
    """The hand-made Nginx site of a host as the plan found it (bench.legacy's), on the profile's
    listen address."""
    return legacy.legacy_site(p.listen, p.bind, p.node)


def start_legacy_host(p: Profile, directory: Path, site: Path, site_text: str) -> None:
    """bench.legacy's host for `p` in `directory` (a copy of the example app with its venv,
    ubuntu's): Node.js under PM2 from a Node-only ecosystem file, Flask bare on the profile's
    Gunicorn port, the hand-made site enabled.
    """
    (directory / "ecosystem.config.js").write_text(
        legacy.node_only_ecosystem(f"{p.app}-nodejs", p.node)
    )
    sh(f"chown ubuntu: {directory}/ecosystem.config.js")
    sh(
        "sudo -u ubuntu -H bash -c"
        f" {shlex.quote(legacy.start_script(str(directory), f'{p.app}-nodejs', p.bind))}"
    )
    sh(legacy.site_script(str(site), site_text))


@dataclass
class Profile:
    """One deploy's settings: each test area uses its own names, ports and paths on the shared
    host."""

    app: str
    root: str
    bind: int
    node: int
    listen: int
    extra: dict[str, str] = field(default_factory=dict)
    defaults: bool = False  # True: pass no settings at all, as a first-time user would

    def settings(self) -> dict[str, str]:
        if (
            self.defaults
        ):  # the test hosts reach no package index: the wheels come from this machine
            return {"WHEELS": "local", **self.extra}
        return {
            "APP_USER": APP_USER,
            "APP_NAME": self.app,
            "DEPLOY_ROOT": self.root,
            "GUNICORN_BIND": f"127.0.0.1:{self.bind}",
            "NODE_PORT": str(self.node),
            "NGINX_LISTEN": str(self.listen),
            "NGINX_SITE": f"/etc/nginx/sites-available/{self.app}",
            "HEALTH_TIMEOUT": "20",
            "WHEELS": "local",
            # Two Gunicorn workers, not 'auto' (2 * CPUs + 1 = 5): the four test hosts share this
            # machine's two cores, and each master a deploy starts boots every worker.
            "GUNICORN_WORKERS": "2",
            **self.extra,
        }

    def url(self, path: str) -> str:
        """The URL of `path` through Nginx, on the host's loopback (the tests run on the host)."""
        return f"http://127.0.0.1:{self.listen}{path}"


# The worker's live app: the example app under LIVE, deployed by the first module that asks for it;
# each module after brings it to a repository of its own with a deploy, as a user moving on would
# (nothing is deleted behind the tool's back). Modules that need "an app that is live", not a first
# deploy of their own, start from it.
LIVE = Profile("live", "/home/ubuntu/live", 8601, 3601, 8086)


@pytest.fixture(scope="module")
def live_app(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> AppRepo:
    """A repository of the module's own (the example app), deployed as LIVE: the worker's live app
    now runs it."""
    repo = AppRepo(tmp_path_factory.mktemp("live") / "app")
    result = fab(sandbox, LIVE, repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return repo


def sh(cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a shell command as root on this worker's own host (its files, processes and network)."""
    return own_host().run(cmd, check=check, timeout=timeout)


def pm2_command(user: str, op: str, *names: str, cli: str) -> str:
    """Shell that asks `user`'s PM2 daemon as the tool does (host/facts.py pm2_rpc_shell: over its
    socket, the same list `pm2 jlist` prints, without the 0.2 s of CPU of PM2's CLI) or, when that
    cannot be done (no daemon yet), runs `pm2 <cli>`, which starts one."""
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.host.facts import pm2_rpc_shell

    command = pm2_rpc_shell(load_settings(environ={}), op, *names, cli=cli)
    return f"sudo -u {user} -H sh -c {shlex.quote(command)}" if user != "root" else command


def pm2_jlist(user: str = APP_USER) -> list[dict]:
    out = sh(pm2_command(user, "list", cli="jlist"), check=False).stdout
    # A first call starts the user's PM2 daemon and says so ("[PM2] Spawning ...") before the list.
    lists = [
        line for line in out.splitlines() if line.startswith("[") and not line.startswith("[PM2")
    ]
    return json.loads(lists[-1]) if lists else []


def pm2_apps(prefix: str, user: str = APP_USER) -> dict[str, list[dict]]:
    apps: dict[str, list[dict]] = {}
    for item in pm2_jlist(user):
        if item["name"].startswith(prefix + "-"):
            apps.setdefault(item["name"], []).append(
                {
                    "pid": item["pid"],
                    "status": item["pm2_env"]["status"],
                    "restarts": item["pm2_env"]["restart_time"],
                }
            )
    return apps


def clean_host(p: Profile, user: str = "ubuntu", app_user: str = APP_USER) -> None:
    """Remove every trace of a profile's deploys, so a test starts from an empty host."""
    names = (f"{p.app}-python", f"{p.app}-nodejs", f"{p.app}-python-handover")
    sh(pm2_command(app_user, "delete", *names, cli=f"delete {' '.join(names)}"), check=False)
    sh(pm2_command(app_user, "save", cli="save --force"), check=False)
    sh(
        f"rm -rf {p.root} /etc/nginx/sites-enabled/{p.app} /etc/nginx/sites-available/{p.app}*",
        check=False,
    )
    forget_root_records(
        user, p.root, p.settings().get("NGINX_SITE", f"/etc/nginx/sites-available/{p.app}")
    )
    sh("nginx -t && nginx -s reload", check=False)


# A request that waits is not one that fails: with several workers sharing two cores, a HUP's new
# Gunicorn workers can take longer to boot than the load generator's 5 s default. 15 s is still far
# below Nginx's 60 s proxy timeout, and the benchmarks under bench/ measure how long requests wait.
LOAD_TIMEOUT = 15.0
# Requests per second in all, sent at their times: a window of a few milliseconds with no listener
# still fails several of them, while several workers' loads leave the two cores to the deploys they
# watch. The benchmarks load at full speed.
LOAD_RATE = 80.0


# Left out of a copy of this checkout that a wheel is built from: a stale build/ would leak deleted files into it.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "node_modules",
    ".sandbox",
    ".fleet",
    "rendered",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
)


def e2e_load(urls: list[str], **kwargs: object) -> Load:
    """bench.loadgen's Load with this suite's timeout and rate (a test may pass its own)."""
    # type: ignore[arg-type]
    return Load(urls, **{"timeout": LOAD_TIMEOUT, "rate": LOAD_RATE, **kwargs})


ROOT_STATE = Path("/var/lib/signalcraft-deploy")


def forget_root_records(user: str, deploy_root: str, *sites: str) -> None:
    """Drop the root helper's records of sites a test removed behind the tool's back: their claims,
    the stock default site they parked (enabled again), the takeover copy of `user`'s deploy
    root."""
    for site in sites:
        (ROOT_STATE / "sites" / f"{Path(site).parent.name}--{Path(site).name}.json").unlink(
            missing_ok=True
        )
    parked = ROOT_STATE / "parked-default.json"
    if parked.exists() and json.loads(parked.read_text()).get("site") in sites:
        if not os.path.lexists("/etc/nginx/sites-enabled/default"):
            os.symlink(json.loads(parked.read_text())["target"], "/etc/nginx/sites-enabled/default")
        parked.unlink()
    uid = int(sh(f"id -u {user}", check=False).stdout.strip() or -1)
    key = hashlib.sha256(f"{uid}\0{deploy_root}/.deploy".encode()).hexdigest()[:24]
    shutil.rmtree(ROOT_STATE / "takeover" / key, ignore_errors=True)


def host_wheels(requirements: str) -> str:
    """A folder on the own host with the wheels `requirements` needs (made on this machine, as
    WHEELS=local does): the test hosts reach no package index."""
    from signalcraft_deploy.host.facts import PYTHON_TAGS
    from signalcraft_deploy.host.wheels import wheelhouse

    with on_this_machine():
        return str(
            wheelhouse(
                requirements, tuple(sh(f"python3 -c {shlex.quote(PYTHON_TAGS)}").stdout.split())
            )
        )  # type: ignore[arg-type]


def legacy_venv(venv: str, user: str = "ubuntu", requirements: str = "Flask==3.1.3\n") -> None:
    """A hand-made venv of a legacy app (what `python3 -m venv && pip install Flask` left on a
    host), as `user`."""
    wheels = host_wheels(requirements)
    sh(
        f"sudo -u {user} python3 -m venv {venv} && printf %s {shlex.quote(requirements)} >"
        f" /tmp/legacy-req.txt && sudo -u {user} {venv}/bin/pip install -q"
        f" --disable-pip-version-check --no-index --find-links {wheels} -r /tmp/legacy-req.txt",
        timeout=300,
    )


def get(url: str, timeout: float = 5) -> tuple[int, dict, dict]:
    """GET `url` from the own host (a loopback URL is its loopback), or from this machine for
    another host's."""
    if not os.environ.get("TESTHOST") or urlsplit(url).hostname in (
        "127.0.0.1",
        "localhost",
        "::1",
        own_host().address,
    ):
        return _get(url, timeout)
    with on_this_machine():
        return _get(url, timeout)


def _get(url: str, timeout: float) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read().decode()
            return (
                resp.status,
                dict(resp.headers),
                (json.loads(body) if body.startswith("{") else {}),
            )
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), {}
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        return 0, {}, {"error": str(err)}


class AppRepo:
    """A git repository holding a copy of the example app (with `overlay`'s files laid over it);
    tests commit changes to it."""

    def __init__(self, path: Path, example: Path = EXAMPLE, overlay: Path | None = None):
        self.path = path
        ignore = shutil.ignore_patterns("REVISION", ".venv", "node_modules", "__pycache__")
        shutil.copytree(example, path, ignore=ignore)
        if overlay:
            shutil.copytree(overlay, path, ignore=ignore, dirs_exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-qm", "example app")

    def git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        return subprocess.run(
            ["git", "-C", str(self.path), *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout

    def edit(self, name: str, old: str, new: str, message: str) -> str:
        f = self.path / name
        text = f.read_text()
        assert old in text, f"{old!r} not in {name}"
        f.write_text(text.replace(old, new, 1))
        self.git("commit", "-qam", message)
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture
def app_repo(tmp_path: Path) -> AppRepo:
    return AppRepo(tmp_path / "app")


def fab(
    sb: Sandbox,
    p: Profile,
    repo: AppRepo | None,
    *args: str,
    task: str = "deploy",
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `fab -H ubuntu@host:port -i key <task> --set ...` as a user would; the host key is
    checked against the sandbox's known_hosts (given through KNOWN_HOSTS)."""
    cmd = ["fab", "-H", sb.target, "-i", sb.key, task]
    if repo is not None:
        cmd += ["--source-dir", str(repo.path)]
    for key, value in p.settings().items():
        cmd += ["--set", f"{key}={value}"]
    cmd += list(args)
    start = time.monotonic()
    with on_this_machine():
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
            env={**os.environ, "KNOWN_HOSTS": sb.known_hosts, **(env or {})},
        )
    result.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return result


class WebhookReceiver:
    """A webhook receiver (NOTIFY_URL) on this machine's loopback, where fab runs: records each JSON
    body, and answers 204 or (hang) never."""

    def __init__(self, hang: bool = False):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(data))
                if hang:
                    time.sleep(60)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        with on_this_machine():  # the socket lives where fab runs: this machine's network
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0K3N"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- a user's machine: the documented commands run as a user types them, `your-host` an SSH name

# What this machine's environment may hold of the tool's own settings, kept from a user's shell.
NOT_A_USERS = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "ENV_FILE", "KNOWN_HOSTS", "SOURCE_DIR")


def ssh_config(sb: Sandbox, names: dict[str, int], user: str = "") -> str:
    """~/.ssh/config naming the test host under each of `names` (name -> port)."""
    login = f"    User {user}\n" if user else ""
    return "".join(
        f"Host {name}\n    HostName {sb.host}\n    Port {port}\n{login}"
        f"    IdentityFile {sb.key}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {sb.known_hosts}\n"
        for name, port in names.items()
    )


def users_env(home: Path) -> dict[str, str]:
    """This machine's environment as a user's shell has it: HOME `home`, none of the tool's
    settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in NOT_A_USERS and not k.startswith(("APP_", "GUNICORN_", "NODE_", "NGINX_"))
    }
    return env | {"HOME": str(home)}


@dataclass
class UserShell:
    """A user's machine: its environment (HOME with the SSH config, ENV_FILE)."""

    env: dict[str, str]

    def run(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        with on_this_machine():
            return subprocess.run(
                ["bash", "-c", line],
                env=self.env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
