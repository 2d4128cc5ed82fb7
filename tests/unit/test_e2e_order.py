"""tests/e2e/order.py: the e2e modules handed to pytest-xdist longest first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("e2e_order", REPO / "tests/e2e/order.py")
assert spec is not None and spec.loader is not None
order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(order)


def test_every_module_once_longest_first_an_unmeasured_one_at_the_median() -> None:
    modules = sorted(p.stem for p in (REPO / "tests/e2e").glob("test_*.py"))
    seconds = {name: float(i) for i, name in enumerate(modules[1:])}  # the first is not measured
    got = [p.stem for p in order.ordered(seconds)]
    assert sorted(got) == modules
    median = sorted(seconds.values())[len(seconds) // 2]
    assert abs(got.index(modules[0]) - (len(modules) - 1 - median)) <= 1
    listed = [g for g in got if g != modules[0]]
    assert listed == sorted(listed, key=lambda m: -seconds[m])


def test_update_sums_each_modules_test_time_from_a_junit_report(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.e2e.test_fleet" name="a" time="100.25"/>'
        '<testcase classname="tests.e2e.test_fleet" name="b" time="20"/>'
        '<testcase classname="tests.e2e.test_console" name="c" time="3.5"/>'
        "</testsuite></testsuites>"
    )
    assert order.measured(junit) == {"test_console": 3.5, "test_fleet": 120.2}
