"""Exactly-once under pressure: real threads, real HTTP to the fake Stripe, the real (file or PostgreSQL) database.

Each scenario releases all its threads at once through a barrier, then checks DESIGN.md invariant 3 (one voucher
per paid session) and runs `auditcredits`.
"""

import io
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connections
from django.test import Client

from storefront.models import Order, StripeEvent
from storefront.tokens import buy_token_make
from tests.storefront.conftest import deliver, event_body, make_pack, start_checkout
from vouchers.models import CreditAccount, LedgerEntry, Voucher

pytestmark = pytest.mark.django_db(transaction=True)


def run_concurrently(tasks: list[Callable[[], Any]], *, timeout: float = 60) -> list[Any]:
    """Run every task in its own thread, all released together; returns results (or the exception raised)."""
    barrier = threading.Barrier(len(tasks))
    results: list[Any] = [None] * len(tasks)

    def work(index: int, task: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = task()
        except BaseException as exc:  # reported to the test, not lost in the thread
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results


def webhook_task(body: str) -> Callable[[], int]:
    return lambda: deliver(Client(), body).status_code


def success_task(session_id: str) -> Callable[[], tuple[int, str]]:
    def load() -> tuple[int, str]:
        response = Client().get("/checkout/success/", {"session_id": session_id})
        return response.status_code, response.content.decode()

    return load


def audit_passes() -> str:
    out = io.StringIO()
    call_command("auditcredits", stdout=out)  # raises CommandError (exit 1) when an invariant is broken
    return out.getvalue()


def test_same_completed_event_ten_times_at_once_with_success_page_loads_yields_one_voucher(client, fake_stripe):
    order = start_checkout(client, make_pack())
    fake_stripe.mark_paid(order.stripe_session_id, email="race@example.com")
    body = event_body("checkout.session.completed", fake_stripe.sessions[order.stripe_session_id], event_id="evt_x")
    tasks = [webhook_task(body) for _ in range(10)] + [success_task(order.stripe_session_id) for _ in range(5)]
    random.Random(3).shuffle(tasks)

    results = run_concurrently(tasks)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    voucher = Voucher.objects.get(order=order)
    assert sorted(r for r in results if isinstance(r, int)) == [200] * 10
    pages = [r for r in results if isinstance(r, tuple)]
    assert all(status == 200 and voucher.code in page for status, page in pages), "every page shows the voucher"
    order.refresh_from_db()
    assert order.status == "paid"
    assert [m.to for m in mail.outbox] == [["race@example.com"]]
    event = StripeEvent.objects.get()
    assert event.processed_at is not None and 1 <= event.attempts <= 10
    assert "All" in audit_passes()


def test_interleaved_completed_and_async_succeeded_for_many_orders_yield_one_voucher_each(client, fake_stripe):
    pack = make_pack(credits=150)
    buyer = buy_token_make(discord_user_id=4242)
    orders = [
        start_checkout(client, pack),
        start_checkout(client, pack),
        start_checkout(client, pack, **{"for": buyer}),
        start_checkout(client, pack, **{"for": buyer}),
    ]
    tasks: list[Callable[[], Any]] = []
    for order in orders:
        session = fake_stripe.mark_paid(order.stripe_session_id)
        # Distinct event ids (Stripe's two event types, each redelivered), out of order with each other.
        tasks += [webhook_task(event_body("checkout.session.completed", session)) for _ in range(3)]
        tasks += [webhook_task(event_body("checkout.session.async_payment_succeeded", session)) for _ in range(3)]
        tasks += [success_task(order.stripe_session_id) for _ in range(2)]
    random.Random(7).shuffle(tasks)

    results = run_concurrently(tasks)

    assert not [r for r in results if isinstance(r, BaseException)]
    assert all(r == 200 for r in results if isinstance(r, int))
    assert all(status == 200 for status, _ in (r for r in results if isinstance(r, tuple)))
    for order in orders:
        assert Voucher.objects.filter(order=order).count() == 1
    assert Order.objects.filter(status="paid").count() == 4
    # The two /buy orders were redeemed to their member exactly once each.
    assert CreditAccount.objects.get(discord_user_id=4242).balance == 300
    assert LedgerEntry.objects.filter(kind="redeem").count() == 2
    assert len(mail.outbox) == 4
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0
    audit_passes()


def test_unpaid_then_paid_race_issues_only_after_payment(client, fake_stripe):
    order = start_checkout(client, make_pack())
    session = fake_stripe.mark_complete_unpaid(order.stripe_session_id)
    early = [webhook_task(event_body("checkout.session.completed", session)) for _ in range(5)]
    early += [success_task(order.stripe_session_id) for _ in range(3)]

    run_concurrently(early)

    assert not Voucher.objects.exists()
    fake_stripe.mark_paid(order.stripe_session_id)
    paid = fake_stripe.sessions[order.stripe_session_id]
    late = [webhook_task(event_body("checkout.session.async_payment_succeeded", paid)) for _ in range(5)]
    late += [success_task(order.stripe_session_id) for _ in range(3)]

    results = run_concurrently(late)

    assert not [r for r in results if isinstance(r, BaseException)]
    assert Voucher.objects.filter(order=order).count() == 1
    audit_passes()


def test_concurrent_refund_deliveries_claw_back_once(client, fake_stripe):
    order = start_checkout(client, make_pack(credits=150), **{"for": buy_token_make(discord_user_id=99)})
    session = fake_stripe.mark_paid(order.stripe_session_id)
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200
    fake_stripe.refund(order.stripe_session_id)
    charge = fake_stripe.charge_of(order.stripe_session_id)
    tasks = [webhook_task(event_body("charge.refunded", charge)) for _ in range(8)]

    results = run_concurrently(tasks)

    assert results == [200] * 8
    order.refresh_from_db()
    assert order.status == "refunded"
    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert CreditAccount.objects.get(discord_user_id=99).balance == 0
    audit_passes()
