"""signalcraft-deploy: zero-downtime deploys of a Flask (Gunicorn) + Node.js app under PM2 behind
Nginx.

The layout, by concern:
  core/     settings, rendering, planning, the source tree: pure, no host
  host/     the host adapters: running commands, connecting, facts, PM2/Nginx/install operations
  steps/    a deploy as steps with their undo, and the runner that carries them out
  remote/   programs that run on the host (sent over stdin), as real files
  tasks/    the Invoke tasks, one module per concern, each ending in its Collection
`collection.ns` joins the tasks; `fab` and `invoke` find it through a fabfile.py / tasks.py.
"""

from typing import Any

__version__ = "0.4.0"


def __getattr__(name: str) -> Any:
    # `from signalcraft_deploy import ns` loads the tasks (Fabric, Invoke) only when asked for.
    if name == "ns":
        import gc

        # No garbage collection while the tasks load: importing them makes objects by the
        # thousand (dataclasses, patterns) and little garbage, and collection.py freezes them all;
        # the ~20 collections it would run cost 7 ms of CPU of each `fab` start (0.096 -> 0.089 s).
        gc.disable()
        try:
            from signalcraft_deploy.collection import ns
        finally:
            gc.enable()
        return ns
    raise AttributeError(name)
