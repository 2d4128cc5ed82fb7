"""The orchestration over a mocked host: what a user sees and which commands reach the host, in
which order.

Until now only the end-to-end tests reached these paths. Here each runs over invoke's MockContext
(`mock_host`), whose canned answers are modelled on what the host's programs print
(signalcraft_deploy/remote/*.py): the health gate's verdicts are even computed by remote/probe.py's
own decision code, over a faked world (URL answers, PM2's list, the processes' folders). Every test
names what must have been sent, and what must not: a dry run, a refusal or a failed trial must leave
the host as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from invoke import MockContext, Result
from invoke.exceptions import Exit

from signalcraft_deploy.core.facts import HostFacts, Listener, Pm2Process
from signalcraft_deploy.core.plan import Action, App, How, Plan, make_manifest, make_plan
from signalcraft_deploy.core.render import node_entry, render_nginx_site
from signalcraft_deploy.core.settings import KEY_NAMES, Settings, load_settings
from signalcraft_deploy.host import health, root, takeover, tls
from signalcraft_deploy.host import nginx as nginx_ops
from signalcraft_deploy.host.facts import MARK
from signalcraft_deploy.host.io import InvokeRunner, use_transport
from signalcraft_deploy.host.lock import END
from signalcraft_deploy.remote import probe as remote_probe
from signalcraft_deploy.remote import program
from signalcraft_deploy.steps.deploy import (
    DEPLOY_STEPS,
    DeployRun,
    check_nginx,
    restore_node,
    trial_run,
)
from signalcraft_deploy.steps.one_host import HostDeploy, check_tls, new_run
from signalcraft_deploy.steps.report import Reporter
from signalcraft_deploy.steps.runner import Failure, Outcome, run_steps
from signalcraft_deploy.steps.upload import git_shipment, shipment_manifest, shipment_settings
from signalcraft_deploy.tasks.deploy import deploy
from tests.unit.conftest import mock_host

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
TOKEN = "Tok3n-9f2b7c41"
REPO_URL = f"https://deploy:{TOKEN}@git.example.com/shop/app.git"
GIT = {"SOURCE": "git", "REPO_URL": REPO_URL}
REQUIREMENTS = "flask==3.0.3\ngunicorn==23.0.0\n"
PREV = "20250301T000000Z-000000000000"  # the live release in the step tests
TOOLS = ("pm2", "node", "flock", "sudo", "nginx", "python-venv", "app-user", "boot", "logrotate")


def blob(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- what was sent


def sent(c: MockContext) -> list[tuple[str, str]]:
    """Every command the mocked host received, in order, with what went on its stdin."""
    out = []
    for call in c.run.call_args_list:
        stream = call.kwargs.get("in_stream")
        out.append((call.args[0], stream.getvalue() if isinstance(stream, io.StringIO) else ""))
    return out


PROGRAMS = {
    program(name): f"{name}.py"
    for name in ("probe", "takeover_record", "takeover_restore", "tls_check")
}
LABELS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"sudo -n /usr/local/sbin/signalcraft-root ([\w-]+)"), lambda m: f"root {m[1]}"),
    (
        re.compile(r'(?s).*"\$P" start (\S+?\.json); else'),
        lambda m: f"pm2 start {os.path.basename(m[1])}",
    ),
    (re.compile(r'(?s).*"\$P" start "\$f" --only (\S+?);'), lambda m: f"pm2 start --only {m[1]}"),
    (
        re.compile(r'(?s)P=\$\(command -v pm2\) .*?"\$P" delete (.+?) 2>/dev/null'),
        lambda m: f"pm2 delete {m[1]}",
    ),
    (
        re.compile(r"pm2 logs (\S+) (--err )?"),
        lambda m: f"pm2 logs {m[1]}" + (" --err" if m[2] else ""),
    ),
    (re.compile(r"pm2 save"), lambda m: "pm2 save"),
    (re.compile(r'(?s)P=\$\(command -v pm2\) .*?"\$P" save --force'), lambda m: "pm2 save"),
    (re.compile(r"ln -sfn releases/(\S+) "), lambda m: f"current -> {m[1]}"),
    (
        re.compile(r"(?:timeout \d+ sh -c .)?while .*?sport = :(\d+)"),
        lambda m: f"wait drained :{m[1]}",
    ),
    (re.compile(r"(?s)umask 077 && mkdir -p \S+ && printf .*audit\.log"), lambda m: "audit"),
    (re.compile(r"git -C \S+ rev-parse --verify"), lambda m: "git resolve"),
    (re.compile(r"git -C \S+ rev-parse \S+ && git -C \S+ ls-tree"), lambda m: "git list tree"),
    (re.compile(r"git -C \S+ ls-tree -r -z (\w+)$"), lambda m: "git list live tree"),
    (re.compile(r"git -C \S+ cat-file blob"), lambda m: "git cat-file"),
    (re.compile(r"(?s)set -e\n.*git init"), lambda m: "git fetch mirror"),
    (re.compile(r"sh -s$"), lambda m: "read host"),
    (re.compile(r"(?s).*/bin/python -I -c .*\"stdin\""), lambda m: "read gunicorn config"),
    (re.compile(r"\{ D="), lambda m: "forget logs"),
    (re.compile(r"rm -f \S+/current "), lambda m: "rm current"),
]


def label(command: str, stdin: str) -> str:
    """A command as a short name: 'probe.py gate <apps>', 'root nginx-reload', 'pm2 delete <app>',
    ..."""
    if stdin in PROGRAMS:
        name, args = PROGRAMS[stdin], shlex.split(command)[4:]
        if name == "probe.py":
            spec = json.loads(args[0])
            return f"probe.py {spec['mode']}" + "".join(
                f" {a['name']}" for a in spec.get("apps", [])
            )
        return name
    for pattern, name_of in LABELS:
        found = pattern.match(command)
        if found:
            return name_of(found)
    return command[:60]


def labels(c: MockContext) -> list[str]:
    return [label(command, stdin) for command, stdin in sent(c)]


def stdin_of(c: MockContext, name: str) -> str:
    return next(stdin for command, stdin in sent(c) if label(command, stdin) == name)


def spec_sent(c: MockContext, which: str = "gate") -> dict[str, Any]:
    """The JSON spec of the (last) probe.py run of a mode."""
    specs = [
        json.loads(shlex.split(command)[4])
        for command, stdin in sent(c)
        if PROGRAMS.get(stdin) == "probe.py"
    ]
    return [spec for spec in specs if spec["mode"] == which][-1]


def ok(stdout: str = "", stderr: str = "", exited: int = 0) -> Result:
    return Result(stdout=stdout, stderr=stderr, exited=exited)


def as_json(data: Any) -> Result:
    return ok(json.dumps(data) + "\n")


def answers(named: dict[str, Result]) -> dict[re.Pattern[str], Result]:
    """Canned results for mock_host, keyed by the regex (matched at the start) of the commands a
    test expects."""
    return {re.compile(pattern): result for pattern, result in named.items()}


PROBE_PORTS = r'python3 -I -S - .*"mode": "ports"'
# host/gunicorn.py: Gunicorn's own reading of the live and the new gunicorn.conf.py
GUNICORN_CONFIG = re.compile(r'(?s).*/bin/python -I -c .*"stdin"')
NO_PRELOAD = {"preload_app": False, "bind": ["127.0.0.1:8001"], "reuse_port": False}
ROOT = r"sudo -n /usr/local/sbin/signalcraft-root "
PM2_DELETE = r"P=\$\(command -v pm2\) "
PM2_LOGS = r"pm2 logs "


def probe_gate(app: str) -> str:
    """The regex of a probe.py gate whose first watched PM2 app is `app`."""
    return r'(?s)python3 -I -S - .*"mode": "gate".*"apps": \[\{"name": "' + re.escape(app) + '"'


# ----------------------------------------------------------------------------- what the host holds


def facts_text(**sections: str) -> str:
    """host/facts.py's script output: marked sections (the root helper this version's, tools
    present, nothing deployed)."""
    base = {
        "uid": "1000",
        "tools": "\n".join(TOOLS),
        "pm2": "[]",
        "owners": "ubuntu",
        "disk": "/dev/sda1 41152736 10240000 30912736 25% /",
        "helper": f"digest {root.digest()}\nfull\nallowed",
    }
    base.update(sections)
    return "".join(f"\n{MARK}{name}\n{text}\n" for name, text in base.items())


def jlist(*procs: dict[str, Any]) -> str:
    """`pm2 jlist` of these processes: each a dict of name, pid, status, mode, exec_path, cwd,
    restarts."""
    return json.dumps(
        [
            {
                "pid": p["pid"],
                "name": p["name"],
                "pm_id": n,
                "monit": {"memory": 50_000_000, "cpu": 0.2},
                "pm2_env": {
                    "status": p.get("status", "online"),
                    "exec_mode": p.get("mode", "fork") + "_mode",
                    "pm_exec_path": p.get("exec_path", ""),
                    "pm_cwd": p.get("cwd", ""),
                    "restart_time": p.get("restarts", 0),
                    "pm_uptime": 1_741_064_767_000,
                    "exec_interpreter": "node",
                    "args": [],
                    "env": {"SECRET_KEY": "never-read"},
                },
            }
            for n, p in enumerate(procs)
        ]
    )


def pm2_proc(name: str, pid: int = 4100) -> Pm2Process:
    return Pm2Process(
        name=name,
        pm_id=0,
        pid=pid,
        status="online",
        restarts=0,
        started_ms=1,
        exec_mode="fork",
        exec_path="",
        cwd="",
        interpreter="",
        args=(),
        memory=0,
    )


class Repo:
    """One commit of the app as the host's bare mirror holds it (SOURCE=git): answers to
    git_shipment's commands."""

    def __init__(self, sha: str, files: dict[str, str]):
        self.sha, self.files = sha, files
        self.listing = "".join(
            f"100644 blob {blob(text)}\t{path}\0" for path, text in files.items()
        )
        self.tree = blob(self.listing)

    def answers(self, resolves: bool = True) -> dict[re.Pattern[str], Result]:
        found = {
            re.compile(r"git -C \S+ rev-parse --verify"): (
                ok(self.sha + "\n") if resolves else ok(exited=1)
            ),
            re.compile(r"(?s)set -e\n.*git init"): ok(self.sha + "\n"),
            re.compile(r"git -C \S+ rev-parse \S+ && git -C \S+ ls-tree"): ok(
                f"{self.tree}\n{self.listing}"
            ),
        }
        for text in self.files.values():
            found[re.compile(rf"git -C \S+ cat-file blob {blob(text)}$")] = ok(text)
        return found

    def live_tree(self) -> dict[re.Pattern[str], Result]:
        """`git ls-tree` of this commit's tree, as changed_since_live asks for the live
        release's."""
        return {re.compile(rf"git -C \S+ ls-tree -r -z {self.tree}$"): ok(self.listing)}


OLD = Repo(
    "0" * 8 + "a1b2c3d4" * 4,
    {
        "app.py": "def create_app(): ...\n",
        "requirements.txt": REQUIREMENTS,
        "server.js": "require('http').createServer().listen(process.env.PORT)\n",
    },
)
NEW = Repo("f" * 8 + "9e8d7c6b" * 4, {**OLD.files, "app.py": "def create_app():  # v2\n    ...\n"})


def live_host(s: Settings, repo: Repo) -> tuple[dict[str, str], str]:
    """The facts sections of a host where `repo`'s commit was deployed by this tool and runs
    healthy; and its release."""
    shipment = git_shipment(mock_host(run=repo.answers()), s)
    assert shipment is not None
    s = shipment_settings(s, shipment)
    manifest, configs = shipment_manifest(s, shipment, NOW)
    plan = make_plan(s, manifest, configs, HostFacts())  # as the deploy that made it recorded it
    m = plan.manifest
    node = {
        "name": s.node_app,
        "mode": "cluster",
        "exec_path": node_entry(s)["script"],
        "cwd": s.current_dir,
    }
    sections = {
        "current": f"releases/{m.release}",
        "releases": m.release,
        "manifest": m.to_json(),
        "site": plan.site.rstrip("\n"),
        "enabled": "yes",
        "venvs": m.venv.rsplit("/", 1)[-1],
        **{f"conf:{name}": text.rstrip("\n") for name, text in configs.items()},
        "pm2": jlist(
            {
                "name": s.python_app,
                "pid": 4100,
                "exec_path": f"{m.venv}/bin/gunicorn",
                "cwd": s.current_dir,
            },
            {**node, "pid": 4200},
            {**node, "pid": 4201},
        ),
    }
    return sections, m.release


# ----------------------------------------------------------------------------- the deploy task


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The task reads ./.env and the environment: neither holds a setting here."""
    monkeypatch.chdir(tmp_path)
    for key in (*KEY_NAMES, "ENV_FILE", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def held(mocker: Any) -> Callable[[str], Any]:
    """The deploy lock's held command (host/io.HeldCommand), answering as lock_script does: LOCKED,
    then the host read."""
    fake = mocker.patch("signalcraft_deploy.host.lock.HeldCommand")

    def answer(facts: str) -> Any:
        fake.return_value.readline.side_effect = [
            "LOCKED\n",
            *facts.splitlines(keepends=True),
            "\n",
            END + "\n",
        ]
        return fake

    return answer


def run_deploy(c: MockContext, **flags: Any) -> None:
    deploy(c, set_=[f"{k}={v}" for k, v in GIT.items()], **flags)


def test_dry_run_prints_the_plan_from_the_hosts_mirror_and_sends_nothing_that_writes(
    task_env, held, tmp_path, capsys
):
    s = load_settings(overrides=GIT, environ={}, cwd=str(tmp_path))
    live, old_release = live_host(s, OLD)
    lock = held("")
    c = mock_host(
        run={
            re.compile("sh -s$"): ok(facts_text(**live)),
            GUNICORN_CONFIG: as_json({"live": NO_PRELOAD, "new": NO_PRELOAD}),
            **NEW.answers(),
            **OLD.live_tree(),
        }
    )

    run_deploy(c, dry_run=True)

    out = capsys.readouterr().out
    assert "Plan for this machine:" in out
    assert re.search(
        rf"release +\d{{8}}T\d{{6}}Z-{NEW.sha[:12]} \(commit {NEW.sha[:12]}\) replaces"
        rf" {old_release}",
        out,
    )
    assert f"upload    git archive of {NEW.tree[:12]}" in out
    assert "python    pm2 sendSignal SIGHUP (graceful) (files it reads changed: app.py)" in out
    assert (
        "nodejs    leave as is (unchanged)" in out
        and "nginx     leave as is (site unchanged)" in out
    )
    assert out.rstrip().endswith("Dry run: nothing was changed.")
    # Read the host and the mirror as it is: no lock, no fetch, nothing written, reloaded or
    # switched.
    assert labels(c) == [
        "read host",
        "git resolve",
        "git list tree",
        "git cat-file",
        "git list live tree",
        "read gunicorn config",
    ]
    assert not lock.called
    assert TOKEN not in out


def test_a_live_release_of_the_same_commit_is_reported_unchanged_and_nothing_is_written(
    task_env, held, tmp_path, capsys
):
    s = load_settings(overrides=GIT, environ={}, cwd=str(tmp_path))
    live, release = live_host(s, NEW)
    lock = held(facts_text(**live))
    c = mock_host(
        run={**NEW.answers(), re.compile(r"(?s)umask 077 && mkdir -p .*audit\.log"): ok()}
    )

    run_deploy(c)

    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"Nothing to deploy: {release} (commit {NEW.sha[:12]}) is live and unchanged; no file"
        " written, no app reloaded."
    )
    # Under the lock: the mirror fetched, the commit read, the audit line; no host checks, no root,
    # no PM2, no switch.
    assert labels(c) == ["git fetch mirror", "git list tree", "git cat-file", "audit"]
    record = json.loads(shlex.split(sent(c)[-1][0].split("printf '%s\\n' ", 1)[1])[0])
    assert (record["event"], record["result"], record["to"]) == ("deploy", "unchanged", release)
    assert "flock -n 9" in lock.call_args.args[1] and lock.return_value.release.called


def test_a_dry_run_whose_mirror_lacks_the_ref_says_so_and_fetches_nothing(task_env, held, capsys):
    lock = held("")
    c = mock_host(run={re.compile("sh -s$"): ok(facts_text()), **NEW.answers(resolves=False)})

    run_deploy(c, dry_run=True)

    out = capsys.readouterr().out
    assert (
        "Dry run: the host's mirror of https://deploy:***@git.example.com/shop/app.git does not"
        " have main yet (or there is no mirror): a deploy would fetch it first. Nothing was fetched"
        " or changed." in out
    )
    assert TOKEN not in out and "Plan for" not in out
    assert labels(c) == ["read host", "git resolve"] and not lock.called


def test_a_failed_fetch_of_the_mirror_stops_the_deploy_masks_the_token_and_releases_the_lock(
    task_env, held
):
    lock = held(facts_text())
    said = f"fatal: unable to access '{REPO_URL}/': The requested URL returned error: 403"
    c = mock_host(run={re.compile(r"(?s)set -e\n.*git init"): ok(stderr=said, exited=128)})

    with pytest.raises(Exit) as err:
        run_deploy(c)

    assert err.value.code == 1
    assert (
        err.value.message
        == "The host could not fetch https://deploy:***@git.example.com/shop/app.git at main:"
        " fatal: unable to access 'https://deploy:***@git.example.com/shop/app.git/': The"
        " requested URL returned error: 403. Check REPO_URL, REF and the host's access to the"
        " repository (a deploy key)."
    )
    [(command, stdin)] = sent(c)
    assert (
        TOKEN not in command and stdin == f"https://deploy:{TOKEN}@git.example.com\n"
    )  # to git's store, not to `ps`
    assert lock.return_value.release.called


def test_a_port_held_by_another_users_server_stops_the_deploy_at_its_plan_without_showing_its_command(
    task_env, held, capsys
):
    """Takeover planning over the host's answers: the quick read under the lock plans a start of
    Gunicorn; the host checks (sent only because something will change) then show ss's listener on
    its port, owned by uid 65534, and its command.
    """
    lock = held(facts_text())
    checks = facts_text(
        listen=(
            "LISTEN 0      2048       127.0.0.1:8001      0.0.0.0:*   "
            ' users:(("python3",pid=4242,fd=3))'
        ),
        commands="4242 python3 app.py --api-token=OTHER-TEAMS-SECRET",
        owners="ubuntu\n4242 65534 nobody no ",
    )
    c = mock_host(run={re.compile("sh -s$"): ok(checks), **NEW.answers()})

    with pytest.raises(Exit) as err:
        run_deploy(c)

    assert err.value.code == 1
    assert (
        err.value.message
        == "Nothing was changed: GUNICORN_BIND 127.0.0.1:8001 is in use by pid 4242 of user nobody,"
        " not of the deploy user ubuntu or the apps' account signalcraft: a deploy takes over"
        " only their own processes, so it was left running. Stop it (as nobody or root), or"
        " restart it as signalcraft and deploy again, or set another GUNICORN_BIND."
    )
    assert "OTHER-TEAMS-SECRET" not in capsys.readouterr().out
    # Nothing recorded, stopped or written: no takeover_record.py, no root helper, no PM2; the lock
    # let go.
    assert labels(c) == ["git fetch mirror", "git list tree", "git cat-file", "read host"]
    assert lock.return_value.release.called


# ----------------------------------------------------------------------------- the health gate


R0, R1 = "20250301T000000Z-0000000aaaaa", "20250304T050607Z-fffffff9e8d7"


def running(
    name: str, count: int = 1, restarts: int = 0, mode: str = "fork", pid: int = 5000
) -> dict[str, Any]:
    """PM2's state of an online app as probe.py keeps it: name -> [{pid, status, restarts,
    mode}]."""
    return {
        name: [
            {"pid": pid + n, "status": "online", "restarts": restarts, "mode": mode}
            for n in range(count)
        ]
    }


def probe_verdict(
    monkeypatch: pytest.MonkeyPatch,
    spec: dict[str, Any],
    urls: dict[str, tuple[int, str | None]],
    states: list[dict[str, Any]],
    runs_from: dict[int, str] | None = None,
) -> dict[str, Any]:
    """What remote/probe.py's gate prints for `spec`, when each URL (by label) answers (status,
    X-Release or None; 0 for refused), PM2 shows `states` one after the other (the last one from
    then on), and each pid runs from the folder of the release `runs_from` names (default: the
    spec's). Its clock is faked: the deadline passes at once, nothing sleeps.
    """
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(
        remote_probe,
        "time",
        SimpleNamespace(
            monotonic=lambda: clock.now,
            sleep=lambda seconds: setattr(clock, "now", clock.now + seconds),
        ),
    )
    by_url = {check["url"]: urls[check["label"]] for check in spec["urls"]}
    monkeypatch.setattr(
        remote_probe,
        "fetch",
        lambda url, host=None, timeout=3.0: (
            by_url[url][0],
            by_url[url][1],
            "" if by_url[url][0] else "ConnectionRefusedError: [Errno 111] Connection refused",
        ),
    )
    releases_dir = spec["release_dir"].rsplit("/", 1)[0]
    monkeypatch.setattr(
        remote_probe,
        "cwd_of",
        lambda pid: os.path.realpath(
            f"{releases_dir}/{(runs_from or {}).get(pid, spec['release'])}"
        ),
    )
    monkeypatch.setattr(remote_probe, "children", lambda pid: [])

    class Watch:  # probe.Pm2Watch: one PM2 list per question
        def __init__(self) -> None:
            self.left = list(states)

        def ask(self) -> None:
            pass

        def state(self) -> dict[str, Any]:
            return self.left.pop(0) if len(self.left) > 1 else self.left[0]

    return remote_probe.gate_with(spec, Watch())


@pytest.fixture
def site(load: Callable[..., Settings]) -> Settings:
    return load({"SERVER_NAME": "shop.example.com www.shop.example.com"})


def gate_on_host(
    c: MockContext, s: Settings, checked: dict[str, bool], report: dict[str, Any] | None = None
) -> list[str]:
    return health.gate(c, s, R1, f"{s.releases_dir}/{R1}", checked, report=report)


def test_the_gate_passes_when_both_apps_answer_from_the_new_release_and_reports_pm2(
    site, monkeypatch
):
    s, both = site, {"python": True, "nodejs": True}
    state = {**running(site.python_app), **running(site.node_app, 2, mode="cluster")}
    spec = health.gate_spec(s, R1, f"{s.releases_dir}/{R1}", both, report=True)
    verdict = probe_verdict(
        monkeypatch,
        spec,
        dict.fromkeys(["Gunicorn", "Node.js", "Nginx -> Gunicorn", "Nginx -> Node.js"], (200, R1)),
        [state],
    )
    c = mock_host(run={re.compile(r"python3 -I -S - "): as_json(verdict)})
    seen: dict[str, Any] = {}

    assert gate_on_host(c, s, both, report=seen) == []

    assert seen == state  # the summary's PM2 lines come from the passing check
    sent_spec = spec_sent(c)
    assert sent_spec == spec
    assert [
        (u["label"], u["url"], u.get("host"), u["expect_release"]) for u in sent_spec["urls"]
    ] == [
        ("Gunicorn", "http://127.0.0.1:8001/api/flask/health", None, True),
        ("Node.js", "http://127.0.0.1:3000/", None, True),
        ("Nginx -> Gunicorn", "http://127.0.0.1:80/api/flask/health", "shop.example.com", True),
        ("Nginx -> Node.js", "http://127.0.0.1:80/", "shop.example.com", True),
    ]
    assert sent_spec["apps"] == [
        {"name": "signalcraft-python", "workers": True, "drain": 30, "port": 8001},
        {"name": "signalcraft-nodejs"},
    ]


def test_the_gate_names_an_app_missing_in_pm2_and_lets_an_app_not_reloaded_keep_its_release(
    site, monkeypatch
):
    """Node.js was reloaded and is gone from PM2; Gunicorn was left alone, so its answers and master
    are the old release's."""
    s, node_only = site, {"python": False, "nodejs": True}
    spec = health.gate_spec(s, R1, f"{s.releases_dir}/{R1}", node_only)
    verdict = probe_verdict(
        monkeypatch,
        spec,
        {
            "Gunicorn": (200, R0),
            "Nginx -> Gunicorn": (200, R0),
            "Node.js": (0, None),
            "Nginx -> Node.js": (502, None),
        },
        [running(s.python_app, pid=4100)],
        runs_from={4100: R0},
    )
    c = mock_host(run={re.compile(r"python3 -I -S - "): as_json(verdict)})

    assert gate_on_host(c, s, node_only) == [
        "Node.js http://127.0.0.1:3000/: ConnectionRefusedError: [Errno 111] Connection refused",
        "Nginx -> Node.js http://127.0.0.1:80/: 502",
        "PM2 app signalcraft-nodejs is missing",
    ]
    assert spec_sent(c)["apps"] == [{"name": "signalcraft-nodejs"}]


def test_the_gate_refuses_answers_and_processes_of_the_old_release_for_the_app_reloaded_only(
    site, monkeypatch
):
    """Gunicorn was HUPed but its old master still serves; Node.js was left alone and serves the old
    release, rightly."""
    s, python_only = site, {"python": True, "nodejs": False}
    spec = health.gate_spec(s, R1, f"{s.releases_dir}/{R1}", python_only)
    state = {**running(s.python_app, pid=4100), **running(s.node_app, 2, mode="cluster", pid=4200)}
    verdict = probe_verdict(
        monkeypatch,
        spec,
        dict.fromkeys(["Gunicorn", "Node.js", "Nginx -> Gunicorn", "Nginx -> Node.js"], (200, R0)),
        [state],
        runs_from={4100: R0, 4200: R0, 4201: R0},
    )
    c = mock_host(run={re.compile(r"python3 -I -S - "): as_json(verdict)})

    assert gate_on_host(c, s, python_only) == [
        f"Gunicorn http://127.0.0.1:8001/api/flask/health: answered by release {R0}, not {R1}",
        (
            f"Nginx -> Gunicorn http://127.0.0.1:80/api/flask/health: answered by release {R0}, not"
            f" {R1}"
        ),
        "PM2 app signalcraft-python: 1 process(es) still run from another release",
    ]


def test_the_gate_sees_an_app_that_keeps_restarting(site, monkeypatch):
    s, both = site, {"python": True, "nodejs": True}
    spec = health.gate_spec(s, R1, f"{s.releases_dir}/{R1}", both)
    first = {**running(s.python_app), **running(s.node_app, 2, restarts=1, mode="cluster")}
    later = {**running(s.python_app), **running(s.node_app, 2, restarts=3, mode="cluster")}
    verdict = probe_verdict(
        monkeypatch,
        spec,
        dict.fromkeys(["Gunicorn", "Node.js", "Nginx -> Gunicorn", "Nginx -> Node.js"], (200, R1)),
        [first, later],
    )
    c = mock_host(run={re.compile(r"python3 -I -S - "): as_json(verdict)})

    assert gate_on_host(c, s, both) == [
        "PM2 app signalcraft-nodejs is restarting (2 -> 6 restarts)"
    ]


def test_a_gate_started_ahead_whose_channel_broke_is_asked_again_and_a_probe_that_cannot_run_stops(
    site,
):
    s, both = site, {"python": True, "nodejs": True}

    class Broken:  # host/io.Waiting whose SSH channel closed before `go`
        dropped = False

        def go(self) -> Result:
            raise OSError("Socket is closed")

        def drop(self) -> None:
            self.dropped = True

    started = Broken()
    c = mock_host(
        run={
            re.compile(r"python3 -I -S - "): ok(
                "",
                "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device",
                exited=1,
            )
        }
    )
    with pytest.raises(Exit) as err:
        # type: ignore[arg-type]
        health.gate(c, s, R1, f"{s.releases_dir}/{R1}", both, started=started)

    assert started.dropped and labels(c) == ["probe.py gate signalcraft-python signalcraft-nodejs"]
    assert (
        err.value.message
        == "The health probe could not run on the host: Traceback (most recent call last):\n"
        "OSError: [Errno 28] No space left on device"
    )


def test_a_health_probe_that_ended_with_no_output_says_how_it_ended(load):
    with pytest.raises(Exit) as err:
        health.verdict_of(load(), Result(stdout="", stderr="", exited=-1))
    assert (
        err.value.message
        == "The health probe could not run on the host: it ended with exit status -1 and no output"
    )


# ----------------------------------------------------------------------------- TLS and takeover


@pytest.fixture
def tls_site(load: Callable[..., Settings]) -> Settings:
    return load(
        {
            "SERVER_NAME": "shop.example.com www.shop.example.com",
            "TLS_CERT": "/etc/letsencrypt/live/shop.example.com/fullchain.pem",
            "TLS_KEY": "/etc/letsencrypt/live/shop.example.com/privkey.pem",
        }
    )


CERT, KEY = (
    "/etc/letsencrypt/live/shop.example.com/fullchain.pem",
    "/etc/letsencrypt/live/shop.example.com/privkey.pem",
)


@pytest.mark.parametrize(
    ("verdict", "problem"),
    [
        (
            {
                "problems": [
                    f"TLS_KEY {KEY} does not match TLS_CERT {CERT}: the key is not the"
                    " certificate's"
                ],
                "days_left": 61.3,
                "not_after": "May  4 05:06:07 2025 GMT",
                "names": ["shop.example.com", "www.shop.example.com"],
            },
            f"TLS_KEY {KEY} does not match TLS_CERT {CERT}: the key is not the certificate's",
        ),
        (
            {
                "problems": [
                    (
                        f"TLS_CERT {CERT} does not cover SERVER_NAME www.shop.example.com (it names"
                        " shop.example.com)"
                    ),
                    f"TLS_CERT {CERT} expired on Mar  1 00:00:00 2025 GMT",
                ],
                "days_left": -3.2,
                "not_after": "Mar  1 00:00:00 2025 GMT",
                "names": ["shop.example.com"],
            },
            (
                f"TLS_CERT {CERT} does not cover SERVER_NAME www.shop.example.com (it names"
                f" shop.example.com)\n  TLS_CERT {CERT} expired on Mar  1 00:00:00 2025 GMT"
            ),
        ),
        (None, "the TLS check could not run on the host: sudo: a password is required"),
    ],
    ids=["key-not-the-certificates", "expired-and-a-name-not-covered", "check-could-not-run"],
)
def test_a_certificate_that_cannot_serve_the_site_stops_the_deploy_before_the_site_is_written(
    tls_site, verdict, problem, capsys
):
    result = as_json(verdict) if verdict else ok(stderr="sudo: a password is required\n", exited=1)
    c = mock_host(run={re.compile(ROOT + "tls-check "): result})

    with pytest.raises(Exit) as err:
        check_tls(c, tls_site, Reporter("this machine"))

    assert (
        err.value.message
        == "Nothing was changed: the TLS certificate cannot serve this site:\n  " + problem
    )
    [(command, _)] = sent(c)
    assert json.loads(shlex.split(command)[-1]) == {
        "cert": CERT,
        "key": KEY,
        "names": ["shop.example.com", "www.shop.example.com"],
    }
    assert "expires in" not in capsys.readouterr().err


def test_a_certificate_that_expires_soon_is_a_warning_and_the_deploy_goes_on(tls_site, capsys):
    c = mock_host(
        run={
            re.compile(ROOT + "tls-check "): as_json(
                {
                    "problems": [],
                    "days_left": 6.5,
                    "not_after": "Mar 11 05:06:07 2025 GMT",
                    "names": ["shop.example.com"],
                }
            )
        }
    )

    check_tls(c, tls_site, Reporter("this machine"))

    assert (
        capsys.readouterr().err
        == "warning: the certificate expires in 6.5 days (under 14): renew it (certbot renew) "
        "or replace TLS_CERT\n"
    )
    assert tls.check(c, tls_site) == []


def test_recording_a_takeover_stops_before_root_acts_when_the_pid_is_no_longer_the_deploy_users(
    load,
):
    """takeover_record.py refuses a pid another user has since (its sys.exit message on stderr):
    root's copy of the site is then never made, and the deploy stops."""
    s = load()
    refused = (
        "pid 4242 belongs to user nobody, not to ubuntu: a takeover touches only the deploy user's"
        " own processes; nothing was recorded\n"
    )
    c = mock_host(
        run={
            re.compile(r"python3 -I -S - 4242 "): ok(stderr=refused, exited=1),
            re.compile(ROOT): ok(),
        }
    )

    with pytest.raises(Exit) as err:
        takeover.record(c, s, 4242)

    assert (
        err.value.message
        == "Could not record the unmanaged server (pid 4242) before taking it over: pid 4242"
        " belongs "
        "to user nobody, not to ubuntu: a takeover touches only the deploy user's own processes; "
        "nothing was recorded"
    )
    assert labels(c) == ["takeover_record.py"]
    assert shlex.split(sent(c)[0][0])[4:7] == [
        "4242",
        "/home/ubuntu/signalcraft/.deploy/takeover",
        "pm2",
    ]


def test_recording_a_takeover_saves_the_deploy_users_record_then_roots_copy_of_the_site(load):
    s = load()
    c = mock_host(
        run={
            re.compile(r"python3 -I -S - 4242 "): ok("recorded\n"),
            re.compile(ROOT + "takeover-record "): ok(),
        }
    )

    takeover.record(c, s, 4242)

    assert labels(c) == ["takeover_record.py", "root takeover-record"]
    assert shlex.split(sent(c)[1][0])[4:] == [
        "/home/ubuntu/signalcraft/.deploy",
        "4242",
        "/etc/nginx/sites-available/signalcraft",
    ]


RESTORE = {
    PM2_DELETE: ok(),
    r"\{ D=": ok(),
    r"python3 -I -S - /home/ubuntu/signalcraft/.deploy/takeover ": as_json(
        {"pid": 5151, "alive": True}
    ),
    ROOT + "nginx-reload ": as_json({"ok": True, "why": "", "master": 812, "seconds": 0.2}),
    r"rm -f ": ok(),
    r"pm2 save": ok(),
}


def test_restoring_a_takeover_brings_the_bare_server_back_then_the_old_site_and_saves_pm2(load):
    s = load()
    c = mock_host(run={**answers(RESTORE), re.compile(ROOT + "takeover-restore "): ok()})

    assert takeover.restore(c, s) == "the unmanaged server runs again (pid 5151)"

    assert labels(c) == [
        "takeover_restore.py",
        "pm2 delete signalcraft-python",
        "pm2 delete signalcraft-python-handover",
        "pm2 delete signalcraft-nodejs",
        "pm2 delete signalcraft-nodejs-handover",
        "forget logs",
        "takeover_restore.py",
        "root takeover-restore",
        "root nginx-reload",
        "rm current",
        "pm2 save",
    ]
    assert (
        shlex.split(sent(c)[0][0])[-1] == "check"
    )  # the record is read first: the apps stop only if it can be restored


def test_restoring_a_takeover_whose_site_cannot_be_put_back_says_so_and_reloads_nothing(load):
    s = load()
    said = (
        'nginx: [emerg] unknown directive "passenger_enabled" in'
        " /etc/nginx/sites-enabled/signalcraft:12\n"
    )
    c = mock_host(
        run={**answers(RESTORE), re.compile(ROOT + "takeover-restore "): ok(stderr=said, exited=65)}
    )

    with pytest.raises(Exit) as err:
        takeover.restore(c, s)

    assert (
        err.value.message
        == "The unmanaged server runs again, but its Nginx site could not be put back: nginx:"
        " [emerg] "
        'unknown directive "passenger_enabled" in /etc/nginx/sites-enabled/signalcraft:12'
    )
    assert "root nginx-reload" not in labels(c) and labels(c)[-3:] == [
        "root takeover-restore",
        "rm current",
        "pm2 save",
    ]


def test_a_takeover_record_this_version_cannot_read_leaves_the_running_apps_alone(load):
    s = load()
    refused = (
        "the takeover record is in format 3, written by signalcraft-deploy 9.0.0; this is"
        " signalcraft-deploy 0.9, which reads formats up to 2. Upgrade the tool (pip install -U"
        " signalcraft-deploy) and run again; nothing was changed.\n"
    )
    c = mock_host(
        run={
            **answers(RESTORE),
            re.compile(r"python3 -I -S - /home/ubuntu/signalcraft/.deploy/takeover "): ok(
                stderr=refused, exited=1
            ),
        }
    )

    with pytest.raises(
        Exit,
        match="Could not restore the state before the takeover: the takeover record is in format 3",
    ):
        takeover.restore(c, s)

    assert not any(name.startswith("pm2 delete") for name in labels(c))


@pytest.mark.parametrize(
    ("py", "node", "says"),
    [
        (
            How.HUP,
            How.RELOAD,
            (
                "start both apps from the new release on spare loopback ports; call their health"
                " routes"
            ),
        ),
        (
            How.HUP,
            How.NONE,
            (
                "start signalcraft-python from the new release on a spare loopback port; call its"
                " health route"
            ),
        ),
        (
            How.NEW_MASTER,
            How.HANDOVER,
            "start signalcraft-nodejs from the new release on a spare loopback port",
        ),
        (How.NEW_MASTER, How.NONE, "none: no app's own processes load new code"),
    ],
)
def test_the_plan_says_which_apps_the_trial_starts(
    load, py: How, node: How, says: str, capsys
) -> None:
    """The dry run's trial line names the apps the trial run will start, not always both."""
    from signalcraft_deploy.steps.plan_report import print_plan

    s = load()
    r = step_run(mock_host(), s, py, node)
    print_plan(r.rep, s, r.plan, r.facts)
    trial = [
        line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("trial ")
    ]
    assert len(trial) == 1 and trial[0].split("trial", 1)[1].strip().startswith(says), trial


# ----------------------------------------------------------------------------- the apps' own
# account


def test_a_deploy_user_other_than_app_user_runs_the_trial_its_probe_and_its_stop_as_the_apps_account(
    load,
):
    """Every PM2 command and the probe of a trial go through the app helper, as APP_USER; root's
    steps do not."""
    s = load()
    door = r"sudo -n -u signalcraft /usr/local/sbin/signalcraft-app /bin/sh -c "
    c = use_transport(
        MockContext(
            run={
                **NGINX_DUMP,
                **answers(
                    {
                        door + r"'python3 -I -S - .*\"mode\": \"ports\"": as_json(
                            {"ports": [41001, 41002]}
                        ),
                        door + r"'umask 077 && cat > \.signalcraft-trial": ok(),
                        "(?s)" + door + r"'python3 -I -S - .*\"mode\": \"gate\"": as_json(
                            {"ok": True, "problems": [], "pm2": {}}
                        ),
                        door + "'P=": ok(),
                    }
                ),
            },
            repeat=True,
        ),
        InvokeRunner(login="ubuntu"),
    )
    r = step_run(c, s, How.HUP, How.RELOAD, pm2=(s.python_app, s.node_app))

    assert trial_run(r) == "both apps answer their health routes"

    sent_commands = [command for command, _ in sent(c)]
    assert sent_commands[0].startswith(
        "sudo -n /usr/local/sbin/signalcraft-root nginx-dump"
    )  # root's, not the apps'.
    assert all(
        command.startswith("sudo -n -u signalcraft /usr/local/sbin/signalcraft-app /bin/sh -c ")
        for command in sent_commands[1:]
    )
    assert len(sent_commands) == 5


# ----------------------------------------------------------------------------- the trial run and
# the handover


NGINX_DUMP = {
    re.compile(ROOT + "nginx-dump"): ok("# configuration file /etc/nginx/nginx.conf:\nevents {}\n")
}


def step_run(
    c: MockContext, s: Settings, py: How, node: How, pm2: tuple[str, ...] = ()
) -> DeployRun:
    """The state the deploy's steps share: a new release of NEW's commit planned over PREV, nothing
    of the site changed."""
    m, configs = make_manifest(
        s,
        sha=NEW.sha,
        tree=NEW.tree,
        python_code="py-2",
        node_code="node-1",
        requirements=REQUIREMENTS,
        package_lock=None,
        app_env_digest=None,
        who="ci@runner",
        now=NOW,
    )
    plan = Plan(
        manifest=m,
        configs=configs,
        site=render_nginx_site(s),
        actions=[
            Action(App.PYTHON, py, "planned"),
            Action(App.NODEJS, node, "planned"),
            Action(App.NGINX, How.NONE, "site unchanged"),
        ],
    )
    facts = HostFacts(
        uid=1000,
        current_release=PREV,
        releases=[PREV],
        site_text=plan.site,
        site_enabled=True,
        pm2=[pm2_proc(name, 4100 + n) for n, name in enumerate(pm2)],
        pm2_readable=True,
    )
    return new_run(HostDeploy(c, s, Reporter("this machine"), facts), plan, "deploy")


TRIAL_LOG = (
    (
        "[TAILING] Tailing last 60 lines for [signalcraft-python-trial] process"
        " (change the value with --lines option)\n"
    )
    + """/home/ubuntu/.pm2/logs/signalcraft-python-trial-error.log last 60 lines:
[2025-03-04 05:06:08 +0000] [4711] [INFO] Starting gunicorn 23.0.0
[2025-03-04 05:06:08 +0000] [4711] [INFO] Listening at: http://127.0.0.1:41001 (4711)
[2025-03-04 05:06:08 +0000] [4712] [ERROR] Exception in worker process
Traceback (most recent call last):
  File "/home/ubuntu/signalcraft/releases/r/app.py", line 2, in <module>
{cause}
[2025-03-04 05:06:08 +0000] [4712] [INFO] Worker exiting (pid: 4712)
"""
)


@pytest.mark.parametrize(
    ("cause", "fix"),
    [
        ("ModuleNotFoundError: No module named 'flask_cors'", "Fix the app and deploy again."),
        (
            "Failed to find attribute 'create_app' in 'app'.",
            (
                "The cause is the setting WSGI_APP (default): 'app:create_app()' names an attribute"
                " the module does not have. Set WSGI_APP to a working value and deploy again."
            ),
        ),
    ],
    ids=["app-error", "setting-at-fault"],
)
@pytest.mark.parametrize(
    ("live", "serving"),
    [
        (PREV, f"the live release {PREV} keeps serving"),
        (None, "nothing served before, and nothing serves now"),
    ],
    ids=["over-a-live-release", "first-deploy"],
)
def test_a_trial_whose_python_app_fails_names_it_shows_its_output_and_switches_nothing(
    load, cause, fix, live, serving
):
    s = load()
    verdict = {
        "ok": False,
        "problems": [
            (
                "signalcraft-python http://127.0.0.1:41001/api/flask/health:"
                " ConnectionRefusedError: [Errno 111] Connection refused"
            ),
            "PM2 app signalcraft-python-trial is ['errored']",
        ],
    }
    c = mock_host(
        run={
            **NGINX_DUMP,
            **answers(
                {
                    PROBE_PORTS: as_json({"ports": [41001, 41002]}),
                    r"umask 077 && cat > \.signalcraft-trial": ok(
                        "[PM2] App [signalcraft-python-trial] launched\n"
                    ),
                    probe_gate("signalcraft-python-trial"): as_json(verdict),
                    PM2_LOGS: ok(TRIAL_LOG.format(cause=cause)),
                    PM2_DELETE: ok(),
                }
            ),
        }
    )
    r = step_run(c, s, How.HUP, How.RELOAD, pm2=(s.python_app, s.node_app))
    r.facts.current_release = live

    with pytest.raises(Exit) as err:
        trial_run(r)

    assert err.value.message == (
        f"The new release failed its trial run, so nothing was switched and {serving}.\n "
        " signalcraft-python http://127.0.0.1:41001/api/flask/health: ConnectionRefusedError:"
        " [Errno 111] Connection refused\n  PM2 app signalcraft-python-trial is ['errored']\n "
        " output of signalcraft-python (its trial run):\n    [2025-03-04 05:06:08 +0000] [4712]"
        " [ERROR] Exception in worker process\n    Traceback (most recent call last):\n      File"
        f' "/home/ubuntu/signalcraft/releases/r/app.py", line 2, in <module>\n    {cause}\n' + fix
    )
    # The failed app's log only (not the Node.js trial's), then both trial apps removed; nothing of
    # the live apps touched.
    assert labels(c) == [
        "root nginx-dump",
        "probe.py ports",
        "pm2 start .signalcraft-trial.config.json",
        "probe.py gate signalcraft-python-trial signalcraft-nodejs-trial",
        "pm2 logs signalcraft-python-trial",
        "pm2 delete signalcraft-python-trial signalcraft-nodejs-trial",
    ]


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (
            404,
            "The cause is likely the setting HEALTH_PY (default): the new release answers its route"
            " '/api/flask/health' with 404. Set HEALTH_PY to a route the app answers with 200 (or"
            " add that route to the app) and deploy again.",
        ),
        (
            500,
            "The app failed on its health route HEALTH_PY='/api/flask/health' (default) with 500:"
            " fix the error in its output above and deploy again.",
        ),
    ],
    ids=["route-missing", "route-fails"],
)
def test_a_trial_whose_health_route_answers_an_error_names_the_setting_and_its_value(
    load, status, fix
):
    s = load()
    verdict = {
        "ok": False,
        "problems": [f"signalcraft-python http://127.0.0.1:41001/api/flask/health: {status}"],
    }
    c = mock_host(
        run={
            **NGINX_DUMP,
            **answers(
                {
                    PROBE_PORTS: as_json({"ports": [41001, 41002]}),
                    r"umask 077 && cat > \.signalcraft-trial": ok(""),
                    probe_gate("signalcraft-python-trial"): as_json(verdict),
                    PM2_LOGS: ok(""),
                    PM2_DELETE: ok(),
                }
            ),
        }
    )
    r = step_run(c, s, How.HUP, How.RELOAD, pm2=(s.python_app, s.node_app))
    r.facts.current_release = PREV

    with pytest.raises(Exit) as err:
        trial_run(r)

    assert err.value.message.endswith("\n" + fix), err.value.message
    assert "Fix the app and deploy again." not in err.value.message


def test_nginx_check_of_a_deploy_warns_when_nodejs_listens_beyond_loopback(
    load, monkeypatch, capsys
):
    s = load()
    r = step_run(mock_host(run={}), s, How.HUP, How.RELOAD, pm2=(s.python_app, s.node_app))
    monkeypatch.setattr(nginx_ops, "check", lambda c, s, read=None: ([], []))
    assert check_nginx(r) == "0 routes ok"
    assert "beyond loopback" not in capsys.readouterr().err
    r.facts.listeners = [Listener("*", s.node_port, (4101,), ("node",))]
    check_nginx(r)
    warned = capsys.readouterr().err
    assert f"warning: {s.node_app} listens on *:{s.node_port}, beyond loopback" in warned, warned


def test_a_passing_trial_runs_both_apps_on_spare_ports_and_leaves_their_stop_running(load):
    s = load()
    c = mock_host(
        run={
            **NGINX_DUMP,
            **answers(
                {
                    PROBE_PORTS: as_json({"ports": [41001, 41002]}),
                    r"umask 077 && cat > \.signalcraft-trial": ok(),
                    probe_gate("signalcraft-python-trial"): as_json(
                        {"ok": True, "problems": [], "pm2": {}}
                    ),
                    PM2_DELETE: ok(),
                }
            ),
        }
    )
    r = step_run(c, s, How.HUP, How.RELOAD, pm2=(s.python_app, s.node_app))

    assert trial_run(r) == "both apps answer their health routes"

    assert labels(c) == [
        "root nginx-dump",
        "probe.py ports",
        "pm2 start .signalcraft-trial.config.json",
        "probe.py gate signalcraft-python-trial signalcraft-nodejs-trial",
        "pm2 delete signalcraft-python-trial signalcraft-nodejs-trial",
    ]
    assert (
        len(r.stopping) == 1 and r.nginx_read is not None
    )  # waited for by `settle`, read by `write and check site`
    start = next(
        command
        for command, _ in sent(c)
        if command.startswith("umask 077 && cat > .signalcraft-trial")
    )
    # PM2's list, read before, had no trial app left over
    assert not re.search(r'"\$P" delete', start)
    py, node = json.loads(stdin_of(c, "pm2 start .signalcraft-trial.config.json"))["apps"]
    assert (py["name"], py["args"][-4:], py["cwd"]) == (
        "signalcraft-python-trial",
        ["--bind", "127.0.0.1:41001", "--workers", "1"],
        r.release_dir,
    )
    assert (node["name"], node["exec_mode"], node["instances"], node["env"]["PORT"]) == (
        "signalcraft-nodejs-trial",
        "fork",
        1,
        "41002",
    )
    gate = spec_sent(c)
    assert [(u["url"], u["expect_release"]) for u in gate["urls"]] == [
        ("http://127.0.0.1:41001/api/flask/health", True),
        ("http://127.0.0.1:41002/", True),
    ]
    assert gate["fail_fast"] and gate["release"] == r.release


def handover_steps() -> list[Any]:
    return [step for step in DEPLOY_STEPS if step.name in ("switch current", "reload apps")]


HANDOVER_FAILED = {
    "ok": False,
    "problems": [
        (
            "handover http://127.0.0.1:8002/api/flask/health: ConnectionRefusedError: [Errno 111] "
            "Connection refused"
        ),
        "PM2 app signalcraft-python-handover is ['stopped']",
    ],
}


def test_a_new_master_that_fails_on_the_handover_address_never_moves_nginx_and_the_old_master_keeps_serving(
    load,
):
    s = load()
    c = mock_host(
        run=answers(
            {
                r"umask 077 && cat > ": ok(),
                probe_gate("signalcraft-python-handover"): as_json(HANDOVER_FAILED),
                PM2_LOGS: ok("ModuleNotFoundError: No module named 'psycopg'\n"),
                PM2_DELETE: ok(),
                r"ln -sfn ": ok(),
                r"sh -s$": ok(
                    facts_text(
                        pm2=jlist(
                            {"name": s.python_app, "pid": 4100},
                            {"name": s.node_app, "pid": 4200, "mode": "cluster"},
                        )
                    )
                ),
                r"(?s)umask 077 && mkdir -p .*audit\.log": ok(),
            }
        )
    )
    r = step_run(c, s, How.NEW_MASTER, How.NONE, pm2=(s.python_app, s.node_app))

    with pytest.raises(Failure) as failed:
        run_steps(r, handover_steps())

    assert failed.value.outcome is Outcome.ROLLED_BACK and failed.value.undone == [
        "reload apps",
        "switch current",
    ]
    assert (
        failed.value.message
        == "The new signalcraft-python did not come up on the handover address 127.0.0.1:8002:"
        " handover http://127.0.0.1:8002/api/flask/health: ConnectionRefusedError: [Errno 111]"
        " Connection refused; PM2 app signalcraft-python-handover is ['stopped']\n  output of"
        " signalcraft-python (its new processes):\n    ModuleNotFoundError: No module named"
        " 'psycopg'"
    )
    assert labels(c) == [
        "pm2 start .signalcraft-handover-python.config.json",
        "probe.py gate signalcraft-python-handover",
        "pm2 logs signalcraft-python-handover",
        "pm2 delete signalcraft-python-handover",
        # undo reload apps: the error log, current back (never moved), what runs; undo switch current;
        # audit
        "pm2 logs signalcraft-python --err",
        f"current -> {PREV}",
        "read host",
        f"current -> {PREV}",
        "audit",
    ]
    # Never sent: Nginx moved, the old master stopped or started.
    assert "pm2 delete signalcraft-python" not in labels(c) and not any(
        name.startswith("root ") for name in labels(c)
    )


def test_a_new_master_that_fails_on_its_own_address_is_undone_back_to_the_old_master_and_nginx_moved_back(
    load,
):
    s = load()
    own_failed = {
        "ok": False,
        "problems": [
            (
                "Gunicorn http://127.0.0.1:8001/api/flask/health: ConnectionRefusedError: [Errno"
                " 111] Connection refused"
            ),
            "PM2 app signalcraft-python is ['errored']",
        ],
    }
    now_running = jlist(
        {"name": s.handover_app, "pid": 4300},
        {"name": s.python_app, "pid": 0, "status": "errored"},
        {"name": s.node_app, "pid": 4200, "mode": "cluster"},
    )
    c = mock_host(
        run=answers(
            {
                r"umask 077 && cat > ": ok(),
                probe_gate("signalcraft-python-handover"): as_json(
                    {"ok": True, "problems": [], "pm2": {}}
                ),
                ROOT + "site-install ": ok(),
                ROOT + "nginx-reload ": as_json(
                    {"ok": True, "why": "", "master": 812, "seconds": 0.3}
                ),
                r"ln -sfn ": ok(),
                r"timeout \d+ sh -c .while ": ok(),
                PM2_DELETE: ok(),
                r"f=\S+; \[ -e ": ok(),
                probe_gate("signalcraft-python"): as_json(own_failed),
                PM2_LOGS: ok(
                    "[2025-03-04 05:06:09 +0000] [4801] [INFO] Booting worker with pid:"
                    " 4801\nImportError: libpq.so.5: cannot open shared object file: No such file"
                    " or directory\n"
                ),
                r"sh -s$": ok(facts_text(pm2=now_running)),
                r"(?s)umask 077 && mkdir -p .*audit\.log": ok(),
            }
        )
    )
    r = step_run(c, s, How.NEW_MASTER, How.NONE, pm2=(s.python_app, s.node_app))

    with pytest.raises(Failure) as failed:
        run_steps(r, handover_steps())

    assert failed.value.outcome is Outcome.ROLLED_BACK
    assert (
        failed.value.message
        == "signalcraft-python did not come up on its own address after the handover: Gunicorn"
        " http://127.0.0.1:8001/api/flask/health: ConnectionRefusedError: [Errno 111] Connection"
        " refused; PM2 app signalcraft-python is ['errored']\n  output of signalcraft-python:\n "
        "   ImportError: libpq.so.5: cannot open shared object file: No such file or directory"
    )
    assert labels(c) == [
        # the handover: new master beside the old, Nginx to it, current switched, old drained and
        # stopped, new one started
        "pm2 start .signalcraft-handover-python.config.json",
        "probe.py gate signalcraft-python-handover",
        "root site-install",
        "root nginx-reload",
        f"current -> {r.release}",
        "wait drained :8001",
        "pm2 delete signalcraft-python",
        "pm2 start --only signalcraft-python",
        "probe.py gate signalcraft-python",
        "pm2 logs signalcraft-python --err",
        # undo: current back, then the old master from it, Nginx back to the own addresses, the
        # temporary app stopped
        "pm2 logs signalcraft-python --err",
        f"current -> {PREV}",
        "read host",
        "pm2 delete signalcraft-python",
        "pm2 start --only signalcraft-python",
        "root site-install",
        "root nginx-reload",
        "wait drained :8002",
        "pm2 delete signalcraft-python-handover",
        f"current -> {PREV}",
        "audit",
    ]
    installs = [
        json.loads(stdin)
        for command, stdin in sent(c)
        if label(command, stdin) == "root site-install"
    ]
    assert [d["python"] for d in installs] == ["127.0.0.1:8002", "127.0.0.1:8001"]


@pytest.mark.parametrize(
    ("py", "node", "moves", "waits"),
    [
        (
            How.START,
            How.START,
            False,
            True,
        ),  # a first deploy: PM2's list holds only the trial's apps
        (
            How.NEW_MASTER,
            How.HANDOVER,
            True,
            True,
        ),  # the first deploy into the apps' own account's PM2
        (
            How.HUP,
            How.RELOAD,
            False,
            False,
        ),  # live apps keep PM2's list from emptying: the trial ends in the background
    ],
)
def test_apps_are_started_only_once_the_trials_apps_are_gone_when_pm2s_list_could_empty(
    monkeypatch, py, node, moves, waits
):
    from signalcraft_deploy.steps import deploy as deploy_steps

    seen: list[str] = []
    trial_stop = SimpleNamespace(wait=lambda: seen.append("trial apps deleted"))
    actions = {
        App.PYTHON: Action(App.PYTHON, py, "", moves=moves),
        App.NODEJS: Action(App.NODEJS, node, "", moves=moves),
    }
    r = SimpleNamespace(
        py=py,
        node=node,
        stopping=[trial_stop],
        plan=SimpleNamespace(action=actions.__getitem__),
        s=SimpleNamespace(python_app="a-python", node_app="a-nodejs"),
    )
    r.wait_stopped = lambda: DeployRun.wait_stopped(r)  # type: ignore[arg-type]
    monkeypatch.setattr(deploy_steps, "reload_python", lambda r: seen.append(f"python: {r.py}"))
    monkeypatch.setattr(deploy_steps, "reload_node", lambda r: seen.append(f"nodejs: {r.node}"))
    deploy_steps.reload_apps(r)  # type: ignore[arg-type]
    assert (seen[0] == "trial apps deleted") is waits, seen
    assert ("trial apps deleted" in seen) is waits


def test_the_undo_of_a_finished_node_handover_loads_the_previous_release_again(load) -> None:
    """A failure after the Node.js handover was done (a later step, a lost connection): its new
    processes run from `current`, switched back by then, and a rolling reload loads the previous
    release in them; a handover cut short is undone by the temporary app's end instead."""
    s = load()
    c = mock_host(run=answers({r"(?s).*pm2 reload": ok()}))
    r = step_run(c, s, How.NONE, How.HANDOVER, pm2=(s.python_app, s.node_app))
    restore_node(r, {s.python_app, s.node_app})
    reloads = [command for command, _ in sent(c) if "reload" in command]
    assert len(reloads) == 1 and f"--only {s.node_app}" in reloads[0], sent(c)


def test_the_undo_of_a_handover_chosen_for_a_new_script_starts_the_previous_release_anew(
    load,
) -> None:
    s = load()
    c = mock_host(run=answers({r"(?s).*": ok()}))
    r = step_run(c, s, How.NONE, How.HANDOVER, pm2=(s.python_app, s.node_app))
    r.plan.actions[1] = Action(
        App.NODEJS,
        How.HANDOVER,
        "its PM2 mode, instances or script changed, which `pm2 reload` does not apply",
        entry_changes=True,
    )
    restore_node(r, {s.python_app, s.node_app})
    node = [command for command, _ in sent(c) if s.node_app in command]
    # The previous release's entry starts anew from `current` (its own ecosystem file): a rolling
    # reload would keep the new script, mode or instances.
    assert node and not any(" reload " in command for command in node), node
    assert any(" start " in command and "--only" in command for command in node), node


def test_the_summary_repeats_how_the_old_workers_drained() -> None:
    from signalcraft_deploy.steps.one_host import drain_lines
    from signalcraft_deploy.steps.report import Reporter, StepRecord

    rep = Reporter("h", quiet=True)
    rep.steps = [
        StepRecord("reload apps", 0.1, True, "x-python: hup"),
        StepRecord(
            "check health",
            31.7,
            True,
            "both apps answer, directly and through Nginx; old Gunicorn workers drained in 31.7 s"
            " (2 requests)",
        ),
    ]
    assert drain_lines(rep) == ["old Gunicorn workers drained in 31.7 s (2 requests)"]
