"""DELETE /api/v1/generate?id=: cancel a waiting or running generation (extension)."""

from __future__ import annotations

from tests.conftest import BOTH_DEPLOYMENTS, Api, states, wait_until

pytestmark = BOTH_DEPLOYMENTS


async def test_cancelling_a_running_generation_refunds_it_and_frees_the_slot(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(builtin_latency_seconds=30)
    key = await api.account(credits=10)
    accepted = (await api.generate(key, prompt="too slow", mode="async", quantity=3)).json()
    generation_id = accepted["generationId"]
    assert await api.balance(key) == 7

    async def running() -> bool:
        return await states(api, key.account_id) == ["running"]

    await wait_until(running)
    response = await api.client.delete(
        "/api/v1/generate", params={"id": generation_id}, headers=key.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"]["processingStatus"] == "failed"
    assert "Cancelled" in body["data"]["errorMessage"]
    assert body["data"]["creditsUsed"] == 0
    assert await api.balance(key) == 10
    assert await api.ledger_sum(key) == 10
    # The slot is free at once: another generation is accepted.
    assert (await api.generate(key, prompt="next", mode="async")).status_code == 200
    again = await api.client.delete(
        "/api/v1/generate", params={"id": generation_id}, headers=key.headers
    )
    assert again.status_code == 200
    assert again.json()["success"] is False
    assert "already failed" in again.json()["message"]


async def test_cancelling_a_finished_generation_changes_nothing(api: Api) -> None:
    key = await api.account(credits=5)
    done = (await api.generate(key, prompt="quick")).json()
    response = await api.client.delete(
        "/api/v1/generate", params={"id": done["generationId"]}, headers=key.headers
    )
    assert response.json()["success"] is False
    assert response.json()["data"]["processingStatus"] == "completed"
    assert await api.balance(key) == 4


async def test_cancelling_someone_elses_or_an_unknown_generation_is_404(api: Api) -> None:
    alice = await api.account()
    bob = await api.account()
    done = (await api.generate(alice, prompt="mine")).json()
    for generation_id in (done["generationId"], "unknown"):
        response = await api.client.delete(
            "/api/v1/generate", params={"id": generation_id}, headers=bob.headers
        )
        assert response.status_code == 404
