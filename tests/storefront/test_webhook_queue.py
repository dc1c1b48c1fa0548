"""Acknowledge-then-process, attacked: a process killed after the 2xx, the same event twice at once, failures,
forged input, and the success page while the event waits. Real threads, real processes, real HTTP to the fake
Stripe, the real (file or PostgreSQL) database.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from storefront import webhooks
from storefront.eventqueue import EventProcessor
from storefront.models import Order, StripeEvent
from storefront.services import stripe_event_claim
from tests.storefront.conftest import deliver, event_body, make_pack, process_events, sign, start_checkout
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = django_settings.BASE_DIR


def paid_order_event(client, fake_stripe, *, event_id: str, email: str = "buyer@example.com") -> tuple[Order, str]:
    order = start_checkout(client, make_pack())
    session = fake_stripe.mark_paid(order.stripe_session_id, email=email)
    return order, event_body("checkout.session.completed", session, event_id=event_id)


def wait_for(condition, *, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def processor_until_processed(event_id: str, *, timeout: float = 30) -> None:
    """A real processor (threads, poll) in this process, run until the event is processed."""
    processor = EventProcessor(threads=4, poll_seconds=0.1).start()
    try:
        wait_for(
            lambda: StripeEvent.objects.filter(event_id=event_id, processed_at__isnull=False).exists(),
            timeout=timeout,
            what=f"{event_id} to be processed",
        )
    finally:
        processor.stop()
        connections.close_all()


# --- a web process that acknowledged, then died --------------------------------------------------------

WEB_PROCESS = textwrap.dedent(
    """
    import os, sys, time
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    django.setup()
    from django.conf import settings
    from django.test import Client
    settings.STRIPE_EVENT_THREADS = int(os.environ["THREADS"])
    settings.STRIPE_EVENT_LEASE_SECONDS = 1
    settings.STRIPE_API_BASE = os.environ["STRIPE_API_BASE"]
    settings.STRIPE_TIMEOUT_SECONDS = 30
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    body = sys.stdin.read()
    response = Client().post(
        "/stripe/webhook/", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=os.environ["SIGNATURE"]
    )
    print(response.status_code, flush=True)
    time.sleep(120)  # alive (its processor, if any, at work) until the test kills it
    """
)


def database_url() -> str:
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{name}"


def web_process_acknowledges(body: str, *, threads: int, fake_stripe) -> subprocess.Popen:
    """Another process receives the webhook (as a gunicorn worker would) and answers; returns it, still alive."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "THREADS": str(threads),
        "STRIPE_API_BASE": fake_stripe.url,
        "SIGNATURE": sign(body),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WEB_PROCESS], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    proc.stdin.write(body)
    proc.stdin.close()
    assert proc.stdout.readline().strip() == "200", "the web process did not acknowledge"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.slow
def test_event_acknowledged_then_its_process_killed_before_processing_is_processed_later_exactly_once(
    client, fake_stripe
):
    order, body = paid_order_event(client, fake_stripe, event_id="evt_killed_before")
    proc = web_process_acknowledges(body, threads=0, fake_stripe=fake_stripe)  # no processor there: nothing ran
    kill(proc)
    event = StripeEvent.objects.get(event_id="evt_killed_before")
    assert (event.processed_at, event.attempts, event.claimed_until) == (None, 0, None)
    assert not Voucher.objects.exists()

    processor_until_processed("evt_killed_before")  # any worker's poll picks it up

    event.refresh_from_db()
    assert event.attempts == 1
    assert Voucher.objects.filter(order=order).count() == 1
    assert [m.to for m in mail.outbox] == [["buyer@example.com"]]


@pytest.mark.slow
def test_event_whose_process_is_killed_in_the_middle_of_processing_is_taken_over_once_its_claim_lapses(
    client, fake_stripe
):
    order, body = paid_order_event(client, fake_stripe, event_id="evt_killed_during")
    fake_stripe.hang_next(method="GET")  # the dying process's Stripe call never returns
    proc = web_process_acknowledges(body, threads=2, fake_stripe=fake_stripe)
    wait_for(
        lambda: StripeEvent.objects.filter(event_id="evt_killed_during", claimed_until__isnull=False).exists(),
        what="the other process to claim the event",
    )
    wait_for(lambda: fake_stripe.calls("GET"), what="the other process to ask Stripe")
    kill(proc)
    assert not Voucher.objects.exists()

    processor_until_processed("evt_killed_during")  # its 1 s lease lapses; this process takes over

    event = StripeEvent.objects.get(event_id="evt_killed_during")
    assert event.attempts == 2
    assert Voucher.objects.filter(order=order).count() == 1
    assert len(mail.outbox) == 1


def test_a_claim_still_held_is_not_taken_over(client, fake_stripe):
    _order, body = paid_order_event(client, fake_stripe, event_id="evt_held")
    deliver(client, body, process=False)
    assert stripe_event_claim(event_id="evt_held", lease=timedelta(minutes=5)) is not None

    assert process_events() == {}  # held by its (live) claimant: not due for anyone else
    assert process_events(after=6 * 60) == {"evt_held": "processed"}  # its lease ran out: taken over
    assert Voucher.objects.count() == 1


# --- duplicates and races -------------------------------------------------------------------------------


def test_the_same_event_delivered_twice_at_once_is_stored_once_and_processed_once(client, fake_stripe):
    order, body = paid_order_event(client, fake_stripe, event_id="evt_twice")
    barrier = threading.Barrier(2)
    answers: list = []

    def delivery() -> None:
        try:
            barrier.wait(10)
            response = deliver(Client(), body, process=False)
            answers.append((response.status_code, response.content.decode()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=delivery) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(answers) == [(200, "ok"), (200, "queued")]  # one stored it; the other is a duplicate
    assert StripeEvent.objects.filter(event_id="evt_twice").count() == 1

    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def processor_thread() -> None:
        try:
            barrier.wait(10)
            outcomes.append(webhooks.process(event_id="evt_twice"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=processor_thread) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == [""] * 7 + ["processed"]  # one claim won
    assert StripeEvent.objects.get(event_id="evt_twice").attempts == 1
    assert Voucher.objects.filter(order=order).count() == 1
    assert len(mail.outbox) == 1
    assert len([c for c in fake_stripe.calls("GET") if order.stripe_session_id in c.path]) == 1


def test_a_failed_event_is_retried_by_the_processor_poll_once_its_delay_is_over(client, fake_stripe):
    order, body = paid_order_event(client, fake_stripe, event_id="evt_poll_retry")
    fake_stripe.fail_next(503, method="GET")
    deliver(client, body)  # stored, first attempt failed
    event = StripeEvent.objects.get(event_id="evt_poll_retry")
    assert event.processed_at is None and "CheckoutError" in event.error
    StripeEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())  # its delay is over

    processor_until_processed("evt_poll_retry")

    event.refresh_from_db()
    assert event.attempts == 2
    assert Voucher.objects.filter(order=order).count() == 1


def test_an_operator_retries_a_failing_event_now_with_the_command(client, fake_stripe):
    from io import StringIO

    from django.core.management import call_command

    order, body = paid_order_event(client, fake_stripe, event_id="evt_cmd")
    fake_stripe.fail_next(503, method="GET")
    deliver(client, body)
    out = StringIO()

    call_command("processstripeevents", "--now", stdout=out)

    assert "Processed 1 event(s), 0 failed; 0 unprocessed left." in out.getvalue()
    assert Voucher.objects.filter(order=order).count() == 1


def test_a_forged_event_stores_nothing_and_runs_nothing(client, fake_stripe):
    _order, body = paid_order_event(client, fake_stripe, event_id="evt_forged")

    response = deliver(client, body, signature=sign(body, secret="whsec_not_ours"))

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()
    assert fake_stripe.calls("GET") == []


def test_an_event_type_we_do_not_handle_is_recorded_processed_and_never_queued(client, fake_stripe):
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"}, event_id="evt_other")

    assert deliver(client, body, process=False).content == b"ok"

    event = StripeEvent.objects.get(event_id="evt_other")
    assert event.processed_at is not None and event.payload == {}
    assert process_events() == {}


# --- the buyer does not wait for the queue ---------------------------------------------------------------


def test_success_page_gives_the_voucher_while_the_event_waits_and_the_event_then_issues_nothing_more(
    client, fake_stripe
):
    order, body = paid_order_event(client, fake_stripe, event_id="evt_queued")
    assert deliver(client, body, process=False).status_code == 200  # stored, not yet processed

    page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    voucher = Voucher.objects.get(order=order)
    assert voucher.code in page
    assert process_events() == {"evt_queued": "processed"}
    assert Voucher.objects.filter(order=order).count() == 1
    assert len(mail.outbox) == 1
