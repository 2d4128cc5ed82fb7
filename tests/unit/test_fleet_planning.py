"""Without hosts: the fleet executor's one call, batches, and WHEELS=local's commands."""

from __future__ import annotations

import re

import pytest
from fabric import Config
from fabric.main import Fab
from invoke import Collection, Result, task
from invoke.exceptions import Exit

from signalcraft_deploy.executor import FleetExecutor
from signalcraft_deploy.host import install, wheels
from signalcraft_deploy.host.fleet_hosts import fleet_aware, fleet_hosts
from signalcraft_deploy.steps.fleet import batches, check_batch, check_on_failure
from tests.unit.conftest import mock_host


def run_fab(argv: str) -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []

    @fleet_aware
    @task
    def fleety(c):
        calls.append(("fleety", [h.host for h in fleet_hosts(c)]))

    @task
    def plain(c):
        calls.append(("plain", [h.host for h in fleet_hosts(c)]))

    program = Fab(
        namespace=Collection(fleety, plain), executor_class=FleetExecutor, config_class=Config
    )
    program.run(f"fab {argv}", exit=False)
    return calls


def test_a_fleet_aware_task_runs_once_with_every_host_and_others_once_per_host():
    assert run_fab("-H web1,web2,web3 fleety plain") == [
        ("fleety", ["web1", "web2", "web3"]),
        ("plain", ["web1"]),
        ("plain", ["web2"]),
        ("plain", ["web3"]),
    ]


def test_one_host_is_a_plain_call():
    assert run_fab("-H web1 fleety") == [("fleety", ["web1"])]


def test_the_other_hosts_keep_user_and_port():
    seen = []

    @fleet_aware
    @task
    def show(c):
        seen.extend((h.user, h.host, h.port) for h in fleet_hosts(c))

    Fab(namespace=Collection(show), executor_class=FleetExecutor, config_class=Config).run(
        "fab -H ubuntu@a:2201,deploy@b show", exit=False
    )
    assert seen == [("ubuntu", "a", 2201), ("deploy", "b", 22)]


def test_the_collection_installs_the_fleet_executor_in_fab():
    import fabric.main

    from signalcraft_deploy import collection  # noqa: F401  (importing it is what installs it)
    from signalcraft_deploy.executor import use_fleet_executor

    use_fleet_executor()
    assert fabric.main.program.executor_class is FleetExecutor


@pytest.mark.parametrize(
    "batch,expected",
    [
        ("1", [[1], [2], [3], [4], [5]]),
        ("2", [[1], [2, 3], [4, 5]]),
        ("50%", [[1], [2, 3, 4], [5]]),
        ("100%", [[1], [2, 3, 4, 5]]),
        ("10", [[1], [2, 3, 4, 5]]),
    ],
)
def test_the_first_host_goes_alone_then_batches(batch, expected):
    assert batches([1, 2, 3, 4, 5], batch) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["0", "-1", "x", "0%", "150%", "2.5"])
def test_a_bad_batch_is_refused_naming_the_flag(bad):
    with pytest.raises(Exit, match="--batch"):
        check_batch(bad)


def test_on_failure_is_rollback_or_keep():
    assert check_on_failure(None) == "rollback" and check_on_failure("keep") == "keep"
    with pytest.raises(Exit, match="--on-failure"):
        check_on_failure("ignore")


# ----------------------------------------------------------------------------- WHEELS=local


def test_platform_tags_of_a_glibc_host():
    tags = wheels.platform_tags(("3.12", "2.35", "aarch64"))
    assert (
        tags[0] == "manylinux_2_35_aarch64"
        and "manylinux_2_17_aarch64" in tags
        and "manylinux2014_aarch64" in tags
    )
    assert tags[-1] == "linux_aarch64"


def test_another_python_downloads_binary_wheels_for_the_host():
    cmd = wheels.pip_command("req.txt", "out", ("3.9", "2.31", "x86_64"))
    assert cmd[cmd.index("--python-version") + 1] == "3.9" and "--only-binary=:all:" in cmd
    assert "manylinux_2_31_x86_64" in cmd and "cp39" in cmd and cmd[-2:] == ["-d", "out"]


def test_the_same_python_builds_wheels():
    import platform
    import sys

    here = (
        f"{sys.version_info[0]}.{sys.version_info[1]}",
        platform.libc_ver()[1],
        platform.machine(),
    )
    if not here[1]:
        pytest.skip("not a glibc system")
    assert "wheel" in wheels.pip_command("req.txt", "out", here)


def test_the_venv_is_built_from_the_shipped_wheels_without_an_index():
    script = install.venv_script(
        _settings(), "/r/venvs/abc", "/r/releases/x/requirements.txt", "/r/wheels/k1"
    )
    assert (
        "pip install --quiet --disable-pip-version-check --no-index --find-links /r/wheels/k1 -r"
        in script
    )
    assert "--no-index" not in install.venv_script(_settings(), "/r/venvs/abc", "/r/req.txt")


def test_npm_ci_runs_offline_from_the_shipped_cache():
    script = install.node_modules_script(
        _settings(), "/r/releases/x", "/r/node_modules/n1", "/r/npm-cache/c1"
    )
    assert (
        "npm ci --omit=dev --no-audit --no-fund --loglevel=error --offline --cache /r/npm-cache/c1"
        in script
    )


def test_a_host_without_an_index_fails_install_naming_wheels_local():
    pip_said = (
        "WARNING: Retrying ... Failed to establish a new connection: [Errno 101] Network is"
        " unreachable\nERROR: No matching distribution found for Flask==3.1.3"
    )
    c = mock_host(
        run={
            re.compile(r"^mkdir"): Result(),
            re.compile(r"set -e"): Result(stderr=pip_said, exited=1),
        },
        repeat=True,
    )
    with pytest.raises(Exit) as err:
        install.ensure_venv(c, _settings(), "/r/venvs/abc", "/r/req.txt")
    assert "WHEELS=local" in str(err.value.message) and "cannot reach the package index" in str(
        err.value.message
    )


def test_a_lock_without_packages_ships_no_npm_cache():
    assert wheels.lock_packages('{"packages": {"": {"name": "x"}}}') == {}
    assert list(
        wheels.lock_packages('{"packages": {"": {}, "node_modules/ms": {"version": "2.1.3"}}}')
    ) == ["node_modules/ms"]


def _settings():
    from signalcraft_deploy.core.settings import settings_from_task

    return settings_from_task(None, [], {})


# ----------------------------------------------------------------------------- the summary


def _member(label: str, current: str, to: str, result: str):
    from types import SimpleNamespace

    from signalcraft_deploy.core.facts import HostFacts
    from signalcraft_deploy.steps.fleet import Member
    from signalcraft_deploy.steps.report import Reporter

    plan = SimpleNamespace(manifest=SimpleNamespace(release=to), actions=[])
    return Member(
        c=None,
        label=label,
        rep=Reporter(label, quiet=True),
        facts=HostFacts(current_release=current),
        plan=plan,
        result=result,
    )  # type: ignore[arg-type]


def test_the_table_says_each_hosts_result_and_whether_the_fleet_is_consistent():
    from signalcraft_deploy.steps.fleet import Result, summary

    lines: list[str] = []
    group = [
        _member("web1", "A", "B", Result.KEPT),
        _member("web2", "A", "B", Result.ROLLED_BACK),
        _member("web3", "A", "B", Result.UNTOUCHED),
    ]
    assert summary(group, "id1", lines.append) is False
    assert any(
        line.split()[:4] == ["web3", "A", "B", "-"] and "not reached, unchanged" in line
        for line in lines
    )
    assert lines[-1] == "Fleet NOT consistent: web1 serve B; web2, web3 serve A."
    lines.clear()
    group = [_member(h, "A", "B", Result.OK) for h in ("web1", "web2")]
    assert summary(group, "id2", lines.append) is True
    assert lines[-1] == "Fleet consistent: all 2 hosts serve B."
