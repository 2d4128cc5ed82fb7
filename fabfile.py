"""The `fab` entry point: the same tasks as `invoke`, run on each host given with -H."""

from signalcraft_deploy import ns  # noqa: F401  (fab looks for `ns` here)
