"""SignalCraft with a database: the example app for migrations (BEFORE_SWITCH).

Flask-SQLAlchemy holds one table, ``items``; Flask-Migrate (Alembic) owns its schema in
``migrations/``. The database is ``DATABASE_URL`` (from the environment, or ``.env`` next to this
file): SQLite in the deploy's ``shared/`` folder, so it outlives releases. The deploy runs the
migrations before the new release serves:

    BEFORE_SWITCH=flask --app app:create_app db upgrade

Release 2 of this example (``upgrades/README.md``) adds a column, ``color``, that its code reads:
``SCHEMA = 2`` below, and ``upgrades/0002_add_color.py`` copied into ``migrations/versions/``.

Routes: ``/api/flask/health`` (asks the database), ``/api/flask/items`` (GET lists, POST adds
``{"name": ...}``), and ``/`` from the Node.js server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import inspect, text

HERE = Path(__file__).resolve().parent

# Which migrations this code expects: 1 = items(id, name); 2 adds items.color.
SCHEMA = 1


def _load_dotenv() -> None:
    env_file = HERE / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)


def _read_release() -> str:
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
db = SQLAlchemy()
migrate = Migrate()


class Item(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "items"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80), nullable=False)
    if SCHEMA >= 2:
        color = db.Column(db.String(20), nullable=False, server_default="blue")

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "name": self.name}
        if SCHEMA >= 2:
            out["color"] = self.color
        return out


def create_app() -> Flask:
    """The factory Gunicorn and `flask --app app:create_app` call."""
    app = Flask(__name__, static_folder=None)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL", f"sqlite:///{HERE / 'dev.sqlite'}"
    )
    db.init_app(app)
    migrate.init_app(app, db, directory=str(HERE / "migrations"))

    @app.get("/api/flask/health")
    def health() -> Response:
        # The database answers. Not the schema: the trial run calls this before BEFORE_SWITCH
        # migrates.
        db.session.execute(text("SELECT 1"))
        return jsonify({"status": "ok", "app": "flask", "release": RELEASE, "schema": SCHEMA})

    @app.get("/api/flask/items")
    def items() -> Response:
        return jsonify([item.to_dict() for item in Item.query.order_by(Item.id)])

    @app.post("/api/flask/items")
    def add_item() -> tuple[Response, int]:
        item = Item(name=str((request.get_json(silent=True) or {}).get("name", "unnamed"))[:80])
        db.session.add(item)
        db.session.commit()
        return jsonify(item.to_dict()), 201

    @app.get("/api/flask/schema")
    def schema() -> Response:
        columns = [c["name"] for c in inspect(db.engine).get_columns("items")]
        return jsonify({"columns": columns, "release": RELEASE})

    @app.after_request
    def tag_response(response: Response) -> Response:
        response.headers["X-Release"] = RELEASE
        return response

    return app
