"""message.thread_root: the first Message-ID of a message's conversation (References' first
entry), so replies imported before the messages they answer, whose parents we never stored,
still find each other

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("message", sa.Column("thread_root", sa.Text(), nullable=True))
    op.create_index("ix_message_thread_root", "message", ["thread_root"])
    first = ("split_part(\"references\", ' ', 1)" if op.get_bind().dialect.name == "postgresql"
             else "substr(\"references\", 1, instr(\"references\" || ' ', ' ') - 1)")
    op.execute(
        f"UPDATE message SET thread_root = CASE WHEN coalesce(\"references\", '') != '' "
        f"THEN {first} ELSE coalesce(in_reply_to, message_id) END WHERE direction = 'inbound'")


def downgrade() -> None:
    op.drop_index("ix_message_thread_root", table_name="message")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("thread_root")
