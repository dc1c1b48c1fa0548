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

from storefront.models import Dispute, Order, StripeEvent
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


def test_dispute_events_delivered_all_at_once_in_any_order_end_won_with_the_credits_back(client, fake_stripe):
    """created, funds_withdrawn, updated and a won `closed` (twice) race each other: whichever wins the race,
    the end state is the same: the dispute won, every credit back, nothing frozen twice or returned twice."""
    order = start_checkout(client, make_pack(credits=150), **{"for": buy_token_make(discord_user_id=77)})
    session = fake_stripe.mark_paid(order.stripe_session_id)
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200
    opened = fake_stripe.dispute(order.stripe_session_id)
    won = {**opened, "status": "won"}
    bodies = [
        event_body("charge.dispute.created", opened),
        event_body("charge.dispute.funds_withdrawn", opened),
        event_body("charge.dispute.updated", opened),
        event_body("charge.dispute.closed", won),
        event_body("charge.dispute.closed", won),
    ]
    random.Random(7).shuffle(bodies)

    results = run_concurrently([webhook_task(body) for body in bodies])

    assert results == [200] * len(bodies)
    assert CreditAccount.objects.get(discord_user_id=77).balance == 150
    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.credits_state) == ("won", "returned")
    clawbacks = LedgerEntry.objects.filter(kind="clawback").count()
    assert clawbacks == LedgerEntry.objects.filter(kind="restore").count() <= 1
    audit_passes()


def test_partial_refunds_delivered_at_once_claw_back_their_total_exactly(client, fake_stripe):
    order = start_checkout(client, make_pack(credits=150), **{"for": buy_token_make(discord_user_id=78)})
    session = fake_stripe.mark_paid(order.stripe_session_id)
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200
    for _ in range(4):
        fake_stripe.refund(order.stripe_session_id, amount=250)  # 10.00 of 12.00 in four refunds
    charge = fake_stripe.charge_of(order.stripe_session_id)
    refunds = [r for r in fake_stripe.refunds.values() if r["charge"] == charge["id"]]
    bodies = [event_body("charge.refunded", charge) for _ in range(3)]
    bodies += [event_body("charge.refund.updated", refund) for refund in refunds]

    results = run_concurrently([webhook_task(body) for body in bodies])

    assert results == [200] * len(bodies)
    assert CreditAccount.objects.get(discord_user_id=78).balance == 150 - 150 * 1000 // 1200
    order.refresh_from_db()
    assert (order.status, order.amount_refunded) == ("paid", 1000)
    audit_passes()


def test_dispute_arriving_while_the_members_generations_are_queued_and_running(client, fake_stripe):
    """The bot's work (reserve; then deliver, or fail and refund) races the chargeback's webhook deliveries.

    Whatever the interleaving: nothing the disputed payment bought stays spendable. Delivered images are the
    member's, so their cost stays owed; every refunded reservation went to the debt first.
    """
    from vouchers.errors import InsufficientCredits
    from vouchers.services import credits_refund, credits_reserve

    order = start_checkout(client, make_pack(credits=150), **{"for": buy_token_make(discord_user_id=79)})
    session = fake_stripe.mark_paid(order.stripe_session_id)
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200
    dispute = fake_stripe.dispute(order.stripe_session_id)

    def job(index: int) -> Callable[[], str]:
        def run() -> str:
            try:
                charge = credits_reserve(discord_user_id=79, amount=10)
            except InsufficientCredits:
                return "refused"
            if index % 2:
                return "delivered"
            credits_refund(entry_id=charge.pk)
            return "refunded"

        return run

    tasks = [job(i) for i in range(14)]
    tasks += [
        webhook_task(event_body(t, dispute)) for t in ("charge.dispute.created", "charge.dispute.funds_withdrawn")
    ]

    results = run_concurrently(tasks)

    assert results[-2:] == [200, 200]
    delivered = results.count("delivered")
    account = CreditAccount.objects.get(discord_user_id=79)
    assert (account.balance, account.owed) == (0, 10 * delivered)
    assert Dispute.objects.get().credits_state == "frozen"
    audit_passes()
