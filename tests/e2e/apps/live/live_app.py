"""The example app (its app.py, which this folder is laid over) with the routes of issue 28's tests:
/api/flask/slow?seconds=N answers after N seconds; /api/flask/stream?events=N&interval=S sends N
server-sent events S seconds apart (with `X-Accel-Buffering: no` unless &mark=0)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from app import RELEASE, VERSION
from app import create_app as example_app
from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    app = example_app()

    @app.get("/api/flask/slow")
    def slow() -> Response:
        started = time.time()
        time.sleep(float(request.args.get("seconds", "1")))
        return jsonify(
            {
                "app": "flask",
                "release": RELEASE,
                "version": VERSION,
                "pid": os.getpid(),
                "started": started,
                "ended": time.time(),
            }
        )

    @app.get("/api/flask/stream")
    def stream() -> Response:
        events = int(request.args.get("events", "5"))
        interval = float(request.args.get("interval", "1"))

        def generate() -> Iterator[str]:
            for number in range(events):
                if number:
                    time.sleep(interval)
                body = {"n": number, "sent": time.time(), "version": VERSION, "release": RELEASE}
                yield f"data: {json.dumps(body)}\n\n"

        headers = {"Cache-Control": "no-cache"}
        if request.args.get("mark", "1") != "0":
            headers["X-Accel-Buffering"] = "no"
        return Response(generate(), mimetype="text/event-stream", headers=headers)

    return app
