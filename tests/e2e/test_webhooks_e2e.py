"""Webhooks over a real server: the demo account signs in to the console for its
webhook secret, asks for a generation with a `callbackUrl`, and the receiver gets
the poll answer, signed (checked with the Standard Webhooks reference
implementation), retried until it answers 2xx; the console lists the attempts."""

from __future__ import annotations

import re
from typing import Any

import requests
from standardwebhooks.webhooks import Webhook

from tests.e2e.scaleout import wait_for
from tests.fakes.webhook_receiver import WebhookReceiver

PASSWORD = "demo password for the console"


def console_session(server: Any) -> requests.Session:
    server.settings["new_password"] = PASSWORD  # read by `admin set-password`
    done = server.cli("admin", "set-password", "demo@bananastand.local")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    session = requests.Session()
    page = session.get(server.url("/console/signin"), timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    signed_in = session.post(
        server.url("/console/signin"),
        data={"csrf_token": token, "email": "demo@bananastand.local", "password": PASSWORD},
        timeout=10,
    )
    assert signed_in.url.endswith("/console")
    return session


def test_a_webhook_is_signed_retried_until_2xx_and_listed_in_the_console(
    server_factory: Any,
) -> None:
    receiver = WebhookReceiver(statuses=[503, 200])
    try:
        server = server_factory(
            reference_allowed_networks='["127.0.0.1/32"]',
            webhook_backoff_seconds=0.1,
            webhook_poll_seconds=0.05,
        ).start()
        console = console_session(server)
        page = console.get(server.url("/console/settings/webhooks"), timeout=10)
        secret = re.search(r'data-testid="webhook-secret" readonly value="([^"]+)"', page.text)
        assert secret and secret.group(1).startswith("whsec_")

        answer = requests.post(
            server.url("/api/v1/generate"),
            headers=server.headers,
            json={"prompt": "a lighthouse", "callbackUrl": receiver.url},
            timeout=30,
        )
        assert answer.status_code == 200
        generation_id = answer.json()["generationId"]
        wait_for(lambda: receiver.count() == 2 or None)

        poll = requests.get(
            server.url(f"/api/v1/generate?id={generation_id}"), headers=server.headers, timeout=10
        ).json()
        webhook = Webhook(secret.group(1))
        ids = set()
        for received in receiver.received:
            assert webhook.verify(received.body, received.headers) == poll
            ids.add(received.headers["webhook-id"])
        assert len(ids) == 1  # a retry is the same message

        listing = wait_for(
            lambda: (
                text
                if "delivered"
                in (text := console.get(server.url("/console/settings/webhooks")).text)
                else None
            )
        )
        assert "HTTP 503" in listing and "HTTP 200" in listing
        assert ids.pop() in listing
        assert receiver.count() == 2  # nothing after the 2xx
    finally:
        receiver.close()
