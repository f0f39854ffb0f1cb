"""scale-out: generation attempts; the task queue's tables on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # procrastinate (the scale-out task queue) keeps its jobs in PostgreSQL,
        # so a job survives any process, and Redis, restarting.
        from procrastinate.schema import SchemaManager

        # The driver sees placeholders in '%': double them, as procrastinate does.
        bind.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("attempts")
