"""A fake Stripe API on 127.0.0.1: a real HTTP server that stripe-python talks to over a real socket.

It implements what the storefront uses (`POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`,
`GET /v1/checkout/sessions?payment_intent=...`) with
Stripe's wire format: form-encoded nested parameters in, JSON objects and error envelopes out, bearer-key
auth, and idempotency keys replayed like Stripe does. Tests can queue failures (any HTTP status, or a hang to
provoke client timeouts) and move a session along (paid, completed-but-unpaid, expired).
"""

import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

_KEY_PART = re.compile(r"([^\[\]]+)|\[([^\]]*)\]")


def parse_form(body: str) -> dict[str, Any]:
    """`line_items[0][price_data][currency]=usd` -> {"line_items": [{"price_data": {"currency": "usd"}}]}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = [a or b for a, b in _KEY_PART.findall(key)]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, Any]


@dataclass
class _Failure:
    status: int  # 0 means: hang (never answer in time)
    method: str | None
    body: dict[str, Any] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog (5) drops connections when a test fires a burst of concurrent requests.
    request_queue_size = 128


class FakeStripe:
    """Start with `start()`; point stripe-python at `url`. Thread-safe; `reset()` between tests."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.reset()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-stripe", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeStripe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.sessions: dict[str, dict[str, Any]] = {}
            self.requests: list[Recorded] = []
            self._failures: deque[_Failure] = deque()
            self._idempotent: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {}
        self._release.set()  # let any request still hanging from a previous test finish
        self._release = threading.Event()

    # --- test controls ----------------------------------------------------------------------------------

    def fail_next(self, status: int, *, times: int = 1, method: str | None = None, message: str = "") -> None:
        """The next `times` requests (of `method`, if given) answer `status` with a Stripe error envelope."""
        kind = {402: "card_error", 400: "invalid_request_error", 401: "invalid_request_error"}.get(status, "api_error")
        body = {"error": {"type": kind, "message": message or f"Fake Stripe failure {status}"}}
        if status == 402:
            body["error"]["code"] = "card_declined"
        with self._lock:
            self._failures.extend(_Failure(status, method, body) for _ in range(times))

    def hang_next(self, *, times: int = 1, method: str | None = None) -> None:
        """The next `times` requests get no answer until the test ends (so the client times out)."""
        with self._lock:
            self._failures.extend(_Failure(0, method) for _ in range(times))

    def mark_paid(self, session_id: str, *, email: str = "buyer@example.com") -> dict[str, Any]:
        with self._lock:
            session = self.sessions[session_id]
            session.update(
                status="complete",
                payment_status="paid",
                payment_intent=session["payment_intent"] or f"pi_fake_{secrets.token_hex(8)}",
                customer_details={"email": email, "name": None},
            )
            return dict(session)

    def mark_complete_unpaid(self, session_id: str, *, email: str = "buyer@example.com") -> dict[str, Any]:
        """A delayed payment method (bank debit): the checkout is complete, the money not yet in."""
        with self._lock:
            session = self.sessions[session_id]
            session.update(
                status="complete",
                payment_status="unpaid",
                payment_intent=f"pi_fake_{secrets.token_hex(8)}",
                customer_details={"email": email, "name": None},
            )
            return dict(session)

    def mark_expired(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            self.sessions[session_id].update(status="expired", url=None)
            return dict(self.sessions[session_id])

    def calls(self, method: str, path_prefix: str = "/v1/checkout/sessions") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- the API --------------------------------------------------------------------------------------

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for i, failure in enumerate(self._failures):
                if failure.method in (None, method):
                    del self._failures[i]
                    return failure
        return None

    def _create_session(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        items = params.get("line_items") or []
        if params.get("mode") != "payment" or not items:
            return 400, {"error": {"type": "invalid_request_error", "message": "mode and line_items required"}}
        amount = sum(int(i["price_data"]["unit_amount"]) * int(i.get("quantity", 1)) for i in items)
        session_id = f"cs_test_{secrets.token_hex(16)}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "livemode": False,
            "mode": "payment",
            "created": int(time.time()),
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            "status": "open",
            "payment_status": "unpaid",
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata") or {},
            "amount_total": amount,
            "currency": items[0]["price_data"]["currency"],
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "payment_intent": None,
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
        }
        self.sessions[session_id] = session
        return 200, session

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, dict[str, Any]]:
        params = parse_form(body)  # the form body of a POST, the query string of a GET
        with self._lock:
            self.requests.append(Recorded(method, path, headers, params))
        failure = self._take_failure(method)
        if failure is not None:
            if failure.status == 0:
                self._release.wait(timeout=10)
                return 500, {"error": {"type": "api_error", "message": "hung"}}
            return failure.status, failure.body
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        with self._lock:
            if method == "POST" and path == "/v1/checkout/sessions":
                key = headers.get("idempotency-key")
                if key and key in self._idempotent:
                    seen_params, status, response = self._idempotent[key]
                    if seen_params != params:
                        return 400, {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used with the same parameters",
                            }
                        }
                    return status, response
                status, response = self._create_session(params)
                if key:
                    self._idempotent[key] = (params, status, response)
                return status, response
            if method == "GET" and path == "/v1/checkout/sessions":
                wanted = params.get("payment_intent")
                found = [dict(s) for s in self.sessions.values() if wanted and s.get("payment_intent") == wanted]
                return 200, {"object": "list", "url": path, "has_more": False, "data": found[:1]}
            match = re.fullmatch(r"/v1/checkout/sessions/([A-Za-z0-9_]+)", path)
            if method == "GET" and match:
                session = self.sessions.get(match.group(1))
                if session is None:
                    return 404, {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "resource_missing",
                            "message": f"No such checkout.session: '{match.group(1)}'",
                        }
                    }
                return 200, dict(session)
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({path})"}}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                path, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = fake.handle(self.command, path, headers, body or query)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Request-Id", f"req_fake_{secrets.token_hex(6)}")
                    # Like Stripe: never ask the client to retry an error we mean.
                    if status in (400, 401, 402, 404):
                        self.send_header("Stripe-Should-Retry", "false")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler
