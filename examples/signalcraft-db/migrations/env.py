"""Alembic's environment for Flask-Migrate: each upgrade runs in ONE transaction.

SQLite can roll back DDL, but Python's sqlite3 module commits before each DDL statement on its
own; the two event hooks below (SQLAlchemy's documented recipe) hand transactions to SQLAlchemy,
so a migration that fails half-way leaves the schema exactly as it was.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from flask import current_app
from sqlalchemy import event

config = context.config
if config.config_file_name:
    fileConfig(config.config_file_name)  # alembic.ini: 'Running upgrade ...' lines on stderr
db = current_app.extensions["migrate"].db
engine = db.engine

if engine.dialect.name == "sqlite":

    @event.listens_for(engine, "connect")
    def _no_pysqlite_transactions(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN")


def run_migrations_online() -> None:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=db.metadata,
            transactional_ddl=True,
            render_as_batch=engine.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=str(engine.url), target_metadata=db.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
