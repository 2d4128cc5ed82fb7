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


class QuickWorker(Worker):
    """RQ 3.0's worker reads its command channel in a thread that waits up to 60 s for a message,
    and redis-py 8 joins that thread at shutdown: a warm shutdown would end a minute after its job.
    The same thread, asked every second."""

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )


if __name__ == "__main__":
    connection = Redis.from_url(REDIS_URL)
    worker = QuickWorker([Queue("default", connection=connection)], connection=connection)
    worker.work(with_scheduler=False)
