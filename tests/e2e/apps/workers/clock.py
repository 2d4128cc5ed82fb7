"""The test app's scheduler: `python clock.py` appends one line per second to data/ticks.log.

A line is `<unix second> <pid> <version>`. On SIGTERM it stops before its next tick and exits 0.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

VERSION = "1"
TICKS = Path("data/ticks.log")  # in SHARED_PATHS: one file across releases
stopping = False


def stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    last = None
    while not stopping:
        now = int(time.time())
        if now != last:
            with TICKS.open("a") as fh:
                fh.write(f"{now} {os.getpid()} {VERSION}\n")
            last = now
        time.sleep(1.02 - time.time() % 1)
