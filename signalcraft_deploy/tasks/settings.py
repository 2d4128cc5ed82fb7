"""`settings`: each setting's effective value and where it came from, or the declared keys and
defaults."""

from __future__ import annotations

from invoke import Collection, Context, task

from signalcraft_deploy.core.settings import KEYS, Settings, effective, readme_table
from signalcraft_deploy.host.connect import COMMON_HELP, settings_for


def _columns(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows)


def effective_text(s: Settings) -> str:
    """Every key, its value (secrets masked, '—' when unset) and where it came from."""
    return _columns(
        [("KEY", "VALUE", "FROM")] + [(k, v or "—", where) for k, v, where in effective(s)]
    )


def files_text(s: Settings) -> str | None:
    """With an environment chosen: its name and the files read, the later over the earlier."""
    if not s.environment:
        return None
    files = " over ".join(f for f in (s.environment_file, s.settings_file) if f)
    return f"environment {s.environment}: {files}"


def defaults_text() -> str:
    """The declarations: every key, its default and what it means."""
    return _columns(
        [("KEY", "DEFAULT", "MEANING")] + [(k.name, k.default or "—", k.help) for k in KEYS]
    )


@task(
    iterable=["set_"],
    help={
        **COMMON_HELP,
        "defaults": "print every key with its default and meaning instead of the values in effect",
        "markdown": "with --defaults: as README's Settings table (Markdown)",
    },
)
def settings(
    c: Context,
    defaults: bool = False,
    markdown: bool = False,
    env_file: str | None = None,
    set_: list[str] | None = None,
    environment: str | None = None,
) -> None:
    """Show every setting's value and where it came from (default, .env:LINE, environment, flag), secrets masked."""
    if defaults:
        print(readme_table() if markdown else defaults_text())
        return
    s = settings_for(env_file, set_, environment)
    if header := files_text(s):
        print(header)
    print(effective_text(s))


ns = Collection(settings)
