"""The error boundary: an unexpected failure is one 500 `internal_error` and one
logged traceback; a database that cannot be reached is a 503 the client may retry."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.support import Api


async def test_an_unexpected_error_is_a_500_logged_once(
    api: Api, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = await api.account()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(api.services.generation.generations, "page", broken)
    with caplog.at_level(logging.ERROR):
        answer = await api.client.get("/api/v1/generations", headers=key.headers)
    assert answer.status_code == 500
    assert answer.json() == {"error": "Internal server error", "type": "internal_error"}
    assert "something nobody expected" not in answer.text
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert "internal error on GET /api/v1/generations" in tracebacks[0].getMessage()


async def test_a_database_that_cannot_be_reached_is_a_503_with_retry_after(
    api: Api, monkeypatch: Any
) -> None:
    key = await api.account()

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(api.services.db, "fetch", unreachable)
    answer = await api.client.get("/api/v1/credits", headers=key.headers)
    assert answer.status_code == 503
    assert answer.json()["type"] == "server_busy"
    assert "database is unavailable" in answer.json()["error"]
    assert answer.headers["Retry-After"] == "5"
