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


def test_migrations_match_the_models(database_url: str) -> None:
    """A model change without its Alembic revision shows up here as a difference."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = [d for d in compare_metadata(context, Base.metadata)
                           if not _search_machinery(d)]
        assert differences == []
    finally:
        engine.dispose()


def _search_machinery(difference: object) -> bool:
    """Full-text search tables and indexes live outside the models on purpose."""
    text = repr(difference)
    return any(name in text for name in ("message_search", "_fts", "search_vector", "tsv"))


def test_0006_gives_stored_mail_its_conversations_first_message_id(database_url: str) -> None:
    """thread_root for mail stored before it existed: References' first id, else the
    In-Reply-To, else the message's own id; our own outbound mail is left alone."""
    from sqlalchemy import text

    engine = make_engine(database_url)
    try:
        upgrade(engine, "0005")
        with engine.begin() as connection:
            for statement in (
                    "INSERT INTO queue (id, name, address) VALUES (1, 'Q', 'q@x.test')",
                    "INSERT INTO contact (id, email, name, created_at) "
                    "VALUES (1, 'ann@x.test', '', '2026-01-01')",
                    "INSERT INTO ticket (id, subject, status, priority, queue_id, requester_id, "
                    "snippet, message_count, created_at, updated_at) VALUES (1, 's', 'new', "
                    "'normal', 1, 1, '', 4, '2026-01-01', '2026-01-01')"):
                connection.execute(text(statement))
            for n, (direction, irt, refs) in enumerate([
                    ("inbound", None, None), ("inbound", "<a>", None),
                    ("inbound", "<c>", "<a> <b> <c>"), ("outbound", "<d>", "<a> <d>")]):
                connection.execute(text(
                    "INSERT INTO message (ticket_id, direction, dedup_key, message_id, "
                    "in_reply_to, \"references\", from_address, from_name, \"to\", cc, subject, "
                    "created_at, text, reply_text, auto_reason, threaded_by, threaded_ref, notes) "
                    "VALUES (1, :d, :k, :k, :irt, :refs, '', '', '[]', '[]', '', '2026-01-01', "
                    "'', '', '', 'new', '', '[]')"),
                    {"d": direction, "k": f"<m{n}>", "irt": irt, "refs": refs})
        upgrade(engine)
        with engine.connect() as connection:
            roots = connection.execute(text(
                "SELECT thread_root FROM message ORDER BY id")).scalars().all()
        assert roots == ["<m0>", "<a>", "<a>", None]
    finally:
        engine.dispose()


def test_a_reader_is_not_blocked_by_a_writer(tmp_path) -> None:
    """SQLite: web pages read while an ingest batch holds the write lock."""
    import time

    from sqlalchemy import text

    from models.db import make_read_sessions, make_sessions

    engine = make_engine(f"sqlite:///{tmp_path}/lock.db")
    try:
        upgrade(engine)
        with make_sessions(engine).begin() as writer:
            writer.execute(text("INSERT INTO queue (name, address) VALUES ('Q', 'q@x.test')"))
            started = time.monotonic()
            with make_read_sessions(engine)() as reader:
                assert reader.execute(text("SELECT count(*) FROM queue")).scalar() == 0
            assert time.monotonic() - started < 1  # no wait for the writer's busy timeout
    finally:
        engine.dispose()
