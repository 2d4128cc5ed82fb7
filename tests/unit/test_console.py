"""The `signalcraft-deploy` command (here as `python -m signalcraft_deploy`): `fab` with the
collection built in. Run in a subprocess: parsing consumes the tasks' help, and other tests read
it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from signalcraft_deploy import __version__

REPO = Path(__file__).resolve().parents[2]


def command(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "signalcraft_deploy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_version_comes_first(tmp_path: Path) -> None:
    lines = command("--version", cwd=tmp_path).splitlines()
    assert lines[0] == f"signalcraft-deploy {__version__}"
    assert [line.split()[0] for line in lines[1:]] == ["Fabric", "Paramiko", "Invoke"]


def test_it_lists_the_tasks_without_a_fabfile(tmp_path: Path) -> None:
    out = command("--list", cwd=tmp_path)
    for name in ("deploy", "freeze", "rollback", "status"):
        assert f"  {name} " in out


def test_it_takes_fab_s_flags(tmp_path: Path) -> None:
    out = command("--help", cwd=tmp_path)
    assert out.startswith("Usage: signalcraft-deploy [--core-opts] <subcommand>")
    assert "-H STRING, --hosts=STRING" in out
