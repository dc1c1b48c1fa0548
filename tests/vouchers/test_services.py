"""Every credit service: what it does on good input, and that bad input gets a clear domain error and writes nothing."""

import types
from collections.abc import Callable

import pytest

from discordbot.models import Generation
from tests.vouchers.conftest import db_state, nothing_written
from vouchers import codes, services
from vouchers.errors import (
    AlreadyRefunded,
    InsufficientCredits,
    InvalidAccount,
    InvalidAmount,
    InvalidCode,
    RefundNotAllowed,
    VoucherAlreadyRedeemed,
    VoucherError,
    VoucherNotFound,
    VoucherVoid,
)
from vouchers.models import CreditAccount, LedgerEntry, Voucher
from vouchers.selectors import account_balance

pytestmark = pytest.mark.django_db

ALICE = 111_111_111_111_111_111
BOB = 222_222_222_222_222_222
MAX_AMOUNT = services.MAX_CREDITS_PER_MOVEMENT

BAD_AMOUNTS = [
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(-(10**9), id="very-negative"),
    pytest.param(True, id="bool-true"),
    pytest.param(False, id="bool-false"),
    pytest.param(1.0, id="whole-float"),
    pytest.param(2.5, id="fraction"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param("10", id="numeric-string"),
    pytest.param(None, id="none"),
    pytest.param(MAX_AMOUNT + 1, id="over-the-cap"),
    pytest.param(2**63, id="overflows-bigint"),
    pytest.param(10**30, id="huge"),
]

BAD_DISCORD_IDS = [
    pytest.param(0, id="zero"),
    pytest.param(-5, id="negative"),
    pytest.param(True, id="bool"),
    pytest.param(1.0, id="float"),
    pytest.param("111111111111111111", id="string"),
    pytest.param(None, id="none"),
    pytest.param(2**63, id="overflows-bigint"),
]

MALFORMED_CODES = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("K7QH-2M9D-XR4T", id="too-short"),
    pytest.param("K7QH-2M9D-XR4T-8BWE-XXXX", id="too-long"),
    pytest.param("K7QH-2M9D-XR4T-8BWU", id="has-U"),
    pytest.param("' OR 1=1 --", id="sql-or"),
    pytest.param("x'; DROP TABLE vouchers_voucher; --", id="sql-drop"),
    pytest.param("%%%%-%%%%-%%%%-%%%%", id="like-wildcards"),
    pytest.param("K7QH-2M9D-XR4T-8BW\u0415", id="cyrillic"),
    pytest.param(None, id="none"),
    pytest.param(1234, id="int"),
    pytest.param(b"K7QH-2M9D-XR4T-8BWE", id="bytes"),
]


def issue(credits: int = 10, note: str = "") -> Voucher:
    return services.voucher_issue(credits=credits, note=note)


def reload(voucher: Voucher) -> Voucher:
    return Voucher.objects.get(pk=voucher.pk)


# --- account_get_or_create -------------------------------------------------------------------------------


def test_account_is_created_empty_on_first_use_and_reused_after() -> None:
    first = services.account_get_or_create(discord_user_id=ALICE)
    again = services.account_get_or_create(discord_user_id=ALICE)
    assert first.pk == again.pk
    assert first.balance == 0
    assert CreditAccount.objects.count() == 1


def test_the_largest_discord_snowflake_is_a_valid_account_id() -> None:
    account = services.account_get_or_create(discord_user_id=2**63 - 1)
    assert CreditAccount.objects.get(pk=account.pk).discord_user_id == 2**63 - 1


@pytest.mark.parametrize("discord_user_id", BAD_DISCORD_IDS)
def test_account_with_a_bad_discord_id_is_refused(discord_user_id: object) -> None:
    with nothing_written(), pytest.raises(InvalidAccount) as caught:
        services.account_get_or_create(discord_user_id=discord_user_id)  # type: ignore[arg-type]
    assert caught.value.message == "That is not a valid Discord user id."


# --- voucher_issue ---------------------------------------------------------------------------------------


def test_issue_creates_an_active_voucher_with_a_canonical_code_and_moves_no_credits(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=25, note="  giveaway  ")
    stored = reload(voucher)
    assert stored.code == voucher.code == codes.normalize_code(voucher.code)
    assert stored.credits == 25
    assert stored.status == Voucher.Status.ACTIVE
    assert stored.note == "giveaway"
    assert stored.order is None and stored.redeemed_by is None and stored.refunded_at is None
    assert LedgerEntry.objects.count() == 0
    assert_audit_clean()


@pytest.mark.parametrize("credits", [1, MAX_AMOUNT])
def test_issue_accepts_the_bounds_of_the_amount(credits: int) -> None:
    assert reload(services.voucher_issue(credits=credits)).credits == credits


def test_issued_codes_differ() -> None:
    vouchers = [issue() for _ in range(50)]
    assert len({v.code for v in vouchers}) == 50


@pytest.mark.parametrize("credits", BAD_AMOUNTS)
def test_issue_with_a_bad_amount_is_refused(credits: object) -> None:
    with nothing_written(), pytest.raises(InvalidAmount) as caught:
        services.voucher_issue(credits=credits)  # type: ignore[arg-type]
    assert "whole number of credits from 1 to 1,000,000" in caught.value.message


@pytest.mark.parametrize(
    ("note", "message"),
    [("x" * 201, "too long"), (None, "must be text"), (42, "must be text")],
)
def test_issue_with_a_bad_note_is_refused(note: object, message: str) -> None:
    with nothing_written(), pytest.raises(VoucherError, match=message):
        services.voucher_issue(credits=5, note=note)  # type: ignore[arg-type]


def _scripted_randbits(monkeypatch: pytest.MonkeyPatch, values: list[int]) -> None:
    feed = iter(values)
    monkeypatch.setattr(codes, "secrets", types.SimpleNamespace(randbits=lambda bits: next(feed)))


def test_issue_retries_when_a_new_code_collides_with_an_existing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_randbits(monkeypatch, [7, 7, 8])
    first = issue()
    second = issue()
    assert first.code == "0000-0000-0000-0007"
    assert second.code == "0000-0000-0000-0008"
    assert Voucher.objects.count() == 2


def test_issue_gives_up_with_a_domain_error_after_repeated_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted_randbits(monkeypatch, [7, 7, 7, 7])
    issue()
    with nothing_written(), pytest.raises(VoucherError, match="unique voucher code"):
        issue()


# --- voucher_redeem --------------------------------------------------------------------------------------


def test_redeem_moves_the_credits_into_a_new_account(assert_audit_clean) -> None:
    voucher = issue(credits=30)
    result = services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)

    account = CreditAccount.objects.get(discord_user_id=ALICE)
    stored = reload(voucher)
    assert (result.credits, result.balance, account.balance) == (30, 30, 30)
    assert result.voucher.pk == voucher.pk
    assert stored.status == Voucher.Status.REDEEMED
    assert stored.redeemed_by_id == account.pk
    assert stored.redeemed_at is not None
    entry = LedgerEntry.objects.get()
    assert (entry.account_id, entry.delta, entry.kind, entry.voucher_id) == (account.pk, 30, "redeem", voucher.pk)
    assert_audit_clean()


def test_redeem_adds_to_an_existing_balance(funded, assert_audit_clean) -> None:
    funded(ALICE, 5)
    result = services.voucher_redeem(code=issue(credits=30).code, discord_user_id=ALICE)
    assert result.balance == 35 == account_balance(discord_user_id=ALICE)
    assert_audit_clean()


@pytest.mark.parametrize(
    "typed",
    [
        lambda c: c.lower(),
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", " "),
        lambda c: f"  {c}\n",
        lambda c: c.replace("0", "o").replace("1", "l"),
        lambda c: c.replace("0", "O").replace("1", "I"),
    ],
    ids=["lower-case", "no-dashes", "spaces", "padded", "look-alikes-lower", "look-alikes-upper"],
)
def test_redeem_accepts_the_code_however_it_is_typed(typed: Callable[[str], str]) -> None:
    voucher = Voucher.objects.create(code="K0QH-1M9D-XR40-8B1E", credits=12)
    result = services.voucher_redeem(code=typed(voucher.code), discord_user_id=ALICE)
    assert result.credits == 12
    assert reload(voucher).status == Voucher.Status.REDEEMED


@pytest.mark.parametrize("code", MALFORMED_CODES)
def test_redeem_of_a_malformed_code_is_refused_before_anything_is_written(code: object) -> None:
    issue()
    with nothing_written(), pytest.raises(InvalidCode) as caught:
        services.voucher_redeem(code=code, discord_user_id=ALICE)  # type: ignore[arg-type]
    assert "Codes look like K7QH-2M9D-XR4T-8BWE" in caught.value.message
    assert str(caught.value) == caught.value.message


def test_redeem_of_an_unknown_code_is_refused_and_creates_no_account() -> None:
    issue()
    with nothing_written(), pytest.raises(VoucherNotFound) as caught:
        services.voucher_redeem(code="ZZZZ-ZZZZ-ZZZZ-ZZZZ", discord_user_id=ALICE)
    assert caught.value.message == "No voucher has that code. Check it for typos."
    assert not CreditAccount.objects.filter(discord_user_id=ALICE).exists()


def test_redeem_of_a_voucher_someone_else_redeemed_is_refused(assert_audit_clean) -> None:
    voucher = issue(credits=9)
    services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    with nothing_written(), pytest.raises(VoucherAlreadyRedeemed) as caught:
        services.voucher_redeem(code=voucher.code, discord_user_id=BOB)
    assert caught.value.message == "That voucher has already been redeemed."
    assert not CreditAccount.objects.filter(discord_user_id=BOB).exists()
    assert account_balance(discord_user_id=ALICE) == 9
    assert_audit_clean()


def test_redeeming_your_own_voucher_twice_says_the_credits_are_already_yours() -> None:
    voucher = issue(credits=9)
    services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    with nothing_written(), pytest.raises(VoucherAlreadyRedeemed, match="You already redeemed that voucher"):
        services.voucher_redeem(code=voucher.code.lower(), discord_user_id=ALICE)
    assert account_balance(discord_user_id=ALICE) == 9


def test_redeem_of_a_void_voucher_is_refused() -> None:
    voucher = issue()
    services.voucher_void(code=voucher.code)
    with nothing_written(), pytest.raises(VoucherVoid) as caught:
        services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    assert caught.value.message == "That voucher is no longer valid."
    assert not CreditAccount.objects.exists()


@pytest.mark.parametrize("discord_user_id", BAD_DISCORD_IDS)
def test_redeem_for_a_bad_discord_id_is_refused_and_leaves_the_voucher_active(discord_user_id: object) -> None:
    voucher = issue()
    with nothing_written(), pytest.raises(InvalidAccount):
        services.voucher_redeem(code=voucher.code, discord_user_id=discord_user_id)  # type: ignore[arg-type]
    assert reload(voucher).status == Voucher.Status.ACTIVE


# --- voucher_void ----------------------------------------------------------------------------------------


def test_void_makes_an_active_voucher_unredeemable_and_records_why(assert_audit_clean) -> None:
    voucher = issue(note="promo")
    result = services.voucher_void(code=voucher.code.lower(), memo="  leaked on a forum ")
    stored = reload(voucher)
    assert result.pk == voucher.pk
    assert stored.status == Voucher.Status.VOID
    assert stored.note == "leaked on a forum"
    assert LedgerEntry.objects.count() == 0
    assert_audit_clean()


def test_void_without_a_memo_keeps_the_note() -> None:
    voucher = issue(note="promo")
    services.voucher_void(code=voucher.code)
    assert reload(voucher).note == "promo"


def test_void_of_a_redeemed_voucher_is_refused_and_keeps_the_credits() -> None:
    voucher = issue(credits=8)
    services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    with nothing_written(), pytest.raises(VoucherAlreadyRedeemed, match="redeemed and can't be voided"):
        services.voucher_void(code=voucher.code, memo="too late")
    assert reload(voucher).status == Voucher.Status.REDEEMED
    assert account_balance(discord_user_id=ALICE) == 8


def test_void_twice_is_refused_the_second_time() -> None:
    voucher = issue()
    services.voucher_void(code=voucher.code, memo="first")
    with nothing_written(), pytest.raises(VoucherVoid, match="already void"):
        services.voucher_void(code=voucher.code, memo="second")
    assert reload(voucher).note == "first"


def test_void_of_an_unknown_code_is_refused() -> None:
    issue()
    with nothing_written(), pytest.raises(VoucherNotFound):
        services.voucher_void(code="ZZZZ-ZZZZ-ZZZZ-ZZZZ")


@pytest.mark.parametrize("code", MALFORMED_CODES)
def test_void_of_a_malformed_code_is_refused(code: object) -> None:
    issue()
    with nothing_written(), pytest.raises(InvalidCode):
        services.voucher_void(code=code)  # type: ignore[arg-type]


@pytest.mark.parametrize(("memo", "message"), [("m" * 201, "too long"), (None, "must be text")])
def test_void_with_a_bad_memo_is_refused_and_leaves_the_voucher_active(memo: object, message: str) -> None:
    voucher = issue()
    with nothing_written(), pytest.raises(VoucherError, match=message):
        services.voucher_void(code=voucher.code, memo=memo)  # type: ignore[arg-type]
    assert reload(voucher).status == Voucher.Status.ACTIVE


# --- credits_reserve -------------------------------------------------------------------------------------


def test_reserve_takes_the_credits_and_records_a_generate_debit(funded, assert_audit_clean) -> None:
    account = funded(ALICE, 10)
    entry = services.credits_reserve(discord_user_id=ALICE, amount=3, memo="a red fox")
    assert account_balance(discord_user_id=ALICE) == 7
    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (stored.account_id, stored.delta, stored.kind, stored.memo) == (account.pk, -3, "generate", "a red fox")
    assert_audit_clean()


def test_reserve_links_the_debit_to_its_generation(funded, assert_audit_clean) -> None:
    account = funded(ALICE, 10)
    generation = Generation.objects.create(account=account, prompt="a red fox", cost=4)
    entry = services.credits_reserve(discord_user_id=ALICE, amount=4, generation_id=generation.pk)
    assert LedgerEntry.objects.get(pk=entry.pk).generation_id == generation.pk
    assert_audit_clean()


def test_reserve_may_spend_the_whole_balance(funded) -> None:
    funded(ALICE, 10)
    services.credits_reserve(discord_user_id=ALICE, amount=10)
    assert account_balance(discord_user_id=ALICE) == 0


def test_reserve_of_more_than_the_balance_is_refused(funded) -> None:
    funded(ALICE, 10)
    with nothing_written(), pytest.raises(InsufficientCredits) as caught:
        services.credits_reserve(discord_user_id=ALICE, amount=11)
    assert caught.value.message == "You don't have enough credits for that."
    assert account_balance(discord_user_id=ALICE) == 10


def test_reserve_for_a_member_without_an_account_is_refused_and_creates_none() -> None:
    with nothing_written(), pytest.raises(InsufficientCredits, match="no credits yet"):
        services.credits_reserve(discord_user_id=ALICE, amount=1)


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_reserve_of_a_bad_amount_is_refused(funded, amount: object) -> None:
    funded(ALICE, 10)
    with nothing_written(), pytest.raises(InvalidAmount):
        services.credits_reserve(discord_user_id=ALICE, amount=amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("discord_user_id", BAD_DISCORD_IDS)
def test_reserve_for_a_bad_discord_id_is_refused(funded, discord_user_id: object) -> None:
    funded(ALICE, 10)
    with nothing_written(), pytest.raises(InvalidAccount):
        services.credits_reserve(discord_user_id=discord_user_id, amount=1)  # type: ignore[arg-type]


def test_reserve_with_a_bad_memo_is_refused(funded) -> None:
    funded(ALICE, 10)
    with nothing_written(), pytest.raises(VoucherError, match="too long"):
        services.credits_reserve(discord_user_id=ALICE, amount=1, memo="m" * 201)


# --- credits_refund --------------------------------------------------------------------------------------


def test_refund_gives_a_reservation_back_and_points_at_it(funded, assert_audit_clean) -> None:
    account = funded(ALICE, 10)
    generation = Generation.objects.create(account=account, prompt="p", cost=4, status=Generation.Status.FAILED)
    debit = services.credits_reserve(discord_user_id=ALICE, amount=4, generation_id=generation.pk)
    refund = services.credits_refund(entry_id=debit.pk, memo="moderation blocked")
    assert account_balance(discord_user_id=ALICE) == 10
    stored = LedgerEntry.objects.get(pk=refund.pk)
    assert (stored.delta, stored.kind, stored.refund_of_id, stored.generation_id, stored.memo) == (
        4,
        "refund",
        debit.pk,
        generation.pk,
        "moderation blocked",
    )
    assert_audit_clean()


def test_refund_twice_is_refused_the_second_time(funded, assert_audit_clean) -> None:
    funded(ALICE, 10)
    debit = services.credits_reserve(discord_user_id=ALICE, amount=4)
    services.credits_refund(entry_id=debit.pk)
    with nothing_written(), pytest.raises(AlreadyRefunded) as caught:
        services.credits_refund(entry_id=debit.pk)
    assert caught.value.message == "That charge has already been refunded."
    assert account_balance(discord_user_id=ALICE) == 10
    assert_audit_clean()


def test_refund_still_works_after_the_balance_was_spent_elsewhere(funded) -> None:
    funded(ALICE, 4)
    debit = services.credits_reserve(discord_user_id=ALICE, amount=4)
    assert account_balance(discord_user_id=ALICE) == 0
    services.credits_refund(entry_id=debit.pk)
    assert account_balance(discord_user_id=ALICE) == 4


@pytest.mark.parametrize("kind", ["grant", "redeem", "refund"])
def test_only_a_generate_debit_can_be_refunded(funded, kind: str) -> None:
    funded(ALICE, 10)
    services.voucher_redeem(code=issue(credits=5).code, discord_user_id=ALICE)
    services.credits_refund(entry_id=services.credits_reserve(discord_user_id=ALICE, amount=1).pk)
    entry = LedgerEntry.objects.filter(kind=kind).first()
    with nothing_written(), pytest.raises(RefundNotAllowed) as caught:
        services.credits_refund(entry_id=entry.pk)
    assert caught.value.message == "That charge can't be refunded."


@pytest.mark.parametrize("entry_id", [10**9, 0, -1, None, "1", 1.0, True])
def test_refund_of_an_unknown_or_malformed_entry_id_is_refused(funded, entry_id: object) -> None:
    funded(ALICE, 10)
    services.credits_reserve(discord_user_id=ALICE, amount=1)
    with nothing_written(), pytest.raises(RefundNotAllowed):
        services.credits_refund(entry_id=entry_id)  # type: ignore[arg-type]


def test_refund_with_a_bad_memo_is_refused(funded) -> None:
    funded(ALICE, 10)
    debit = services.credits_reserve(discord_user_id=ALICE, amount=1)
    with nothing_written(), pytest.raises(VoucherError, match="must be text"):
        services.credits_refund(entry_id=debit.pk, memo=b"bytes")  # type: ignore[arg-type]


# --- credits_grant ---------------------------------------------------------------------------------------


def test_grant_creates_the_account_and_records_why(assert_audit_clean) -> None:
    entry = services.credits_grant(discord_user_id=ALICE, amount=15, memo="  sorry for the outage ")
    assert account_balance(discord_user_id=ALICE) == 15
    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (stored.delta, stored.kind, stored.memo) == (15, "grant", "sorry for the outage")
    assert_audit_clean()


def test_grants_add_up(funded) -> None:
    funded(ALICE, 10)
    services.credits_grant(discord_user_id=ALICE, amount=MAX_AMOUNT, memo="big")
    assert account_balance(discord_user_id=ALICE) == MAX_AMOUNT + 10


@pytest.mark.parametrize("memo", ["", "   ", "\n\t"])
def test_grant_without_a_reason_is_refused(memo: str) -> None:
    with nothing_written(), pytest.raises(VoucherError, match="A memo is required"):
        services.credits_grant(discord_user_id=ALICE, amount=5, memo=memo)


def test_grant_with_a_memo_that_is_too_long_is_refused() -> None:
    with nothing_written(), pytest.raises(VoucherError, match="too long"):
        services.credits_grant(discord_user_id=ALICE, amount=5, memo="m" * 201)


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_grant_of_a_bad_amount_is_refused(amount: object) -> None:
    with nothing_written(), pytest.raises(InvalidAmount):
        services.credits_grant(discord_user_id=ALICE, amount=amount, memo="why")  # type: ignore[arg-type]


@pytest.mark.parametrize("discord_user_id", BAD_DISCORD_IDS)
def test_grant_to_a_bad_discord_id_is_refused(discord_user_id: object) -> None:
    with nothing_written(), pytest.raises(InvalidAccount):
        services.credits_grant(discord_user_id=discord_user_id, amount=5, memo="why")  # type: ignore[arg-type]


# --- the error type --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        InvalidCode,
        VoucherNotFound,
        VoucherAlreadyRedeemed,
        VoucherVoid,
        InvalidAmount,
        InvalidAccount,
        InsufficientCredits,
        RefundNotAllowed,
        AlreadyRefunded,
    ],
)
def test_every_domain_error_is_a_voucher_error_with_its_own_code_and_a_sentence(error: type[VoucherError]) -> None:
    raised = error()
    assert isinstance(raised, VoucherError)
    assert raised.code != VoucherError.code
    assert raised.message.endswith(".") and raised.message[0].isupper()
    assert str(raised) == raised.message


def test_db_state_sees_a_balance_change(funded) -> None:
    """The `nothing_written` check itself can fail: it notices a one-credit change."""
    funded(ALICE, 10)
    before = db_state()
    services.credits_reserve(discord_user_id=ALICE, amount=1)
    assert db_state() != before
