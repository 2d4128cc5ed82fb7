"""Adoption: the tool as a user gets it, used from an app's own repository.

The wheel built from this checkout is installed into a fresh venv outside the repository (the tool's
venv, built once for the module): the wheel is the library, it finds its templates and remote
programs, lists its tasks and answers as `signalcraft-deploy`. A copy of examples/signalcraft in a
temporary folder, with a venv of its own for the app's dependencies, is where every command runs,
with no file of this checkout present. There: `init` and commit; `invoke --list`; `invoke freeze
--check` against the app's venv (not the tool's); the written workflow passes GitHub's schema;
requirements.txt names none of the tool's dependencies; a second `init` changes nothing.

First day: the tests' own app (not shaped like the example), with its own venv: `init --vendor`
reads it, and the workflow it wrote, its `run:` steps taken in a fresh venv from a clean clone,
deploys it to the sandbox host with deploy.env as init wrote it.

Upgrade: a host deployed by the previous release of the tool (commit bd73369, the checkout before
the package: `git archive`, its requirements in a venv, its `fab` run from that checkout with
--source-dir) is then deployed by this one without error, and rolled back to the old release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from signalcraft_deploy import __version__
from signalcraft_deploy.core import formats, render
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy.tasks.init import SETTINGS_FILE, WORKFLOW, set_key
from tests.e2e.conftest import (
    EXAMPLE,
    NOT_SOURCE,
    REPO,
    AppRepo,
    Profile,
    Sandbox,
    add_deploy_user,
    clean_host,
    e2e_load,
    get,
    host_wheels,
    pm2_jlist,
    sh,
)
from tests.e2e.hosts import on_this_machine

PREVIOUS = "bd73369"  # the last commit before the package existed
TOOL_DEPENDENCIES = ("fabric", "invoke", "paramiko", "jinja2", "python-dotenv", "crossplane")
UPGRADE_USER = (  # the previous release needed full sudo: a deploy user of its own that has it
    "upgrader"
)
# Its apps move to an account of their own on the first deploy by this version (ubuntu's setup
# recorded signalcraft).
UPGRADE = Profile(
    "upgraded",
    f"/home/{UPGRADE_USER}/upgraded",
    bind=7431,
    node=7441,
    listen=7451,
    extra={"APP_USER": "upgraded"},
)


PACKAGE = REPO / "signalcraft_deploy"
# What the wheel must carry besides modules: the same globs as pyproject.toml's package-data.
DATA_GLOBS = ("templates/*.j2", "templates/init/*.j2", "remote/*.py", "remote/*.js", "remote/*.sh")

# Run by the tool venv's Python from an empty folder: what the installed package sees.
PROBE = r"""
import json, os, sys
from importlib.metadata import version
from pathlib import Path

import signalcraft_deploy
from signalcraft_deploy.collection import ns
from signalcraft_deploy.core import render
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy import remote
from signalcraft_deploy.host import facts

package = Path(signalcraft_deploy.__file__).parent
s = load_settings(environ={}, cwd=os.getcwd())
print(json.dumps({
    "file": signalcraft_deploy.__file__,
    "sys_path": sys.path,
    "version": signalcraft_deploy.__version__,
    "dist_version": version("signalcraft-deploy"),
    "tasks": sorted(ns.task_names),
    "templates_dir": str(render.BUNDLED_TEMPLATES),
    "data": sorted(str(p.relative_to(package)) for g in sys.argv[1:] for p in package.glob(g)),
    "gunicorn_conf": render.render_gunicorn_conf(s),
    "ecosystem": render.render_ecosystem(s, render.venv_dir(s, "")),
    "nginx_site": render.render_nginx_site(s),
    "pm2_rpc_js": len(facts.PM2_RPC_JS),
    "probe_py": len(remote.program("probe")),
}))
"""


def user_env(tool: Path, **extra: str) -> dict[str, str]:
    """A shell with the tool's venv activated, as a user has it: its bin first, no PYTHONPATH, no
    settings."""
    drop = {
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "ENV_FILE",
        "KNOWN_HOSTS",
        "LOCAL_VENV",
        "SOURCE_DIR",
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("APP_", "GUNICORN_", "NODE_", "NGINX_"))
    }
    return {
        **env,
        "PATH": f"{tool / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": str(tool),
        **extra,
    }


def run(
    args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    with on_this_machine():  # the developer's machine: its own venvs, pip and fab
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def own_python_env() -> dict[str, str]:
    """This run's environment without what would point a venv's Python at this checkout or another
    venv."""
    return {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }


def _pip(python: str | Path, args: list[str | Path], cwd: Path) -> str:
    """pip's output, on this machine: a failure names what pip said (a range nothing satisfies, an
    index that cannot be reached)."""
    return ok(
        run([python, "-m", "pip", *args, "--disable-pip-version-check"], cwd, own_python_env())
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tool's venv: the wheel built from this checkout, installed with its dependencies from the
    index."""
    root = tmp_path_factory.mktemp("tool")
    assert not root.resolve().is_relative_to(REPO)
    shutil.copytree(REPO, root / "source", ignore=NOT_SOURCE)
    _pip(
        sys.executable, ["wheel", "--no-deps", "-q", "-w", root / "dist", "."], root / "source"
    )  # on this machine,
    wheels = [w.name for w in (root / "dist").glob("*.whl")]  # which reaches the package index
    assert wheels == [f"signalcraft_deploy-{__version__}-py3-none-any.whl"]
    venv.create(root / "venv", with_pip=True)
    _pip(
        root / "venv/bin/python", ["install", "-q", root / "dist" / wheels[0]], root
    )  # the dependencies from the index
    return root / "venv"


@pytest.fixture(scope="module")
def probe(tool: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    empty = tmp_path_factory.mktemp("empty")  # no .env, no fabfile.py: the defaults
    return json.loads(
        ok(run([tool / "bin" / "python", "-c", PROBE, *DATA_GLOBS], empty, own_python_env()))
    )


def test_the_installed_package_is_imported_not_the_checkout(probe: dict, tool: Path) -> None:
    assert Path(probe["file"]).resolve().is_relative_to(tool.resolve())
    assert not any(p and Path(p).resolve() == REPO for p in probe["sys_path"])


def test_the_distribution_version_is_the_package_version_and_the_collection_has_the_tasks(
    probe: dict,
) -> None:
    assert probe["version"] == probe["dist_version"] == __version__
    assert {"deploy", "freeze", "rollback", "status"} <= set(probe["tasks"])


def test_every_template_and_remote_program_is_installed_and_renders_as_the_checkout_s(
    probe: dict, tool: Path, tmp_path: Path
) -> None:
    in_checkout = sorted(
        # The templates sit at the top of the checkout; the wheel has them in the package.
        str(p.relative_to(REPO if g.startswith("templates/") else PACKAGE))
        for g in DATA_GLOBS
        for p in (REPO if g.startswith("templates/") else PACKAGE).glob(g)
    )
    assert probe["data"] == in_checkout
    assert Path(probe["templates_dir"]).resolve().is_relative_to(tool.resolve())
    assert probe["pm2_rpc_js"] > 0 and probe["probe_py"] > 0
    s = load_settings(environ={}, cwd=str(tmp_path))
    assert probe["gunicorn_conf"] == render.render_gunicorn_conf(s)
    assert probe["ecosystem"] == render.render_ecosystem(s, render.venv_dir(s, ""))
    assert probe["nginx_site"] == render.render_nginx_site(s)
    assert "bind = ['127.0.0.1:8001']" in probe["gunicorn_conf"]


def test_the_console_script_and_a_one_line_fabfile_list_the_tasks_with_no_checkout(
    tool: Path, tmp_path: Path
) -> None:
    env = user_env(tool)
    assert (
        ok(run([tool / "bin/signalcraft-deploy", "--list"], tmp_path, env)).count("  deploy ") == 1
    )
    (tmp_path / "fabfile.py").write_text("from signalcraft_deploy import ns  # noqa: F401\n")
    assert "  rollback " in ok(run([tool / "bin/fab", "--list"], tmp_path, env))


def app_venv(app: Path) -> Path:
    """The app's own venv, SOURCE_DIR/.venv (git-ignored): its requirements, nothing of the tool."""
    venv.create(app / ".venv", with_pip=True)
    wheels = host_wheels(
        (app / "requirements.txt").read_text()
    )  # the run's wheels of these requirements
    _pip(
        app / ".venv/bin/python",
        ["install", "-q", "--no-index", "--find-links", wheels, "-r", app / "requirements.txt"],
        app,
    )
    return app / ".venv"


# The example's Flask app answers every path (a catch-all `/` rule), so init gives it `/`: its user
# names the routes.
EXAMPLE_ROUTES = {
    "ROUTES": (
        "/api/ai=python,/api/iot=python,/api/lightweight-analyze=python,/api/flask=python,/=nodejs"
    ),
    "MOUNTS": "",
    "HEALTH_NODE": "/",
}  # init's /node placeholder (and its mount) replaced


def profile_settings(app: AppRepo, p: Profile) -> None:
    """What a user does after init: set the first-deploy keys in deploy.env for their host, and
    commit."""
    path = app.path / SETTINGS_FILE
    text = path.read_text()
    for key, value in {**EXAMPLE_ROUTES, **p.settings()}.items():
        text = set_key(text, key, value)
    path.write_text(text)
    app.git("add", "-A")
    app.git("commit", "-qm", "deploy settings for this host")


def init_and_commit(tool: Path, app: AppRepo) -> str:
    out = ok(run([tool / "bin/signalcraft-deploy", "init"], app.path, user_env(tool)))
    app.git("add", "-A")
    app.git("commit", "-qm", "signalcraft-deploy init")
    return out


def deploy(sb: Sandbox, tool: Path, app: AppRepo, *args: str) -> subprocess.CompletedProcess[str]:
    env = user_env(tool, KNOWN_HOSTS=sb.known_hosts)
    return run(["fab", "-H", sb.target, "-i", sb.key, *args], app.path, env, timeout=600)


def host_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def answers(p: Profile, release: str, node_release: str | None = None) -> None:
    """Both apps answer through Nginx: Flask from `release`, Node.js from `node_release` (default:
    the same)."""
    status, headers, body = get(p.url("/api/flask/health"))
    assert (status, body.get("status"), body.get("release")) == (200, "ok", release), (status, body)
    status, headers, body = get(p.url("/"))
    assert (status, body.get("app"), body.get("release")) == (
        200,
        "nodejs",
        node_release or release,
    ), (status, body)


@pytest.fixture(scope="module")
def adopted(tool: Path, tmp_path_factory: pytest.TempPathFactory):
    """The example app in a folder of its own, after `init`, commit and its own venv."""
    app = AppRepo(tmp_path_factory.mktemp("adopt") / "app")
    said = init_and_commit(tool, app)
    app_venv(app.path)
    return app, said


def test_init_writes_the_files_and_invoke_and_fab_list_the_tasks(adopted, tool: Path) -> None:
    app, said = adopted
    for path in ("fabfile.py", "tasks.py", SETTINGS_FILE, WORKFLOW):
        assert f"wrote     {path}\n" in said
    assert (
        "+/rendered/\nupdated   .gitignore\n" in said
    )  # the example's own .gitignore, the missing lines added
    assert (
        (app.path / ".gitignore").read_text()
        == (EXAMPLE / ".gitignore").read_text()
        + "# installed packages, venvs, bytecode, render-configs' output: never part of a release\n"
        + "venv/\n__pycache__/\n/rendered/\n"
    )
    assert not (app.path / "signalcraft_deploy").exists() and not app.path.resolve().is_relative_to(
        REPO
    )
    env = user_env(tool)
    for program in ("invoke", "fab"):
        listing = ok(run([program, "--list"], app.path, env))
        assert "  freeze " in listing and "  deploy " in listing and "  init " in listing
    where = ok(
        run(
            ["python", "-c", "import signalcraft_deploy; print(signalcraft_deploy.__file__)"],
            app.path,
            env,
        )
    )
    assert Path(where.strip()).resolve().is_relative_to(tool.resolve())
    assert (
        ok(run(["signalcraft-deploy", "--version"], app.path, env)).splitlines()[0]
        == f"signalcraft-deploy {__version__}"
    )


def test_freeze_pins_from_the_app_s_venv_and_no_tool_dependency_enters_requirements(
    adopted, tool: Path
) -> None:
    app, _ = adopted
    env = user_env(
        tool
    )  # the tool's venv is the activated one: freeze must still read the app's .venv
    out = ok(run(["invoke", "freeze", "--check"], app.path, env))
    assert (
        f"versions from {app.path / '.venv'} (SOURCE_DIR/.venv)" in out
        and "requirements.txt is up to date" in out
    )
    names = [
        line.split("==")[0].strip().lower()
        for line in (app.path / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert names == ["flask", "gunicorn"] and not set(names) & set(TOOL_DEPENDENCIES)
    refused = run(["invoke", "freeze", "--all", "--venv", str(tool)], app.path, env)
    assert refused.returncode == 1 and "holds signalcraft-deploy itself" in refused.stderr


def test_the_written_workflow_passes_github_s_schema(adopted) -> None:
    app, _ = adopted
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema (requirements.txt) is not on PATH"
    out = ok(
        subprocess.run(
            [checker, "--builtin-schema", "vendor.github-workflows", str(app.path / WORKFLOW)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    )
    assert "ok -- validation done" in out
    assert '        run: fab -H "ubuntu@$EC2_HOST" deploy\n' in (app.path / WORKFLOW).read_text()


def test_a_second_init_changes_nothing(adopted, tool: Path) -> None:
    app, _ = adopted
    before = app.git("rev-parse", "HEAD")
    out = ok(run(["signalcraft-deploy", "init"], app.path, user_env(tool)))
    assert "Nothing written" in out and "wrote" not in out and "replaced" not in out
    assert (
        app.git("status", "--porcelain", "--untracked-files=all") == ""
        and app.git("rev-parse", "HEAD") == before
    )


# --- the first day of an app nobody shaped for the tool, deployed by the workflow init wrote
# -----------------------

FIRSTDAY_APP = REPO / "tests/e2e/apps/firstday"
FIRSTDAY = Profile("firstday", "/home/ubuntu/firstday", bind=7461, node=7471, listen=7491)
APP_ENV_SECRET = "GREETING=hello from the APP_ENV secret\nAPI_TOKEN=tok-4412"


def workflow_steps(workflow: Path) -> list[dict]:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(workflow.read_text())["jobs"]["deploy"]["steps"]


def run_workflow(
    workflow: Path,
    checkout: Path,
    python: Path,
    secrets: dict[str, str],
    job_env: dict[str, str],
    home: Path,
) -> list[str]:
    """The workflow's steps as a runner would take them, without GitHub: `actions/checkout` is
    `checkout` (a clean clone), `actions/setup-python` is `python` (a fresh venv) first on PATH;
    each `run:` in `bash -e` with its step's env (`${{ secrets.X }}` from `secrets`), RUNNER_TEMP,
    and what earlier steps wrote into GITHUB_ENV. The output of each step, in order; a step that
    fails fails the test, naming it."""
    runner = home / "runner"
    runner.mkdir()
    github_env = runner / "github_env"
    base = {
        "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "RUNNER_TEMP": str(runner),
        "GITHUB_ENV": str(github_env),
        **job_env,
    }
    said = []
    for step in workflow_steps(workflow):
        uses = step.get("uses", "")
        if uses:
            assert uses.startswith(("actions/checkout@", "actions/setup-python@")), uses
            continue
        env = {
            key: (
                secrets.get(value.removeprefix("${{ secrets.").removesuffix(" }}"), "")
                if value.startswith("${{ secrets.")
                else value
            )
            for key, value in (step.get("env") or {}).items()
        }
        exported = (
            dict(line.split("=", 1) for line in github_env.read_text().splitlines())
            if github_env.exists()
            else {}
        )
        done = run(
            ["bash", "-e", "-c", step["run"]], checkout, {**base, **exported, **env}, timeout=900
        )
        assert done.returncode == 0, (
            f"step {step['name']!r} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        said.append(done.stdout + done.stderr)
    return said


@pytest.fixture
def firstday_host(sandbox: Sandbox):
    clean_host(FIRSTDAY)
    yield sandbox
    clean_host(FIRSTDAY)


def test_init_reads_the_first_day_app_and_its_workflow_deploys_it_from_a_clean_clone(
    tool: Path, firstday_host: Sandbox, tmp_path: Path
) -> None:
    """The tool from its wheel deploys from an app's own repository, here an app not shaped like the
    example (module-level Flask on /, /healthz, index.js): with its own venv, `init --vendor` reads
    it (the venv's url_map), `freeze` agrees, the commit is cloned clean, and the workflow's steps
    in a fresh venv install the vendored tool, write APP_ENV_FILE from the secret and deploy it,
    deploy.env as init wrote it (the host's names and ports come from the job's environment, as a
    second host's would)."""
    app = AppRepo(tmp_path / "firstday", example=FIRSTDAY_APP)
    app_venv(app.path)
    said = ok(run([tool / "bin/signalcraft-deploy", "init", "--vendor"], app.path, user_env(tool)))
    print("init's output for the first-day app:\n" + said)
    assert (
        "init imported app:app with .venv/bin/python to read Flask's routes: that ran the app's own"
        " code" in said
    )
    values = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (app.path / SETTINGS_FILE).read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert (values["WSGI_APP"], values["NODE_SCRIPT"], values["HEALTH_PY"]) == (
        "app:app",
        "index.js",
        "/healthz",
    )
    # index.js answers no prefix of its own: it is mounted under init's placeholder, which the user
    # may rename
    assert (values["ROUTES"], values["MOUNTS"], values["HEALTH_NODE"]) == (
        "/=python,/node=nodejs",
        "/node",
        "/node",
    )
    assert (
        "# found: endpoint healthz, Flask's routes from the url_map of app:app in .venv\n"
        in (app.path / SETTINGS_FILE).read_text()
    )
    assert "requirements.txt is up to date" in ok(
        run(["invoke", "freeze", "--check"], app.path, user_env(tool))
    )
    app.git("add", "-A")  # .gitignore keeps .venv/ out; the vendored wheel goes in
    app.git("commit", "-qm", "signalcraft-deploy init --vendor")
    tracked = app.git("ls-files").split()
    assert f".github/wheels/signalcraft_deploy-{__version__}-py3-none-any.whl" in tracked
    assert not [path for path in tracked if path.startswith((".venv/", "node_modules/"))]

    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(app.path), str(checkout)], check=True)
    venv.create(tmp_path / "ci-python", with_pip=True)
    secrets = {
        "EC2_HOST": f"{firstday_host.host}:{firstday_host.port}",
        "EC2_SSH_KEY": Path(firstday_host.key).read_text(),
        "EC2_KNOWN_HOSTS": Path(firstday_host.known_hosts).read_text(),
        "APP_ENV": APP_ENV_SECRET,
    }
    (tmp_path / "home").mkdir()
    said = run_workflow(
        checkout / WORKFLOW,
        checkout,
        tmp_path / "ci-python/bin/python",
        secrets,
        FIRSTDAY.settings(),
        tmp_path / "home",
    )
    deployed = said[-1]
    print("the workflow's deploy step:\n" + deployed)
    assert "tok-4412" not in "".join(said)
    sha = app.git("rev-parse", "HEAD").strip()
    assert f"(commit {sha[:12]})" in deployed, deployed
    release = os.readlink(f"{FIRSTDAY.root}/current").rsplit("/", 1)[-1]
    status, _, body = get(FIRSTDAY.url("/"))
    assert (status, body.get("app"), body.get("page"), body.get("release")) == (
        200,
        "flask",
        "index",
        release,
    ), body
    status, _, body = get(FIRSTDAY.url("/healthz"))
    assert (status, body.get("status")) == (200, "ok"), body
    status, _, body = get(FIRSTDAY.url("/node/x"))
    assert (status, body.get("app"), body.get("release")) == (200, "nodejs", release), body
    assert (body.get("path"), body.get("prefix")) == (
        "/x",
        "/node",
    ), body  # mounted: the path without the prefix
    assert Path(f"{FIRSTDAY.root}/current/.env").read_text().strip() == APP_ENV_SECRET
    manifest = host_json(f"{FIRSTDAY.root}/current/.signalcraft/manifest.json")
    assert (manifest["format"], manifest["tool"]) == (formats.MANIFEST.current, formats.TOOL)
    last = json.loads(Path(f"{FIRSTDAY.root}/.deploy/audit.log").read_text().splitlines()[-1])
    assert (last["result"], last["tool"], last["format"]) == (
        "ok",
        formats.TOOL,
        formats.AUDIT.current,
    )


# --- upgrade: a host deployed by the previous release
# ---------------------------------------------------------


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The previous release as its users had it: a checkout (git archive) and a venv with its
    requirements."""
    root = tmp_path_factory.mktemp("previous")
    checkout = root / "signalcraft-deploy"
    checkout.mkdir()
    sh(f"git -C {REPO} archive {PREVIOUS} | tar -x -C {checkout}")
    runtime = (checkout / "requirements.txt").read_text().split("# tests")[0]
    (root / "runtime.txt").write_text(runtime)
    # No pip of its own (ensurepip: 3-4 s of CPU): this run's pip installs into it.
    venv.create(root / "venv")
    _pip(
        sys.executable,
        ["--python", root / "venv/bin/python", "install", "-q", "-r", root / "runtime.txt"],
        root,
    )
    return checkout, root / "venv"


@pytest.fixture
def upgrade_host(sandbox: Sandbox) -> Sandbox:
    """The host the previous release deployed to: it had a package index (it knew no WHEELS=local).
    Here, pip's global configuration points at a folder of the example app's wheels, as a host with
    an index of its own would.
    """
    old = add_deploy_user(sandbox, UPGRADE_USER, f"/etc/sudoers.d/90-{UPGRADE_USER}")
    clean_host(UPGRADE, user=UPGRADE_USER, app_user="upgraded")
    wheels = host_wheels((EXAMPLE / "requirements.txt").read_text())
    Path("/etc/pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    yield old
    Path("/etc/pip.conf").unlink(missing_ok=True)
    clean_host(UPGRADE, user=UPGRADE_USER, app_user="upgraded")


def test_a_host_deployed_by_the_previous_release_is_deployed_by_this_one(
    previous, tool: Path, upgrade_host: Sandbox, tmp_path: Path
) -> None:
    checkout, old_venv = previous
    sandbox = upgrade_host
    app = AppRepo(tmp_path / "app")
    old_cmd = [
        old_venv / "bin/fab",
        "-H",
        sandbox.target,
        "-i",
        sandbox.key,
        "deploy",
        "--source-dir",
        app.path,
    ]
    old_cmd += [
        arg
        for key, value in UPGRADE.settings().items()
        if key not in ("WHEELS", "APP_USER")  # it knew neither
        for arg in ("--set", f"{key}={value}")
    ]
    ok(
        run(
            old_cmd,
            checkout,
            {**user_env(old_venv), "KNOWN_HOSTS": sandbox.known_hosts},
            timeout=600,
        )
    )
    old_release = os.readlink(f"{UPGRADE.root}/current").rsplit("/", 1)[-1]
    answers(UPGRADE, old_release)
    assert "format" not in host_json(f"{UPGRADE.root}/current/.signalcraft/manifest.json")

    init_and_commit(tool, app)
    profile_settings(app, UPGRADE)
    # This version's deploy stops and names `setup` until the apps have their account; its admin
    # runs it.
    refused = deploy(sandbox, tool, app, "deploy")
    assert refused.returncode != 0 and "Run `setup`" in refused.stdout + refused.stderr
    with on_this_machine():
        ok(
            run(
                [
                    "fab",
                    "-H",
                    sandbox.as_user("admin").target,
                    "-i",
                    sandbox.key,
                    "setup",
                    "--user",
                    UPGRADE_USER,
                    "--known-hosts",
                    sandbox.known_hosts,
                    "--set",
                    "APP_USER=upgraded",
                ],
                REPO,
                None,
            )
        )
    answers(UPGRADE, old_release)  # untouched by the refusal
    with e2e_load(
        [UPGRADE.url("/api/ai/x"), UPGRADE.url("/")],
        threads=3,
        max_requests=50_000,
        max_seconds=240,
    ) as load:
        ok(deploy(sandbox, tool, app, "deploy"))
    counts = load.result()
    assert counts.total > 50 and counts.failed == 0, (
        counts.samples
    )  # the move to the apps' account drops nothing
    pids = [
        str(item["pid"]) for item in pm2_jlist("upgraded") if item["name"].startswith("upgraded-")
    ]
    assert len(pids) == 3, (
        pids
    )  # Gunicorn's master and Node.js's two workers, under the apps' account's PM2
    assert set(sh(f"ps -o user= -p {','.join(pids)}").stdout.split()) == {"upgraded"}
    assert not [item for item in pm2_jlist(UPGRADE_USER) if item["name"].startswith("upgraded-")]
    new_release = os.readlink(f"{UPGRADE.root}/current").rsplit("/", 1)[-1]
    assert new_release != old_release
    # init's files (deploy.env, the workflow) reach no app, but the move to the apps' account starts
    # both in it.
    answers(UPGRADE, new_release)
    assert host_json(f"{UPGRADE.root}/current/.signalcraft/manifest.json")["tool"] == formats.TOOL
    audit = [
        json.loads(line)
        for line in Path(f"{UPGRADE.root}/.deploy/audit.log").read_text().splitlines()
    ]
    assert ["format" in r for r in audit] == [False, True] and audit[-1]["result"] == "ok"

    status = ok(deploy(sandbox, tool, app, "status"))
    assert f"current   {new_release}" in status and old_release in status
    ok(
        deploy(sandbox, tool, app, "rollback")
    )  # back to the release the previous version made, from its manifest
    answers(UPGRADE, old_release)
