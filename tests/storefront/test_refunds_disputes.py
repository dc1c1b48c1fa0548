"""Issue 7's attacks, replayed over HTTP: signed webhooks in, stripe-python out to the fake Stripe.

Chargebacks (finding 1), refunds while credits are parked in queued generations (finding 2), partial and failed
refunds, duplicate and out-of-order deliveries. `auditcredits` must be clean after each.
"""

import pytest

from discordbot.models import Generation
from discordbot.services import generation_fail_and_refund
from storefront.models import Dispute, Order, Refund
from tests.storefront.conftest import (
    charge_refunded_event,
    deliver,
    dispute_event,
    event_body,
    process_events,
    refund_event,
    start_checkout,
)
from vouchers.errors import VoucherVoid
from vouchers.models import CreditAccount, LedgerEntry, Voucher
from vouchers.services import credits_grant, credits_reserve, voucher_redeem

pytestmark = pytest.mark.django_db

MEMBER = 4_242_424_242


@pytest.fixture
def order(client, fake_stripe, pack) -> Order:
    """A fulfilled order for 150 credits at $12.00; its voucher not yet redeemed."""
    order = start_checkout(client, pack)
    session = fake_stripe.mark_paid(order.stripe_session_id)
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200
    order.refresh_from_db()
    assert order.status == "paid"
    return order


def voucher_of(order: Order) -> Voucher:
    return Voucher.objects.get(order=order)


def redeem(order: Order) -> CreditAccount:
    voucher_redeem(code=voucher_of(order).code, discord_user_id=MEMBER)
    return CreditAccount.objects.get(discord_user_id=MEMBER)


def queue(account: CreditAccount, credits: int, *, each: int = 10) -> list[LedgerEntry]:
    """What /generate leaves behind while the jobs wait: a Generation and its `generate` debit per job."""
    charges = []
    for _ in range(credits // each):
        generation = Generation.objects.create(account=account, prompt="a castle", cost=each)
        charges.append(credits_reserve(discord_user_id=MEMBER, amount=each, generation_id=generation.pk))
    return charges


def spendable(account: CreditAccount) -> tuple[int, int]:
    account.refresh_from_db()
    return account.balance, account.owed


# --- finding 1: chargebacks --------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["charge.dispute.created", "charge.dispute.funds_withdrawn"])
def test_dispute_of_an_unredeemed_voucher_makes_it_unredeemable(
    client, fake_stripe, order, event_type, assert_audit_clean
):
    dispute = fake_stripe.dispute(order.stripe_session_id)

    assert deliver(client, dispute_event(dispute, event_type)).status_code == 200

    record = Dispute.objects.get()
    assert (record.order_id, record.status, record.reason, record.amount, record.currency) == (
        order.pk,
        "needs_response",
        "fraudulent",
        1200,
        "usd",
    )
    assert record.evidence_due_by is not None
    assert (record.credits_state, record.credits_frozen) == ("frozen", 150)
    assert voucher_of(order).status == "void"
    with pytest.raises(VoucherVoid):
        voucher_redeem(code=voucher_of(order).code, discord_user_id=MEMBER)
    assert_audit_clean()


def test_dispute_of_a_redeemed_voucher_takes_the_credits_back(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)

    assert deliver(client, dispute_event(fake_stripe.dispute(order.stripe_session_id))).status_code == 200

    assert spendable(account) == (0, 0)
    assert LedgerEntry.objects.get(kind="clawback").delta == -150
    assert_audit_clean()


def test_all_dispute_events_in_a_row_freeze_once_and_lost_makes_it_final(
    client, fake_stripe, order, assert_audit_clean
):
    account = redeem(order)
    dispute = fake_stripe.dispute(order.stripe_session_id)
    for event_type in ("charge.dispute.created", "charge.dispute.funds_withdrawn", "charge.dispute.updated"):
        assert deliver(client, dispute_event(dispute, event_type)).status_code == 200
    lost = fake_stripe.update_dispute(dispute["id"], status="lost")
    assert deliver(client, dispute_event(lost, "charge.dispute.closed")).status_code == 200

    record = Dispute.objects.get()
    assert (record.status, record.credits_state, record.closed_at is not None) == ("lost", "final", True)
    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert spendable(account) == (0, 0)
    assert_audit_clean()


def test_won_dispute_gives_back_exactly_what_was_taken_once_even_redelivered(
    client, fake_stripe, order, assert_audit_clean
):
    account = redeem(order)
    dispute = fake_stripe.dispute(order.stripe_session_id)
    deliver(client, dispute_event(dispute))
    won = fake_stripe.update_dispute(dispute["id"], status="won")

    for event_type in ("charge.dispute.funds_reinstated", "charge.dispute.closed", "charge.dispute.closed"):
        assert deliver(client, dispute_event(won, event_type)).status_code == 200

    assert spendable(account) == (150, 0)
    assert list(LedgerEntry.objects.order_by("pk").values_list("kind", "delta")) == [
        ("redeem", 150),
        ("clawback", -150),
        ("restore", 150),
    ]
    assert Dispute.objects.get().credits_state == "returned"
    assert_audit_clean()


def test_won_dispute_of_an_unredeemed_voucher_makes_it_redeemable_again(client, fake_stripe, order, assert_audit_clean):
    dispute = fake_stripe.dispute(order.stripe_session_id)
    deliver(client, dispute_event(dispute))
    deliver(client, dispute_event(fake_stripe.update_dispute(dispute["id"], status="won"), "charge.dispute.closed"))

    assert voucher_of(order).status == "active"
    assert redeem(order).balance == 150
    assert_audit_clean()


def test_stale_open_event_after_a_won_dispute_changes_nothing(client, fake_stripe, order, assert_audit_clean):
    """Out of order: `closed` (won) arrives first, then the older `created`."""
    account = redeem(order)
    opened = fake_stripe.dispute(order.stripe_session_id)
    won = fake_stripe.update_dispute(opened["id"], status="won")

    assert deliver(client, dispute_event(won, "charge.dispute.closed")).status_code == 200
    assert deliver(client, dispute_event(opened, "charge.dispute.created")).status_code == 200

    assert spendable(account) == (150, 0)
    assert not LedgerEntry.objects.filter(kind="clawback").exists()
    assert (Dispute.objects.get().status, Dispute.objects.get().credits_state) == ("won", "returned")
    assert_audit_clean()


def test_lost_dispute_arriving_first_takes_the_credits_for_good(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    opened = fake_stripe.dispute(order.stripe_session_id)
    lost = fake_stripe.update_dispute(opened["id"], status="lost")

    deliver(client, dispute_event(lost, "charge.dispute.closed"))
    deliver(client, dispute_event(opened, "charge.dispute.created"))

    assert spendable(account) == (0, 0)
    assert Dispute.objects.get().credits_state == "final"
    assert_audit_clean()


def test_dispute_while_generations_are_queued_leaves_nothing_spendable(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    charges = queue(account, 140)  # 10 left in the balance, 140 parked in 14 queued jobs

    deliver(client, dispute_event(fake_stripe.dispute(order.stripe_session_id)))
    assert spendable(account) == (0, 140)
    for charge in charges:  # the jobs fail or time out: every reservation comes back...
        generation_fail_and_refund(generation_id=charge.generation_id, error="not delivered")

    assert spendable(account) == (0, 0)  # ...straight into the debt
    assert_audit_clean()


def test_dispute_of_a_payment_whose_fulfilment_never_landed_fulfils_then_freezes(
    client, fake_stripe, pack, assert_audit_clean
):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)  # no checkout webhook delivered

    assert deliver(client, dispute_event(fake_stripe.dispute(order.stripe_session_id))).status_code == 200

    order.refresh_from_db()
    assert order.status == "paid"
    assert voucher_of(order).status == "void"
    assert_audit_clean()


def test_dispute_of_a_payment_that_is_not_ours_is_acknowledged(client, fake_stripe, order):
    foreign = fake_stripe.foreign_session(amount=100)
    assert deliver(client, dispute_event(fake_stripe.dispute(foreign["id"]))).status_code == 200
    assert not Dispute.objects.exists()
    assert voucher_of(order).status == "active"


# --- finding 2: a refund while credits are parked in queued generations -----------------------------------


def test_full_refund_while_everything_is_queued_keeps_nothing(client, fake_stripe, order, assert_audit_clean):
    """Finding 2 replayed: 150 of 150 credits queued when the refund lands, then every job refunded."""
    account = redeem(order)
    charges = queue(account, 150)
    fake_stripe.refund(order.stripe_session_id)

    assert deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id)).status_code == 200
    assert spendable(account) == (0, 150)
    for charge in charges:
        generation_fail_and_refund(generation_id=charge.generation_id, error="not delivered")

    assert spendable(account) == (0, 0)
    order.refresh_from_db()
    assert order.status == "refunded"
    assert_audit_clean()


# --- partial and failed refunds --------------------------------------------------------------------------


def test_partial_refunds_claw_back_pro_rata_and_cumulatively(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    fake_stripe.refund(order.stripe_session_id, amount=500)  # 5.00 of 12.00: floor(150 * 500 / 1200) = 62
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    assert spendable(account) == (88, 0)

    fake_stripe.refund(order.stripe_session_id, amount=300)  # 8.00 in all: floor(150 * 800 / 1200) = 100
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    assert spendable(account) == (50, 0)
    order.refresh_from_db()
    assert (order.status, order.amount_refunded) == ("paid", 800)

    fake_stripe.refund(order.stripe_session_id)  # the rest: everything
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    assert spendable(account) == (0, 0)
    order.refresh_from_db()
    assert order.status == "refunded"
    assert sorted(Refund.objects.values_list("credits", flat=True)) == [38, 50, 62]
    assert_audit_clean()


def test_partial_refund_of_an_unredeemed_voucher_is_taken_when_it_is_redeemed(
    client, fake_stripe, order, assert_audit_clean
):
    fake_stripe.refund(order.stripe_session_id, amount=600)
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    assert voucher_of(order).status == "active"

    assert redeem(order).balance == 75
    assert_audit_clean()


def test_each_refund_counts_once_whichever_events_carry_it(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    refund = fake_stripe.refund(order.stripe_session_id, amount=600)
    for body in (
        refund_event(refund, "refund.created"),
        charge_refunded_event(fake_stripe, order.stripe_session_id),
        charge_refunded_event(fake_stripe, order.stripe_session_id),
        refund_event(refund, "charge.refund.updated"),
    ):
        assert deliver(client, body).status_code == 200

    assert spendable(account) == (75, 0)
    assert Refund.objects.get().credits == 75
    assert_audit_clean()


def test_failed_refund_gives_back_what_its_clawback_took_once(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    refund = fake_stripe.refund(order.stripe_session_id)
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    assert spendable(account) == (0, 0)

    failed = fake_stripe.fail_refund(refund["id"])
    for _ in range(2):
        assert deliver(client, refund_event(failed)).status_code == 200
    assert deliver(client, refund_event(refund)).status_code == 200  # a stale "succeeded" arriving late

    assert spendable(account) == (150, 0)
    order.refresh_from_db()
    assert (order.status, order.amount_refunded) == ("paid", 0)
    assert LedgerEntry.objects.filter(kind="restore").count() == 1
    assert_audit_clean()


def test_failed_refund_arriving_before_the_refund_itself_takes_nothing(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    refund = fake_stripe.refund(order.stripe_session_id)
    failed = fake_stripe.fail_refund(refund["id"])

    deliver(client, refund_event(failed))
    deliver(client, refund_event(refund, "refund.created"))  # older, arrives later

    assert spendable(account) == (150, 0)
    assert not LedgerEntry.objects.filter(kind="clawback").exists()
    assert_audit_clean()


def test_failed_partial_refund_then_another_refund_keeps_the_total_right(
    client, fake_stripe, order, assert_audit_clean
):
    account = redeem(order)
    first = fake_stripe.refund(order.stripe_session_id, amount=400)
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))  # 50
    deliver(client, refund_event(fake_stripe.fail_refund(first["id"])))  # back to 0
    fake_stripe.refund(order.stripe_session_id, amount=600)
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))  # 75

    assert spendable(account) == (75, 0)
    assert_audit_clean()


def test_refund_and_dispute_together_never_take_more_than_the_voucher(client, fake_stripe, order, assert_audit_clean):
    account = redeem(order)
    credits_grant(discord_user_id=MEMBER, amount=40, memo="credits of their own")
    fake_stripe.refund(order.stripe_session_id, amount=600)
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    deliver(client, dispute_event(fake_stripe.dispute(order.stripe_session_id)))

    assert spendable(account) == (40, 0)
    assert -sum(LedgerEntry.objects.filter(kind="clawback").values_list("delta", flat=True)) == 150
    assert_audit_clean()


def test_a_dispute_handler_crashing_midway_writes_nothing_and_the_retry_freezes_once(
    client, fake_stripe, order, monkeypatch, assert_audit_clean
):
    import storefront.services as shop

    account = redeem(order)
    body = dispute_event(fake_stripe.dispute(order.stripe_session_id))
    real = shop.voucher_claw_back

    def crash_after_taking(**kwargs):
        real(**kwargs)  # the clawback is written, then the process "dies" before the dispute is updated
        raise RuntimeError("killed")

    monkeypatch.setattr(shop, "voucher_claw_back", crash_after_taking)
    assert deliver(client, body).status_code == 200  # stored, then the processor's attempt crashes
    assert spendable(account) == (150, 0) and not Dispute.objects.exists()  # all of it rolled back
    monkeypatch.undo()

    assert list(process_events(after=11).values()) == ["processed"]  # the processor's retry
    assert spendable(account) == (0, 0)
    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert_audit_clean()
