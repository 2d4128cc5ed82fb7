"""Source: what a release is made of, and hash, don't copy: only changed files are sent."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from signalcraft_deploy.core.source import MAX_DELTA_FILES, delta, make_tarball, read_source, tree_files


def test_delta_sends_what_changed_and_copies_the_rest() -> None:
    old = {"app.py": ("100644", "a1"), "server.js": ("100644", "b1"), "run.sh": ("100644", "c1"), "gone.txt": ("100644", "d1")}
    new = {"app.py": ("100644", "a2"), "server.js": ("100644", "b1"), "run.sh": ("100755", "c1"), "added.txt": ("100644", "e1")}
    d = delta(new, old)
    assert d is not None
    assert d.changed == ["added.txt", "app.py", "run.sh"]  # content, mode and new files; gone.txt is neither
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
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    tree = read_source(str(repo / "app"))
    out = tmp_path / "part.tar"
    make_tarball(str(repo / "app"), tree, str(out), ["b*.py"])
    with tarfile.open(out) as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == ["b*.py"]
    assert tree_files(str(repo / "app"), tree.tree) == {p: (tree.modes[p], b) for p, b in tree.blobs.items()}
    assert tree_files(str(repo / "app"), "0" * 40) is None


def test_repo_url_credentials_go_to_the_credential_store_never_on_a_command_line():
    from signalcraft_deploy.core.settings import load_settings
    from signalcraft_deploy.steps.upload import mirror_script, redact, redact_text, split_credentials

    url = "https://deploy:ghp_T0ken99@github.com:8443/org/app.git"
    assert split_credentials(url) == ("https://github.com:8443/org/app.git", "https://deploy:ghp_T0ken99@github.com:8443")
    assert split_credentials("git@github.com:org/app.git") == ("git@github.com:org/app.git", None)
    assert redact(url) == "https://deploy:***@github.com:8443/org/app.git" and redact(None) == ""
    assert redact_text("fatal: unable to access 'https://deploy:ghp_T0ken99@github.com'", url).count("ghp_T0ken99") == 0
    s = load_settings(environ={}, overrides={"SOURCE": "git", "REPO_URL": url})
    script = mirror_script(s, with_credentials=True)
    assert "ghp_T0ken99" not in script and "deploy:" not in script
    assert "config remote.origin.url https://github.com:8443/org/app.git" in script
    assert "cat > /home/ubuntu/signalcraft/.deploy/repo.credentials" in script and "umask 077" in script
    assert "rm -f /home/ubuntu/signalcraft/.deploy/repo.credentials" in mirror_script(s, with_credentials=False)
