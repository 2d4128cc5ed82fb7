"""The Invoke collection of this repository: signalcraft-deploy's own tasks (the package does the work).

Invoke puts this folder, not the repository, on sys.path: the checkout's package is found from here,
so the tasks run from a checkout without installing it.
"""

import sys
from pathlib import Path

_CHECKOUT = str(Path(__file__).resolve().parent.parent)
if _CHECKOUT not in sys.path:
    sys.path.insert(0, _CHECKOUT)

from signalcraft_deploy import ns  # noqa: E402, F401  (invoke looks for `ns` here)
