"""The README's tables tell the truth: every settings key and every task is there."""

from pathlib import Path

from signalcraft_deploy import ns
from signalcraft_deploy.core.settings import KEYS, readme_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_key_is_in_the_readme_with_its_default():
    for key in KEYS:
        default = (
            f"`{key.default}`".replace("|", "\\|") if key.default else "—"
        )  # Markdown: a | in a cell is written \|
        assert f"| `{key.name}` | {default} |" in README, key.name


def test_the_settings_table_is_the_declarations():
    # Row for row: each key's default and meaning exactly as declared, in the declared order,
    # nothing else. `invoke settings --defaults --markdown` prints the table to paste.
    start = README.index("| key | default | meaning |")
    table = README[start : README.index("\n\n", start)]
    assert table == readme_table()


def test_every_task_is_in_the_readme():
    for name in ns.task_names:
        assert f"| `{name}` |" in README, name
