"""inbox search and presence: full-text index on messages, ticket_view, priority index

Full text, by dialect (models/search.py asks the matching question):
- SQLite: an FTS5 table over message(subject, text, from_address) with external content,
  kept in step by triggers. A later batch migration that copies `message` (SQLite's ALTER)
  drops these triggers with the old table: such a revision must create them again
  (create_sqlite_search below).
- PostgreSQL: a stored generated tsvector column with a GIN index. The body is cut at
  100,000 characters, because a tsvector over 1 MB would make the insert fail, and a
  message must never fail to store for the sake of search.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE_COLUMNS = "subject, text, from_address"
SQLITE_SEARCH = [
    f"CREATE VIRTUAL TABLE message_fts USING fts5({SQLITE_COLUMNS}, "
    "content='message', content_rowid='id')",
    "CREATE TRIGGER message_fts_insert AFTER INSERT ON message BEGIN "
    f"INSERT INTO message_fts(rowid, {SQLITE_COLUMNS}) "
    "VALUES (new.id, new.subject, new.text, new.from_address); END",
    "CREATE TRIGGER message_fts_delete AFTER DELETE ON message BEGIN "
    f"INSERT INTO message_fts(message_fts, rowid, {SQLITE_COLUMNS}) "
    "VALUES ('delete', old.id, old.subject, old.text, old.from_address); END",
    "CREATE TRIGGER message_fts_update AFTER UPDATE OF subject, text, from_address ON message "
    f"BEGIN INSERT INTO message_fts(message_fts, rowid, {SQLITE_COLUMNS}) "
    "VALUES ('delete', old.id, old.subject, old.text, old.from_address); "
    f"INSERT INTO message_fts(rowid, {SQLITE_COLUMNS}) "
    "VALUES (new.id, new.subject, new.text, new.from_address); END",
    "INSERT INTO message_fts(message_fts) VALUES ('rebuild')",
]
POSTGRESQL_SEARCH = [
    "ALTER TABLE message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
    "(to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || from_address || ' ' "
    "|| left(coalesce(text, ''), 100000))) STORED",
    "CREATE INDEX ix_message_search_vector ON message USING gin (search_vector)",
]


def create_sqlite_search() -> None:
    for statement in SQLITE_SEARCH:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "ticket_view",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("present_until", sa.DateTime(), nullable=False),
        sa.Column("composing", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"],
                                name=op.f("fk_ticket_view_agent_id_agent"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"],
                                name=op.f("fk_ticket_view_ticket_id_ticket"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ticket_id", "agent_id", name=op.f("pk_ticket_view")),
    )
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index("ix_ticket_priority_updated", ["priority", "updated_at"],
                              unique=False)
    if op.get_bind().dialect.name == "sqlite":
        create_sqlite_search()
    else:
        for statement in POSTGRESQL_SEARCH:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS message_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS message_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_message_search_vector")
        op.execute("ALTER TABLE message DROP COLUMN IF EXISTS search_vector")
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index("ix_ticket_priority_updated")
    op.drop_table("ticket_view")
