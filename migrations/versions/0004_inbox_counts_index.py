"""inbox counts index: the sidebar's grouped count reads an index, not 100,000 table rows

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ticket_counts", "ticket",
                    ["status", "queue_id", "assignee_id", "merged_into_id"])


def downgrade() -> None:
    op.drop_index("ix_ticket_counts", table_name="ticket")
