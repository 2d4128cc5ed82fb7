"""The RQ jobs of the test app: a job that takes a while and records which code ran it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

# Tests edit this line to make a "new commit" whose jobs differ from the last one.
VERSION = "1"
RECORDS = Path("data/jobs.jsonl")  # in SHARED_PATHS: one file across releases


def long_job(seconds: float, tag: str) -> str:
    """Sleep `seconds`, then append a record (tag, version, pid, start, end) to RECORDS."""
    started = time.time()
    time.sleep(seconds)
    record = {
        "tag": tag,
        "version": VERSION,
        "pid": os.getpid(),
        "started": started,
        "finished": time.time(),
        "mark": os.environ.get("JOB_MARK"),  # from APP_ENV_FILE, through the release's env.json
    }
    with RECORDS.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return VERSION
