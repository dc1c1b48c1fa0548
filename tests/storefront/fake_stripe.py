"""A fake Stripe API on 127.0.0.1: a real HTTP server that stripe-python talks to over a real socket.

It implements what the storefront uses (`POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`,
`GET /v1/checkout/sessions` filtered by payment intent or creation time, `GET /v1/refunds?charge=...`,
`POST /v1/refunds` by payment intent, refusing more than is left of the charge or a disputed charge) with
Stripe's wire format: form-encoded nested parameters in, JSON objects and error envelopes out, bearer-key
auth, and idempotency keys replayed like Stripe does. Every request's parameters are checked against
stripe-python's own typed parameters for that call (the TypedDicts in `stripe.params`): an unknown, missing or
mistyped parameter gets Stripe's 400 error shape, as the real API answers.

Tests can queue failures (any HTTP status, or a hang to provoke client timeouts), move a session along (paid,
completed-but-unpaid, expired), refund a payment in part or in full (and make a refund fail), open and close
disputes, and create "foreign" sessions: ones another integration on the same account (a Payment Link) made.
"""

import json
import re
import secrets
import threading
import time
import types
import typing
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import typing_extensions
from stripe._request_options import RequestOptions
from stripe.params import RefundCreateParams, RefundListParams
from stripe.params.checkout import SessionCreateParams, SessionListParams, SessionRetrieveParams

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


# --- request parameters checked against stripe-python's typed params ------------------------------------

# Client-side options (api_key, idempotency_key, ...) travel as headers, never as parameters.
_OPTION_KEYS = frozenset(RequestOptions.__annotations__)


class ParamError(Exception):
    def __init__(self, code: str, param: str, message: str) -> None:
        super().__init__(message)
        self.code, self.param, self.message = code, param, message

    def body(self) -> dict[str, Any]:
        return {
            "error": {"type": "invalid_request_error", "code": self.code, "param": self.param, "message": self.message}
        }


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    if isinstance(annotation, str):
        annotation = typing.ForwardRef(annotation)
    if isinstance(annotation, typing.ForwardRef):
        annotation = eval(annotation.__forward_arg__, namespace)  # noqa: S307 - stripe's own annotations
    origin = typing.get_origin(annotation)
    if origin in (typing.NotRequired, typing.Required):
        return _resolve(typing.get_args(annotation)[0], namespace)
    return annotation


def _namespace(cls: type) -> dict[str, Any]:
    import sys

    return vars(sys.modules[cls.__module__])


def check_params(value: Any, spec: Any, path: str, namespace: dict[str, Any]) -> None:
    """Raise ParamError where `value` (form-decoded: strings, dicts, lists) does not fit stripe-python's type."""
    spec = _resolve(spec, namespace)
    origin = typing.get_origin(spec)
    if spec is Any:
        return
    if typing_extensions.is_typeddict(spec):
        if not isinstance(value, dict):
            raise ParamError("parameter_invalid_string_object", path, f"Invalid object: {path}")
        hints = spec.__annotations__
        for key, item in value.items():
            name = f"{path}[{key}]" if path else key
            if key not in hints or (not path and key in _OPTION_KEYS):
                raise ParamError("parameter_unknown", name, f"Received unknown parameter: {name}")
            check_params(item, hints[key], name, _namespace(spec))
        for key in sorted(spec.__required_keys__ - set(value) - (_OPTION_KEYS if not path else set())):
            name = f"{path}[{key}]" if path else key
            raise ParamError("parameter_missing", name, f"Missing required param: {name}.")
        return
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(spec):
            try:
                check_params(value, option, path, namespace)
                return
            except ParamError as exc:
                errors.append(exc)
        raise next((e for e in errors if e.code != "parameter_invalid_string_object"), errors[0])
    if origin is typing.Literal:
        if value not in [str(a).lower() if isinstance(a, bool) else str(a) for a in typing.get_args(spec)]:
            raise ParamError(
                "parameter_invalid_string", path, f"Invalid {path}: must be one of {typing.get_args(spec)}"
            )
        return
    if origin is list:
        if value == "":  # how stripe-python sends an empty list
            return
        if not isinstance(value, list):
            raise ParamError("parameter_invalid_array", path, f"Invalid array: {path}")
        for index, item in enumerate(value):
            check_params(item, typing.get_args(spec)[0], f"{path}[{index}]", namespace)
        return
    if (
        origin is dict
        or getattr(spec, "__name__", "") == "UntypedStripeObject"
        or (getattr(origin, "__name__", "") == "UntypedStripeObject")
    ):
        if not (isinstance(value, dict) or value == ""):
            raise ParamError("parameter_invalid_string_object", path, f"Invalid object: {path}")
        return
    if spec is str:
        if not isinstance(value, str):
            raise ParamError("parameter_invalid_string", path, f"Invalid string: {path}")
        return
    if spec is bool:
        if value not in ("true", "false"):
            raise ParamError("parameter_invalid_boolean", path, f"Invalid boolean: {value!r}")
        return
    if spec is int:
        if not (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
            raise ParamError("parameter_invalid_integer", path, f"Invalid integer: {value!r}")
        return
    if spec in (float, Decimal):
        try:
            Decimal(value)
        except (InvalidOperation, TypeError):
            raise ParamError("parameter_invalid_decimal", path, f"Invalid decimal: {value!r}") from None
        return
    if spec is type(None):
        if value != "":
            raise ParamError("parameter_invalid_empty", path, f"Invalid {path}")
        return
    raise ParamError("parameter_unknown", path, f"The fake cannot check {path} ({spec!r})")


# Which typed params describe each call the product makes.
_PARAMS = {
    ("POST", "/v1/checkout/sessions"): SessionCreateParams,
    ("GET", "/v1/checkout/sessions"): SessionListParams,
    ("GET", "/v1/checkout/sessions/{id}"): SessionRetrieveParams,
    ("GET", "/v1/refunds"): RefundListParams,
    ("POST", "/v1/refunds"): RefundCreateParams,
}
MAX_UNIT_AMOUNT = 99_999_999


def _route(method: str, path: str) -> tuple[str, str]:
    match = re.fullmatch(r"/v1/checkout/sessions/([A-Za-z0-9_]+)", path)
    return ("/v1/checkout/sessions/{id}", match.group(1)) if match else (path, "")


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
        # Seconds every answer waits, as a real Stripe round trip does (0 in the tests; the web bench sets 0.15).
        self.answer_delay = 0.0
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
            self.charges: dict[str, dict[str, Any]] = {}  # by charge id
            self.refunds: dict[str, dict[str, Any]] = {}  # by refund id, in creation order
            self.disputes: dict[str, dict[str, Any]] = {}
            self.requests: list[Recorded] = []
            self._failures: deque[_Failure] = deque()
            self._idempotent: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = {}
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

    def drop_response_next(self, *, method: str | None = None) -> None:
        """The next request is carried out, but its answer never arrives (the client times out): a lost response."""
        with self._lock:
            self._failures.append(_Failure(-1, method))

    def age_session(self, session_id: str, *, seconds: int) -> None:
        """Pretend a session was created `seconds` earlier (for reconciliation windows)."""
        with self._lock:
            self.sessions[session_id]["created"] -= seconds

    def hang_next(self, *, times: int = 1, method: str | None = None) -> None:
        """The next `times` requests get no answer until the test ends (so the client times out)."""
        with self._lock:
            self._failures.extend(_Failure(0, method) for _ in range(times))

    def mark_paid(self, session_id: str, *, email: str = "buyer@example.com") -> dict[str, Any]:
        """The buyer paid: the session completes and its PaymentIntent has one succeeded charge."""
        with self._lock:
            session = self.sessions[session_id]
            intent = session["payment_intent"] or f"pi_fake_{secrets.token_hex(8)}"
            session.update(
                status="complete",
                payment_status="paid",
                payment_intent=intent,
                customer_details={"email": email, "name": None},
            )
            if not any(c["payment_intent"] == intent for c in self.charges.values()):
                charge_id = f"ch_fake_{secrets.token_hex(8)}"
                self.charges[charge_id] = {
                    "id": charge_id,
                    "object": "charge",
                    "amount": session["amount_total"],
                    "amount_refunded": 0,
                    "currency": session["currency"],
                    "paid": True,
                    "refunded": False,
                    "disputed": False,
                    "status": "succeeded",
                    "payment_intent": intent,
                    "metadata": {},
                }
            return dict(session)

    def foreign_session(
        self,
        *,
        amount: int,
        currency: str = "usd",
        client_reference_id: str | None = None,
        metadata: dict[str, str] | None = None,
        mode: str = "payment",
        paid: bool = True,
    ) -> dict[str, Any]:
        """A session another integration made on the same account (a Payment Link with ?client_reference_id=)."""
        with self._lock:
            session_id = f"cs_test_{secrets.token_hex(16)}"
            self.sessions[session_id] = self._session_object(
                session_id,
                mode=mode,
                amount=amount,
                currency=currency,
                client_reference_id=client_reference_id,
                metadata=metadata or {},
            )
        return self.mark_paid(session_id) if paid else dict(self.sessions[session_id])

    def charge_of(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            intent = self.sessions[session_id]["payment_intent"]
            return dict(next(c for c in self.charges.values() if c["payment_intent"] == intent))

    def refund(self, session_id: str, *, amount: int | None = None, status: str = "succeeded") -> dict[str, Any]:
        """Refund (part of) a paid session's charge, as the dashboard does. Returns the refund object."""
        charge = self.charge_of(session_id)
        with self._lock:
            charge = self.charges[charge["id"]]
            amount = amount if amount is not None else charge["amount"] - charge["amount_refunded"]
            if not 0 < amount <= charge["amount"] - charge["amount_refunded"]:
                raise ValueError("refund larger than what is left of the charge")
            return dict(self._add_refund(charge, amount=amount, status=status, metadata={}))

    def _add_refund(
        self, charge: dict[str, Any], *, amount: int, status: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        refund_id = f"re_fake_{secrets.token_hex(8)}"
        self.refunds[refund_id] = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "currency": charge["currency"],
            "payment_intent": charge["payment_intent"],
            "status": status,
            "created": int(time.time()),
            "metadata": metadata,
            "reason": None,
        }
        self._settle_charge(charge)
        return self.refunds[refund_id]

    def _create_refund(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`POST /v1/refunds`, refusing what Stripe refuses (with Stripe's error codes)."""
        intent, charge_id = params.get("payment_intent"), params.get("charge")
        if not intent and not charge_id:
            message = "One of the following params should be provided for this request: payment_intent or charge."
            return 400, ParamError("parameter_missing", "payment_intent", message).body()
        if charge_id:
            charge = self.charges.get(charge_id)
            missing = ("charge", f"No such charge: '{charge_id}'")
        else:
            charge = next((c for c in self.charges.values() if c["payment_intent"] == intent), None)
            missing = ("payment_intent", f"No such payment_intent: '{intent}'")
        if charge is None:
            return 404, ParamError("resource_missing", *missing).body()
        if intent and charge_id and charge["payment_intent"] != intent:
            return 400, ParamError("parameter_invalid", "charge", "The charge does not belong to that payment").body()
        left = charge["amount"] - charge["amount_refunded"]
        if charge["disputed"]:
            return 400, ParamError("charge_disputed", "", f"Charge {charge['id']} has been charged back").body()
        if left == 0:
            return 400, ParamError(
                "charge_already_refunded", "", f"Charge {charge['id']} has already been refunded."
            ).body()
        amount = int(params["amount"]) if "amount" in params else left
        if amount <= 0:
            return 400, ParamError("parameter_invalid_integer", "amount", "Invalid positive integer").body()
        if amount > left:
            message = f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            return 400, ParamError("amount_too_large", "amount", message).body()
        refund = self._add_refund(charge, amount=amount, status="succeeded", metadata=params.get("metadata") or {})
        if params.get("reason"):
            refund["reason"] = params["reason"]
        return 200, dict(refund)

    def fail_refund(self, refund_id: str, *, status: str = "failed") -> dict[str, Any]:
        """A refund that fails later (the card was closed): its money goes back to the merchant's balance."""
        with self._lock:
            refund = self.refunds[refund_id]
            refund.update(status=status, failure_reason="expired_or_canceled_card" if status == "failed" else None)
            self._settle_charge(self.charges[refund["charge"]])
            return dict(refund)

    def _settle_charge(self, charge: dict[str, Any]) -> None:
        live = [
            r
            for r in self.refunds.values()
            if r["charge"] == charge["id"] and r["status"] not in ("failed", "canceled")
        ]
        charge["amount_refunded"] = sum(r["amount"] for r in live)
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]

    def dispute(self, session_id: str, *, status: str = "needs_response", reason: str = "fraudulent") -> dict[str, Any]:
        """The buyer's bank opens a chargeback on the session's charge. Returns the dispute object."""
        charge = self.charge_of(session_id)
        with self._lock:
            dispute_id = f"du_fake_{secrets.token_hex(8)}"
            self.disputes[dispute_id] = {
                "id": dispute_id,
                "object": "dispute",
                "amount": charge["amount"],
                "currency": charge["currency"],
                "charge": charge["id"],
                "payment_intent": charge["payment_intent"],
                "reason": reason,
                "status": status,
                "created": int(time.time()),
                "evidence_details": {
                    "due_by": int(time.time()) + 7 * 86400,
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                },
                "is_charge_refundable": False,
                "livemode": False,
                "metadata": {},
            }
            self.charges[charge["id"]]["disputed"] = True
            return dict(self.disputes[dispute_id])

    def update_dispute(self, dispute_id: str, *, status: str) -> dict[str, Any]:
        with self._lock:
            self.disputes[dispute_id]["status"] = status
            return dict(self.disputes[dispute_id])

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

    @staticmethod
    def _session_object(session_id: str, *, mode: str, amount: int, currency: str, **fields: Any) -> dict[str, Any]:
        session = {
            "id": session_id,
            "object": "checkout.session",
            "livemode": False,
            "mode": mode,
            "created": int(time.time()),
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            "status": "open",
            "payment_status": "unpaid",
            "client_reference_id": None,
            "metadata": {},
            "amount_subtotal": amount,
            "amount_total": amount,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "currency": currency,
            "customer_details": None,
            "customer_email": None,
            "payment_intent": None,
            "success_url": None,
            "cancel_url": None,
        }
        session.update(fields)
        return session

    def _create_session(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        items = params.get("line_items") or []
        if params.get("mode") != "payment" or not items:
            return 400, ParamError("parameter_missing", "line_items", "line_items is required in payment mode").body()
        for index, item in enumerate(items):
            price = item.get("price_data") or {}
            if "unit_amount" not in price:
                return 400, ParamError(
                    "parameter_missing", f"line_items[{index}][price_data][unit_amount]", "Missing unit_amount"
                ).body()
            if not 0 <= int(price["unit_amount"]) <= MAX_UNIT_AMOUNT:
                param = f"line_items[{index}][price_data][unit_amount]"
                return 400, ParamError("amount_too_large", param, "Amount must be no more than 99,999,999").body()
        amount = sum(int(i["price_data"]["unit_amount"]) * int(i.get("quantity", 1)) for i in items)
        session_id = f"cs_test_{secrets.token_hex(16)}"
        session = self._session_object(
            session_id,
            mode="payment",
            amount=amount,
            currency=items[0]["price_data"]["currency"],
            client_reference_id=params.get("client_reference_id"),
            metadata=params.get("metadata") or {},
            customer_email=params.get("customer_email"),
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
        )
        self.sessions[session_id] = session
        return 200, session

    def _list(self, objects: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        """A page of a list, newest first, with Stripe's cursor pagination (limit, starting_after)."""
        objects = sorted(objects, key=lambda o: o.get("created", 0), reverse=True)
        if params.get("starting_after"):
            ids = [o["id"] for o in objects]
            objects = objects[ids.index(params["starting_after"]) + 1 :] if params["starting_after"] in ids else []
        limit = int(params.get("limit", 10))
        return {
            "object": "list",
            "url": url,
            "has_more": len(objects) > limit,
            "data": [dict(o) for o in objects[:limit]],
        }

    @staticmethod
    def _created_matches(obj: dict[str, Any], created: Any) -> bool:
        if created is None:
            return True
        if isinstance(created, str):
            return obj["created"] == int(created)
        bounds = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
        return all(bounds[op](obj["created"], int(v)) for op, v in created.items())

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, dict[str, Any]]:
        params = parse_form(body)  # the form body of a POST, the query string of a GET
        if self.answer_delay:
            time.sleep(self.answer_delay)  # Stripe's own latency (bench/web_load.py); never under the lock
        with self._lock:
            self.requests.append(Recorded(method, path, headers, params))
        failure = self._take_failure(method)
        if failure is not None and failure.status == -1:
            self._answer(method, path, headers, params)
            self._release.wait(timeout=10)
            return 500, {"error": {"type": "api_error", "message": "response lost"}}
        if failure is not None:
            if failure.status == 0:
                self._release.wait(timeout=10)
                return 500, {"error": {"type": "api_error", "message": "hung"}}
            return failure.status, failure.body
        return self._answer(method, path, headers, params)

    def _answer(
        self, method: str, path: str, headers: dict[str, str], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        route, _ = _route(method, path)
        spec = _PARAMS.get((method, route))
        if spec is not None:
            try:
                check_params(params, spec, "", _namespace(spec))
            except ParamError as exc:
                return 400, exc.body()
        with self._lock:
            creates = {"/v1/checkout/sessions": self._create_session, "/v1/refunds": self._create_refund}
            if method == "POST" and path in creates:
                # Like Stripe: a key seen before replays its first answer (errors included), for the same
                # endpoint and parameters only.
                key = headers.get("idempotency-key")
                if key and key in self._idempotent:
                    seen_path, seen_params, status, response = self._idempotent[key]
                    if (seen_path, seen_params) != (path, params):
                        return 400, {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used with the same parameters",
                            }
                        }
                    return status, response
                status, response = creates[path](params)
                if key:
                    self._idempotent[key] = (path, params, status, response)
                return status, response
            if method == "GET" and path == "/v1/checkout/sessions":
                found = [
                    s
                    for s in self.sessions.values()
                    if ("payment_intent" not in params or s.get("payment_intent") == params["payment_intent"])
                    and ("status" not in params or s["status"] == params["status"])
                    and self._created_matches(s, params.get("created"))
                ]
                return 200, self._list(found, params, path)
            if method == "GET" and path == "/v1/refunds":
                found = [r for r in self.refunds.values() if "charge" not in params or r["charge"] == params["charge"]]
                return 200, self._list(found, params, path)
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
                head = [
                    f"HTTP/1.1 {status} {self.responses.get(status, ('Error',))[0]}",
                    f"Date: {self.date_time_string()}",
                    "Content-Type: application/json",
                    f"Content-Length: {len(data)}",
                    f"Request-Id: req_fake_{secrets.token_hex(6)}",
                ]
                # Like Stripe: never ask the client to retry an error we mean.
                if status in (400, 401, 402, 404):
                    head.append("Stripe-Should-Retry: false")
                try:
                    # Head and body in one send: two small writes would wait on Nagle + delayed ACK (~40 ms).
                    self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler
