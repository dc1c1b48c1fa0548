"""The production web server under a Stripe webhook burst, and the pack list under load: before and after, one run.

Each variant is the storefront served exactly as the web container serves it: `ecs/entrypoint.py web` (the deploy
checks, then gunicorn with ./gunicorn.conf.py), DEBUG=false, the production cache and logging, a file SQLite
database (and, when PostgreSQL is reachable, the current code on PostgreSQL too). Beside the current code runs the
code of BASELINE_REF (the storefront before acknowledge-then-process and the pack list cache), from `git archive`,
with the same settings. Stripe is the test suite's fake (tests/storefront/fake_stripe.py) on 127.0.0.1, answering
after 0 ms and after 150 ms; email goes to a local SMTP sink through Django's SMTP backend.

Per repetition, variant and Stripe delay:
- webhook burst: N orders (real rows, each with a paid Checkout Session at the fake), one
  `checkout.session.completed` event each plus 30% duplicate deliveries (same id and body), shuffled, sent by 16
  concurrent senders, signed as Stripe signs (HMAC-SHA256 of "{t}.{body}"). events/s = N / (first send until the
  last voucher email arrived); beside it the deliveries acknowledged per second and the p50 answer time;
- the pack list (GET /), one client after another every 25 ms, p50/p99 quiet (just before) and during the burst;
- then exactly-once: every order paid once, with one voucher, one email per buyer, every event processed, and
  `auditcredits` clean.
Then the pack list at 50 concurrent clients (asyncio, a new connection per request, as a browser's first visit).

    .venv/bin/python bench/web_load.py [--quick] [--baseline REF] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import random
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.table import Row  # noqa: E402

TABLE_ORDER = 20
# The commit before acknowledge-then-process and the pack list cache (the web-perf branch's base).
BASELINE_REF = "ed23615"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/webperf")
API_KEY = "sk_test_bench_web_load"
WEBHOOK_SECRET = "whsec_bench_web_load"
SENDERS = 16
DUPLICATES = 0.30
DELAYS = (0.0, 0.15)
PROBE_INTERVAL = 0.025
CONCURRENT_CLIENTS = 50


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the fake Stripe and the SMTP sink, in a process of their own -------------------------------------------


class _SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, int] = {}  # recipient -> messages
        super().__init__(("127.0.0.1", 0), _SmtpHandler)


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for Django's backend: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def handle(self) -> None:
        out = self.wfile
        out.write(b"220 sink ESMTP\r\n")
        recipients: list[str] = []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                out.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                recipients = []
                out.write(b"250 OK\r\n")
            elif verb == b"RCPT":
                recipients.append(line.decode().split(":", 1)[1].strip().strip("<>").lower())
                out.write(b"250 OK\r\n")
            elif verb == b"DATA":
                out.write(b"354 go ahead\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                with self.server.lock:
                    for rcpt in recipients:
                        self.server.received[rcpt] = self.server.received.get(rcpt, 0) + 1
                out.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                out.write(b"221 bye\r\n")
                return
            else:
                out.write(b"250 OK\r\n")


def _services_main(conn) -> None:
    from tests.storefront.fake_stripe import FakeStripe

    fake = FakeStripe(api_key=API_KEY).start()
    sink = _SmtpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    conn.send((fake.url, sink.server_address[1]))
    while True:
        command, arg = conn.recv()
        if command == "delay":
            fake.answer_delay = arg
            conn.send(None)
        elif command == "paid_sessions":  # [(order_id, amount, email)] -> [session]
            sessions = []
            for order_id, amount, email in arg:
                session = fake.foreign_session(amount=amount, metadata={"order_id": str(order_id)}, paid=False)
                sessions.append(fake.mark_paid(session["id"], email=email))
            with fake._lock:
                fake.requests.clear()
            conn.send(sessions)
        elif command == "mail":
            with sink.lock:
                conn.send(dict(sink.received))
        elif command == "mail_total":
            with sink.lock:
                conn.send(sum(sink.received.values()))
        elif command == "stop":
            fake.stop()
            sink.shutdown()
            conn.send(None)
            return


# --- the database helper: the variant's own code, in its own process ------------------------------------------

HELPER = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storefront.settings")
import django
django.setup()
from io import StringIO
from django.core.management import call_command
from django.core.management.base import CommandError
from storefront.models import CreditPack, Order, StripeEvent
from vouchers.models import Voucher
print("READY", flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] == "orders":
        pack = CreditPack.objects.filter(active=True).order_by("price_cents").first()
        made = Order.objects.bulk_create(
            Order(pack=pack, credits=pack.credits, amount_cents=pack.price_cents, currency=pack.currency)
            for _ in range(cmd["n"])
        )
        if not made or made[0].pk is None:
            made = list(Order.objects.order_by("-pk")[: cmd["n"]])[::-1]
        out = [[o.pk, o.amount_cents] for o in made]
    elif cmd["cmd"] == "sessions":
        for order_id, session_id in cmd["map"]:
            Order.objects.filter(pk=order_id).update(stripe_session_id=session_id)
        out = None
    elif cmd["cmd"] == "check":
        ids = cmd["ids"]
        paid = Order.objects.filter(pk__in=ids, status="paid").count()
        vouchers = Voucher.objects.filter(order_id__in=ids).count()
        orders_with_voucher = Voucher.objects.filter(order_id__in=ids).values("order_id").distinct().count()
        events = StripeEvent.objects.filter(event_id__in=cmd["events"])
        audit = StringIO()
        try:
            call_command("auditcredits", stdout=audit, stderr=audit)
            audit_ok = True
        except (CommandError, SystemExit):
            audit_ok = False
        out = {
            "paid": paid, "vouchers": vouchers, "orders_with_voucher": orders_with_voucher,
            "events": events.count(), "events_processed": events.filter(processed_at__isnull=False).count(),
            "audit_ok": audit_ok, "audit": audit.getvalue()[-600:],
        }
    elif cmd["cmd"] == "stop":
        break
    print("OUT " + json.dumps(out), flush=True)
"""


class DbHelper:
    def __init__(self, app_dir: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELPER],
            cwd=app_dir,
            env={**env, "LOG_LEVEL": "ERROR"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "READY", "the database helper did not start"

    def call(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the database helper died")
            if line.startswith("OUT "):
                return json.loads(line[4:])

    def stop(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


# --- a variant: one production web server -------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    app_dir: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    helper: DbHelper | None = None
    log: Path | None = None


def variant_env(variant: Variant, *, tmp: Path, stripe_url: str, smtp_port: int) -> dict[str, str]:
    data = tmp / f"data-{variant.name.replace(' ', '-')}"
    data.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "PG_TEST"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "DEBUG": "false",
            "APP_ROLE": "web",
            "SECRET_KEY": "bench-web-load-secret-key-" + "x" * 40,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SITE_URL": "https://127.0.0.1",
            "CSRF_TRUSTED_ORIGINS": "https://127.0.0.1",
            "STRIPE_SECRET_KEY": API_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_url,
            "PAYMENTS_BACKEND": "stripe",
            "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
            "DATABASE_URL": variant.database_url,
            "DATA_DIR": str(data),
            "STATIC_ROOT": str(data / "static"),
            "GUNICORN_BIND": f"127.0.0.1:{variant.port}",
        }
    )
    env.update(variant.extra_env)
    return env


def start_variant(variant: Variant, *, tmp: Path, stripe_url: str, smtp_port: int) -> None:
    variant.port = free_port()
    variant.env = env = variant_env(variant, tmp=tmp, stripe_url=stripe_url, smtp_port=smtp_port)
    run = {"cwd": variant.app_dir, "env": env, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], **run)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], **run)
    variant.log = tmp / f"{variant.name.replace(' ', '-')}.log"
    with open(variant.log, "w") as log:
        variant.proc = subprocess.Popen(
            [sys.executable, "ecs/entrypoint.py", "web"], cwd=variant.app_dir, env=env, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if variant.proc.poll() is not None:
            raise SystemExit(f"{variant.name}: the web server exited: {variant.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{variant.port}/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        raise SystemExit(f"{variant.name}: the web server did not come up")
    variant.helper = DbHelper(variant.app_dir, env)


def stop_variant(variant: Variant) -> None:
    if variant.helper:
        variant.helper.stop()
    if variant.proc and variant.proc.poll() is None:
        variant.proc.terminate()
        try:
            variant.proc.wait(30)
        except subprocess.TimeoutExpired:
            variant.proc.kill()


# --- the load --------------------------------------------------------------------------------------------------

HEADERS = {"Host": "127.0.0.1", "X-Forwarded-Proto": "https"}  # as from the load balancer


def signed(body: str) -> str:
    t = int(time.time())
    v1 = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


def event_json(event_id: str, session: dict) -> str:
    import stripe

    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "type": "checkout.session.completed",
            "data": {"object": session},
        }
    )


def _probe_main(port: int, stop, out) -> None:
    """Load the pack list one request after another (a fresh visitor each time) until told to stop."""
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/", headers=HEADERS)
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status == 200:
            latencies.append(time.perf_counter() - started)
        stop.wait(PROBE_INTERVAL)
    out.put(latencies)


class Probe:
    def __init__(self, port: int) -> None:
        ctx = mp.get_context("fork")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_probe_main, args=(port, self.stop, self.out), daemon=True)
        self.proc.start()

    def finish(self) -> list[float]:
        self.stop.set()
        latencies = self.out.get(timeout=60)
        self.proc.join(10)
        return latencies


@dataclass
class Burst:
    events: int
    deliveries: int
    seconds: float  # first send until the last voucher email arrived
    ack_seconds: float  # first send until the last delivery was answered
    ack_p50: float
    non_2xx: int
    quiet: list[float]
    during: list[float]
    exactly_once: bool
    problems: list[str]


def send_all(port: int, deliveries: list[tuple[str, str]]) -> tuple[list[float], int]:
    """16 senders, each on its own keep-alive connection; a non-2xx answer is sent again (Stripe retries)."""
    lock = threading.Lock()
    pending = list(deliveries)
    latencies: list[float] = []
    non_2xx = 0

    def sender() -> None:
        nonlocal non_2xx
        conn = HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not pending:
                    break
                _event_id, body = pending.pop()
            for _attempt in range(5):
                started = time.perf_counter()
                try:
                    conn.request(
                        "POST",
                        "/stripe/webhook/",
                        body=body.encode(),
                        headers={**HEADERS, "Content-Type": "application/json", "Stripe-Signature": signed(body)},
                    )
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except OSError:
                    conn.close()
                    conn = HTTPConnection("127.0.0.1", port, timeout=120)
                    status = 0
                with lock:
                    latencies.append(time.perf_counter() - started)
                if 200 <= status < 300:
                    break
                with lock:
                    non_2xx += 1
                time.sleep(0.1)
        conn.close()

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, non_2xx


def webhook_burst(variant: Variant, services, *, events: int, run_id: str, quiet_seconds: float) -> Burst:
    helper = variant.helper
    orders = helper.call(cmd="orders", n=events)
    emails = {order_id: f"buyer-{run_id}-{order_id}@bench.example" for order_id, _ in orders}
    services.send(("paid_sessions", [(order_id, amount, emails[order_id]) for order_id, amount in orders]))
    sessions = services.recv()
    helper.call(cmd="sessions", map=[[o[0], s["id"]] for o, s in zip(orders, sessions, strict=True)])
    rng = random.Random(run_id)
    unique = [(f"evt_bench_{run_id}_{i}", event_json(f"evt_bench_{run_id}_{i}", s)) for i, s in enumerate(sessions)]
    deliveries = unique + [rng.choice(unique) for _ in range(int(len(unique) * DUPLICATES))]
    rng.shuffle(deliveries)
    services.send(("mail_total", None))
    mail_before = services.recv()

    probe = Probe(variant.port)
    time.sleep(quiet_seconds)
    quiet = probe.finish()

    probe = Probe(variant.port)
    started = time.perf_counter()
    result: dict = {}

    def send() -> None:
        result["lat"], result["bad"] = send_all(variant.port, deliveries)

    sending = threading.Thread(target=send)
    sending.start()
    ack_seconds = None
    deadline = started + 600
    while time.perf_counter() < deadline:
        if ack_seconds is None and not sending.is_alive():
            ack_seconds = time.perf_counter() - started
        services.send(("mail_total", None))
        if services.recv() >= mail_before + events:
            break
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    sending.join()
    if ack_seconds is None:
        ack_seconds = time.perf_counter() - started
    during = probe.finish()

    time.sleep(1.0)  # anything still to come (a second email) would arrive now
    services.send(("mail", None))
    received = services.recv()
    check = helper.call(cmd="check", ids=[o[0] for o in orders], events=[e for e, _ in unique])
    problems = []
    if check["paid"] != events:
        problems.append(f"{events - check['paid']} orders not paid")
    if check["vouchers"] != events or check["orders_with_voucher"] != events:
        problems.append(f"{check['vouchers']} vouchers for {events} orders")
    emailed = [received.get(emails[o[0]], 0) for o in orders]
    if any(n != 1 for n in emailed):
        problems.append(f"emails per buyer: {sorted(set(emailed))}")
    if check["events"] != events or check["events_processed"] != events:
        problems.append(f"{check['events_processed']}/{check['events']} of {events} events processed")
    if not check["audit_ok"]:
        problems.append("auditcredits: " + check["audit"])
    return Burst(
        events=events,
        deliveries=len(deliveries),
        seconds=seconds,
        ack_seconds=ack_seconds,
        ack_p50=pct(result["lat"], 50),
        non_2xx=result["bad"],
        quiet=quiet,
        during=during,
        exactly_once=not problems,
        problems=problems,
    )


async def _client(port: int, until: float, warm: float, latencies: list[float], errors: list[int]) -> None:
    cookie = ""
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n"
            if cookie:
                head += f"Cookie: {cookie}\r\n"
            writer.write((head + "\r\n").encode())
            data = await reader.read()
            writer.close()
        except OSError:
            errors.append(0)
            continue
        status = data[9:12]
        if status != b"200":
            errors.append(int(status or b"0"))
            continue
        if not cookie:
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                if line.lower().startswith(b"set-cookie: csrftoken="):
                    cookie = line[12:].split(b";")[0].decode()  # the visitor's cookie, sent back as a browser does
        if started >= warm:
            latencies.append(time.perf_counter() - started)


def _concurrent_main(port: int, seconds: float, out) -> None:
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()

    async def main() -> None:
        await asyncio.gather(
            *(_client(port, start + seconds, start + 0.5, latencies, errors) for _ in range(CONCURRENT_CLIENTS))
        )

    asyncio.run(main())
    out.put((latencies, len(errors), seconds - 0.5))


def pack_list_concurrent(port: int, *, seconds: float) -> tuple[list[float], int, float]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_concurrent_main, args=(port, seconds, out))
    proc.start()
    result = out.get(timeout=seconds + 120)
    proc.join(10)
    return result


# --- setup and the table ----------------------------------------------------------------------------------------


def baseline_tree(ref: str, tmp: Path) -> Path | None:
    target = tmp / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True)
    if archive.returncode != 0:
        print(f"  no baseline: git archive {ref} failed: {archive.stderr.decode().strip()}", flush=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def postgres_ready(url: str) -> bool:
    """Recreate the bench's own PostgreSQL database (from scratch, every run); False when there is no server."""
    try:
        import psycopg
    except ImportError:
        return False
    base, _, name = url.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"  PostgreSQL not used ({type(exc).__name__}: {exc})", flush=True)
        return False
    return True


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def run(
    *, quick: bool, baseline_ref: str = BASELINE_REF, postgres: bool = True, only: str = "", events: int = 0
) -> dict:
    reps = 1 if quick else 3
    events = events or (60 if quick else 400)
    quiet_seconds = 1.5 if quick else 3.0
    concurrent_seconds = 2.5 if quick else 6.0
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="web-load-") as tmp_name:
        tmp = Path(tmp_name)
        ctx = mp.get_context("fork")
        services, child = ctx.Pipe()
        services_proc = ctx.Process(target=_services_main, args=(child,), daemon=True)
        services_proc.start()
        stripe_url, smtp_port = services.recv()
        variants: list[Variant] = []
        before_dir = baseline_tree(baseline_ref, tmp) if only in ("", "before") else None
        if before_dir is not None:
            variants.append(Variant("before", before_dir, f"sqlite:///{tmp / 'before.sqlite3'}"))
        if only in ("", "after"):
            variants.append(Variant("after", ROOT, f"sqlite:///{tmp / 'after.sqlite3'}"))
        if postgres and only in ("", "postgres") and postgres_ready(PG_URL):
            # 2 workers x (8 request threads + 16 event threads) stays well inside max_connections=100.
            variants.append(Variant("after, PostgreSQL", ROOT, PG_URL, {"STRIPE_EVENT_THREADS": "16"}))
        try:
            for variant in variants:
                start_variant(variant, tmp=tmp, stripe_url=stripe_url, smtp_port=smtp_port)
                print(f"  {variant.name}: serving on 127.0.0.1:{variant.port} from {variant.app_dir}", flush=True)
            for rep in range(reps):
                for delay in DELAYS:
                    services.send(("delay", delay))
                    services.recv()
                    for variant in variants:
                        burst = webhook_burst(
                            variant,
                            services,
                            events=events,
                            run_id=f"{rep}{int(delay * 1000)}{variant.name[:1]}{variant.port}",
                            quiet_seconds=quiet_seconds,
                        )
                        results.setdefault((variant.name, delay), []).append(burst)
                        print(
                            f"  rep {rep + 1} {variant.name:18} Stripe {delay * 1000:3.0f} ms: "
                            f"{burst.events / burst.seconds:6.0f} events/s, "
                            f"acks {burst.deliveries / burst.ack_seconds:5.0f}/s (p50 {ms(burst.ack_p50)}), "
                            f"pack list p50/p99 quiet {ms(pct(burst.quiet, 50))}/{ms(pct(burst.quiet, 99))}, "
                            f"during {ms(pct(burst.during, 50))}/{ms(pct(burst.during, 99))}, "
                            f"exactly-once {'held' if burst.exactly_once else 'BROKEN: ' + '; '.join(burst.problems)}"
                            f" | load {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
                services.send(("delay", 0.0))
                services.recv()
                for variant in variants:
                    latencies, errors, seconds = pack_list_concurrent(variant.port, seconds=concurrent_seconds)
                    results.setdefault((variant.name, "concurrent"), []).append((latencies, errors, seconds))
                    print(
                        f"  rep {rep + 1} {variant.name:18} pack list x{CONCURRENT_CLIENTS}: "
                        f"{len(latencies) / seconds:5.0f} req/s, "
                        f"p50 {ms(pct(latencies, 50))}, p99 {ms(pct(latencies, 99))}"
                        f", {errors} errors | load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
        finally:
            for variant in variants:
                stop_variant(variant)
            services.send(("stop", None))
            services.recv()
            services_proc.join(10)
    results["variants"] = [v.name for v in variants]
    results["settings"] = settings_text(reps=reps, events=events)
    return results


def settings_text(*, reps: int, events: int) -> str:
    sys.path.insert(0, str(ROOT))
    conf = {}
    env = {"DEBUG": "false", "SECRET_KEY": "x" * 50, "STRIPE_SECRET_KEY": API_KEY}
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), conf)  # noqa: S102
    from django.conf import settings

    return (
        f"gunicorn via ecs/entrypoint.py web: {conf['workers']} x {conf['worker_class']} {conf['threads']} threads, "
        f"{settings.STRIPE_EVENT_THREADS} event threads per worker (16 on PostgreSQL); DEBUG=false, file SQLite "
        f"(WAL); {SENDERS} senders, {int(DUPLICATES * 100)}% duplicates, {events} orders per burst, {reps} reps; "
        f"fake Stripe + SMTP sink on 127.0.0.1; load avg {os.getloadavg()[0]:.2f}"
    )


def summarize(results: dict) -> list[Row]:
    rows: list[Row] = []
    names = results["variants"]
    settings = results["settings"]

    def bursts(name: str, delay: float) -> list[Burst]:
        return results.get((name, delay), [])

    def rates(name: str, delay: float) -> str:
        got = bursts(name, delay)
        if not got:
            return "-"
        values = sorted(b.events / b.seconds for b in got)
        held = all(b.exactly_once for b in got)
        return f"{values[0]:.0f}-{values[-1]:.0f}/s" + (" exactly-once held" if held else " EXACTLY-ONCE BROKEN")

    def pooled(name: str, attr: str) -> list[float]:
        return [x for delay in DELAYS for b in bursts(name, delay) for x in getattr(b, attr)]

    for delay in DELAYS:
        after = rates("after", delay)
        beside = [f"before: {rates('before', delay)}"] if "before" in names else []
        if "after, PostgreSQL" in names:
            beside.append(f"PostgreSQL: {rates('after, PostgreSQL', delay)}")
        got = bursts("after", delay)
        acks = ", acks p50 " + ms(statistics.median(b.ack_p50 for b in got)) if got else ""
        rows.append(
            Row(
                what=f"webhook events/s through gunicorn, Stripe answering in {delay * 1000:.0f} ms "
                "(16 senders, 30% duplicates)",
                figure=after + acks,
                beside="; ".join(beside),
                settings=settings,
            )
        )
    for name in names:
        if name == "after, PostgreSQL":
            continue
        quiet, during = pooled(name, "quiet"), pooled(name, "during")
        if name == "after":
            rows.append(
                Row(
                    what="pack list p50/p99 during the webhook burst",
                    figure=f"{ms(pct(during, 50))} / {ms(pct(during, 99))} "
                    f"(quiet {ms(pct(quiet, 50))} / {ms(pct(quiet, 99))})",
                    beside=_before_probe(results),
                    settings=settings,
                )
            )
    concurrent = results.get(("after", "concurrent"), [])
    if concurrent:
        lat = [x for latencies, _, _ in concurrent for x in latencies]
        rps = [len(latencies) / seconds for latencies, _, seconds in concurrent]
        before = results.get(("before", "concurrent"), [])
        beside = ""
        if before:
            blat = [x for latencies, _, _ in before for x in latencies]
            brps = [len(latencies) / seconds for latencies, _, seconds in before]
            beside = f"before: {min(brps):.0f}-{max(brps):.0f} req/s, p50 {ms(pct(blat, 50))}, p99 {ms(pct(blat, 99))}"
        rows.append(
            Row(
                what=f"pack list at {CONCURRENT_CLIENTS} concurrent clients (a new connection each request)",
                figure=f"{min(rps):.0f}-{max(rps):.0f} req/s, p50 {ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}",
                beside=beside,
                settings=settings,
            )
        )
    return rows


def _before_probe(results: dict) -> str:
    if "before" not in results["variants"]:
        return ""
    quiet = [x for d in DELAYS for b in results.get(("before", d), []) for x in b.quiet]
    during = [x for d in DELAYS for b in results.get(("before", d), []) for x in b.during]
    return f"before: {ms(pct(during, 50))} / {ms(pct(during, 99))} (quiet {ms(pct(quiet, 50))} / {ms(pct(quiet, 99))})"


def measure(*, quick: bool) -> list[Row]:
    return summarize(run(quick=quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--baseline", default=BASELINE_REF, help="git ref of the code measured beside (default %(default)s)"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only", choices=("before", "after", "postgres"), default="", help="one variant")
    parser.add_argument("--events", type=int, default=0, help="orders per burst")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = run(
        quick=args.quick, baseline_ref=args.baseline, postgres=not args.no_postgres, only=args.only, events=args.events
    )
    for row in summarize(results):
        print(f"{row.what}: {row.figure} | beside: {row.beside}")
    print(f"settings: {results['settings']}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
