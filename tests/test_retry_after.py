"""`bananastand.retry_after`: the one reading of Retry-After, shared by client and server."""

from __future__ import annotations

import email.utils
import time

from bananastand.retry_after import parse_retry_after, retry_after_from_headers


def test_delta_seconds_and_dates() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = parse_retry_after(future)
    assert wait is not None and 25 <= wait <= 31


def test_nothing_usable_is_none() -> None:
    for value in (None, "", "soon", "inf", "nan", "-inf"):
        assert parse_retry_after(value) is None, value


def test_milliseconds_win_over_seconds() -> None:
    assert retry_after_from_headers({"retry-after-ms": "400", "retry-after": "9"}) == 0.4
    assert retry_after_from_headers({"retry-after-ms": "-5"}) == 0.0
    assert retry_after_from_headers({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_from_headers({"retry-after-ms": "inf", "retry-after": "2"}) == 2.0
    assert retry_after_from_headers({"retry-after": "3"}) == 3.0
    assert retry_after_from_headers({}) is None
    assert retry_after_from_headers(None) is None
