"""The example app (its app.py, which this folder is laid over) with one route more:
/api/flask/enqueue queues jobs.long_job for the Procfile's worker (tests/e2e/test_processes.py)."""

from __future__ import annotations

import os

from app import create_app as example_app
from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    app = example_app()

    @app.get("/api/flask/enqueue")
    def enqueue() -> Response:
        """Queue jobs.long_job(seconds, tag) for the worker."""
        from redis import Redis
        from rq import Queue

        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
        queue = Queue("default", connection=Redis.from_url(url))
        job = queue.enqueue(
            "jobs.long_job", float(request.args["seconds"]), request.args["tag"], job_timeout=120
        )
        return jsonify({"job": job.id})

    return app
