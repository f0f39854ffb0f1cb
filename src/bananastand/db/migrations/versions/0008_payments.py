"""self-serve recharge through Stripe Checkout

`payments`: one row per Checkout Session made for an account, from open to paid
to refunded; `stripe_events`: the Stripe events acted on, by id, so a
redelivered event changes nothing; `accounts.api_access_auto_at`: when reaching
the recharge threshold turned API access on by itself (a refund may turn it off
again only then).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

import sqlalchemy as sa
from alembic import op

from bananastand.db.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("api_access_auto_at", UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "payments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("checkout_session_id", sa.String(255), nullable=True, unique=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("charge_id", sa.String(255), nullable=True),
        sa.Column("receipt_url", sa.Text(), nullable=True),
        sa.Column("recharge_id", sa.Integer(), sa.ForeignKey("recharges.id"), nullable=True),
        sa.Column("amount_refunded_minor", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("amount_disputed_minor", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("credits_clawed_back", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("credits_shortfall", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_payments_account_created", "payments", ["account_id", "created_at"])
    op.create_index("ix_payments_payment_intent_id", "payments", ["payment_intent_id"])
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("payment_id", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stripe_events_payment_id", "stripe_events", ["payment_id"])


def downgrade() -> None:
    op.drop_table("stripe_events")
    op.drop_table("payments")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("api_access_auto_at")
