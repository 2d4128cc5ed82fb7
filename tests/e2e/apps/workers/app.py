"""SignalCraft example with a worker and a scheduler (its Procfile): the Flask half of the stack.

Gunicorn runs it as ``app:create_app()``. Every answer says which release served it: the
deploy tool writes a ``REVISION`` file next to this one in each release directory, read once
at import (``dev`` when absent), and echoed in the JSON body and the ``X-Release`` header.

Routes:
- ``/api/flask/health`` and any path ending in ``/health``: ``{"status": "ok", ...}``.
- everything else, any method: ``{"app": "flask", "path": ..., "release": ..., "pid": ...}``,
  so whatever Python route prefixes the deploy sends here (``api/ai``, ``v2/ml``, ...) answer.

``python app.py`` runs Flask's development server on 127.0.0.1:$PORT (default 8001), the way
the old unmanaged host ran it (``nohup python app.py &``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify

HERE = Path(__file__).resolve().parent

# Tests edit this line to make a "new commit" whose answers differ from the last one.
VERSION = "1"


def _load_dotenv() -> None:
    """Load ``.env`` next to this file into the environment, if it exists and python-dotenv is
    installed.

    Existing environment variables win (``override=False``); values are never printed.
    """
    env_file = HERE / ".env"
    if not env_file.is_file():
        return
    try:
        from dotenv import load_dotenv
    except ImportError:
        return
    load_dotenv(env_file, override=False)


def _read_release() -> str:
    """The release this code belongs to: the first line of ``REVISION`` next to this file (or in the
    working directory, which is the release when the module lives in a subfolder), else ``dev``."""
    for folder in (HERE, Path.cwd()):
        try:
            lines = (folder / "REVISION").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if lines and lines[0].strip():
            return lines[0].strip()
    return "dev"


_load_dotenv()
RELEASE = _read_release()

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _health() -> dict[str, Any]:
    return {"status": "ok", "app": "flask", "release": RELEASE, "version": VERSION}


def create_app() -> Flask:
    """Build the Flask app (the factory Gunicorn calls: ``app:create_app()``)."""
    app = Flask(__name__, static_folder=None)

    @app.get("/api/flask/health")
    def health() -> Response:
        return jsonify(_health())

    @app.get("/api/flask/enqueue")
    def enqueue() -> Response:
        """Queue jobs.long_job(seconds, tag) for the worker (tests/e2e/test_processes.py)."""
        from flask import request
        from redis import Redis
        from rq import Queue

        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
        queue = Queue("default", connection=Redis.from_url(url))
        job = queue.enqueue(
            "jobs.long_job", float(request.args["seconds"]), request.args["tag"], job_timeout=120
        )
        return jsonify({"job": job.id})

    @app.route("/", defaults={"path": ""}, methods=ALL_METHODS)
    @app.route("/<path:path>", methods=ALL_METHODS)
    def catch_all(path: str) -> Response:
        full_path = "/" + path
        if full_path.rstrip("/").endswith("/health"):
            return jsonify(_health())
        return jsonify(
            {
                "app": "flask",
                "path": full_path,
                "release": RELEASE,
                "version": VERSION,
                "pid": os.getpid(),
            }
        )

    @app.after_request
    def tag_response(response: Response) -> Response:
        response.headers["X-Release"] = RELEASE
        response.headers["X-App"] = "flask"
        return response

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
