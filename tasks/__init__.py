"""The Invoke collection of this repository: signalcraft-deploy's own tasks (the package does the work)."""

from signalcraft_deploy import ns  # noqa: F401  (invoke looks for `ns` here)
