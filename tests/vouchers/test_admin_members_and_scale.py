"""Members shown by name beside their id (account list and page, ledger, vouchers, generations), found by name
or by their whole Discord id (an exact lookup); the account page and the generations list at a year's scale:
a bounded ledger inline and a query count that does not grow with the rows."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from discordbot.services import generation_fail_and_refund, generation_record_spend, generation_reserve
from vouchers import services
from vouchers.admin import INLINE_LEDGER_ROWS
from vouchers.models import CreditAccount, LedgerEntry

pytestmark = pytest.mark.django_db

ADA, BOB = 123_456_789_012_345_678, 987_654_321_098_765_432


@pytest.fixture
def members(db):
    services.credits_grant(discord_user_id=ADA, amount=50, memo="welcome")
    services.credits_grant(discord_user_id=BOB, amount=50, memo="welcome")
    services.account_name_record(discord_user_id=ADA, name="Ada Lovelace (@ada)")
    gid = generation_reserve(discord_user_id=ADA, prompt="an engine").generation_id
    generation_record_spend(generation_id=gid, micros=42_000)
    generation_reserve(discord_user_id=BOB, prompt="a boat")
    return gid


def results(client, url_name: str, q: str) -> list:
    response = client.get(reverse(url_name), {"q": q})
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_members_are_shown_by_name_beside_their_id(operator, members):
    label = f"Ada Lovelace (@ada) ({ADA})"
    ada = CreditAccount.objects.get(discord_user_id=ADA)
    for url in [
        reverse("admin:vouchers_creditaccount_changelist"),
        reverse("admin:vouchers_creditaccount_change", args=[ada.pk]),
        reverse("admin:vouchers_ledgerentry_changelist"),
        reverse("admin:discordbot_generation_changelist"),
        reverse("admin:discordbot_generation_change", args=[members]),
    ]:
        html = operator.get(url).content.decode()
        assert label in html, url
    assert "$0.0420" in operator.get(reverse("admin:discordbot_generation_changelist")).content.decode()


@pytest.mark.parametrize(
    "url_name", ["admin:vouchers_creditaccount_changelist", "admin:vouchers_ledgerentry_changelist",
                 "admin:discordbot_generation_changelist"]
)  # fmt: skip
def test_search_by_name_and_by_whole_discord_id(operator, members, url_name):
    by_name = results(operator, url_name, "lovelace")
    by_id = results(operator, url_name, str(ADA))
    accounts = {getattr(row, "account", row).discord_user_id for row in by_name + by_id}

    assert by_name and by_id and accounts == {ADA}


def test_a_whole_discord_id_is_one_exact_lookup_not_a_substring_scan(operator, members):
    with CaptureQueriesContext(connection) as queries:
        results(operator, "admin:vouchers_ledgerentry_changelist", str(ADA))
    sql = " ".join(q["sql"] for q in queries.captured_queries if "vouchers_ledgerentry" in q["sql"]).upper()
    assert "LIKE" not in sql
    assert results(operator, "admin:vouchers_ledgerentry_changelist", "99999999999999999999") == []  # > bigint


def history(member: int, entries: int) -> None:
    """`entries` generations for the member, half refunded: about 1.5 ledger rows each, every row with links."""
    services.credits_grant(discord_user_id=member, amount=entries * 2, memo="funds")
    for i in range(entries):
        gid = generation_reserve(discord_user_id=member, prompt=f"image {i}").generation_id
        if i % 2:
            generation_fail_and_refund(generation_id=gid, error="blocked")


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries.captured_queries)


def test_account_page_shows_a_bounded_ledger_with_a_constant_number_of_queries(operator, db):
    history(ADA, 4)
    history(BOB, 120)
    small = CreditAccount.objects.get(discord_user_id=ADA)
    big = CreditAccount.objects.get(discord_user_id=BOB)

    small_queries = queries_for(operator, reverse("admin:vouchers_creditaccount_change", args=[small.pk]))
    response = operator.get(reverse("admin:vouchers_creditaccount_change", args=[big.pk]))
    big_queries = queries_for(operator, reverse("admin:vouchers_creditaccount_change", args=[big.pk]))

    formset = response.context["inline_admin_formsets"][0].formset
    total = LedgerEntry.objects.filter(account=big).count()
    assert total > INLINE_LEDGER_ROWS and len(formset.forms) == INLINE_LEDGER_ROWS
    newest = LedgerEntry.objects.filter(account=big).order_by("-created_at", "-id")[:INLINE_LEDGER_ROWS]
    assert [form.instance.pk for form in formset.forms] == [e.pk for e in newest]
    assert f"{total} entries; the latest {INLINE_LEDGER_ROWS} below." in response.content.decode()
    assert big_queries == small_queries  # no query per row
    everything = operator.get(reverse("admin:vouchers_ledgerentry_changelist"), {"account__id__exact": big.pk})
    assert everything.context["cl"].result_count == total  # the page's "All of them" link


def test_generations_list_queries_do_not_grow_with_rows(operator, db):
    history(ADA, 3)
    few = queries_for(operator, reverse("admin:discordbot_generation_changelist"))
    history(BOB, 80)
    many = queries_for(operator, reverse("admin:discordbot_generation_changelist"))
    assert many == few
