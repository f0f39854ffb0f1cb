"""Webhooks: `callbackUrl` gets the poll answer, signed the Standard Webhooks way
(checked with the reference implementation), retried until a 2xx, given up when
too old, and refused up front for private addresses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bananastand.webhooks import new_secret
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.support import BOTH_DEPLOYMENTS, Api, wait_until

pytestmark = BOTH_DEPLOYMENTS

FAST = {
    "reference_allowed_networks": ["127.0.0.1/32"],
    "webhook_backoff_seconds": 0.05,
    "webhook_poll_seconds": 0.05,
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


async def delivery_of(api: Api, generation_id: str) -> Any:
    from sqlalchemy import select

    from bananastand.db.models import WebhookDelivery

    return await api.services.db.read(
        lambda tx: tx.session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.generation_id == generation_id)
        )
    )


async def settled_delivery(api: Api, generation_id: str) -> Any:
    async def finished() -> bool:
        delivery = await delivery_of(api, generation_id)
        return delivery is not None and delivery.state != "pending"

    await wait_until(finished, timeout=20)
    return await delivery_of(api, generation_id)


async def test_a_signed_poll_answer_is_retried_until_a_2xx(
    api_factory: Any, receiver: WebhookReceiver
) -> None:
    api = await api_factory(**FAST)
    receiver.statuses = [500, 503, 204]
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="a lighthouse", callbackUrl=receiver.url)
    assert answer.status_code == 200
    generation_id = answer.json()["generationId"]

    delivery = await settled_delivery(api, generation_id)
    assert delivery.state == "delivered"
    assert [attempt.status_code for attempt in delivery.tries] == [500, 503, 204]
    assert receiver.count() == 3
    # Nothing more is due: a delivered message is never sent again.
    assert await api.services.webhooks.deliver_due() == 0
    assert receiver.count() == 3

    secret = await api.services.webhooks.secret(key.account_id)
    poll = await api.poll(key, generation_id)
    for received in receiver.received:
        assert received.path == "/hooks/bananastand"
        assert received.headers["content-type"] == "application/json"
        assert received.headers["webhook-id"] == delivery.id
        # The reference implementation accepts the signature (and the timestamp).
        assert Webhook(secret).verify(received.body, received.headers) == {"data": poll}
    assert json.loads(receiver.received[0].body)["data"]["processingStatus"] == "completed"


async def test_signatures_fail_for_a_changed_body_or_another_secret(
    api_factory: Any, receiver: WebhookReceiver
) -> None:
    api = await api_factory(**FAST)
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x", callbackUrl=receiver.url)
    await settled_delivery(api, answer.json()["generationId"])
    received = receiver.received[0]
    secret = await api.services.webhooks.secret(key.account_id)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(received.body.replace(b"completed", b"failed"), received.headers)
    other = await api.services.webhooks.secret(key.account_id, rotate=True)
    assert other != secret
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(received.body, received.headers)
    # After a rotation both secrets verify new messages for a day (receivers switch
    # over without losing any); a made-up one never does.
    answer = await api.generate(key, prompt="y", callbackUrl=receiver.url)
    await settled_delivery(api, answer.json()["generationId"])
    after = receiver.received[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 2
    for usable in (secret, other):
        assert Webhook(usable).verify(after.body, after.headers)["data"]["prompt"] == "y"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(after.body, after.headers)


async def test_failed_generations_are_called_back_too(
    api_factory: Any, receiver: WebhookReceiver
) -> None:
    api = await api_factory(builtin_failure_rate=1.0, **FAST)
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x", callbackUrl=receiver.url)
    assert answer.status_code == 502
    delivery = await settled_delivery(api, answer.json()["generationId"])
    assert delivery.state == "delivered"
    body = json.loads(receiver.received[0].body)
    assert body["data"]["processingStatus"] == "failed"
    assert body["data"]["errorMessage"]


async def test_deliveries_stop_when_too_old(api_factory: Any, receiver: WebhookReceiver) -> None:
    api = await api_factory(**{**FAST, "webhook_max_age_seconds": 0.3})
    receiver.statuses = [500]
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x", mode="async", callbackUrl=receiver.url)
    delivery = await settled_delivery(api, answer.json()["generationId"])
    assert delivery.state == "failed"
    assert delivery.attempts == len(delivery.tries) >= 2
    assert all(attempt.status_code == 500 for attempt in delivery.tries)
    assert await api.services.webhooks.deliver_due() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://localhost/hook",
        "http://[::1]/hook",
        "ftp://example.com/hook",
        "not a url",
        "http:///nohost",
    ],
)
async def test_unsafe_or_malformed_callback_urls_are_refused_and_cost_nothing(
    api: Api, url: str
) -> None:
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x", callbackUrl=url)
    assert answer.status_code == 400
    assert answer.json()["type"] == "invalid_request"
    assert answer.json()["error"].startswith("callbackUrl")
    assert await api.balance(key) == 10


async def test_callback_url_must_be_a_string(api: Api) -> None:
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x", callbackUrl=42)
    assert answer.status_code == 400
    assert "callbackUrl" in answer.json()["error"]


async def test_requests_without_a_callback_send_nothing(
    api_factory: Any, receiver: WebhookReceiver
) -> None:
    api = await api_factory(**FAST)
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x")
    assert await delivery_of(api, answer.json()["generationId"]) is None
    assert await api.services.webhooks.deliver_due() == 0
    assert receiver.count() == 0


async def test_finished_messages_are_pruned_after_30_days(
    api_factory: Any, receiver: WebhookReceiver
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bananastand.db.models import WebhookDelivery, utcnow

    api = await api_factory(**FAST)
    key = await api.account(credits=10)
    old = await api.generate(key, prompt="old", callbackUrl=receiver.url)
    new = await api.generate(key, prompt="new", callbackUrl=receiver.url)
    for answer in (old, new):
        await settled_delivery(api, answer.json()["generationId"])
    long_ago = utcnow() - timedelta(days=31)
    await api.services.db.write(
        lambda tx: tx.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.generation_id == old.json()["generationId"])
            .values(finished_at=long_ago)
        )
    )
    assert await api.services.webhooks.prune() == 1
    assert await delivery_of(api, old.json()["generationId"]) is None
    assert await delivery_of(api, new.json()["generationId"]) is not None


async def test_an_empty_callback_url_means_none(api: Api) -> None:
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="x", callbackUrl="")
    assert answer.status_code == 200
    assert await delivery_of(api, answer.json()["generationId"]) is None


async def test_hanging_receivers_delay_no_one_else(
    api_factory: Any, receiver: WebhookReceiver
) -> None:
    """16 endpoints that never answer hold only their own attempts (a few each);
    another account's message still goes out at once."""
    from collections import Counter

    api = await api_factory(**{**FAST, "webhook_timeout_seconds": 60})
    hanging = WebhookReceiver(hang=True)
    try:
        bad = await api.account(credits=200)
        base = hanging.url.rsplit("/", 2)[0]
        for endpoint in range(16):
            for _ in range(5):
                answer = await api.generate(bad, prompt="x", callbackUrl=f"{base}/hook/{endpoint}")
                assert answer.status_code == 200
        per_url = api.services.settings.webhook_concurrency_per_url
        # Each delivering process keeps to the bound: the API process, and in
        # scale-out the worker too.
        processes = 1 if api.services.redis is None else 2

        async def all_hanging() -> bool:
            counts = Counter(hanging.paths())
            return len(counts) == 16 and min(counts.values()) >= per_url

        await wait_until(all_hanging, timeout=20)
        good = await api.account(credits=10)
        answer = await api.generate(good, prompt="on time", callbackUrl=receiver.url)
        delivery = await settled_delivery(api, answer.json()["generationId"])
        assert delivery.state == "delivered"
        assert receiver.count() == 1
        # No endpoint ever had more than its share of attempts open.
        assert max(Counter(hanging.paths()).values()) <= per_url * processes
    finally:
        hanging.close()
