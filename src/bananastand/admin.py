"""Operator actions on accounts, each written to the audit log.

The console's admin pages and the `bananastand admin` commands both come here,
so no state-changing admin action can skip the log. `actor` is the admin's
email, or "cli" for the command line.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bananastand.accounts import Accounts
from bananastand.billing import Billing
from bananastand.db import Database, Tx
from bananastand.db.models import Account, AuditEntry, utcnow


def audit_entry(
    actor: str, action: str, account_id: str | None, details: dict[str, Any]
) -> AuditEntry:
    """One audit row, to add in the transaction of the change it records."""
    return AuditEntry(
        actor=actor, action=action, account_id=account_id, details=details, created_at=utcnow()
    )


class Administration:
    """Each change and its audit entry commit together (the services' `also`), so
    neither can exist without the other."""

    def __init__(self, db: Database, accounts: Accounts, billing: Billing) -> None:
        self.db = db
        self.accounts = accounts
        self.billing = billing

    async def record(self, actor: str, action: str, account_id: str | None, **details: Any) -> None:
        """Write one audit entry (for actions made elsewhere, e.g. a key the CLI made)."""
        await self.db.write(
            lambda tx: tx.session.add(audit_entry(actor, action, account_id, details))
        )

    async def recharge(
        self,
        actor: str,
        account_id: str,
        *,
        money: str | Decimal,
        credits: int,
        currency: str | None = None,
        note: str = "",
    ) -> Account:
        target = await self.accounts.get(account_id)
        details = {
            "currency": (currency or self.billing.currency).upper(),
            "credits": credits,
            "note": note,
        }

        def audit(account: Account) -> list[AuditEntry]:
            amount = Decimal(str(money).strip()).quantize(Decimal("0.01"))  # as recorded
            enabled = account.api_access and not target.api_access
            details_now = {"money": str(amount), **details, "api_access_enabled": enabled}
            return [audit_entry(actor, "recharge", account.id, details_now)]

        return await self.billing.recharge(
            target.id, money=money, credits=credits, currency=currency, note=note, also=audit
        )

    async def adjust(self, actor: str, account_id: str, *, credits: int, reason: str) -> int:
        """Grant (positive) or deduct (negative) credits; answers the new balance."""
        action = "grant" if credits >= 0 else "deduct"
        details = {"credits": credits, "reason": reason}

        def audit(account: Account) -> list[AuditEntry]:
            return [audit_entry(actor, action, account.id, details)]

        if credits >= 0:
            return await self.billing.grant(account_id, credits, reason=reason, also=audit)
        return await self.billing.deduct(account_id, -credits, reason=reason, also=audit)

    async def update(
        self,
        actor: str,
        account_id: str,
        *,
        api_access: bool | None = None,
        is_pro: bool | None = None,
        is_admin: bool | None = None,
        concurrency_limit: int | None = None,
        reset_concurrency_limit: bool = False,
    ) -> Account:
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("api_access", api_access),
                ("is_pro", is_pro),
                ("is_admin", is_admin),
                ("concurrency_limit", concurrency_limit),
            )
            if value is not None
        }
        if reset_concurrency_limit:
            changes["concurrency_limit"] = "default"

        def audit(account: Account) -> list[AuditEntry]:
            return [audit_entry(actor, "update", account.id, changes)]

        return await self.accounts.update(
            account_id,
            api_access=api_access,
            is_pro=is_pro,
            is_admin=is_admin,
            concurrency_limit=concurrency_limit,
            reset_concurrency_limit=reset_concurrency_limit,
            also=audit,
        )

    async def audit_log(
        self, *, account_id: str | None = None, limit: int = 200
    ) -> list[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(AuditEntry.account_id == account_id)

        def work(tx: Tx) -> list[AuditEntry]:
            return list(tx.session.scalars(query))

        return await self.db.read(work)
