"""The `signalcraft-deploy` console script, in this process: `fab` with the collection built in."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalcraft_deploy import __version__
from signalcraft_deploy.cli import make_program


def test_version_comes_first(capsys: pytest.CaptureFixture[str]) -> None:
    make_program().run(["signalcraft-deploy", "--version"], exit=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"signalcraft-deploy {__version__}"
    assert [line.split()[0] for line in lines[1:]] == ["Fabric", "Paramiko", "Invoke"]


def test_it_lists_the_tasks_without_a_fabfile(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_program().run(["signalcraft-deploy", "--list"], exit=False)
    out = capsys.readouterr().out
    for name in ("deploy", "freeze", "rollback", "status"):
        assert f"  {name} " in out


def test_it_takes_fab_s_host_flag(capsys: pytest.CaptureFixture[str]) -> None:
    make_program().run(["signalcraft-deploy", "--help"], exit=False)
    assert "-H STRING, --hosts=STRING" in capsys.readouterr().out

