"""Logs for production: one JSON object per line, each carrying the id of the request it belongs to.

CloudWatch Logs Insights (and any log tool) can filter and group JSON fields, and a request id ties together the
lines one request wrote, in gunicorn and in Django. The id comes from the load balancer's `X-Amzn-Trace-Id` when
present (the ALB adds it to every request, so it also matches the ALB's access logs), else a fresh random one; it
is echoed back in the `X-Request-ID` response header so a buyer's report can be matched to the logs.

Nothing here logs query strings or bodies: they can carry Checkout Session ids, voucher codes and /buy tokens.
"""

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("storefront.access")
# What a request id may look like when it comes from outside: the ALB's "Root=1-5f84c7a9-..." trace ids and our
# own hex ids. Anything else (too long, odd characters that could forge log lines) is replaced by a fresh id.
_SAFE_ID = re.compile(r"^[A-Za-z0-9=;._-]{1,200}$")
# Attributes every LogRecord has; anything else on a record was passed through `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id ("-" outside a request, e.g. in the bot)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, extra fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestIdMiddleware:
    """Give each request an id (see the module docstring) and log one access line when it is answered."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Amzn-Trace-Id", "")
        token = request_id.set(incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id.get()
            if request.path != "/healthz":  # polled every few seconds by the ALB and ECS; not worth a line each
                # The URL pattern, not the path, when there is one: /checkout/test/<session_id>/ carries an id.
                # Never the query string: it can carry Checkout Session ids and /buy tokens.
                match = getattr(request, "resolver_match", None)
                path = "/" + match.route if match and match.route else request.path
                access_log.info(
                    "%s %s %s",
                    request.method,
                    path,
                    response.status_code,
                    extra={
                        "method": request.method,
                        "path": path,
                        "status": response.status_code,
                        "duration_ms": round((time.monotonic() - started) * 1000, 1),
                    },
                )
            return response
        finally:
            request_id.reset(token)
