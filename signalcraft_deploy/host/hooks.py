"""Hooks: the user's own shell commands around a deploy (BEFORE_SWITCH, AFTER_SWITCH, ON_FAILURE).

Each runs on the host through remote/hook.py: in the release's directory, with the release's venv
first on PATH, the app's values (the release's env.json, as its processes get them, else its .env)
and DEPLOY_RELEASE / DEPLOY_PREVIOUS / DEPLOY_SHA in its environment, under HOOK_TIMEOUT. Its
output is printed as it comes, prefixed with the hook's name, with the .env's values masked (on the
host, and again here with APP_ENV_FILE's and REPO_URL's).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from signalcraft_deploy.core.render import APP_ENV_JSON
from signalcraft_deploy.core.secrets import masker_for
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.io import fail
from signalcraft_deploy.host.programs import run_program

VERDICT = "@@hook-verdict "


class Hook(StrEnum):
    """The hooks; the values are the names printed and audited. `key` is the setting that holds the
    command."""

    BEFORE_SWITCH = "before-switch"
    AFTER_SWITCH = "after-switch"
    ON_FAILURE = "on-failure"

    @property
    def key(self) -> str:
        return self.name

    def command(self, s: Settings) -> str | None:
        return getattr(s, self.name.lower())


@dataclass
class HookResult:
    hook: Hook
    exit: int
    timed_out: bool = False
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit == 0 and not self.timed_out

    def record(self) -> dict[str, Any]:
        return {
            "result": "ok" if self.ok else ("timed out" if self.timed_out else f"exit {self.exit}"),
            "seconds": self.seconds,
        }

    def describe(self, s: Settings) -> str:
        why = (
            f"did not finish within HOOK_TIMEOUT ({s.hook_timeout} s) and was stopped"
            if self.timed_out
            else f"exited with status {self.exit}"
        )
        shown = "\n    ".join(self.tail[-15:]) or "(no output)"
        return (
            f"{self.hook.key} `{self.hook.command(s)}` {why} after {self.seconds:.1f} s. Its last"
            f" output:\n    {shown}"
        )


def run_hook(
    c: Any,
    s: Settings,
    hook: Hook,
    *,
    release_dir: str,
    venv: str,
    env: dict[str, str],
    say: Callable[[str], None],
) -> HookResult:
    """Run one hook on the host; its output goes to `say` line by line as it comes."""
    spec = {
        "name": str(hook),
        "command": hook.command(s),
        "cwd": release_dir,
        "fallback_cwd": s.deploy_root,
        "path_first": f"{venv}/bin",
        "env_file": f"{release_dir}/.env",
        "env_json": f"{release_dir}/{APP_ENV_JSON}",  # the values as the apps' processes get them
        "env": env,
        "timeout": s.hook_timeout,
    }

    mask = masker_for(
        s
    )  # on top of the host's own masking (the release's .env): REPO_URL's password too

    def show(line: str) -> None:
        if not line.startswith(VERDICT):
            say(f"     {hook} | {mask(line)}")

    result = run_program(
        c, s, "hook.py", json.dumps(spec), warn=True, on_line=show, app=True
    )  # with the apps' rights
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(VERDICT)]
    if not verdicts:
        raise fail(
            f"{hook.key} could not be run on the host:"
            f" {mask((result.stderr or result.stdout).strip()[-500:])}"
        )
    verdict = json.loads(verdicts[-1][len(VERDICT) :])
    return HookResult(
        hook,
        int(verdict["exit"]),
        bool(verdict["timed_out"]),
        float(verdict["seconds"]),
        [mask(str(line)) for line in verdict["tail"]],
    )
