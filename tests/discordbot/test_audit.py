"""`auditcredits` learns the bot's invariants: delivered means charged, and each generation is settled once.

Each check is shown to pass after what the services do and to fail on the corruption it exists to catch."""

import pytest

from discordbot.models import Generation
from discordbot.services import generation_fail_and_refund, generation_reserve, generation_start, generation_succeed
from vouchers.audit import audit_credits
from vouchers.models import CreditAccount, LedgerEntry
from vouchers.services import credits_refund

pytestmark = pytest.mark.django_db

USER = 450_000_000_000_000_001


def delivered(fund) -> int:
    fund(USER, 5)
    gid = generation_reserve(discord_user_id=USER, prompt="a hill").generation_id
    generation_start(generation_id=gid)
    Generation.objects.filter(pk=gid).update(status=Generation.Status.DELIVERING, message_id=7)
    assert generation_succeed(generation_id=gid)
    return gid


def problems(name: str) -> list[str]:
    return audit_credits()[name]


def test_a_delivered_and_a_refunded_generation_pass(fund, assert_audit_clean):
    delivered(fund)
    refunded = generation_reserve(discord_user_id=USER, prompt="a lake").generation_id
    generation_fail_and_refund(generation_id=refunded, error="moderation_blocked: no")
    assert_audit_clean()


def test_a_refunded_generation_whose_image_was_delivered_is_reported(fund):
    gid = delivered(fund)
    # What issue 8 found: the sweep refunding an image the member got (forced here past the services' guards).
    Generation.objects.filter(pk=gid).update(status=Generation.Status.REFUNDED)
    charge = LedgerEntry.objects.get(generation_id=gid, kind=LedgerEntry.Kind.GENERATE)
    credits_refund(entry_id=charge.pk, memo="wrongly refunded")

    assert problems("no refunded generation has a delivered message") == [
        f"generation {gid}: refunded, yet its image was delivered (message 7)"
    ]


def test_a_delivered_generation_that_was_also_refunded_is_settled_twice(fund):
    gid = delivered(fund)
    charge = LedgerEntry.objects.get(generation_id=gid, kind=LedgerEntry.Kind.GENERATE)
    credits_refund(entry_id=charge.pk, memo="double settlement")

    assert problems("no generation settled twice") == [
        f"generation {gid}: succeeded and refunded 1 time(s): settled twice"
    ]


def test_a_refund_while_still_in_flight_is_reported(fund):
    fund(USER, 1)
    gid = generation_reserve(discord_user_id=USER, prompt="a tree").generation_id
    charge = LedgerEntry.objects.get(generation_id=gid, kind=LedgerEntry.Kind.GENERATE)
    credits_refund(entry_id=charge.pk, memo="refunded behind the generation's back")

    assert problems("no generation settled twice") == [f"generation {gid}: still in flight yet already refunded"]
    assert CreditAccount.objects.get(discord_user_id=USER).balance == 1
