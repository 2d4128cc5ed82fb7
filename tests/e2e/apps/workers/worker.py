"""The test app's RQ worker: `python worker.py` (the Procfile's worker line).

Imports the jobs at start, so that a broken jobs.py (or this file) fails here, where the trial
sees it. SIGTERM is RQ's warm shutdown: the job in progress finishes, then the worker exits 0.
"""

from __future__ import annotations

import os

import jobs  # noqa: F401  (the job code, imported at start)
from redis import Redis
from rq import Queue, Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")

if __name__ == "__main__":
    connection = Redis.from_url(REDIS_URL)
    worker = Worker([Queue("default", connection=connection)], connection=connection)
    worker.work(with_scheduler=False)
