"""Which app: the one name for it everywhere in the client (the programs on the host, stdlib-only
text, keep their strings). Below every other core module, so that any of them may use it."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signalcraft_deploy.core.settings import Settings


class App(StrEnum):
    """What a deploy acts on; the values are the words the plan, the summary and ROUTES use."""

    PYTHON = "python"
    NODEJS = "nodejs"
    NGINX = "nginx"

    def pm2_name(self, s: Settings) -> str:
        """The app's name in PM2 (Python or Node.js)."""
        return s.python_app if self is App.PYTHON else s.node_app
