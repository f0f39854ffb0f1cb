"""Operator actions on accounts, each written to the audit log.

The console's admin pages and the `bananastand admin` commands both come here,
so no state-changing admin action can skip the log. `actor` is the admin's
email, or "cli" for the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
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
            # `account` as it was before the change: what each value was, to read back.
            was = {name: getattr(account, name) for name in changes}
            return [audit_entry(actor, "update", account.id, {**changes, "was": was})]

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
        """The newest audit entries (of one account when `account_id` is given)."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(AuditEntry.account_id == account_id)

        def work(tx: Tx) -> list[AuditEntry]:
            return list(tx.session.scalars(query))

        return await self.db.read(work)

    async def audit_page(
        self,
        *,
        account: str = "",
        action: str = "",
        before: int | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """Audit entries newest first, by keyset (`before`: the previous page's last
        id), with the target account's email; `account` is an account id or a part
        of its email, `action` one action."""
        query = (
            select(AuditEntry, Account.email)
            .outerjoin(Account, Account.id == AuditEntry.account_id)
            .order_by(AuditEntry.id.desc())
            .limit(limit + 1)
        )
        if account.strip():
            wanted = account.strip()
            query = query.where(
                (AuditEntry.account_id == wanted)
                | Account.email.contains(wanted.lower(), autoescape=True)
            )
        if action:
            query = query.where(AuditEntry.action == action)
        if before is not None:
            query = query.where(AuditEntry.id < before)

        def work(tx: Tx) -> AuditPage:
            rows = [AuditRow(entry, email) for entry, email in tx.session.execute(query)]
            more = len(rows) > limit
            return AuditPage(rows[:limit], rows[limit - 1].entry.id if more else None)

        return await self.db.read(work)


@dataclass(frozen=True)
class AuditRow:
    entry: AuditEntry
    account_email: str | None  # None: no account, or one deleted since

    @property
    def change(self) -> str:
        return describe(self.entry.action, self.entry.details)


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    next_before: int | None  # None: the oldest entries are on this page


# Every action the log records, and how the console names it.
ACTIONS = {
    "first_admin": "first admin (setup code)",
    "create_account": "account created",
    "recharge": "recharge",
    "grant": "credits granted",
    "deduct": "credits deducted",
    "update": "access and limits",
    "set_password": "password set",
    "create_key": "API key created",
    "revoke_key": "API key revoked",
    "stripe.paid": "payment received (Stripe)",
    "stripe.refund": "payment refunded (Stripe)",
    "stripe.dispute_lost": "dispute lost (Stripe)",
    "stripe.dispute_closed": "dispute won (Stripe)",
    "stripe.money_back": "money back, nothing to take (Stripe)",
    "stripe.mismatch": "payment not matching its package (Stripe)",
    "stripe.failed": "payment failed (Stripe)",
}
_NAMES = {"api_access": "API access", "is_pro": "pro", "is_admin": "admin"}


def _flag(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "default" if value is None else str(value)


def _signed(credits: Any) -> str:
    return f"{credits:+,}" if isinstance(credits, int) else str(credits)


def _describe_payment(action: str, details: dict[str, Any]) -> str:
    ids = f"payment {details.get('payment', '?')}, session {details.get('session', '?')}"
    if action == "stripe.paid":
        text = f"paid {details.get('money', '?')}, credits {_signed(details.get('credits'))}"
        text += "; API access: off → on" if details.get("api_access_enabled") else ""
    elif action in ("stripe.refund", "stripe.dispute_lost"):
        text = (
            f"{details.get('money_back', '?')} back, credits -{details.get('credits_taken', 0):,}"
        )
        if details.get("shortfall"):
            text += f" (shortfall {details['shortfall']:,} already spent)"
        text += "; API access: on → off" if details.get("api_access_disabled") else ""
    elif action == "stripe.mismatch":
        expected, got = details.get("expected", "?"), details.get("got", "?")
        text = f"expected {expected}, got {got}; nothing credited"
    else:
        text = f"status {details.get('status', '?')}"
    return f"{text} ({ids})"


def describe(action: str, details: dict[str, Any]) -> str:
    """One audit entry's change, in words: "API access: off → on", "credits +50
    (reason: promo)". Entries written before a detail existed still read well."""
    details = dict(details or {})
    if action in ("grant", "deduct"):
        text = f"credits {_signed(details.get('credits'))}"
        return text + (f" (reason: {details['reason']})" if details.get("reason") else "")
    if action == "recharge":
        text = (
            f"recharge {details.get('money', '?')} {details.get('currency', '')}".rstrip()
            + f", credits {_signed(details.get('credits'))}"
        )
        if details.get("note"):
            text += f" (note: {details['note']})"
        return text + ("; API access: off → on" if details.get("api_access_enabled") else "")
    if action == "update":
        was = details.pop("was", {}) or {}
        parts = []
        for name, value in details.items():
            label = _NAMES.get(name, name.replace("_", " "))
            before = f"{_flag(was[name])} → " if name in was else "→ "
            parts.append(f"{label}: {before}{_flag(value)}")
        return ", ".join(parts) or "no change"
    if action.startswith("stripe."):
        return _describe_payment(action, details)
    if action == "first_admin":
        return f"admin, API access on, credits {_signed(details.get('credits', 0))}"
    if action == "create_account":
        flags = [_NAMES[n] for n in ("api_access", "is_pro", "is_admin") if details.get(n)]
        return "created" + (f" ({', '.join(flags)})" if flags else "")
    if action in ("create_key", "revoke_key") and details.get("prefix"):
        return f"key {details['prefix']}…"
    return ", ".join(f"{name}: {value}" for name, value in details.items())
