"""Webhooks: when a generation with a `callbackUrl` ends, POST its poll answer there.

Signed the Standard Webhooks way (https://www.standardwebhooks.com): headers
`webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, keyed with the account's `whsec_…` secret.

Each message is a row (`webhook_deliveries`) written in the same transaction that
settles the generation, so none is lost to a crash; its body (the poll answer) is
built when it is sent. A delivery loop in every server and worker process sends
what is due, retrying with exponential backoff until a 2xx answer or until the
message is too old.
A process claims a message by moving its next attempt forward, so two processes
never send one message at the same time. Every message goes out on its own: a
receiver that hangs holds only its own attempts (at most
`webhook_concurrency_per_url` at once), never anyone else's. Generation never
waits for any of this.
Targets pass the same address checks as reference images, at submission and at
every connection (see `references`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update

from bananastand.contract_json import record_view
from bananastand.db import Database, Tx
from bananastand.db.models import Account, WebhookAttempt, WebhookDelivery, utcnow
from bananastand.errors import InvalidRequest
from bananastand.generations import Generations
from bananastand.references import (
    BlockedAddressError,
    HostNotFoundError,
    PinnedNetworkBackend,
    checked_url,
    is_blocked_address,
    parse_networks,
    pinned_transport,
)
from bananastand.storage import UrlSigner

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
ROTATION_GRACE = timedelta(days=1)
KEEP = timedelta(days=30)  # finished messages stay listed in the console this long


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class Webhooks:
    def __init__(
        self,
        db: Database,
        *,
        generations: Generations,
        signer: UrlSigner,
        allowed_networks: Sequence[str],
        timeout_seconds: float,
        backoff_seconds: float,
        max_backoff_seconds: float,
        max_age_seconds: float,
        poll_seconds: float,
        concurrency: int = 128,
        concurrency_per_url: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.generations = generations
        self.signer = signer
        self.timeout_seconds = timeout_seconds
        # A claimed message is left to its process this long: several attempts' time.
        self.claim_seconds = max(60.0, timeout_seconds * 3)
        self._allowed = parse_networks(allowed_networks)
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_age_seconds = max_age_seconds
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.concurrency_per_url = concurrency_per_url
        self._wake = asyncio.Event()
        self._sending: dict[str, asyncio.Task[None]] = {}  # message id -> its attempt
        self._per_url: Counter[str] = Counter()
        self._client = httpx.AsyncClient(
            transport=transport or pinned_transport(self._allowed, max_connections=concurrency),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": "Bananastand webhooks"},
        )

    async def aclose(self) -> None:
        """Stop the attempts under way (their claims run out; another try follows)."""
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*self._sending.values(), return_exceptions=True)
        await self._client.aclose()

    # --- submission ----------------------------------------------------------------
    async def check_url(self, url: str) -> str:
        """Refuse a `callbackUrl` that is malformed or names a private address."""
        checked = checked_url(url, "callbackUrl", self._allowed)
        try:
            addresses = await PinnedNetworkBackend(self._allowed).resolve(
                checked.host, checked.port or 443
            )
        except HostNotFoundError:
            raise InvalidRequest("callbackUrl: the host name does not resolve") from None
        if any(is_blocked_address(ip, self._allowed) for ip in addresses):
            raise InvalidRequest("callbackUrl: points to a private or local address")
        return str(checked)

    # --- secrets -------------------------------------------------------------------
    async def secret(self, account_id: str, *, rotate: bool = False) -> str:
        """The account's signing secret, made on first use (or anew with `rotate`;
        the old one keeps signing alongside it for `ROTATION_GRACE`)."""
        query = update(Account).where(Account.id == account_id)
        if rotate:
            query = query.values(
                webhook_previous_secret=Account.webhook_secret,
                webhook_rotated_at=utcnow(),
                webhook_secret=new_secret(),
            )
        else:
            query = query.where(Account.webhook_secret.is_(None)).values(
                webhook_secret=new_secret()
            )

        def work(tx: Tx) -> str | None:
            tx.session.execute(query)
            return tx.session.scalar(select(Account.webhook_secret).where(Account.id == account_id))

        secret = await self.db.write(work)
        assert secret is not None
        return secret

    async def _signing_secrets(self, account_id: str) -> list[str]:
        """The current secret, and the previous one while its grace period lasts."""
        row = await self.db.read(
            lambda tx: tx.session.execute(
                select(
                    Account.webhook_secret,
                    Account.webhook_previous_secret,
                    Account.webhook_rotated_at,
                ).where(Account.id == account_id)
            ).one()
        )
        current, previous, rotated_at = row
        secrets_ = [current or await self.secret(account_id)]
        if previous and rotated_at and utcnow() - rotated_at < ROTATION_GRACE:
            secrets_.append(previous)
        return secrets_

    # --- messages ------------------------------------------------------------------
    def wake(self) -> None:
        """A message was just written: look now rather than at the next poll."""
        self._wake.set()

    async def deliveries(self, account_id: str, *, limit: int = 50) -> list[WebhookDelivery]:
        def work(tx: Tx) -> list[WebhookDelivery]:
            return list(
                tx.session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.account_id == account_id)
                    .order_by(WebhookDelivery.created_at.desc())
                    .limit(limit)
                )
            )

        return await self.db.read(work)

    async def get(self, message_id: str) -> WebhookDelivery:
        delivery = await self.db.read(
            lambda tx: tx.session.scalar(
                select(WebhookDelivery).where(WebhookDelivery.id == message_id)
            )
        )
        assert delivery is not None
        return delivery

    # --- delivery --------------------------------------------------------------------
    async def run_forever(self) -> None:
        pruned_at = 0.0
        failing = False
        while True:
            self._wake.clear()  # before the round: a wake-up during it is not lost
            try:
                await self.deliver_due()
                if time.monotonic() - pruned_at > 3600:
                    pruned_at = time.monotonic()
                    await self.prune()
                if failing:
                    log.info("webhook delivery works again")
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not every round
                    log.warning("webhook delivery round failed: %s", type(exc).__name__)
                failing = True
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` can swallow
            # a cancellation that lands as the wake-up does, and shutdown hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    async def prune(self) -> int:
        """Forget messages (and their attempts) finished more than `KEEP` ago."""
        cutoff = utcnow() - KEEP

        def work(tx: Tx) -> int:
            old = select(WebhookDelivery.id).where(WebhookDelivery.finished_at < cutoff)
            tx.session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
            result = tx.session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.finished_at < cutoff)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

        return await self.db.write(work)

    async def deliver_due(self) -> int:
        """Start an attempt for every message that is due now and has room (in this
        process, and at its URL); answers how many were started. Each attempt runs
        on its own and wakes the loop when it ends."""
        room = self.concurrency - len(self._sending)
        if room <= 0:
            return 0
        busy = [url for url, count in self._per_url.items() if count >= self.concurrency_per_url]
        due_now = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.state == "pending",
                WebhookDelivery.next_attempt_at <= utcnow(),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(room)
        )
        if busy:
            due_now = due_now.where(WebhookDelivery.url.not_in(busy))
        due = await self.db.read(lambda tx: list(tx.session.scalars(due_now)))
        started = 0
        for delivery in due:
            if self._per_url[delivery.url] >= self.concurrency_per_url:
                self._wake.set()  # the others of this URL: look again at once
                continue
            if delivery.id in self._sending or not await self._claim(delivery):
                continue
            self._per_url[delivery.url] += 1
            self._sending[delivery.id] = asyncio.create_task(
                self._send(delivery), name=f"webhook-{delivery.id}"
            )
            started += 1
        return started

    async def _send(self, delivery: WebhookDelivery) -> None:
        try:
            await self._attempt(delivery)
        except Exception:
            log.exception("webhook %s: attempt failed", delivery.id)
        finally:
            del self._sending[delivery.id]
            self._per_url[delivery.url] -= 1
            if self._per_url[delivery.url] <= 0:
                del self._per_url[delivery.url]
            self._wake.set()  # room again: whatever waited for it goes now

    async def _claim(self, delivery: WebhookDelivery) -> bool:
        claim = (
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                WebhookDelivery.state == "pending",
                WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
            )
            .values(next_attempt_at=utcnow() + timedelta(seconds=self.claim_seconds))
        )
        return await self.db.write(
            lambda tx: bool(tx.session.execute(claim).rowcount)  # type: ignore[attr-defined]
        )

    async def _body(self, generation_id: str) -> bytes:
        """The poll answer, as `GET /api/v1/generate?id=` gives it."""
        record = await self.generations.get(generation_id)
        answer = {"data": record_view(record, self.signer)}
        return json.dumps(answer, separators=(",", ":")).encode()

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        keys = await self._signing_secrets(delivery.account_id)
        body = await self._body(delivery.generation_id)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            # Space-separated signatures: receivers accept the message if any matches.
            "webhook-signature": " ".join(sign(k, delivery.id, timestamp, body) for k in keys),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            # One deadline for the whole attempt; the answer's body is never read.
            async with (
                asyncio.timeout(self.timeout_seconds),
                self._client.stream("POST", delivery.url, content=body, headers=headers) as answer,
            ):
                status = answer.status_code
        except BlockedAddressError:
            error = "the host resolves to a private or local address"
        except HostNotFoundError:
            error = "the host name does not resolve"
        except (TimeoutError, httpx.TimeoutException):
            error = "timed out"
        except httpx.HTTPError as exc:
            error = f"connection failed ({type(exc).__name__})"
        duration = int((time.monotonic() - started) * 1000)
        await self._record(delivery, body, status, error, duration)

    async def _record(
        self,
        delivery: WebhookDelivery,
        body: bytes,
        status: int | None,
        error: str | None,
        duration_ms: int,
    ) -> None:
        now = utcnow()
        number = delivery.attempts + 1
        values: dict[str, Any] = {"attempts": number, "payload": body.decode()}
        delivered = status is not None and 200 <= status < 300
        if delivered:
            values.update(state="delivered", next_attempt_at=None, finished_at=now)
        else:
            delay = min(self.backoff_seconds * 2 ** (number - 1), self.max_backoff_seconds)
            next_at = now + timedelta(seconds=delay)
            if next_at > delivery.created_at + timedelta(seconds=self.max_age_seconds):
                values.update(state="failed", next_attempt_at=None, finished_at=now)
            else:
                values.update(next_attempt_at=next_at)

        def work(tx: Tx) -> bool:
            # Only if no other process took the message over meanwhile (a claim that
            # ran out): then its result, not this late one, counts.
            result = tx.session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.state == "pending",
                    WebhookDelivery.attempts == delivery.attempts,
                )
                .values(**values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            tx.session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    number=number,
                    status_code=status,
                    error=error,
                    duration_ms=duration_ms,
                    created_at=now,
                )
            )
            return True

        if not await self.db.write(work):
            log.warning("webhook %s: a late attempt was discarded", delivery.id)
            return
        if delivered:
            log.info("webhook %s delivered (attempt %d)", delivery.id, number)
        else:
            why = error or f"HTTP {status}"
            log.info("webhook %s attempt %d failed: %s", delivery.id, number, why)
