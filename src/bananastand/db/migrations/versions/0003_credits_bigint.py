"""credits as 64-bit integers (PostgreSQL's INTEGER is 32-bit; SQLite's already is 64)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 03:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = [
    ("ledger_entries", "amount"),
    ("recharges", "credits"),
    ("generations", "unit_cost"),
    ("generations", "credits_charged"),
    ("generations", "credits_used"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
