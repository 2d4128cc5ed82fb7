"""What runs is what was deployed. Every change reaches the app that reads it, secrets belong
to a release, shared data outlives releases, Node.js apps as people write them (entry point from
package.json, ES modules), and a failing app's own error is shown under its own name.

A small app of each kind, written here: Flask reading a JSON file and its .env at import and keeping
notes in SQLite under instance/; a plain Node.js http server started from `bin/www` (package.json's
`start` script, no NODE_SCRIPT), reading `public/hello.txt` on every request and its .env at start.
Each change is one commit; what is asserted is what a user sees through Nginx.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    APP_HOME,
    AppRepo,
    Profile,
    clean_host,
    e2e_load,
    fab,
    get,
    pm2_apps,
    pm2_jlist,
    sh,
)

P = Profile(
    "changes",
    "/home/ubuntu/changes",
    7101,
    7111,
    7121,
    extra={"PY_ROUTES": "api/flask", "NODE_INSTANCES": "2"},
)
ESM = Profile("esm", "/home/ubuntu/esm", 7131, 7141, 7151, extra={"PY_ROUTES": "api/flask"})

APP_PY = '''\
import json
import os
import sqlite3
from pathlib import Path

from flask import Flask, jsonify, request

HERE = Path(__file__).resolve().parent
DATA = json.loads((HERE / "data" / "api.json").read_text())  # read once, at import


def _env():
    """The release's .env, read at import (as python-dotenv would)."""
    found = {}
    path = HERE / ".env"
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                found[key.strip()] = value.strip()
    return found


ENV = _env()
RELEASE = (HERE / "REVISION").read_text().strip() if (HERE / "REVISION").exists() else "dev"


def _db():
    (HERE / "instance").mkdir(exist_ok=True)
    db = sqlite3.connect(HERE / "instance" / "notes.sqlite")
    db.execute("create table if not exists notes (text text)")
    return db


def create_app():
    app = Flask(__name__)

    @app.get("/api/flask/health")
    def health():
        return jsonify(status="ok", release=RELEASE)

    @app.get("/api/flask/data")
    def data():
        return jsonify(DATA)

    @app.get("/api/flask/secret")
    def secret():
        return jsonify(secret=ENV.get("SECRET_KEY", ""))

    @app.route("/api/flask/notes", methods=["GET", "POST"])
    def notes():
        with _db() as db:
            if request.method == "POST":
                db.execute("insert into notes values (?)", (request.args["text"],))
            return jsonify(notes=[row[0] for row in db.execute("select text from notes")])

    @app.after_request
    def tag(response):
        response.headers["X-Release"] = RELEASE
        return response

    return app
'''

# A plain http server in PM2's cluster mode that shuts down gracefully (as
# examples/signalcraft/server.js does).
BIN_WWW = """\
#!/usr/bin/env node
'use strict';
const cluster = require('cluster');
const fs = require('fs');
const http = require('http');
const path = require('path');

const ROOT = path.join(__dirname, '..');
const VERSION = "www-1";
function readEnv() {
  const found = {};
  try {
    for (const line of fs.readFileSync(path.join(ROOT, '.env'), 'utf8').split('\\n')) {
      const at = line.indexOf('=');
      if (at > 0) found[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  } catch (err) { /* no .env */ }
  return found;
}
const ENV = readEnv();
let RELEASE = 'dev';
try { RELEASE = fs.readFileSync(path.join(ROOT, 'REVISION'), 'utf8').trim(); } catch (err) { /* dev */ }
let closing = false;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x').pathname;
  let body;
  if (url === '/hello') body = fs.readFileSync(path.join(ROOT, 'public', 'hello.txt'), 'utf8');  // on every request
  else if (url === '/secret') body = JSON.stringify({ secret: ENV.SECRET_KEY || '' });
  else body = JSON.stringify({ app: 'nodejs', version: VERSION, release: RELEASE });
  const headers = { 'X-Release': RELEASE, 'Content-Length': Buffer.byteLength(body) };
  if (closing) headers.Connection = 'close';
  res.on('finish', () => closing && server.closeIdleConnections());
  res.writeHead(200, headers);
  res.end(body);
});
server.keepAliveTimeout = 65000;
function shutdown() {
  if (closing) return;
  closing = true;
  setTimeout(() => process.exit(1), 10000).unref();
  server.close(() => {
    if (!cluster.isWorker || !process.connected) process.exit(0);
    cluster.worker.once('disconnect', () => process.exit(0));
    cluster.worker.disconnect();
  });
  server.closeIdleConnections();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
process.on('message', (msg) => msg === 'shutdown' && shutdown());
server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
"""

PACKAGE = {
    "name": "changes-app",
    "version": "1.0.0",
    "private": True,
    "scripts": {"start": "node ./bin/www"},
}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


class ThrowawayRepo(AppRepo):
    """A git repository with an app written here instead of the example's."""

    def __init__(self, path: Path, files: dict[str, str]):
        self.path = path
        path.mkdir(parents=True)
        write(path, files)
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-qm", "app")

    def put(self, name: str, text: str, message: str) -> None:
        """One commit that changes only this file."""
        write(self.path, {name: text})
        self.git("add", "-A")
        self.git("commit", "-qm", message)
        assert self.git("show", "--name-only", "--format=", "HEAD").split() == [name]

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()


def app_files() -> dict[str, str]:
    return {
        "app.py": APP_PY,
        "requirements.txt": "Flask==3.1.3\ngunicorn==27.0.1\n",
        "data/api.json": '{"answer": 1}\n',
        "bin/www": BIN_WWW,
        "public/hello.txt": "hello 1\n",
        "package.json": json.dumps(PACKAGE, indent=2) + "\n",
    }


def text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def current(p: Profile) -> str:
    return Path(p.root, "current").resolve().name


def ok(result) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def profile_with(p: Profile, **extra: str) -> Profile:
    return Profile(p.app, p.root, p.bind, p.node, p.listen, extra={**p.extra, **extra})


@pytest.fixture(scope="module")
def app(sandbox, tmp_path_factory):
    """The app deployed once under the changes profile, its secret in APP_ENV_FILE."""
    base = tmp_path_factory.mktemp("changes")
    repo = ThrowawayRepo(base / "app", app_files())
    env_file = base / "app.env"
    env_file.write_text("SECRET_KEY=first\n")
    clean_host(P)
    profile = profile_with(P, APP_ENV_FILE=str(env_file))
    out = ok(fab(sandbox, profile, repo))
    assert "python: start, nodejs: start" in out
    yield repo, profile, env_file
    clean_host(P)


def test_node_serves_a_changed_text_file_it_reads_on_each_request(sandbox, app):
    repo, p, _ = app
    assert text(p.url("/hello")) == "hello 1\n"
    repo.put("public/hello.txt", "hello 2\n", "only the text file")
    out = ok(fab(sandbox, p, repo))
    # the file may be read by either app, so it reaches both
    assert "changes-nodejs: handover" in out
    assert text(p.url("/hello")) == "hello 2\n"


def test_the_entry_point_without_a_suffix_is_found_and_reloaded(sandbox, app):
    repo, p, _ = app
    running = [proc for proc in pm2_jlist() if proc["name"] == "changes-nodejs"]
    assert running and all(
        proc["pm2_env"]["pm_exec_path"].endswith("/current/bin/www") for proc in running
    )
    repo.put("bin/www", BIN_WWW.replace('"www-1"', '"www-2"'), "only the entry point")
    dry = ok(fab(sandbox, p, repo, "--dry-run"))
    assert (
        "files it reads changed: bin/www" in dry
        and "entry bin/www (package.json scripts.start" in dry
    )
    out = ok(fab(sandbox, p, repo))
    assert "changes-nodejs: handover" in out
    assert get(p.url("/"))[2]["version"] == "www-2"


def test_python_serves_a_changed_json_file_it_reads_at_import(sandbox, app):
    repo, p, _ = app
    assert get(p.url("/api/flask/data"))[2] == {"answer": 1}
    repo.put("data/api.json", '{"answer": 2}\n', "only the JSON file")
    out = ok(fab(sandbox, p, repo))
    assert "changes-python: hup" in out
    assert get(p.url("/api/flask/data"))[2] == {"answer": 2}


def processes(p: Profile) -> dict[str, object]:
    """What a reload would change: each PM2 process's pid and restart count, and Gunicorn's workers
    (a HUP replaces them while the master's pid stays)."""
    procs = {
        (item["name"], item["pm2_env"]["pm_id"]): (item["pid"], item["pm2_env"]["restart_time"])
        for item in pm2_jlist()
        if item["name"] in (f"{p.app}-python", f"{p.app}-nodejs")
    }
    master = next(pid for (name, _), (pid, _) in procs.items() if name == f"{p.app}-python")
    workers = sorted(sh(f"ps -o pid= --ppid {master}").stdout.split())
    assert workers, "Gunicorn has no workers"
    return {"pm2": procs, "workers": workers}


def test_the_tools_own_files_reload_no_app_and_javascript_is_nodes_own(sandbox, app):
    """deploy.env and a template of TEMPLATES_DIR are the tool's: a commit of them alone moves
    `current` and reloads nothing. Two such deploys with KEEP_RELEASES=2 keep the release the apps
    still run. An index.js reaches Node.js alone: Gunicorn keeps its workers. A committed
    node_modules/ is refused before the host is touched, naming the fix."""
    repo, p, _ = app
    running, before = current(p), processes(p)
    served_before = (get(p.url("/api/flask/data"))[2], text(p.url("/hello")))
    templates = repo.path / "deploy-templates"
    bundled = Path(__file__).resolve().parents[2] / "templates" / "gunicorn.conf.py.j2"
    repo.put("deploy.env", "# this app's deploy settings\n", "only deploy.env")
    repo.put(
        "deploy-templates/gunicorn.conf.py.j2",
        "{# our copy #}\n" + bundled.read_text(),
        "only a template",
    )
    tool_only = profile_with(p, TEMPLATES_DIR=str(templates), KEEP_RELEASES="2")
    out = ok(fab(sandbox, tool_only, repo))
    assert "python: none, nodejs: none" in out, out
    repo.put("deploy.env", "# this app's deploy settings, again\n", "only deploy.env again")
    out = ok(fab(sandbox, tool_only, repo))
    assert "python: none, nodejs: none" in out, out
    assert (
        current(p) != running and processes(p) == before
    )  # same pids, restart counts and Gunicorn workers
    assert Path(
        p.root, "releases", running
    ).is_dir()  # neither current nor previous, but what the apps run
    assert (get(p.url("/api/flask/data"))[2], text(p.url("/hello"))) == served_before

    repo.put(
        "index.js", "module.exports = 'not the entry point, but Node.js code';\n", "only index.js"
    )
    out = ok(fab(sandbox, p, repo))
    assert "python: none, nodejs: handover" in out, out
    after = processes(p)
    assert after["workers"] == before["workers"]  # Gunicorn was not HUPed
    # The restart counts PM2 has now (new processes after the handover; a rolling reload, with
    # NODE_RELOAD=reload, counts one restart each) are recorded, and `status` counts crashes from
    # them (tests/unit/test_status.py).
    recorded = json.loads(Path(p.root, ".deploy/restarts.json").read_text())
    node = {
        str(item["pm2_env"]["pm_id"]): item["pm2_env"]["restart_time"]
        for item in pm2_jlist()
        if item["name"] == f"{p.app}-nodejs"
    }
    assert recorded[f"{p.app}-nodejs"] == node, (recorded, node)

    served, audit = current(p), Path(p.root, ".deploy/audit.log").read_text()
    write(repo.path, {"node_modules/left-pad/index.js": "module.exports = 1;\n"})
    repo.git("add", "-A")
    repo.git("commit", "-qm", "node_modules committed")
    result = fab(sandbox, p, repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "git rm -r --cached node_modules && echo node_modules/ >> .gitignore" in result.stderr, (
        result.stderr
    )
    assert "connect" not in result.stdout  # stopped before the host was touched
    assert current(p) == served and Path(p.root, ".deploy/audit.log").read_text() == audit
    repo.git("reset", "-q", "--hard", "HEAD~1")


def test_a_new_secret_is_in_effect_in_both_apps_and_no_request_fails(sandbox, app):
    repo, p, env_file = app
    assert get(p.url("/api/flask/secret"))[2]["secret"] == "first"
    assert get(p.url("/secret"))[2]["secret"] == "first"
    env_file.write_text("SECRET_KEY=second\n")
    with e2e_load(
        [p.url("/api/flask/secret"), p.url("/secret")],
        threads=3,
        max_requests=20_000,
        max_seconds=120,
    ) as load:
        time.sleep(0.5)
        out = ok(fab(sandbox, p, repo))
        time.sleep(0.5)
    result = load.result()
    assert "changes-python: hup, changes-nodejs: handover" in out
    assert "SECRET_KEY" not in out and "second" not in out
    assert result.total > 100 and result.failed == 0, result.samples
    assert get(p.url("/api/flask/secret"))[2]["secret"] == "second"
    assert get(p.url("/secret"))[2]["secret"] == "second"
    env = Path(p.root, "current/.env")
    assert (
        not env.is_symlink() and oct(env.stat().st_mode & 0o777) == "0o640"
    )  # ubuntu's, read by the apps' group


def test_a_failed_deploy_with_a_new_secret_leaves_the_old_one_and_rollback_restores_it(
    sandbox, app
):
    repo, p, env_file = app
    before, base = current(p), repo.head()
    env_file.write_text("SECRET_KEY=never\n")
    repo.put("app.py", APP_PY + "\nimport does_not_exist_anywhere\n", "broken import")
    result = fab(sandbox, p, repo)
    assert result.returncode != 0
    assert "does_not_exist_anywhere" in result.stdout + result.stderr
    assert current(p) == before
    ok(
        fab(sandbox, p, None, task="pm2-reload")
    )  # a HUP of the old release must not pick the new secret up
    assert get(p.url("/api/flask/secret"))[2]["secret"] == "second"
    assert get(p.url("/secret"))[2]["secret"] == "second"
    repo.git("reset", "-q", "--hard", base)
    env_file.write_text("SECRET_KEY=third\n")
    ok(fab(sandbox, p, repo))
    assert get(p.url("/api/flask/secret"))[2]["secret"] == "third"
    out = ok(fab(sandbox, p, None, task="rollback"))
    assert current(p) == before, out
    assert get(p.url("/api/flask/secret"))[2]["secret"] == "second"
    assert get(p.url("/secret"))[2]["secret"] == "second"


def test_a_shared_instance_folder_keeps_its_sqlite_database_across_deploys_and_a_rollback(
    sandbox, app
):
    repo, p, env_file = app
    env_file.write_text("SECRET_KEY=second\n")
    ok(fab(sandbox, p, repo))  # back on the newest commit after the rollback
    # The release is read-only to the apps' own account: an app that writes into its own folder
    # needs SHARED_PATHS.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(p.url("/api/flask/notes?text=before-sharing"), method="POST"),
            timeout=5,
        )
    assert refused.value.code == 500
    shared = profile_with(p, SHARED_PATHS="instance/")
    notes: list[str] = []
    for n in range(3):
        repo.put(
            "data/api.json", f'{{"answer": {10 + n}}}\n', f"deploy {n + 1} with instance/ shared"
        )
        ok(fab(sandbox, shared, repo))
        assert get(p.url("/api/flask/notes"))[2]["notes"] == notes, (
            n
        )  # the first of them moved the live data
        urllib.request.urlopen(
            urllib.request.Request(p.url(f"/api/flask/notes?text=n{n}"), method="POST"), timeout=5
        )
        notes.append(f"n{n}")
    assert Path(p.root, "current/instance").is_symlink()
    assert Path(p.root, "shared/instance/notes.sqlite").is_file()
    ok(fab(sandbox, shared, None, task="rollback"))
    assert get(p.url("/api/flask/data"))[2] == {"answer": 11}
    assert get(p.url("/api/flask/notes"))[2]["notes"] == notes
    status = ok(fab(sandbox, shared, None, task="status"))
    assert "shared    instance/ " in status and "kB" in status, status


def test_a_handover_whose_node_app_cannot_start_shows_that_apps_own_error(sandbox, app):
    repo, p, _ = app
    before, base = current(p), repo.head()
    repo.put(
        "bin/www",
        "require('http-errors');\n" + BIN_WWW.split("\n", 1)[1],
        "needs a module that is not installed",
    )
    # Instances changed: a handover, not a reload. PY_FILES keeps bin/www (which may reach both
    # apps) from Gunicorn, so this deploy touches Node.js alone and only its output may be shown.
    result = fab(sandbox, profile_with(p, NODE_INSTANCES="3", PY_FILES="*.py"), repo)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "changes-nodejs: handover" in out or "nodejs: handover" in out
    assert "Cannot find module 'http-errors'" in out, out
    cause = out.index("Cannot find module 'http-errors'")
    assert "changes-nodejs" in out[max(0, cause - 600) : cause], (
        out
    )  # shown under the app's own name
    assert "last output of changes-python" not in out and "[INFO]" not in out
    assert current(p) == before
    assert sorted(pm2_apps("changes")) == ["changes-nodejs", "changes-python"]
    repo.git("reset", "-q", "--hard", base)


# ----------------------------------------------------------------------------- an ES module package


ESM_SERVER = """\
import http from 'node:http';
import { readFileSync } from 'node:fs';

const VERSION = "esm-1";
let RELEASE = 'dev';
try { RELEASE = readFileSync(new URL('./REVISION', import.meta.url), 'utf8').trim(); } catch { /* dev */ }
const server = http.createServer((req, res) => {
  res.setHeader('X-Release', RELEASE);
  res.end(JSON.stringify({ version: VERSION, release: RELEASE }));
});
process.on('SIGINT', () => server.close(() => process.exit(0)));
server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
"""


@pytest.fixture
def esm_repo(sandbox, tmp_path):
    files = app_files()
    del files["bin/www"]
    files.update(
        {
            "server.js": ESM_SERVER,
            "package.json": (
                json.dumps(
                    {
                        "name": "esm-app",
                        "version": "1.0.0",
                        "private": True,
                        "type": "module",
                        "main": "server.js",
                    }
                )
                + "\n"
            ),
        }
    )
    clean_host(ESM)
    yield ThrowawayRepo(tmp_path / "esm", files)
    clean_host(ESM)


def test_an_es_module_node_app_deploys_reloads_and_rolls_back(sandbox, esm_repo):
    repo = esm_repo
    out = ok(fab(sandbox, ESM, repo))
    first = current(ESM)
    assert Path(ESM.root, "current/ecosystem.config.cjs").is_file()
    assert not Path(ESM.root, "current/ecosystem.config.js").exists()
    assert get(ESM.url("/"))[2]["version"] == "esm-1", out
    repo.put("server.js", ESM_SERVER.replace('"esm-1"', '"esm-2"'), "esm v2")
    out = ok(fab(sandbox, ESM, repo))
    assert "esm-nodejs: handover" in out
    assert get(ESM.url("/"))[2] == {"version": "esm-2", "release": current(ESM)}
    ok(fab(sandbox, ESM, None, task="rollback"))
    assert current(ESM) == first
    assert get(ESM.url("/"))[2]["version"] == "esm-1"
    # Listening on every interface is warned about (Nginx should be the only way in). A rolling
    # reload cannot move a cluster from 127.0.0.1 to 0.0.0.0 on the same port (EADDRINUSE): new
    # processes, by a handover.
    repo.put(
        "server.js",
        ESM_SERVER.replace("process.env.HOST || '127.0.0.1'", "'0.0.0.0'"),
        "listen everywhere",
    )
    public = profile_with(ESM, NODE_INSTANCES="3")
    gone = [item["pm2_env"]["pm_id"] for item in pm2_jlist() if item["name"] == "esm-nodejs"]
    assert "esm-nodejs: handover" in ok(fab(sandbox, public, repo))
    # New processes, new pm_ids: the per-pm_id logs of the replaced ones are removed (the live ones'
    # stay).
    live = [item["pm2_env"]["pm_id"] for item in pm2_jlist() if item["name"] == "esm-nodejs"]
    logs = sh(f"ls {APP_HOME}/.pm2/logs").stdout.split()
    assert gone and not [
        f for f in logs if any(f.startswith(f"esm-nodejs-out-{n}.") for n in gone)
    ], logs
    assert all(f"esm-nodejs-out-{n}.log" in logs for n in live), logs
    check = fab(sandbox, public, None, task="nginx-check")
    assert "esm-nodejs listens on 0.0.0.0:7141, beyond loopback" in check.stdout + check.stderr
