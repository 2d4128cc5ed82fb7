"""The e2e modules, longest first: `tests/e2e/run` hands them to pytest-xdist in this order.

With `--dist loadfile` each worker takes the next module when it is free, so the order decides how
the run ends: the longest modules started first leave the short ones to fill the gaps (longest
processing time first), instead of a long one started last running alone. The seconds are each
module's summed test time in a CI run (`--junitxml`), refreshed with `--update JUNIT`; a module
not listed counts as the median. Standard library only.

    python tests/e2e/order.py                       # the paths, one a line
    python tests/e2e/order.py --update /tmp/e2e-junit.xml
"""

from __future__ import annotations

import json
import statistics
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECONDS = HERE / "module-seconds.json"


def measured(junit: Path) -> dict[str, float]:
    """Each module's summed test time in a junit report."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        seconds[(case.get("classname") or "").split(".")[-1]] += float(case.get("time") or 0)
    return {name: round(total, 1) for name, total in sorted(seconds.items())}


def ordered(seconds: dict[str, float]) -> list[Path]:
    modules = sorted(HERE.glob("test_*.py"))
    typical = statistics.median(seconds.values()) if seconds else 0.0
    return sorted(modules, key=lambda m: (-seconds.get(m.stem, typical), m.name))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--update"] and len(argv) == 2:
        SECONDS.write_text(json.dumps(measured(Path(argv[1])), indent=1) + "\n")
        return 0
    seconds = json.loads(SECONDS.read_text()) if SECONDS.is_file() else {}
    for path in ordered(seconds):
        print(path.relative_to(HERE.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
