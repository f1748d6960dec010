"""raw_mail.recipients: the envelope's RCPT TO, so a quarantined mail retried later is routed
and threaded (reply token in the envelope) as it would have been when it arrived

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("raw_mail", sa.Column("recipients", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("raw_mail") as batch:
        batch.drop_column("recipients")
