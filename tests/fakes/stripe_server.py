"""A fake Stripe: a real HTTP server on 127.0.0.1 speaking Stripe's wire format for
what Bananastand uses, so the official `stripe` library talks to it unchanged
(`BANANASTAND_STRIPE_API_BASE` = `fake.url`).

API (form-encoded requests the way the library sends them, `a[b][0][c]=…`; JSON
answers; Stripe's error bodies; `Authorization: Bearer <secret key>` checked;
`Idempotency-Key` honoured on POST):

- `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`
- `GET /v1/payment_intents/{id}` (with `expand[]=latest_charge`), `GET /v1/charges/{id}`
- `GET /v1/events/{id}`

A hosted checkout page at each session's `url`: its **Pay** button completes
the session (a payment intent and a charge with a `receipt_url`), delivers the
signed `checkout.session.completed` event to `webhook_url`, and sends the
browser to the session's `success_url`; **Cancel** goes to its `cancel_url`.

Tests make the other events (`complete`, `refund`, `dispute_closed`, …) and sign
them exactly as Stripe does (`Stripe-Signature: t=…,v1=HMAC-SHA256(secret,
"t.payload"),v0=…`) with `signed`, then deliver them where they like.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2025-09-30.clover"


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding back into objects: `a[b][0][c]=1` -> {"a": {"b": [{"c": "1"}]}}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def _id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header, as Stripe makes it (v0: a test-mode extra)."""
    t = int(time.time()) if timestamp is None else timestamp
    v1 = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    v0 = hmac.new(b"legacy", f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={v1},v0={v0}"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeStripe:
    api_key: str = "sk_test_fake_" + "0" * 24
    webhook_secret: str = "whsec_" + secrets.token_hex(16)
    webhook_url: str = ""  # where the checkout page delivers its event
    requests: list[Request] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)  # HTTP statuses of page deliveries
    fail_next_create: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, dict[str, Any]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> FakeStripe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- HTTP -------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        body = ""
        if method == "POST":
            length = int(handler.headers.get("content-length", "0"))
            body = handler.rfile.read(length).decode()
        params = decode_form(body if method == "POST" else parts.query)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        path = parts.path
        if path.startswith("/c/pay/"):
            self._checkout_page(handler, method, path.removeprefix("/c/pay/"), params)
            return
        if path.startswith("/receipts/"):
            self._send(
                handler, 200, b"<!doctype html><title>Receipt</title><p>Receipt", "text/html"
            )
            return
        with self._lock:
            self.requests.append(Request(method, path, params, headers))
        if headers.get("authorization") != f"Bearer {self.api_key}":
            self._error(handler, 401, "invalid_request_error", "Invalid API Key provided: sk_***")
            return
        key = headers.get("idempotency-key")
        if method == "POST" and key and key in self._idempotent:
            self._json(handler, 200, self._idempotent[key])
            return
        status, answer = self._route(method, path, params)
        if method == "POST" and key and status == 200:
            self._idempotent[key] = answer
        self._json(handler, status, answer)

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        expand = params.get("expand") or []
        with self._lock:
            if method == "POST" and path == "/v1/checkout/sessions":
                if self.fail_next_create:
                    self.fail_next_create = False
                    return _error_body(400, "invalid_request_error", "No such price")
                return 200, self._create_session(params)
            found: dict[str, Any] | None = None
            for prefix, table in (
                ("/v1/checkout/sessions/", self.sessions),
                ("/v1/payment_intents/", self.intents),
                ("/v1/charges/", self.charges),
                ("/v1/events/", self.events),
            ):
                if method == "GET" and path.startswith(prefix):
                    found = table.get(path.removeprefix(prefix))
                    if found is None:
                        return _error_body(
                            404, "invalid_request_error", f"No such object: '{path}'"
                        )
                    found = json.loads(json.dumps(found))
                    if "latest_charge" in expand and found.get("latest_charge"):
                        found["latest_charge"] = self.charges[found["latest_charge"]]
                    return 200, found
        return _error_body(404, "invalid_request_error", f"Unrecognized request URL ({path})")

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        items = params.get("line_items") or []
        amount = sum(
            int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1)) for item in items
        )
        currency = items[0]["price_data"]["currency"] if items else "usd"
        session_id = _id("cs")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency,
            "customer": None,
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": now + 86400,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "mode": params.get("mode"),
            "payment_intent": None,
            "payment_method_types": params.get("payment_method_types") or ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params.get("success_url"),
            "url": f"{self.url}/c/pay/{session_id}",
            "_intent_metadata": (params.get("payment_intent_data") or {}).get("metadata") or {},
        }
        self.sessions[session_id] = session
        return _public(session)

    def _checkout_page(
        self, handler: BaseHTTPRequestHandler, method: str, session_id: str, form: dict[str, Any]
    ) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            self._send(handler, 404, b"no such checkout", "text/plain")
            return
        if method == "GET":
            amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
            page = (
                "<!doctype html><html lang=en><head><meta charset=utf-8>"
                '<meta name=viewport content="width=device-width, initial-scale=1">'
                '<link rel=icon href="data:,"><title>Checkout (fake Stripe)</title></head>'
                f"<body><h1>Pay {html.escape(amount)}</h1>"
                f'<form method=post action="/c/pay/{session_id}">'
                "<button type=submit>Pay</button></form>"
                f'<p><a href="{html.escape(session["cancel_url"])}">Cancel</a></p></body></html>'
            )
            self._send(handler, 200, page.encode(), "text/html; charset=utf-8")
            return
        event = self.complete(session_id)
        self.deliveries.append(self.deliver(event))
        target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
        handler.send_response(303)
        handler.send_header("location", target)
        handler.send_header("content-length", "0")
        handler.end_headers()

    def _json(self, handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body, indent=2).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("request-id", "req_" + secrets.token_hex(7))
        handler.send_header("stripe-version", API_VERSION)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, kind: str, message: str) -> None:
        self._json(handler, *_error_body(status, kind, message))

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        handler.send_response(status)
        handler.send_header("content-type", kind)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    # --- what happens at Stripe, and the events it sends ------------------------------
    def complete(
        self,
        session_id: str,
        *,
        paid: bool = True,
        amount_total: int | None = None,
        currency: str | None = None,
    ) -> dict[str, Any]:
        """The customer paid (or, `paid=False`, chose a delayed method): the
        `checkout.session.completed` event. `amount_total`/`currency` override what
        the event says was paid."""
        with self._lock:
            session = self.sessions[session_id]
            if session["payment_intent"] is None:
                self._charge(session)
            session["status"] = "complete"
            session["payment_status"] = "paid" if paid else "unpaid"
            session["customer_details"] = {"email": session["customer_email"], "name": None}
            snapshot = _public(session)
            if amount_total is not None:
                snapshot["amount_total"] = snapshot["amount_subtotal"] = amount_total
            if currency is not None:
                snapshot["currency"] = currency
            return self._event("checkout.session.completed", snapshot)

    def async_payment(self, session_id: str, *, succeeded: bool = True) -> dict[str, Any]:
        with self._lock:
            session = self.sessions[session_id]
            session["payment_status"] = "paid" if succeeded else "unpaid"
            kind = "succeeded" if succeeded else "failed"
            return self._event(f"checkout.session.async_payment_{kind}", _public(session))

    def expire(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self.sessions[session_id]
            session["status"] = "expired"
            return self._event("checkout.session.expired", _public(session))

    def refund(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund `amount` (default: what is left) of the session's charge."""
        with self._lock:
            charge = self.charges[
                self.intents[self.sessions[session_id]["payment_intent"]]["latest_charge"]
            ]
            amount = charge["amount"] - charge["amount_refunded"] if amount is None else amount
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return self._event("charge.refunded", dict(charge))

    def dispute_closed(self, session_id: str, *, status: str = "lost") -> dict[str, Any]:
        with self._lock:
            intent = self.intents[self.sessions[session_id]["payment_intent"]]
            charge = self.charges[intent["latest_charge"]]
            charge["disputed"] = True
            dispute = {
                "id": _id("dp"),
                "object": "dispute",
                "amount": charge["amount"] - charge["amount_refunded"],
                "charge": charge["id"],
                "currency": charge["currency"],
                "created": int(time.time()),
                "livemode": False,
                "metadata": {},
                "payment_intent": intent["id"],
                "reason": "fraudulent",
                "status": status,
            }
            return self._event("charge.dispute.closed", dispute)

    def _charge(self, session: dict[str, Any]) -> None:
        intent_id, charge_id = _id("pi"), _id("ch")
        metadata = dict(session["_intent_metadata"])
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": session["amount_total"],
            "amount_captured": session["amount_total"],
            "amount_refunded": 0,
            "captured": True,
            "created": int(time.time()),
            "currency": session["currency"],
            "disputed": False,
            "livemode": False,
            "metadata": metadata,
            "paid": True,
            "payment_intent": intent_id,
            "receipt_url": f"{self.url}/receipts/{charge_id}",
            "refunded": False,
            "status": "succeeded",
        }
        self.intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_received": session["amount_total"],
            "currency": session["currency"],
            "latest_charge": charge_id,
            "livemode": False,
            "metadata": metadata,
            "status": "succeeded",
        }
        session["payment_intent"] = intent_id

    def _event(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": _id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        self.events[event["id"]] = event
        return event

    def session_of(self, payment_id: str) -> str:
        """The session made for a Bananastand payment."""
        with self._lock:
            for session in self.sessions.values():
                if session["metadata"].get("bananastand_payment") == payment_id:
                    return str(session["id"])
        raise KeyError(payment_id)

    # --- delivering ---------------------------------------------------------------------
    def signed(
        self, event: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a delivery of `event`, as Stripe sends it."""
        payload = json.dumps(event, indent=2)
        header = sign(payload, secret or self.webhook_secret, timestamp)
        return payload.encode(), {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": header,
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }

    def deliver(self, event: dict[str, Any], url: str | None = None) -> int:
        body, headers = self.signed(event)
        request = urllib.request.Request(url or self.webhook_url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)


def _public(session: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in session.items() if not k.startswith("_")}


def _error_body(status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "error": {
            "type": kind,
            "message": message,
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_fake",
        }
    }
