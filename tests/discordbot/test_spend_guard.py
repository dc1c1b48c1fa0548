"""What the image service charged, per generation (`generation_record_spend`), and the daily spend guard in
`generation_reserve`: refused before anything is charged once today's recorded spend reaches the budget."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from discordbot.errors import GenerationError
from discordbot.models import Generation
from discordbot.selectors import spend_today
from discordbot.services import generation_record_spend, generation_reserve, generation_reserve_again
from tests.vouchers.conftest import nothing_written
from vouchers.models import CreditAccount, LedgerEntry

pytestmark = pytest.mark.django_db

USER = 430_000_000_000_000_001


@pytest.fixture
def funded(fund):
    fund(USER, 100)


def reserve() -> int:
    return generation_reserve(discord_user_id=USER, prompt="a cat").generation_id


def test_record_spend_stores_the_figure_and_a_retry_replaces_it(funded):
    gid = reserve()
    assert Generation.objects.get(pk=gid).image_spend_micros is None

    generation_record_spend(generation_id=gid, micros=42_000)
    generation_record_spend(generation_id=gid, micros=42_000)

    assert Generation.objects.get(pk=gid).image_spend_micros == 42_000


@pytest.mark.parametrize("micros", [-1, 1.5, "42", None, True])
def test_record_spend_refuses_bad_figures_and_writes_nothing(funded, micros):
    gid = reserve()
    with pytest.raises(GenerationError):
        generation_record_spend(generation_id=gid, micros=micros)
    assert Generation.objects.get(pk=gid).image_spend_micros is None


@pytest.mark.parametrize("generation_id", [999_999, "1", None])
def test_record_spend_of_an_unknown_generation_is_refused(funded, generation_id):
    reserve()
    with pytest.raises(GenerationError) as caught:
        generation_record_spend(generation_id=generation_id, micros=1)
    assert caught.value.reason == "not_found"
    assert not Generation.objects.filter(image_spend_micros__isnull=False).exists()


def test_no_budget_means_no_guard(funded, settings):
    settings.IMAGE_SPEND_DAILY_BUDGET_USD = None
    generation_record_spend(generation_id=reserve(), micros=10**12)
    reserve()  # accepted whatever was spent
    assert spend_today().budget_micros is None and not spend_today().reached


def test_the_guard_refuses_before_anything_is_charged_once_the_budget_is_reached(funded, settings):
    settings.IMAGE_SPEND_DAILY_BUDGET_USD = Decimal("0.10")
    first = reserve()
    generation_record_spend(generation_id=first, micros=60_000)  # $0.06: under the budget
    second = reserve()
    generation_record_spend(generation_id=second, micros=40_000)  # $0.10 in all: reached
    assert spend_today().micros == 100_000 and spend_today().reached

    with nothing_written():
        with pytest.raises(GenerationError) as caught:
            reserve()
        with pytest.raises(GenerationError) as again:
            generation_reserve_again(source_id=first, discord_user_id=USER)  # the Regenerate button too

    assert caught.value.reason == again.value.reason == "spend_budget"
    assert "Nothing was charged" in caught.value.message
    assert Generation.objects.count() == 2
    assert CreditAccount.objects.get(discord_user_id=USER).balance == 100 - 2
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.GENERATE).count() == 2


def test_yesterdays_spend_does_not_count_today(funded, settings):
    settings.IMAGE_SPEND_DAILY_BUDGET_USD = Decimal("0.05")
    old = reserve()
    generation_record_spend(generation_id=old, micros=1_000_000)
    Generation.objects.filter(pk=old).update(created_at=timezone.now() - timedelta(days=1, minutes=1))

    assert spend_today().micros == 0
    reserve()  # accepted


def test_a_zero_budget_pauses_images_at_once(funded, settings):
    settings.IMAGE_SPEND_DAILY_BUDGET_USD = Decimal("0")
    with nothing_written(), pytest.raises(GenerationError):
        reserve()
