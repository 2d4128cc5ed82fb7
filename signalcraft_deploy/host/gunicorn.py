"""Gunicorn's effective configuration, read on the host by Gunicorn's own code: whether a HUP can
reload the running master into the new release (it cannot when the app is preloaded)."""

from __future__ import annotations

import json
from typing import Any

from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.render import GUNICORN_CONF
from signalcraft_deploy.core.secrets import masked
from signalcraft_deploy.core.settings import Settings
from signalcraft_deploy.host.app_user import as_app
from signalcraft_deploy.host.io import q, run
from signalcraft_deploy.remote import program


def effective_config(c: Any, s: Settings, facts: HostFacts, new_conf: str) -> dict[str, Any]:
    """{"live": {...}, "new": {...}}: the settings that decide how a reload works (preload_app,
    reuse_port, bind, worker_class...), for the live release's gunicorn.conf.py and for `new_conf`,
    each as the running master would read it (its command line and GUNICORN_CMD_ARGS), evaluated by
    the Gunicorn of its venv as the apps' account (remote/gunicorn_config.py); {"error": ...} when
    that cannot be done."""
    procs = [p for p in facts.apps(s.python_app) if p.pid]
    if not procs or not procs[0].exec_path.endswith("/bin/gunicorn"):
        return {"error": f"{s.python_app} is not a running Gunicorn"}
    python = procs[0].exec_path.removesuffix("/gunicorn") + "/python"
    spec = {
        "master": procs[0].pid,
        "confs": {"live": f"{s.current_dir}/{GUNICORN_CONF}"},
        "stdin": "new",
    }
    # The program is the first BYTES of stdin, the new file the rest (its own stdin).
    text = program("gunicorn_config")
    command = f'{q(python)} -I -c "$(head -c {len(text.encode())})" {q(json.dumps(spec))}'
    result = run(c, as_app(c, s, command), stdin=text + new_conf, warn=True)
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        said = masked(s, result.stderr.strip()[-300:]) or f"exit status {result.exited}"
        return {"error": f"the probe of Gunicorn's configuration failed: {said}"}
    if not isinstance(found, dict):
        return {"error": "the probe said nothing readable"}
    if "error" in found:  # it ran gunicorn.conf.py, which may compute from the app's values
        found["error"] = masked(s, str(found["error"]))
    return found
