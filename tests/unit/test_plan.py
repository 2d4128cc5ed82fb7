"""make_plan as a table, pyinfra-style: host facts in, actions out.

Each case names what is live on the host (a manifest, PM2 processes, the site) and what the new
source is, and the plan must pick the cheapest action that still applies the change: a HUP for code
or gunicorn.conf.py, a new master for a new venv, `pm2 reload` for Node.js code, a handover
when cluster settings change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from signalcraft_deploy.core.facts import HostFacts, Pm2Process
from signalcraft_deploy.core.plan import (
    How,
    Manifest,
    Plan,
    PlanError,
    make_manifest,
    make_plan,
    release_inputs,
    site_digest,
    unchanged,
)
from signalcraft_deploy.core.render import digest, node_entry, render_nginx_site
from signalcraft_deploy.core.settings import Settings, load_settings
from signalcraft_deploy.core.source import app_digest, changed_paths, tool_files

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
LATER = datetime(2025, 3, 5, 0, 0, 0, tzinfo=UTC)
SHA1 = "1111111111111111111111111111111111111111"
SHA2 = "2222222222222222222222222222222222222222"


@dataclass(frozen=True)
class Source:
    """What a deploy would ship: the inputs of make_manifest."""

    sha: str = SHA1
    tree: str = "tree-1"
    python_code: str = "py-1"
    node_code: str = "node-1"
    requirements: str = "flask==3.0.3\ngunicorn==23.0.0\n"
    package_lock: str | None = '{"lockfileVersion": 3}'
    settings: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] | None = (
        None  # path -> blob: the code digests are then made as a deploy makes them
    )
    app_env: str | None = None  # the APP_ENV_FILE's text
    package_json: str | None = None
    esm: bool = False
    tool_collection: tuple[str, ...] = ()  # its fabfile.py/tasks.py that import signalcraft_deploy


def settings(tmp: Path, overrides: dict[str, str]) -> Settings:
    return load_settings(overrides=overrides, environ={}, cwd=str(tmp))


def manifest_for(
    tmp: Path, src: Source, now: datetime = NOW
) -> tuple[Settings, Manifest, dict[str, str]]:
    s = replace(settings(tmp, src.settings), tool_collection=src.tool_collection)
    py, node = src.python_code, src.node_code
    if src.files is not None:
        py, node = (
            app_digest(src.files, app, s.py_files, s.node_files, tool_files(s))
            for app in ("python", "nodejs")
        )
    m, configs = make_manifest(
        s,
        sha=src.sha,
        tree=src.tree,
        python_code=py,
        node_code=node,
        requirements=src.requirements,
        package_lock=src.package_lock,
        app_env_digest=digest(src.app_env) if src.app_env is not None else None,
        who="ci@runner",
        now=now,
        package_json=src.package_json,
        esm=src.esm,
    )
    return s, m, configs


def python_proc(s: Settings, venv: str, status: str = "online") -> Pm2Process:
    return Pm2Process(
        name=s.python_app,
        pm_id=0,
        pid=4100 if status == "online" else 0,
        status=status,
        restarts=0,
        started_ms=1,
        exec_mode="fork",
        exec_path=f"{venv}/bin/gunicorn",
        cwd=s.current_dir,
        interpreter=f"{venv}/bin/python",
        args=("-c", f"{s.current_dir}/gunicorn.conf.py"),
        memory=50_000_000,
    )


def node_procs(
    s: Settings, instances: int, status: str = "online", mode: str = "cluster"
) -> list[Pm2Process]:
    return [
        Pm2Process(
            name=s.node_app,
            pm_id=1 + i,
            pid=4200 + i,
            status=status,
            restarts=0,
            started_ms=1,
            exec_mode=mode,
            exec_path=node_entry(s)["script"],
            cwd=s.current_dir,
            interpreter="node",
            args=(),
            memory=40_000_000,
        )
        for i in range(instances)
    ]


def live_host(tmp: Path, src: Source, **changes: Any) -> HostFacts:
    """A host where `src` was deployed and everything is healthy; `changes` replace single facts."""
    s, m, configs = manifest_for(tmp, src)
    facts = HostFacts(
        uid=1000,
        current_release=m.release,
        releases=[m.release],
        manifest={
            **json.loads(m.to_json()),
            "site": site_digest(render_nginx_site(s)),
        },  # as make_plan records it
        configs=dict(configs),
        site_text=render_nginx_site(s),
        site_enabled=True,
        venvs_ready={m.venv.rsplit("/", 1)[-1]},
        node_modules_ready={m.node_modules.rsplit("/", 1)[-1]} if m.node_modules else set(),
        tools={"pm2", "node", "flock", "python-venv", "sudo", "nginx"},
        pm2=[python_proc(s, m.venv), *node_procs(s, s.node_instances)],
        pm2_readable=True,
    )
    for key, value in changes.items():
        setattr(facts, key, value(s, m, facts) if callable(value) else value)
    return facts


@dataclass(frozen=True)
class Case:
    facts: Callable[[Path], HostFacts]
    new: Source
    python: str
    nodejs: str
    nginx: str
    new_release: bool
    build_venv: bool | None = None
    why: dict[str, str] = field(default_factory=dict)  # app -> text its reason must contain
    old: Source | None = (
        None  # what is live, when the case compares files (the changed paths come from it)
    )


OLD = Source()
# An app as people write them: Flask reading JSON at import, Express serving files, an entry point
# without a suffix.
FILES = {
    "app.py": "a1",
    "flaskr/api.json": "j1",
    "requirements.txt": "r1",
    "package.json": "p1",
    "package-lock.json": "l1",
    "bin/www": "w1",
    "public/hello.txt": "h1",
    "views/index.ejs": "v1",
    "routes/index.js": "i1",
    "README.md": "m1",
}
LIVE = Source(files=FILES)


def files(**changes: str) -> Source:
    """LIVE with some files changed (a key with '__' for '/' and '_' for '.': flaskr__api_json)."""
    new = dict(FILES)
    for key, blob in changes.items():
        new[key.replace("__", "/").replace("_", ".")] = blob
    return replace(LIVE, sha=SHA2, tree="tree-2", files=new)


def with_settings(src: Source, **values: str) -> Source:
    return replace(src, settings={**src.settings, **values})


def old_manifest(
    drop: tuple[str, ...],
) -> Callable[[Settings, Manifest, HostFacts], dict[str, Any]]:
    """The live manifest as the previous version of this tool wrote it: without the fields it did
    not know."""
    return lambda s, m, f: {k: v for k, v in (f.manifest or {}).items() if k not in drop}


NEW_FIELDS = ("app_env", "node_script", "ecosystem", "node_install")


def _stopped_python(s: Settings, m: Manifest, f: HostFacts) -> list[Pm2Process]:
    return [python_proc(s, m.venv, status="stopped"), *node_procs(s, s.node_instances)]


CASES = {
    "empty host": Case(
        facts=lambda tmp: HostFacts(),
        new=OLD,
        python="start",
        nodejs="start",
        nginx="write-and-reload",
        new_release=True,
        build_venv=True,
        why={
            "python": "signalcraft-python is not in PM2",
            "nodejs": "not in PM2",
            "nginx": "site not installed yet",
        },
    ),
    "same release, all online": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=OLD,
        python="none",
        nodejs="none",
        nginx="none",
        new_release=False,
        build_venv=False,
    ),
    "same release, python stopped": Case(
        facts=lambda tmp: live_host(tmp, OLD, pm2=_stopped_python),
        new=OLD,
        python="start",
        nodejs="none",
        nginx="none",
        new_release=False,
        build_venv=False,
        why={"python": "signalcraft-python is stopped"},
    ),
    "same release, node errored": Case(
        facts=lambda tmp: live_host(
            tmp,
            OLD,
            pm2=lambda s, m, f: [python_proc(s, m.venv), *node_procs(s, 2, status="errored")],
        ),
        new=OLD,
        python="none",
        nodejs="start",
        nginx="none",
        new_release=False,
    ),
    "same release, pm2 empty (host rebooted without pm2 startup)": Case(
        facts=lambda tmp: live_host(tmp, OLD, pm2=[]),
        new=OLD,
        python="start",
        nodejs="start",
        nginx="none",
        new_release=False,
    ),
    "python code changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, sha=SHA2, tree="tree-2", python_code="py-2"),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
        build_venv=False,
        why={"python": "the files it reads changed"},
    ),
    "gunicorn timeout changed": Case(  # Nginx's timeouts on the Python routes follow it
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"GUNICORN_TIMEOUT": "60"}),
        python="hup",
        nodejs="none",
        nginx="write-and-reload",
        new_release=True,
        build_venv=False,
        why={"python": "gunicorn.conf.py changed"},
    ),
    "gunicorn workers changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"GUNICORN_WORKERS": "4"}),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
    ),
    "requirements changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, sha=SHA2, tree="tree-2", requirements="flask==3.1.0\ngunicorn==23.0.0\n"),
        python="new-master",
        nodejs="none",
        nginx="none",
        new_release=True,
        build_venv=True,
        why={"python": "environment"},
    ),
    "graceful timeout changed (PM2 kill_timeout of the python entry)": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"GUNICORN_GRACEFUL_TIMEOUT": "50"}),
        python="new-master",
        nodejs="none",
        nginx="none",
        new_release=True,
        build_venv=False,
    ),
    "node code changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, sha=SHA2, tree="tree-2", node_code="node-2"),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        build_venv=False,
        why={"nodejs": "the files it reads changed"},
    ),
    "package-lock changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, sha=SHA2, tree="tree-2", package_lock='{"lockfileVersion": 3, "x": 1}'),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
    ),
    "node env changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"NODE_ENV": "staging"}),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "PM2 settings changed"},
    ),
    "node instances changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"NODE_INSTANCES": "3"}),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "instances"},
    ),
    "node running in fork mode": Case(
        facts=lambda tmp: live_host(
            tmp, OLD, pm2=lambda s, m, f: [python_proc(s, m.venv), *node_procs(s, 2, mode="fork")]
        ),
        new=replace(OLD, tree="tree-2", node_code="node-2"),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
    ),
    "both codes changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, sha=SHA2, tree="tree-2", python_code="py-2", node_code="node-2"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
    ),
    "site differs": Case(
        facts=lambda tmp: live_host(
            tmp,
            OLD,
            site_text=lambda s, m, f: render_nginx_site(s).replace("listen 80 ", "listen 81 "),
        ),
        new=OLD,
        python="none",
        nodejs="none",
        nginx="write-and-reload",
        new_release=False,
        why={"nginx": "site changed"},
    ),
    "site same but not enabled": Case(
        facts=lambda tmp: live_host(tmp, OLD, site_enabled=False),
        new=OLD,
        python="none",
        nodejs="none",
        nginx="write-and-reload",
        new_release=False,
        why={"nginx": "site not enabled"},
    ),
    "site missing": Case(
        facts=lambda tmp: live_host(tmp, OLD, site_text=None, site_enabled=False),
        new=OLD,
        python="none",
        nodejs="none",
        nginx="write-and-reload",
        new_release=False,
        why={"nginx": "site not installed yet"},
    ),
    "routes changed": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"PY_ROUTES": "api/ai,api/flask,api/v2"}),
        python="none",
        nodejs="none",
        nginx="write-and-reload",
        new_release=True,
        why={"nginx": "site changed"},
    ),
    # Which app a file change reaches: certain files are one app's own; any other reaches both,
    # unless PY_FILES / NODE_FILES name the files each app reads.
    "a text file Node serves changed": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(public__hello_txt="h2"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "public/hello.txt", "nodejs": "files it reads changed: public/hello.txt"},
    ),
    "node entry point without a suffix changed": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(bin__www="w2"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "bin/www"},
    ),
    "a JSON file Python reads at import changed": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(flaskr__api_json="j2"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "flaskr/api.json"},
    ),
    "only a .py file changed": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(app_py="a2"),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
        why={"python": "files it reads changed: app.py"},
    ),
    "only package.json changed (Node's own)": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(package_json="p2"),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "package.json"},
    ),
    "only a .js file changed: JavaScript is Node.js's own": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(routes__index_js="i2"),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "routes/index.js"},
    ),
    "a .js file Flask serves from static/ changed: both may read it": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=files(static__app_js="s2"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "static/app.js"},
    ),
    "only the tool's own files changed (deploy.env, the workflow, fabfile.py, tasks.py): nothing reloaded": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=replace(
            files(
                deploy_env="e2", _github__workflows__deploy_yml="y2", fabfile_py="f2", tasks_py="t2"
            ),
            tool_collection=("fabfile.py", "tasks.py"),
        ),
        python="none",
        nodejs="none",
        nginx="none",
        new_release=True,
    ),
    "the app's own tasks.py changed (Celery's, not the tool's collection): Python's code": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=replace(files(tasks_py="t2"), tool_collection=("fabfile.py",)),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
        why={"python": "tasks.py"},
    ),
    "NODE_FILES set: a file only Python reads changed": Case(
        facts=lambda tmp: live_host(
            tmp, with_settings(LIVE, NODE_FILES="*.js,bin/,public/,views/")
        ),
        old=with_settings(LIVE, NODE_FILES="*.js,bin/,public/,views/"),
        new=with_settings(files(flaskr__api_json="j2"), NODE_FILES="*.js,bin/,public/,views/"),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
        why={"python": "flaskr/api.json"},
    ),
    "PY_FILES and NODE_FILES set: a file neither reads changed": Case(
        facts=lambda tmp: live_host(
            tmp, with_settings(LIVE, PY_FILES="flaskr/", NODE_FILES="public/,bin/")
        ),
        old=with_settings(LIVE, PY_FILES="flaskr/", NODE_FILES="public/,bin/"),
        new=with_settings(files(README_md="m2"), PY_FILES="flaskr/", NODE_FILES="public/,bin/"),
        python="none",
        nodejs="none",
        nginx="none",
        new_release=True,
    ),
    "PY_FILES set: a view only Node reads changed": Case(
        facts=lambda tmp: live_host(tmp, with_settings(LIVE, PY_FILES="flaskr/**")),
        old=with_settings(LIVE, PY_FILES="flaskr/**"),
        new=with_settings(files(views__index_ejs="v2"), PY_FILES="flaskr/**"),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "views/index.ejs"},
    ),
    "PY_FILES first set, with a change only Node reads: Python is not reloaded for the new setting": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=with_settings(files(bin__www="w2"), PY_FILES="*.py"),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "bin/www"},
    ),
    "NODE_FILES first set, nothing changed that Node reads": Case(
        facts=lambda tmp: live_host(tmp, LIVE),
        old=LIVE,
        new=with_settings(files(app_py="a2"), NODE_FILES="bin/,*.js"),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
        why={"python": "app.py"},
    ),
    # Secrets: a changed .env reaches both apps with their usual reload: Gunicorn's HUP reads
    # gunicorn.conf.py again, which loads the release's env.json; Node.js's new workers read it.
    "app env changed": Case(
        facts=lambda tmp: live_host(tmp, replace(OLD, app_env="SECRET_KEY=one\n")),
        new=replace(OLD, app_env="SECRET_KEY=two\n"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        build_venv=False,
        why={"python": "environment", "nodejs": "environment"},
    ),
    "app env first given": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, app_env="SECRET_KEY=one\n"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "APP_ENV_FILE"},
    ),
    "app env unchanged": Case(
        facts=lambda tmp: live_host(tmp, replace(OLD, app_env="SECRET_KEY=one\n")),
        new=replace(OLD, app_env="SECRET_KEY=one\n"),
        python="none",
        nodejs="none",
        nginx="none",
        new_release=False,
    ),
    "no APP_ENV_FILE this time: the live .env is carried, nothing reloads for it": Case(
        facts=lambda tmp: live_host(tmp, replace(OLD, app_env="SECRET_KEY=one\n")),
        new=replace(OLD, sha=SHA2, tree="tree-2"),
        python="none",
        nodejs="none",
        nginx="none",
        new_release=True,
    ),
    "rollback to a release with another .env": Case(
        facts=lambda tmp: live_host(
            tmp, replace(OLD, sha=SHA2, tree="tree-2", app_env="SECRET_KEY=two\n")
        ),
        new=replace(OLD, app_env="SECRET_KEY=one\n"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "environment"},
    ),
    # Manifests written by the previous version lack the new fields: read as unknown, never a crash.
    "live manifest of the previous version, no app env": Case(
        facts=lambda tmp: live_host(tmp, OLD, manifest=old_manifest(NEW_FIELDS)),
        new=OLD,
        python="none",
        nodejs="none",
        nginx="none",
        new_release=False,
    ),
    "live manifest of the previous version, app env given": Case(
        facts=lambda tmp: live_host(tmp, OLD, manifest=old_manifest(NEW_FIELDS)),
        new=replace(OLD, app_env="K=v\n"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "no record", "nodejs": "no record"},
    ),
    "live manifest of the previous version with a shared .env, new code, no APP_ENV_FILE: carried, no new master": Case(
        facts=lambda tmp: live_host(tmp, OLD, manifest=old_manifest(NEW_FIELDS), live_env=True),
        new=replace(OLD, sha=SHA2, tree="tree-2", python_code="py-2"),
        python="hup",
        nodejs="none",
        nginx="none",
        new_release=True,
    ),
    "live manifest of the previous version, new code": Case(
        facts=lambda tmp: live_host(tmp, OLD, manifest=old_manifest(NEW_FIELDS)),
        new=replace(OLD, sha=SHA2, tree="tree-2", python_code="py-2", node_code="node-2"),
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
    ),
    # Node.js as people write it.
    "no lock file: package.json changed, npm install": Case(
        facts=lambda tmp: live_host(
            tmp, replace(OLD, package_lock=None, package_json='{"name": "a"}')
        ),
        new=replace(
            OLD,
            sha=SHA2,
            tree="tree-2",
            package_lock=None,
            package_json='{"name": "a", "dependencies": {"x": "1"}}',
        ),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "npm install"},
    ),
    "entry point from package.json moved": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, settings={"NODE_SCRIPT": "bin/www"}),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "script"},
    ),
    "package became an ES module": Case(
        facts=lambda tmp: live_host(tmp, OLD),
        new=replace(OLD, sha=SHA2, tree="tree-2", esm=True),
        python="none",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"nodejs": "ecosystem.config.cjs"},
    ),
    "manifest lost but processes live": Case(
        facts=lambda tmp: live_host(tmp, OLD, manifest=None),
        new=OLD,
        python="hup",
        nodejs="handover",
        nginx="none",
        new_release=True,
        why={"python": "no record"},
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_plan(case: Case, tmp_path: Path) -> None:
    facts = case.facts(tmp_path)
    s, m, configs = manifest_for(tmp_path, case.new, now=LATER)
    changed = (
        changed_paths(case.new.files, case.old.files)
        if case.old and case.new.files is not None
        else None
    )
    plan = make_plan(s, m, configs, facts, changed)

    assert [a.app for a in plan.actions] == ["python", "nodejs", "nginx"]
    got = {a.app: a.how for a in plan.actions}
    assert got == {"python": case.python, "nodejs": case.nodejs, "nginx": case.nginx}, [
        a.why for a in plan.actions
    ]
    assert plan.new_release is case.new_release
    if case.build_venv is not None:
        assert plan.build_venv is case.build_venv
    for app, text in case.why.items():
        assert text in plan.action(app).why
    expect_nothing = not case.new_release and (case.python, case.nodejs, case.nginx) == (
        "none",
        "none",
        "none",
    )
    assert plan.nothing_to_do is expect_nothing
    # The no-op decided from digests alone (no rendering) may say "unchanged" only where the plan
    # has nothing to do, and does say it for the plain case.
    env = digest(case.new.app_env) if case.new.app_env is not None else None
    inputs = release_inputs(s, case.new.tree, case.new.requirements, case.new.package_lock, env)
    fast = unchanged(s, inputs, facts)
    assert not fast or plan.nothing_to_do
    if case is CASES["same release, all online"]:
        assert fast


def test_the_no_op_without_rendering_sees_each_kind_of_change(tmp_path: Path) -> None:
    """unchanged() against the plain no-op, changed one fact or one input at a time."""
    s, m, _ = manifest_for(tmp_path, OLD)
    inputs = release_inputs(s, OLD.tree, OLD.requirements, OLD.package_lock, None)
    assert unchanged(s, inputs, live_host(tmp_path, OLD))
    other_settings = settings(tmp_path, {"GUNICORN_TIMEOUT": "99"})
    assert not unchanged(
        other_settings,
        release_inputs(other_settings, OLD.tree, OLD.requirements, OLD.package_lock, None),
        live_host(tmp_path, OLD),
    )
    assert not unchanged(
        s,
        release_inputs(s, "tree-2", OLD.requirements, OLD.package_lock, None),
        live_host(tmp_path, OLD),
    )
    assert not unchanged(
        s,
        release_inputs(s, OLD.tree, OLD.requirements, OLD.package_lock, "env-1"),
        live_host(tmp_path, OLD),
    )
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "gunicorn.conf.py.j2").write_text("# my own gunicorn config\n")
    mine = settings(tmp_path, {"TEMPLATES_DIR": str(templates)})
    assert release_inputs(
        mine, OLD.tree, OLD.requirements, OLD.package_lock, None
    ) != release_inputs(
        settings(tmp_path, {"TEMPLATES_DIR": str(tmp_path)}),
        OLD.tree,
        OLD.requirements,
        OLD.package_lock,
        None,
    )
    for name, change in {
        "site edited by hand": {"site_text": "server { }\n"},
        "site not enabled": {"site_enabled": False},
        "no record of inputs (an older release)": {
            "manifest": lambda s, m, f: {k: v for k, v in f.manifest.items() if k != "inputs"}
        },
        "python stopped": {"pm2": _stopped_python},
        "one node instance missing": {
            "pm2": lambda s, m, f: [python_proc(s, m.venv), *node_procs(s, s.node_instances - 1)]
        },
        "node in fork mode": {
            "pm2": lambda s, m, f: [
                python_proc(s, m.venv),
                *node_procs(s, s.node_instances, mode="fork"),
            ]
        },
        "a worker runs another release": {
            "procs": lambda s, m, f: {
                4100: (1, f"{s.releases_dir}/{m.release}"),
                4101: (4100, f"{s.releases_dir}/older"),
            }
        },
    }.items():
        assert not unchanged(s, inputs, live_host(tmp_path, OLD, **change)), name


def test_same_release_keeps_the_live_release_name(tmp_path: Path) -> None:
    facts = live_host(tmp_path, OLD)
    s, m, configs = manifest_for(tmp_path, OLD, now=LATER)
    plan = make_plan(s, m, configs, facts)
    assert m.release == "20250305T000000Z-111111111111"
    assert plan.manifest.release == facts.current_release == "20250304T050607Z-111111111111"
    assert plan.manifest.deployed_at == "2025-03-04T05:06:07+00:00"
    assert plan.manifest.key == m.key


def test_new_release_is_named_by_time_and_sha(tmp_path: Path) -> None:
    _, m, _ = manifest_for(tmp_path, replace(OLD, sha=SHA2, tree="tree-2"), now=LATER)
    plan = make_plan(settings(tmp_path, {}), m, {}, live_host(tmp_path, OLD))
    assert plan.new_release
    assert plan.manifest.release == "20250305T000000Z-222222222222"


def test_a_new_commit_with_the_same_tree_is_the_same_release(tmp_path: Path) -> None:
    """The key is the tree, not the commit: an empty commit (or a revert of a revert) changes
    nothing live."""
    s, m, configs = manifest_for(tmp_path, replace(OLD, sha=SHA2), now=LATER)
    plan = make_plan(s, m, configs, live_host(tmp_path, OLD))
    assert plan.nothing_to_do
    assert plan.manifest.release == "20250304T050607Z-111111111111"


def test_new_master_uses_a_venv_other_than_the_running_one(tmp_path: Path) -> None:
    facts = live_host(tmp_path, OLD)
    new = replace(OLD, requirements="flask==3.1.0\ngunicorn==23.0.0\n")
    s, m, configs = manifest_for(tmp_path, new)
    plan = make_plan(s, m, configs, facts)
    running = facts.apps(s.python_app)[0].exec_path
    assert running != f"{m.venv}/bin/gunicorn"
    assert plan.action("python").how == "new-master"
    assert plan.build_venv


def test_venv_already_built_is_not_rebuilt(tmp_path: Path) -> None:
    """A rollforward to requirements whose venv is still on the host reuses it."""
    new = replace(OLD, requirements="flask==3.1.0\ngunicorn==23.0.0\n")
    _, m_new, _ = manifest_for(tmp_path, new)
    facts = live_host(tmp_path, OLD)
    facts.venvs_ready.add(m_new.venv.rsplit("/", 1)[-1])
    s, m, configs = manifest_for(tmp_path, new)
    plan = make_plan(s, m, configs, facts)
    assert plan.action("python").how == "new-master"
    assert not plan.build_venv


def test_node_modules_built_only_for_a_new_lock(tmp_path: Path) -> None:
    s, m, configs = manifest_for(tmp_path, OLD)
    assert not make_plan(s, m, configs, live_host(tmp_path, OLD)).build_node_modules
    s, m, configs = manifest_for(
        tmp_path, replace(OLD, package_lock='{"lockfileVersion": 3, "new": true}')
    )
    assert make_plan(s, m, configs, live_host(tmp_path, OLD)).build_node_modules
    s, m, configs = manifest_for(tmp_path, replace(OLD, package_lock=None))
    assert m.node_modules is None
    assert not make_plan(s, m, configs, live_host(tmp_path, OLD)).build_node_modules


def test_release_key_ignores_local_only_settings(tmp_path: Path) -> None:
    _, a, _ = manifest_for(tmp_path, OLD)
    _, b, _ = manifest_for(
        tmp_path,
        replace(
            OLD, settings={"KEEP_RELEASES": "9", "HEALTH_TIMEOUT": "90", "SOURCE_DIR": "elsewhere"}
        ),
    )
    _, c, _ = manifest_for(tmp_path, replace(OLD, settings={"NODE_ENV": "staging"}))
    assert a.key == b.key
    assert a.key != c.key


def test_manifest_is_deterministic_for_a_fixed_clock(tmp_path: Path) -> None:
    _, a, ca = manifest_for(tmp_path, OLD)
    _, b, cb = manifest_for(tmp_path, OLD)
    assert a == b and ca == cb
    data = json.loads(a.to_json())
    assert data["release"] == "20250304T050607Z-111111111111"
    assert data["deployed_by"] == "ci@runner"
    assert data["venv"].startswith("/home/ubuntu/signalcraft/venvs/")


def test_plan_site_is_the_rendered_site(tmp_path: Path) -> None:
    s, m, configs = manifest_for(tmp_path, OLD)
    plan: Plan = make_plan(s, m, configs, HostFacts())
    assert plan.site == render_nginx_site(s)
    assert set(plan.configs) == {"gunicorn.conf.py", "ecosystem.config.js"}


def test_pruning_keeps_the_good_releases_and_removes_bad_ones_first():
    from signalcraft_deploy.host.releases import prunable

    releases = [f"r{i}" for i in range(1, 9)]  # r1 oldest .. r8 newest
    bad = {"r3", "r6", "r7"}
    # Good: r1 r2 r4 r5 r8 -> keep the newest 3 (r4 r5 r8); bad: keep the newest (r7) as evidence.
    assert prunable(releases, bad, 3, {"r8", "r5"}) == ["r1", "r2", "r3", "r6"]
    # A release a process still runs from, or the previous one, is never removed.
    assert prunable(releases, bad, 3, {"r8", "r2", "r3"}) == ["r1", "r6"]
    # Fewer good releases than KEEP_RELEASES: only bad ones go.
    assert prunable(["a", "b", "c"], {"b"}, 5, {"c"}) == []
    assert prunable(["a", "b", "c", "d"], {"a", "b"}, 5, {"d"}) == ["a"]


def test_a_live_release_whose_site_is_at_the_former_default_is_refused_naming_nginx_site(
    tmp_path: Path,
) -> None:
    """NGINX_SITE's default was .../signalcraft for every app before 0.4.0: a host deployed then,
    now read with the default named after APP_NAME, would get a second site beside the first.
    Refused, naming the key and the file.
    """
    s, m, configs = manifest_for(tmp_path, OLD)
    moved = settings(tmp_path, {**OLD.settings, "APP_NAME": "shop"})
    facts = live_host(tmp_path, OLD, site_text=None)
    with pytest.raises(PlanError, match="NGINX_SITE=/etc/nginx/sites-available/signalcraft") as err:
        make_plan(moved, m, configs, facts)
    assert "Nothing was changed" in str(err.value) and "/etc/nginx/sites-available/shop" in str(
        err.value
    )
    named = settings(
        tmp_path,
        {**OLD.settings, "APP_NAME": "shop", "NGINX_SITE": "/etc/nginx/sites-available/shop"},
    )
    assert (
        make_plan(named, m, configs, facts).action("nginx").how is not How.NONE
    )  # set on purpose: a new site
    assert make_plan(
        moved, m, configs, live_host(tmp_path, OLD, current_release=None, manifest=None)
    )  # a first deploy


def test_apps_under_the_deploy_users_own_pm2_move_to_their_accounts_even_when_nothing_else_changed(
    tmp_path: Path,
) -> None:
    """A host deployed before APP_USER: both apps run under the deploy user's PM2, and its own is
    empty. The same release again is not a no-op: a new master and new Node.js processes start under
    APP_USER's PM2.
    """
    facts = live_host(tmp_path, OLD, user="ubuntu", deploy_pm2=lambda s, m, f: f.pm2, pm2=[])
    s, m, configs = manifest_for(tmp_path, OLD)
    plan = make_plan(s, m, configs, facts)
    assert not plan.nothing_to_do and not unchanged(
        s, release_inputs(s, "tree-1", OLD.requirements, OLD.package_lock, None), facts
    )
    py, node = plan.action("python"), plan.action("nodejs")
    assert (py.how, py.moves, node.how, node.moves) == ("new-master", True, "handover", True)
    assert f"runs under ubuntu's own PM2; it moves to {s.app_user}'s (APP_USER)" in py.why


def test_an_app_already_under_its_accounts_pm2_does_not_move_again(tmp_path: Path) -> None:
    """A split move (Python moved, Node.js not) is finished by the next deploy; one that went wrong
    halfway, where the deploy user's copy is not online, is not moved from."""
    facts = live_host(
        tmp_path,
        OLD,
        deploy_pm2=lambda s, m, f: [p for p in f.pm2 if p.name == s.node_app],
        pm2=lambda s, m, f: [p for p in f.pm2 if p.name == s.python_app],
    )
    s, m, configs = manifest_for(tmp_path, OLD)
    plan = make_plan(s, m, configs, facts)
    assert (plan.action("python").how, plan.action("nodejs").how, plan.action("nodejs").moves) == (
        "none",
        "handover",
        True,
    )
    stopped = live_host(
        tmp_path, OLD, deploy_pm2=lambda s, m, f: node_procs(s, 2, status="stopped")
    )
    assert make_plan(s, m, configs, stopped).nothing_to_do


def test_tool_file_only_deploys_move_current_and_prune_keeps_the_release_the_apps_run(
    tmp_path: Path,
) -> None:
    """Three deploys that change deploy.env alone: each makes a release and moves `current`,
    reloading nothing, so both apps still run the first release. With KEEP_RELEASES=2 pruning would
    remove it (it is neither current nor previous, and the apps' account's cwds cannot be read): the
    manifest's python_release/node_release protect it.
    """
    import re

    from invoke import Result

    from signalcraft_deploy.host.releases import prune
    from tests.unit.conftest import mock_host

    facts = live_host(tmp_path, LIVE)
    first = facts.current_release
    assert first is not None
    for n in range(3):
        src = files(deploy_env=f"e{n}")
        s, m, configs = manifest_for(
            tmp_path,
            replace(src, sha=f"{n + 3}" * 40, tree=f"tree-{n + 3}"),
            now=LATER + timedelta(minutes=n),
        )
        plan = make_plan(s, m, configs, facts, changed_paths(src.files, LIVE.files))
        assert [a.how for a in plan.actions] == [How.NONE, How.NONE, How.NONE] and plan.new_release
        assert (plan.manifest.python_release, plan.manifest.node_release) == (first, first)
        facts.releases.append(plan.manifest.release)
        facts.current_release = plan.manifest.release
        facts.manifest = json.loads(plan.manifest.to_json())
    newest, before = facts.releases[-1], facts.releases[-2]
    listing = "\n".join(facts.releases) + "\n@@\n@@\n"
    c = mock_host(
        run={re.compile(r"ls -1 .*"): Result(listing), re.compile(r"rm -rf .*"): Result("")},
        repeat=True,
    )
    m = plan.manifest
    removed = prune(
        c, replace(s, keep_releases=2), 2, newest, before, (m.python_release, m.node_release)
    )
    assert first not in removed and removed == [facts.releases[1]]


def test_a_deploy_into_a_deploy_root_another_environment_deployed_is_refused(
    tmp_path: Path,
) -> None:
    """`init --environments` on one host: staging's file left without a DEPLOY_ROOT of its own
    would deploy staging into production's. The live release records its environment; another one
    is refused, naming the way out; the same one, or none named, plans as always."""
    s, m, configs = manifest_for(tmp_path, OLD)
    production = live_host(tmp_path, OLD)
    assert production.manifest is not None
    production.manifest["environment"] = "production"
    staging = replace(s, environment="staging", environment_file="deploy.staging.env")
    with pytest.raises(PlanError, match="environment 'production'") as err:
        make_plan(staging, m, configs, production)
    assert "deploy.staging.env its own DEPLOY_ROOT" in str(err.value)
    assert "--environment production" in str(err.value)
    assert make_plan(replace(s, environment="production"), m, configs, production)
    assert make_plan(s, m, configs, production)
    new, _ = make_manifest(
        replace(s, environment="staging"),
        sha="a" * 40,
        tree="t",
        python_code="p",
        node_code="n",
        requirements="flask\n",
        package_lock=None,
        app_env_digest=None,
        who="ci@runner",
    )
    assert new.environment == "staging"
