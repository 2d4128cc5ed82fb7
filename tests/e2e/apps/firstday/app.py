"""The end-to-end tests' own app for a first day (issue 25): not shaped like the bundled example.

A module-level ``app = Flask(__name__)`` (no factory), Flask owning ``/`` and routes of its own, a
health route at ``/healthz``; the Node.js half (index.js) lives under ``/chat``. Nothing in it knows
signalcraft-deploy.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, jsonify, redirect, request, url_for

HERE = Path(__file__).resolve().parent
VERSION = "1"  # tests edit this line to make a new commit


def _release() -> str:
    try:
        return (HERE / "REVISION").read_text(encoding="utf-8").splitlines()[0].strip() or "dev"
    except (OSError, IndexError):
        return "dev"


RELEASE = _release()
app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(app="flask", page="index", release=RELEASE, version=VERSION, pid=os.getpid())


@app.get("/jobs/")
def jobs():
    return jsonify(app="flask", page="jobs", release=RELEASE, version=VERSION, jobs=[])


@app.get("/jobs/<int:job_id>")
def job(job_id: int):
    return jsonify(app="flask", page="job", id=job_id, release=RELEASE)


@app.get("/go-to-jobs")
def go_to_jobs():
    return redirect(url_for("jobs"))


@app.get("/where")
def where():
    return jsonify(
        script_root=request.script_root,
        url_root=request.url_root,
        path=request.path,
        jobs_url=url_for("jobs"),
        host=request.host,
    )


@app.get("/healthz")
def healthz():
    return jsonify(status="ok", release=RELEASE)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
