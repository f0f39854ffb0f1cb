"""each account's slots taken, kept on its row

`accounts.active_generations`: how many of the account's generations are queued
or running, changed in the transactions that admit and settle them; admission
reads it instead of counting the account's backlog. Filled here by counting.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("active_generations", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE accounts SET active_generations = (SELECT COUNT(*) FROM generations g "
        "WHERE g.account_id = accounts.id AND g.state IN ('queued', 'running'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("active_generations")
