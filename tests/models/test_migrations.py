"""The schema comes from Alembic migrations on an empty database, and init is idempotent."""

from __future__ import annotations

from sqlalchemy import inspect

from models.db import current_revision, make_engine, upgrade
from models.schema import Base


def test_migrations_create_every_table_and_run_twice(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == ""
        head = upgrade(engine)
        assert head and upgrade(engine) == head
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        engine.dispose()
