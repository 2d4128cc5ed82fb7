"""Source: what a release is made of, and hash, don't copy: only changed files are sent."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from signalcraft_deploy.core.source import (
    MAX_DELTA_FILES,
    delta,
    make_tarball,
    read_source,
    tree_files,
)


def test_delta_sends_what_changed_and_copies_the_rest() -> None:
    old = {
        "app.py": ("100644", "a1"),
        "server.js": ("100644", "b1"),
        "run.sh": ("100644", "c1"),
        "gone.txt": ("100644", "d1"),
    }
    new = {
        "app.py": ("100644", "a2"),
        "server.js": ("100644", "b1"),
        "run.sh": ("100755", "c1"),
        "added.txt": ("100644", "e1"),
    }
    d = delta(new, old)
    assert d is not None
    assert d.changed == [
        "added.txt",
        "app.py",
        "run.sh",
    ]  # content, mode and new files; gone.txt is neither
    assert d.same == ["server.js"]
    assert delta(new, None) is None and delta(new, {}) is None  # nothing known: send everything
    many = {f"f{i}": ("100644", str(i)) for i in range(MAX_DELTA_FILES + 1)}
    assert delta(many, {"x": ("100644", "y")}) is None


def test_make_tarball_of_some_files_and_tree_files_of_a_known_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "a.py").write_text("a\n")
    (repo / "app" / "b*.py").write_text("star\n")  # a name that is a glob: sent literally
    (repo / "app" / "bx.py").write_text("bx\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    tree = read_source(str(repo / "app"))
    out = tmp_path / "part.tar"
    make_tarball(str(repo / "app"), tree, str(out), ["b*.py"])
    with tarfile.open(out) as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == ["b*.py"]
    assert tree_files(str(repo / "app"), tree.tree) == {
        p: (tree.modes[p], b) for p, b in tree.blobs.items()
    }
    assert tree_files(str(repo / "app"), "0" * 40) is None


def test_repo_url_credentials_go_to_the_credential_store_never_on_a_command_line():
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.steps.upload import (
        mirror_script,
        redact,
        redact_text,
        split_credentials,
    )

    url = "https://deploy:ghp_T0ken99@github.com:8443/org/app.git"
    assert split_credentials(url) == (
        "https://github.com:8443/org/app.git",
        "https://deploy:ghp_T0ken99@github.com:8443",
    )
    assert split_credentials("git@github.com:org/app.git") == ("git@github.com:org/app.git", None)
    assert redact(url) == "https://deploy:***@github.com:8443/org/app.git" and redact(None) == ""
    assert (
        redact_text("fatal: unable to access 'https://deploy:ghp_T0ken99@github.com'", url).count(
            "ghp_T0ken99"
        )
        == 0
    )
    s = load_settings(environ={}, overrides={"SOURCE": "git", "REPO_URL": url})
    script = mirror_script(s, with_credentials=True)
    assert "ghp_T0ken99" not in script and "deploy:" not in script
    assert "config remote.origin.url https://github.com:8443/org/app.git" in script
    assert (
        "cat > /home/ubuntu/signalcraft/.deploy/repo.credentials" in script
        and "umask 077" in script
    )
    assert "rm -f /home/ubuntu/signalcraft/.deploy/repo.credentials" in mirror_script(
        s, with_credentials=False
    )


def test_one_entry_resolver_for_the_commit_and_the_working_tree(load) -> None:
    from signalcraft_deploy.core.settings import SettingsError
    from signalcraft_deploy.core.source import node_entry_of, resolve_node_entry

    pkg = '{"main": "index.js"}'
    entry = resolve_node_entry(pkg, {"index.js"}.__contains__)
    assert (entry.script, entry.why, entry.present) == (
        "index.js",
        "package.json main (index.js)",
        True,
    )
    assert (
        resolve_node_entry(pkg, {"index.js"}.__contains__, "bin/www").script == "bin/www"
    )  # NODE_SCRIPT wins
    assert resolve_node_entry(None, {"server.js"}.__contains__) == resolve_node_entry(
        None, {"server.js"}.__contains__, None
    )
    assert resolve_node_entry(None, {"server.js"}.__contains__).why == "default"
    assert node_entry_of(load(), pkg, {"index.js"}.__contains__, "here").script == "index.js"
    try:
        node_entry_of(load(), pkg, set().__contains__, "the working tree of SOURCE_DIR /app")
    except SettingsError as err:
        assert "no Node.js entry point in the working tree of SOURCE_DIR /app" in str(
            err
        ) and "NODE_SCRIPT" in str(err)
    else:
        raise AssertionError("an app without an entry point was accepted")


def test_local_render_configs_runs_the_entry_point_a_deploy_would(tmp_path: Path) -> None:
    """package.json's main is index.js, and no server.js: the local ecosystem names index.js, as the
    deploy's does."""
    import sys

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "chat", "main": "index.js"}\n')
    (app / "index.js").write_text("require('http').createServer().listen(process.env.PORT)\n")
    (app / "requirements.txt").write_text("flask==3.0.0\ngunicorn==22.0.0\n")
    env = {k: v for k, v in os.environ.items() if k != "ENV_FILE"}
    command = [
        sys.executable,
        "-m",
        "invoke",
        "render-configs",
        "--output",
        str(tmp_path / "out"),
        "--set",
        f"SOURCE_DIR={app}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (
        "Node.js entry point: index.js (package.json main (index.js), read from the working tree)"
        in result.stdout
    )
    ecosystem = (tmp_path / "out" / "ecosystem.config.js").read_text()
    assert "/current/index.js" in ecosystem and "server.js" not in ecosystem
    (app / "index.js").unlink()
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert (
        refused.returncode == 2 and "no Node.js entry point in the working tree" in refused.stderr
    )
    assert "Traceback" not in refused.stderr


def test_a_committed_node_modules_or_venv_is_named_with_the_fix(load) -> None:
    import pytest

    from signalcraft_deploy.core.settings import SettingsError
    from signalcraft_deploy.core.source import SourceTree, committed_environments
    from signalcraft_deploy.steps.upload import check_shipment

    assert committed_environments(
        [
            "node_modules/express/index.js",
            "node_modules/express/lib/x/node_modules/y.js",
            "web/node_modules/a.js",
            ".venv/pyvenv.cfg",
            ".venv/bin/python",
            "tools/env/pyvenv.cfg",
            "app.py",
        ]
    ) == [".venv", "node_modules", "tools/env", "web/node_modules"]
    # Merely named so: a file, or a name that only starts with it.
    assert (
        committed_environments(
            [
                "node_modules.txt",
                "docs/node_modules",
                "lib/node_modules_helper.js",
                "pyvenv.cfg.bak",
            ]
        )
        == []
    )

    files = {
        "app.py": "1",
        "requirements.txt": "2",
        "server.js": "3",
        "node_modules/express/index.js": "4",
        "node_modules/.package-lock.json": "5",
        "node_modules.txt": "6",
    }
    tree = SourceTree(
        sha="a" * 40,
        tree="b" * 40,
        blobs=files,
        dirty=0,
        subdir="",
        modes={p: "100644" for p in files},
    )
    with pytest.raises(SettingsError) as err:
        check_shipment(load(), tree, "SOURCE_DIR /src")
    assert "SOURCE_DIR /src at aaaaaaaaaaaa commits what the host builds itself" in str(err.value)
    assert "Nothing was changed on the host" in str(err.value)
    assert (
        "node_modules/: node_modules; fix: git rm -r --cached node_modules && echo node_modules/ >>"
        " .gitignore" in str(err.value)
    )
    clean = {p: b for p, b in files.items() if not p.startswith("node_modules/")}
    check_shipment(
        load(),
        SourceTree(
            sha="a" * 40,
            tree="b" * 40,
            blobs=clean,
            dirty=0,
            subdir="",
            modes={p: "100644" for p in clean},
        ),
        "SOURCE_DIR /src",
    )  # node_modules.txt passes
