"""The README's tables tell the truth: every settings key and every task is there."""

from pathlib import Path

from signalcraft_deploy import ns
from signalcraft_deploy.core.settings import KEYS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_key_is_in_the_readme_with_its_default():
    for key in KEYS:
        default = f"`{key.default}`" if key.default else "—"
        assert f"| `{key.name}` | {default} |" in README, key.name


def test_every_task_is_in_the_readme():
    for name in ns.task_names:
        assert f"| `{name}` |" in README, name
