"""Engines and sessions for SQLite and PostgreSQL, and the schema upgrade."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, Table, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def make_engine(url: str, *, pool_size: int = 10,
                busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """SQLite: WAL, foreign keys, busy timeout and working SAVEPOINTs; PostgreSQL: psycopg 3."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_ms / 1000,
                               "check_same_thread": False})
        _tune_sqlite(engine, busy_timeout_ms)
        return engine
    if parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)


def _tune_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # pysqlite opens transactions lazily and breaks SAVEPOINT; SQLAlchemy's documented
    # recipe: let the driver do nothing and emit BEGIN ourselves.
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not just a crash
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):  # type: ignore[no-untyped-def]
        # IMMEDIATE takes the write lock up front: two writers wait on busy_timeout
        # instead of failing with "database is locked" on lock upgrade. Readers (web
        # pages) ask for read_only and take no lock: WAL lets them read beside a writer.
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading only: on SQLite they never hold the write lock."""
    return sessionmaker(engine.execution_options(read_only=True), expire_on_commit=False)


IN_LIST_SIZE = 500  # values per IN (...): under every database's parameter limit


def in_lists(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """A long list of values cut into IN lists the database accepts."""
    for start in range(0, len(values), IN_LIST_SIZE):
        yield values[start:start + IN_LIST_SIZE]


def dialect_insert(session: Session):  # type: ignore[no-untyped-def]
    """INSERT with ON CONFLICT DO NOTHING for this session's database (SQLite or PostgreSQL):
    insert-if-absent in one statement, with no savepoint and no flush of pending objects."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def new_ids(session: Session, table: Table, count: int, *, ahead: int = 0) -> list[int]:
    """Ids for rows about to be inserted, known before the INSERT: a batch links its rows
    (a message to its new ticket, an event to its message) while it collects them and then
    inserts each table with one executemany. PostgreSQL hands them out from the id's
    sequence, with `ahead` more kept for the session's next calls (a gap if unused, as a
    rolled-back insert leaves: fine for message ids, not for the ticket numbers people see).
    SQLite takes the ones after the highest, as its own rowid choice would, counting on from
    there for the rest of the transaction: a writing transaction holds the write lock
    (BEGIN IMMEDIATE), so no one else inserts meanwhile. An id is never handed out twice in
    one session: it may still hold objects loaded for ids a savepoint took back."""
    if session.get_bind().dialect.name == "postgresql":
        block = session.info.setdefault("id_blocks", {}).setdefault(table.name, [])
        if len(block) < count:
            block += sorted(session.connection().scalars(text(
                "SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                "FROM generate_series(1, :n)"), {"table": table.name, "n": count + ahead}))
        taken, block[:count] = block[:count], []
        return taken
    counters = session.info.setdefault("id_counters", {})
    transaction, next_id = counters.get(table.name, (None, 0))
    if transaction is not session.get_transaction():
        transaction = session.get_transaction()
        highest = session.connection().scalar(select(func.max(table.c.id))) or 0
        next_id = max(next_id, highest + 1)
    counters[table.name] = (transaction, next_id + count)
    return list(range(next_id, next_id + count))


@event.listens_for(Session, "before_flush")
def _objects_take_handed_out_ids(session: Session, _context: object, _instances: object) -> None:
    """Once new_ids has handed out SQLite ids for a table in this transaction, an object
    added for that table takes its id from new_ids too: the database's own choice (the
    highest + 1) could be one handed out for a row not inserted yet. (PostgreSQL's
    sequence never hands an id out twice.)"""
    counters = session.info.get("id_counters")
    if not counters:
        return
    for instance in list(session.new):
        table = inspect(instance).mapper.local_table
        if table.name in counters and instance.id is None:
            instance.id = new_ids(session, table, 1)[0]


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def migrations_dir() -> Path:
    """migrations/ in a checkout, or inside the package of an installed wheel."""
    import mailgateway

    packaged = Path(mailgateway.__file__).parent / "_migrations"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "migrations"


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Create or upgrade the schema to the newest revision (or the one given, for testing
    a migration's data step); safe to run any number of times."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return ""
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() or ""
