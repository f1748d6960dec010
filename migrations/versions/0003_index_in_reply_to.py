"""index message.in_reply_to for threading a parent that arrives after its reply

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_message_in_reply_to", "message", ["in_reply_to"])


def downgrade() -> None:
    op.drop_index("ix_message_in_reply_to", table_name="message")
