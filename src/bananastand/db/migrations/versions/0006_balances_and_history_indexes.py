"""balances kept beside the ledger, and indexes that keep history reads flat

- `accounts.balance`: the sum of the account's ledger, changed in the same
  transaction as every entry (admission and `/credits` read it instead of summing
  the whole ledger); filled here from each account's ledger.
- `ledger_entries.balance_after`: the balance right after each entry (the running
  balance a statement shows; `admin reconcile` checks it); filled here in order.
- indexes that match how history is read, newest first by keyset:
  generations by (account_id, created_at, id), the ledger by (account_id, id);
- partial indexes over the generations in progress only (admission, the queue),
  instead of indexes over every generation's state.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 06:00:00
"""

import sqlalchemy as sa
from alembic import op

IN_PROGRESS_SQL = "state IN ('queued', 'running')"  # as `db.models` spells it

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(
            sa.Column("balance_after", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE accounts SET balance = COALESCE((SELECT SUM(l.amount) FROM ledger_entries l "
        "WHERE l.account_id = accounts.id), 0)"
    )
    op.execute(
        "UPDATE ledger_entries SET balance_after = r.running FROM ("
        "SELECT id, SUM(amount) OVER (PARTITION BY account_id ORDER BY id) AS running "
        "FROM ledger_entries) AS r WHERE ledger_entries.id = r.id"
    )
    op.drop_index("ix_ledger_account_amount", table_name="ledger_entries")
    op.create_index("ix_ledger_account_id", "ledger_entries", ["account_id", "id"])
    op.create_index(
        "ix_generations_account_created", "generations", ["account_id", "created_at", "id"]
    )
    op.drop_index("ix_generations_account_state", table_name="generations")
    op.drop_index("ix_generations_state_created", table_name="generations")
    for name, column in (
        ("ix_generations_active_account", "account_id"),
        ("ix_generations_active_created", "created_at"),
    ):
        op.create_index(
            name,
            "generations",
            [column],
            sqlite_where=sa.text(IN_PROGRESS_SQL),
            postgresql_where=sa.text(IN_PROGRESS_SQL),
        )


def downgrade() -> None:
    op.drop_index("ix_generations_active_created", table_name="generations")
    op.drop_index("ix_generations_active_account", table_name="generations")
    op.create_index("ix_generations_state_created", "generations", ["state", "created_at"])
    op.create_index("ix_generations_account_state", "generations", ["account_id", "state"])
    op.drop_index("ix_generations_account_created", table_name="generations")
    op.drop_index("ix_ledger_account_id", table_name="ledger_entries")
    op.create_index("ix_ledger_account_amount", "ledger_entries", ["account_id", "amount"])
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("balance_after")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("balance")
