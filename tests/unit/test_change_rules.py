"""Without a host: which app a file reaches, package.json's entry point and module type, the
settings that name files and shared paths, and the release assembly's shell run for real in a
scratch folder.
"""

from __future__ import annotations

import getpass
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from signalcraft_deploy.core.facts import HostFacts, Listener
from signalcraft_deploy.core.render import (
    APP_ENV_JSON,
    ECOSYSTEM,
    ECOSYSTEM_CJS,
    node_modules_name,
    render_release_configs,
)
from signalcraft_deploy.core.secrets import app_environment
from signalcraft_deploy.core.settings import SettingsError
from signalcraft_deploy.core.source import TOOL_OWN, glob_regex, matches, node_package, readers
from signalcraft_deploy.host.facts import node_public_warning
from signalcraft_deploy.steps.upload import assemble_script

BOTH = {"python", "nodejs"}


@pytest.mark.parametrize(
    "path,expected",
    [
        ("app.py", {"python"}),
        ("flaskr/db.py", {"python"}),
        ("requirements.txt", {"python"}),
        ("package.json", {"nodejs"}),
        ("package-lock.json", {"nodejs"}),
        ("node_modules/x/index.js", {"nodejs"}),
        # Anything else may be read by either app.
        ("flaskr/api.json", BOTH),
        ("public/hello.txt", BOTH),
        ("views/index.ejs", BOTH),
        ("bin/www", BOTH),
        ("flaskr/templates/base.html", BOTH),
        ("config.yaml", BOTH),
        ("sub/requirements.txt.bak", BOTH),
        # JavaScript and TypeScript are Node.js's, except what Flask serves or renders from its own
        # release.
        ("server.js", {"nodejs"}),
        ("index.js", {"nodejs"}),
        ("lib/a.mjs", {"nodejs"}),
        ("lib/b.cjs", {"nodejs"}),
        ("src/a.ts", {"nodejs"}),
        ("static/app.js", BOTH),
        ("flaskr/static/js/app.js", BOTH),
        ("templates/widget.js", BOTH),
        ("app.jsx.bak", BOTH),
        # The tool's own files reach no app; only at the top of the app's folder.
        ("deploy.env", set()),
        ("deploy.staging.env", set()),
        (".github/workflows/auto-deploy.yml", set()),
        ("rendered/ecosystem.config.js", set()),
        ("rendered/gunicorn.conf.py", set()),
        ("rendered/nginx-site.conf", set()),
        # ... but an app's own rendered/ (pages it pre-renders and serves): what render-configs
        # writes there is the tool's.
        ("rendered/index.html", BOTH),
        ("rendered/about/index.html", BOTH),
        # fabfile.py and tasks.py are the tool's only when they are its collection
        # (tool_collection): else Python's.
        ("fabfile.py", {"python"}),
        ("tasks.py", {"python"}),
        ("worker/tasks.py", {"python"}),
        ("sub/deploy.env", BOTH),
        ("deploy.envrc", BOTH),
    ],
)
def test_by_default_a_file_reaches_every_app_that_could_read_it(
    path: str, expected: set[str]
) -> None:
    assert readers(path) == expected


def test_globs_name_the_files_each_app_reads() -> None:
    py, node = ("flaskr/**", "*.sql"), ("bin/", "public/", "views/*.ejs", "*.js")
    assert readers("flaskr/api.json", py, node) == {"python"}
    assert readers("flaskr/schema.sql", py, node) == {"python"}
    assert readers("schema/init.sql", py, node) == {"python"}  # no '/' in the glob: any folder
    assert readers("public/css/site.css", py, node) == {"nodejs"}
    assert readers("bin/www", py, node) == {"nodejs"}
    assert readers("views/index.ejs", py, node) == {"nodejs"}
    assert readers("views/sub/index.ejs", py, node) == set()  # '*' stays within its folder
    assert readers("README.md", py, node) == set()
    assert readers("tools/seed.py", py, node) == {
        "python"
    }  # an app's own files reach it whatever the globs
    assert readers("package.json", py, node) == {"nodejs"}
    assert readers("data.json", None, node) == {
        "python"
    }  # PY_FILES unset: Python may read anything not Node's own
    assert (
        readers("assets/app.js", ("assets/",), None) == BOTH
    )  # PY_FILES naming a .js: Python reads it too
    assert (
        readers("deploy.env", ("**",), ("**",)) == set()
    )  # globs never make the tool's files an app's


def test_the_settings_file_and_templates_dir_inside_the_app_are_the_tools(tmp_path: Path) -> None:
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.core.source import tool_files

    app = tmp_path / "app"
    (app / "deploy-templates").mkdir(parents=True)
    (app / "ops").mkdir()
    (app / "ops" / "prod.env").write_text("SOURCE_DIR=..\nTEMPLATES_DIR=../deploy-templates\n")
    s = load_settings(env_file="ops/prod.env", environ={}, cwd=str(app))
    tool = tool_files(s)
    assert readers("ops/prod.env", tool=tool) == set()
    assert readers("deploy-templates/gunicorn.conf.py.j2", tool=tool) == set()
    assert readers("ops/other.env", tool=tool) == BOTH
    (tmp_path / "outside.env").write_text(f"SOURCE_DIR={app}\n")
    outside = load_settings(env_file=str(tmp_path / "outside.env"), environ={}, cwd=str(app))
    assert tool_files(outside) == TOOL_OWN  # a settings file outside the app is none of its files
    (app / ".env").write_text("NODE_PORT=3100\n")
    assert (
        tool_files(load_settings(environ={}, cwd=str(app))) == TOOL_OWN
    )  # .env: the apps load it too


@pytest.mark.parametrize(
    "glob,path,hit",
    [
        ("*.json", "a/b/c.json", True),
        ("a/*.json", "a/b/c.json", False),
        ("a/**/*.json", "a/b/c.json", True),
        ("a/**/*.json", "a/c.json", True),
        ("a/", "a/b/c", True),
        ("a/", "ab/c", False),
        ("a", "a/b", True),
        ("?.txt", "x.txt", True),
        ("?.txt", "xy.txt", False),
        ("instance", "instance", True),
    ],
)
def test_glob_semantics(glob: str, path: str, hit: bool) -> None:
    assert bool(glob_regex(glob).fullmatch(path)) is hit
    assert matches(path, (glob,)) is hit


@pytest.mark.parametrize(
    "text,files,script,esm",
    [
        (
            '{"scripts": {"start": "node ./bin/www"}}',
            {"bin/www"},
            "bin/www",
            False,
        ),  # express-generator
        (
            '{"main": "index.js", "scripts": {"start": "node server.js"}}',
            {"server.js"},
            "server.js",
            False,
        ),
        (
            '{"main": "index.js", "scripts": {"start": "node --enable-source-maps dist/main"}}',
            {"dist/main.js"},
            "dist/main.js",
            False,
        ),
        ('{"main": "lib/app.js"}', {"lib/app.js"}, "lib/app.js", False),
        ('{"main": "lib"}', {"lib/index.js"}, "lib/index.js", False),
        ('{"main": "index.js", "type": "module"}', {"index.js"}, "index.js", True),
        (
            '{"main": "index.js"}',
            set(),
            None,
            False,
        ),  # npm init's default main, never written: fall back
        ('{"scripts": {"start": "nodemon app.js"}}', {"app.js"}, None, False),  # not `node <file>`
        ("not json", set(), None, False),
        (None, set(), None, False),
    ],
)
def test_the_entry_point_and_module_type_come_from_package_json(text, files, script, esm) -> None:
    pkg = node_package(text, lambda path: path in files)
    assert (pkg.script, pkg.esm) == (script, esm)
    if script:
        assert "package.json" in pkg.why


def test_an_es_module_package_gets_a_cjs_pm2_file(load) -> None:
    s = load()
    assert set(render_release_configs(s, "/v", esm=True)) == {"gunicorn.conf.py", ECOSYSTEM_CJS}
    assert set(render_release_configs(s, "/v")) == {"gunicorn.conf.py", ECOSYSTEM}


def test_node_modules_are_keyed_by_the_lock_file_else_by_package_json() -> None:
    assert node_modules_name('{"lockfileVersion": 3}', '{"name": "a"}') == node_modules_name(
        '{"lockfileVersion": 3}', None
    )
    assert node_modules_name(None, '{"name": "a"}') != node_modules_name(None, '{"name": "b"}')
    assert node_modules_name(None, '{"name": "a"}').startswith("pkg-")
    assert node_modules_name(None, None) is None


@pytest.mark.parametrize(
    "value,message",
    [
        ("../data/", "SHARED_PATHS"),
        ("/abs/", "SHARED_PATHS"),
        ("node_modules/", "a release holds of its own"),
        ("instance/,instance/db/", "none inside another"),
        ("a b/", "SHARED_PATHS"),
        ("REVISION", "of its own"),
    ],
)
def test_bad_shared_paths_are_refused_by_name(load, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        load({"SHARED_PATHS": value})
    assert str(err.value).startswith("SHARED_PATHS (flag --set)")


def test_shared_env_and_app_env_file_exclude_each_other(load, tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("K=v\n")
    with pytest.raises(SettingsError, match="SHARED_PATHS"):
        load({"SHARED_PATHS": ".env", "APP_ENV_FILE": str(tmp_path / "app.env")})
    assert load({"SHARED_PATHS": "instance/, uploads/ ,.env.local"}).shared_paths == (
        "instance/",
        "uploads/",
        ".env.local",
    )
    with pytest.raises(SettingsError, match="PY_FILES"):
        load({"PY_FILES": "../x"})


def test_node_beyond_loopback_is_warned_about(load) -> None:
    s = load({"NODE_PORT": "3161"})
    facts = HostFacts(
        listeners=[
            Listener("127.0.0.1", 3161, (1,), ("node",)),
            Listener("127.0.0.1", 8001, (2,), ("g",)),
        ]
    )
    assert node_public_warning(s, facts) is None
    facts.listeners.append(Listener("*", 3161, (1,), ("node",)))
    facts.listeners.append(Listener("::", 3161, (1,), ("node",)))
    warning = node_public_warning(s, facts)
    assert warning and "*:3161" in warning and "[::]:3161" in warning and "127.0.0.1" in warning


# ----------------------------------------------------------------------------- the assembly, run
# for real


def assemble(
    load,
    root: Path,
    release: str,
    files: dict[str, str],
    live: str = "",
    env: str | None = None,
    carry: bool = False,
    shared: str = "instance/,.env.local",
) -> Path:
    """Run the release assembly's shell with `files` as the code (what the upload unpacks)."""
    # The apps run as this user here (the script runs for real, where no account of the apps' own
    # exists).
    s = replace(
        load({"DEPLOY_ROOT": str(root), "SHARED_PATHS": shared}), app_user=getpass.getuser()
    )
    code = root / "code"
    subprocess.run(["rm", "-rf", str(code)], check=True)
    for name, text in files.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(text)
    incoming = root / ".deploy/incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (root / "shared/logs").mkdir(parents=True, exist_ok=True)
    (root / "releases").mkdir(exist_ok=True)
    (root / "extras/.signalcraft").mkdir(parents=True, exist_ok=True)  # as the real extras have
    subprocess.run(
        ["tar", "-cf", str(incoming / f"{release}.extras.tar"), "-C", str(root / "extras"), "."],
        check=True,
    )
    if env is not None:  # as steps/upload.py's write_app_env leaves them
        (incoming / f"{release}.env").write_text(env)
        (incoming / f"{release}.env.json").write_text(json.dumps(app_environment(env)))
    script = assemble_script(
        s, release, [f'cp -a {code}/. "$t"/'], f"{root}/releases/{live}" if live else "", carry
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root / "releases" / release


def test_the_first_release_with_a_shared_folder_keeps_what_the_live_release_has(
    load, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    one = assemble(
        load, root, "r1", {"app.py": "1", "instance/.keep": ""}, env="SECRET=one\n", shared=""
    )
    (one / "instance/flaskr.sqlite").write_text("rows")  # the live app's data, in the release
    two = assemble(load, root, "r2", {"app.py": "2", "instance/.keep": ""}, live="r1", carry=True)
    assert (root / "shared/instance/flaskr.sqlite").read_text() == "rows"
    assert (two / "instance").is_symlink() and (
        two / "instance/flaskr.sqlite"
    ).read_text() == "rows"
    assert (one / "instance").is_symlink() and (
        one / "instance/flaskr.sqlite"
    ).read_text() == "rows"  # the live app too
    # The .env is the release's own copy: 0600, carried over when no APP_ENV_FILE came with the
    # deploy.
    assert (two / ".env").read_text() == "SECRET=one\n" and not (two / ".env").is_symlink()
    assert oct((two / ".env").stat().st_mode & 0o777) == "0o600"
    # ... and so are its values for the processes, with it.
    assert json.loads((two / APP_ENV_JSON).read_text()) == {"SECRET": "one"}
    assert oct((two / APP_ENV_JSON).stat().st_mode & 0o777) == "0o600"
    three = assemble(load, root, "r3", {"app.py": "3"}, live="r2", env="SECRET=two\n")
    assert (three / ".env").read_text() == "SECRET=two\n"
    assert json.loads((three / APP_ENV_JSON).read_text()) == {"SECRET": "two"}
    assert (two / ".env").read_text() == "SECRET=one\n"  # the live release's secret is untouched
    assert json.loads((two / APP_ENV_JSON).read_text()) == {"SECRET": "one"}
    (three / "instance/new.txt").write_text("kept")
    assert (two / "instance/new.txt").read_text() == "kept"
    # A shared file nobody has yet: a link the app may create through.
    assert (three / ".env.local").is_symlink() and not (three / ".env.local").exists()


def test_a_shared_folder_starts_from_what_the_release_ships_else_empty(
    load, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    one = assemble(
        load,
        root,
        "r1",
        {"app.py": "1", "uploads/readme.txt": "drop files here"},
        shared="uploads/,cache/",
    )
    assert (root / "shared/uploads/readme.txt").read_text() == "drop files here"
    assert (one / "cache").is_symlink() and (root / "shared/cache").is_dir()
    assert not (one / ".env").exists()


def test_fabfile_and_tasks_are_the_tools_only_when_they_import_it(tmp_path: Path) -> None:
    from dataclasses import replace

    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.core.source import tool_collection, tool_files

    texts = {
        "fabfile.py": "from signalcraft_deploy.collection import ns  # noqa\n",
        "tasks.py": "from celery import Celery\napp = Celery('tasks')\n",
    }
    found = tool_collection(texts.get)
    assert found == ("fabfile.py",)
    s = replace(load_settings(environ={}, cwd=str(tmp_path)), tool_collection=found)
    assert readers("fabfile.py", tool=tool_files(s)) == set()
    assert readers("tasks.py", tool=tool_files(s)) == {
        "python"
    }  # the app's own Celery tasks: its code
    assert readers("worker/fabfile.py", tool=tool_files(s)) == {
        "python"
    }  # only at the top of the app's folder
    assert tool_collection({}.get) == ()


def test_the_tool_s_own_rendered_files_are_the_ones_render_configs_writes(load) -> None:
    from signalcraft_deploy.core.source import RENDERED
    from signalcraft_deploy.tasks.configs import rendered_files

    s = load({})
    assert set(rendered_files(s, "flask\n")) | set(rendered_files(s, "flask\n", esm=True)) == set(
        RENDERED
    )
