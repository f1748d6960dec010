"""Alembic environment: runs on the connection models.db.upgrade hands in."""

from alembic import context

from models.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `mailgateway init`, which passes the configured database")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
