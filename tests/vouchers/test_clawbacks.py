"""Clawbacks and debt: a refunded or disputed purchase never leaves spendable credits it paid for.

The attacks come first (finding 2 of issue 7: credits parked in queued generations came back after a refund),
then the rules: what cannot be taken now is owed, and every credit that arrives pays the debt first.
"""

import pytest
from django.db import transaction

from discordbot.models import Generation
from discordbot.services import generation_fail_and_refund
from tests.vouchers.conftest import crash_at, nothing_written, writes_row
from vouchers import services
from vouchers.errors import InsufficientCredits, InvalidAmount, VoucherError, VoucherNotFound, VoucherVoid
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher
from vouchers.selectors import account_balance, account_owed

pytestmark = pytest.mark.django_db

ALICE = 111_111_111_111_111_111
BOB = 222_222_222_222_222_222


def account(discord_user_id: int = ALICE) -> CreditAccount:
    return CreditAccount.objects.get(discord_user_id=discord_user_id)


def redeemed(credits: int, discord_user_id: int = ALICE) -> Voucher:
    voucher = services.voucher_issue(credits=credits)
    services.voucher_redeem(code=voucher.code, discord_user_id=discord_user_id)
    return voucher


def reserve(amount: int, discord_user_id: int = ALICE) -> LedgerEntry:
    """What /generate does: a Generation and its `generate` debit (queued, not yet run)."""
    holder = CreditAccount.objects.get(discord_user_id=discord_user_id)
    generation = Generation.objects.create(account=holder, prompt="a cat", cost=amount)
    return services.credits_reserve(discord_user_id=discord_user_id, amount=amount, generation_id=generation.pk)


def refund_job(charge: LedgerEntry) -> LedgerEntry:
    """What the bot does when a job fails: the generation ends `refunded` and its charge comes back, together
    (the audit flags a generation still in flight whose charge was refunded)."""
    with transaction.atomic():
        Generation.objects.filter(pk=charge.generation_id).update(status=Generation.Status.REFUNDED)
        return services.credits_refund(entry_id=charge.pk)


def kinds(discord_user_id: int = ALICE) -> list[tuple[str, int]]:
    return list(
        LedgerEntry.objects.filter(account__discord_user_id=discord_user_id).order_by("pk").values_list("kind", "delta")
    )


# --- the attack: credits parked in queued generations -------------------------------------------------------


def test_attack_refund_while_everything_is_queued_then_queue_refunds_keeps_nothing(assert_audit_clean) -> None:
    """Issue 7, finding 2: 50 credits queued in 5 generations, the payment refunded, then every job refunded."""
    voucher = redeemed(50)
    charges = [reserve(10) for _ in range(5)]
    assert account_balance(discord_user_id=ALICE) == 0

    clawback = services.voucher_claw_back(voucher_id=voucher.pk, credits=50, cause="refund re_1")

    assert (clawback.status, clawback.taken, clawback.owed) == (Clawback.Status.TAKEN, 0, 50)
    assert account().owed == 50
    for charge in charges:  # a blocked prompt, a queue timeout, a restart: each reservation comes back
        generation_fail_and_refund(generation_id=charge.generation_id, error="not delivered")
    assert account_balance(discord_user_id=ALICE) == 0
    assert account().owed == 0
    assert kinds().count(("repay", -10)) == 5
    assert_audit_clean()


def test_attack_refund_while_some_are_queued_takes_the_balance_now_and_the_rest_later(assert_audit_clean) -> None:
    voucher = redeemed(10)
    queued = reserve(9)

    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="refund re_1")
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 9)

    generation_fail_and_refund(generation_id=queued.generation_id, error="not delivered")
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 0)
    assert kinds() == [("redeem", 10), ("generate", -9), ("clawback", -1), ("refund", 9), ("repay", -9)]
    assert_audit_clean()


def test_images_already_delivered_stay_the_buyers_and_their_cost_stays_owed(assert_audit_clean) -> None:
    voucher = redeemed(10)
    reserve(10)  # delivered: never refunded
    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="refund re_1")
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 10)
    with pytest.raises(InsufficientCredits):
        services.credits_reserve(discord_user_id=ALICE, amount=1)
    assert_audit_clean()


@pytest.mark.parametrize("source", ["grant", "redeem", "refund"])
def test_every_credit_that_arrives_pays_the_debt_first(source: str, assert_audit_clean) -> None:
    voucher = redeemed(10)
    queued = reserve(10)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="refund re_1")
    assert account().owed == 10

    if source == "grant":
        services.credits_grant(discord_user_id=ALICE, amount=4, memo="support")
    elif source == "redeem":
        redemption = services.voucher_redeem(code=services.voucher_issue(credits=4).code, discord_user_id=ALICE)
        assert (redemption.credits, redemption.debt_repaid, redemption.balance) == (4, 4, 0)
    else:
        generation_fail_and_refund(generation_id=queued.generation_id, error="not delivered")

    paid = 10 if source == "refund" else 4
    assert account().owed == 10 - paid
    assert account_balance(discord_user_id=ALICE) == 0
    assert kinds()[-1] == ("repay", -paid)
    assert_audit_clean()


def test_a_credit_larger_than_the_debt_pays_it_and_keeps_the_rest(assert_audit_clean) -> None:
    voucher = redeemed(10)
    reserve(10)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="refund re_1")
    services.credits_grant(discord_user_id=ALICE, amount=25, memo="support")
    assert (account_balance(discord_user_id=ALICE), account().owed) == (15, 0)
    assert_audit_clean()


def test_clawback_takes_from_other_spendable_credits_first(funded, assert_audit_clean) -> None:
    funded(ALICE, 30)
    voucher = redeemed(20)
    reserve(40)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="refund re_1")
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 10)
    assert_audit_clean()


# --- once per cause, never beyond the voucher ---------------------------------------------------------------


def test_a_repeated_cause_does_nothing(assert_audit_clean) -> None:
    voucher = redeemed(20)
    first = services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="refund re_1")
    with nothing_written():
        again = services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="refund re_1")
    assert again.pk == first.pk
    assert_audit_clean()


def test_clawbacks_of_one_voucher_never_claim_more_than_it_is_worth(funded, assert_audit_clean) -> None:
    funded(ALICE, 1000)
    voucher = redeemed(20)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=15, cause="refund re_1")
    second = services.voucher_claw_back(voucher_id=voucher.pk, credits=15, cause="dispute du_1")
    assert second.credits == 5
    with nothing_written():
        assert services.voucher_claw_back(voucher_id=voucher.pk, credits=1, cause="refund re_2") is None
    assert account_balance(discord_user_id=ALICE) == 1000
    assert_audit_clean()


def test_a_cause_cannot_be_reused_for_another_voucher() -> None:
    first, second = services.voucher_issue(credits=5), services.voucher_issue(credits=5)
    services.voucher_claw_back(voucher_id=first.pk, credits=5, cause="refund re_1")
    with nothing_written(), pytest.raises(VoucherError, match="another voucher"):
        services.voucher_claw_back(voucher_id=second.pk, credits=5, cause="refund re_1")


@pytest.mark.parametrize("voucher_id", [10**9, 0, None, "1", 1.0, True])
def test_clawback_of_an_unknown_or_malformed_voucher_id_is_refused(voucher_id: object) -> None:
    Voucher.objects.create(pk=1, credits=20)
    with nothing_written(), pytest.raises(VoucherNotFound):
        services.voucher_claw_back(voucher_id=voucher_id, credits=5, cause="refund re_1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("credits", "cause", "memo", "error"),
    [
        (0, "c", "", InvalidAmount),
        (5, "", "", VoucherError),
        (5, "c" * 121, "", VoucherError),
        (5, "c", "m" * 201, VoucherError),
    ],
)
def test_clawback_with_bad_input_is_refused(credits: int, cause: str, memo: str, error: type) -> None:
    voucher = services.voucher_issue(credits=20)
    with nothing_written(), pytest.raises(error):
        services.voucher_claw_back(voucher_id=voucher.pk, credits=credits, cause=cause, memo=memo)


# --- unredeemed vouchers ---------------------------------------------------------------------------------


def test_clawback_of_all_of_an_unredeemed_voucher_voids_it(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=20)
    clawback = services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="dispute du_1")
    assert (clawback.status, clawback.voided) == (Clawback.Status.HELD, True)
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.VOID and voucher.refunded_at is not None
    with pytest.raises(VoucherVoid):
        services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    assert not LedgerEntry.objects.exists()
    assert_audit_clean()


def test_partial_clawback_of_an_unredeemed_voucher_is_taken_when_it_is_redeemed(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=20)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=5, cause="refund re_1")
    assert Voucher.objects.get(pk=voucher.pk).status == Voucher.Status.ACTIVE

    redemption = services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)

    assert (redemption.credits, redemption.clawed_back, redemption.balance) == (20, 5, 15)
    assert kinds() == [("redeem", 20), ("clawback", -5)]
    assert Clawback.objects.get().status == Clawback.Status.TAKEN
    assert_audit_clean()


def test_clawback_of_a_voucher_an_operator_voided_moves_nothing(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=20)
    services.voucher_void(code=voucher.code, memo="operator")
    clawback = services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="refund re_1")
    assert (clawback.status, clawback.voided) == (Clawback.Status.HELD, False)
    services.voucher_claw_back_return(cause="refund re_1")
    assert Voucher.objects.get(pk=voucher.pk).status == Voucher.Status.VOID  # the operator's void stands
    assert_audit_clean()


# --- giving back: a dispute won, a refund that failed ------------------------------------------------------


def test_return_of_a_voiding_clawback_makes_the_voucher_redeemable_again(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=20)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="dispute du_1")
    services.voucher_claw_back_return(cause="dispute du_1")
    assert services.voucher_redeem(code=voucher.code, discord_user_id=ALICE).balance == 20
    assert_audit_clean()


def test_return_gives_back_exactly_what_was_taken_once(funded, assert_audit_clean) -> None:
    funded(ALICE, 7)
    voucher = redeemed(20)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="dispute du_1")
    assert account_balance(discord_user_id=ALICE) == 7

    returned = services.voucher_claw_back_return(cause="dispute du_1")
    assert (returned.restored, returned.debt_cancelled) == (20, 0)
    with nothing_written():
        services.voucher_claw_back_return(cause="dispute du_1")  # redelivered
    assert account_balance(discord_user_id=ALICE) == 27
    assert_audit_clean()


def test_return_cancels_what_is_still_owed_and_restores_what_was_repaid(assert_audit_clean) -> None:
    voucher = redeemed(20)
    queued = reserve(15)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=20, cause="dispute du_1")  # takes 5, owes 15
    services.credits_grant(discord_user_id=ALICE, amount=6, memo="support")  # repays 6, owes 9

    returned = services.voucher_claw_back_return(cause="dispute du_1")

    # 5 taken + 6 repaid come back; the 9 still owed are forgiven.
    assert (returned.restored, returned.debt_cancelled) == (11, 9)
    assert (account_balance(discord_user_id=ALICE), account().owed) == (11, 0)
    generation_fail_and_refund(generation_id=queued.generation_id, error="not delivered")
    assert account_balance(discord_user_id=ALICE) == 26  # 20 bought + 6 granted, 0 spent
    assert_audit_clean()


def test_restored_credits_pay_another_clawbacks_debt_first(assert_audit_clean) -> None:
    first, second = redeemed(10), redeemed(10)
    reserve(20)
    services.voucher_claw_back(voucher_id=first.pk, credits=10, cause="refund re_1")  # owes 10
    services.voucher_claw_back(voucher_id=second.pk, credits=10, cause="refund re_2")  # owes 20
    returned = services.voucher_claw_back_return(cause="refund re_1")
    assert (returned.debt_cancelled, returned.restored) == (10, 0)
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 10)
    assert_audit_clean()


def test_return_of_an_unknown_cause_is_none() -> None:
    with nothing_written():
        assert services.voucher_claw_back_return(cause="refund re_nothing") is None


# --- operator debit ---------------------------------------------------------------------------------------


def test_debit_takes_credits_with_a_memo(funded, assert_audit_clean) -> None:
    funded(ALICE, 10)
    entry = services.credits_debit(discord_user_id=ALICE, amount=4, memo="duplicate grant")
    assert (entry.kind, entry.delta, entry.memo) == ("debit", -4, "duplicate grant")
    assert account_balance(discord_user_id=ALICE) == 6
    assert_audit_clean()


def test_debit_never_goes_below_zero_nor_creates_a_debt(funded) -> None:
    funded(ALICE, 3)
    with nothing_written(), pytest.raises(InsufficientCredits):
        services.credits_debit(discord_user_id=ALICE, amount=4, memo="too much")
    assert account().owed == 0


@pytest.mark.parametrize(
    ("discord_user_id", "amount", "memo", "error"),
    [
        (ALICE, 1, "", VoucherError),
        (ALICE, 1, "   ", VoucherError),
        (ALICE, 0, "x", InvalidAmount),
        (BOB, 1, "x", InsufficientCredits),
    ],
)
def test_debit_with_bad_input_is_refused(funded, discord_user_id: int, amount: int, memo: str, error: type) -> None:
    funded(ALICE, 10)
    with nothing_written(), pytest.raises(error):
        services.credits_debit(discord_user_id=discord_user_id, amount=amount, memo=memo)


# --- a crash in the middle ------------------------------------------------------------------------------


def test_a_crash_between_the_credit_and_its_debt_repayment_writes_neither(monkeypatch, assert_audit_clean) -> None:
    voucher = redeemed(10)
    queued = reserve(10)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="refund re_1")

    # Killed as the repay row is written: the refund row and the credit before it must go too.
    with nothing_written(), crash_at(writes_row(LedgerEntry.Kind.REPAY)), pytest.raises(RuntimeError):
        generation_fail_and_refund(generation_id=queued.generation_id, error="not delivered")

    generation_fail_and_refund(
        generation_id=queued.generation_id, error="not delivered"
    )  # the bot's retry (or the sweep)
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 0)
    assert account_owed(discord_user_id=ALICE) == 0
    assert_audit_clean()


def test_a_crash_after_a_clawback_record_is_made_leaves_no_half_clawback(monkeypatch, assert_audit_clean) -> None:
    voucher = redeemed(10)
    reserve(4)

    def crash(**kwargs):
        raise RuntimeError("process killed here")

    monkeypatch.setattr(services, "_clawback_take", crash)
    with nothing_written(), pytest.raises(RuntimeError):
        services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="dispute du_1")
    monkeypatch.undo()

    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="dispute du_1")  # Stripe's retry
    assert (account_balance(discord_user_id=ALICE), account().owed) == (0, 4)
    assert_audit_clean()
