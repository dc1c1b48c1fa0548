"""The daily spend guard through the real bot: once today's recorded image spend reaches the budget, /generate
is refused privately, at once, before any deferral, and costs nothing (no credit, no Generation, no OpenAI call)."""

from decimal import Decimal

import pytest

from discordbot.models import Generation
from discordbot.services import generation_fail_and_refund, generation_record_spend, generation_reserve
from tests.discordbot.test_generate_e2e import assert_refused_before_any_deferral
from vouchers.models import LedgerEntry
from vouchers.selectors import account_balance

pytestmark = pytest.mark.django_db(transaction=True)


def test_generate_is_refused_privately_and_free_once_the_daily_budget_is_spent(
    bot, member, fund, settings, assert_audit_clean
):
    settings.IMAGE_SPEND_DAILY_BUDGET_USD = Decimal("0.05")
    user = member()
    fund(user, 5)
    # An earlier image today cost $0.05 at the image service (then its upload failed and the member got the
    # credit back; the service's charge stands): the budget is spent.
    earlier = generation_reserve(discord_user_id=user, prompt="an earlier image").generation_id
    generation_record_spend(generation_id=earlier, micros=50_000)
    assert generation_fail_and_refund(generation_id=earlier, error="upload failed")
    charges_before = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.GENERATE).count()

    sent = bot.command("generate", user=user, prompt="a lighthouse at dusk")
    answer = bot.answer(sent)

    assert_refused_before_any_deferral(bot, sent, answer)
    assert "daily image budget" in answer.content and "Nothing was charged" in answer.content
    assert not bot.openai.requests
    assert list(Generation.objects.values_list("pk", flat=True)) == [earlier]
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.GENERATE).count() == charges_before
    assert account_balance(discord_user_id=user) == 5
    assert_audit_clean()
