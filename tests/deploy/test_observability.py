"""Production logs and error tracking: JSON lines with a request id, nothing secret in them; Sentry only with a DSN,
and what it sends leaves out bodies, query strings, cookies and local variables."""

import gzip
import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from storefront.requestlog import JsonFormatter, RequestIdFilter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def access_lines(caplog):
    caplog.set_level(logging.INFO, logger="storefront.access")
    return lambda: [r for r in caplog.records if r.name == "storefront.access"]


@pytest.mark.django_db
def test_each_request_gets_an_id_in_its_log_line_and_response_and_no_query_string_is_logged(client, access_lines):
    response = client.get("/checkout/success/", {"session_id": "cs_test_must_not_be_logged"})
    (line,) = access_lines()
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert line.request_id == request_id and line.path == "/checkout/success/" and line.status == response.status_code
    formatted = JsonFormatter().format(line)
    entry = json.loads(formatted)
    assert entry["request_id"] == request_id and entry["logger"] == "storefront.access"
    assert entry["method"] == "GET" and isinstance(entry["duration_ms"], float)
    assert "cs_test_must_not_be_logged" not in formatted


@pytest.mark.django_db
def test_the_load_balancers_trace_id_is_the_request_id_and_a_forged_one_is_replaced(client, access_lines):
    trace = "Root=1-67891233-abcdef012345678912345678"
    assert client.get("/", HTTP_X_AMZN_TRACE_ID=trace)["X-Request-ID"] == trace
    forged = client.get("/", HTTP_X_AMZN_TRACE_ID='x" level=ERROR\nfake line')["X-Request-ID"]
    assert len(forged) == 32 and "\n" not in forged


def test_url_patterns_not_paths_are_logged_so_ids_in_paths_stay_out(rf):
    from django.http import HttpResponse
    from django.urls import resolve

    from storefront.requestlog import RequestIdMiddleware

    request = rf.get("/checkout/test/cs_test_secret_session/")
    request.resolver_match = resolve("/checkout/test/cs_test_secret_session/")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("storefront.access")
    logger.addHandler(handler)
    try:
        RequestIdMiddleware(lambda r: HttpResponse(status=404))(request)
    finally:
        logger.removeHandler(handler)
    (record,) = records
    assert record.path == "/checkout/test/<str:session_id>/" and "cs_test_secret" not in record.getMessage()


def test_log_lines_outside_a_request_carry_a_dash_and_exceptions_are_kept():
    record = logging.LogRecord("discordbot", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    RequestIdFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "-" and entry["message"] == "failed x" and "RuntimeError: boom" in entry["exception"]


class _FakeSentry(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        _FakeSentry.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _run_django(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    base.update(
        {
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "observability-test-secret-key-not-for-production",
            "LOG_FORMAT": "json",
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_sentry_is_off_without_a_dsn_and_reports_errors_without_secrets_with_one(tmp_path):
    off = _run_django("import sentry_sdk; print(sentry_sdk.get_client().is_active())", {"DATA_DIR": str(tmp_path)})
    assert off.returncode == 0 and off.stdout.strip() == "False", off.stderr

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSentry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeSentry.received.clear()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
        code = (
            "import logging, sentry_sdk\n"
            "def checkout(voucher_code):\n"
            "    raise RuntimeError('payment backend exploded')\n"
            "try:\n"
            "    checkout('K7QH-2M9D-XR4T-8BWE')\n"
            "except RuntimeError:\n"
            "    logging.getLogger('storefront').exception('checkout failed')\n"
            "event = {'request': {'url': 'https://shop.example.com/checkout/success/?session_id=cs_test_x',"
            " 'query_string': 'session_id=cs_test_x', 'cookies': {'sessionid': 'abc'}, 'data': {'code': 'K7QH'}}}\n"
            "import storefront.settings as s\n"
            "print(s._sentry_scrub(event, {}))\n"
            "sentry_sdk.flush(10)\n"
        )
        on = _run_django(code, {"DATA_DIR": str(tmp_path), "SENTRY_DSN": dsn})
        assert on.returncode == 0, on.stderr
        assert on.stdout.strip() == "{'request': {'url': 'https://shop.example.com/checkout/success/'}}"
        sent = b"".join(_FakeSentry.received)
        assert b"payment backend exploded" in sent  # the error reached the (fake) Sentry over HTTP
        assert b"K7QH-2M9D-XR4T-8BWE" not in sent  # local variables are not sent
        assert b"observability-test-secret-key" not in sent
    finally:
        server.shutdown()
