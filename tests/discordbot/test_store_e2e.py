"""Discord's checkout end to end: the real bot, the fake Discord's store (SKUs, entitlements, their gateway
events and REST routes), the real database. Each scenario ends with `auditcredits` clean.

Purchases are made the way a member makes them: `fake.purchase(user, sku)` (a premium button or the store page),
which Discord refuses while the member holds an unconsumed entitlement of that consumable SKU.
"""

import signal
import time

import discord
import pytest

from discordbot.models import EntitlementPurchase
from storefront.models import CreditPack
from tests.discordbot.fake_discord import Refused
from tests.discordbot.fake_store import PREMIUM_STYLE, SKU_DURABLE
from tests.discordbot.harness import BotHarness
from tests.discordbot.test_runbot_process import processes  # noqa: F401 - the fixture
from vouchers.models import CreditAccount
from vouchers.selectors import account_balance
from vouchers.services import credits_reserve

pytestmark = pytest.mark.django_db(transaction=True)

LINK_STYLE = 5


@pytest.fixture
def store(harness):
    """Three packs sold in Discord (one taken off sale), each mapped to a consumable SKU of the fake store."""
    CreditPack.objects.update(discord_sku_id=None)
    skus = {}
    for name, credits, active in (("Starter", 50, True), ("Big", 200, True), ("Retired", 75, False)):
        sku = harness.discord.add_sku(f"{name} pack")
        CreditPack.objects.create(
            name=name, credits=credits, price_cents=500, currency="usd", active=active, discord_sku_id=sku
        )
        skus[name] = sku
    return skus


@pytest.fixture
def shop(harness, store):
    """The bot connected and ready (its connection's reconciliation done or under way), selling the store."""
    harness.start_bot()
    # Also: a bot stopped before it is ready leaves discord.py's pending ready event unawaited.
    harness.wait_for(harness.bot.is_ready)
    return harness


def buy(h: BotHarness, user: int, sku: int):
    return h.run(h.discord.purchase(user, sku))


def purchase_of(entitlement) -> EntitlementPurchase | None:
    return EntitlementPurchase.objects.filter(entitlement_id=entitlement.id).first()


def wait_consumed(h: BotHarness, entitlement, timeout: float = 10.0) -> EntitlementPurchase:
    h.wait_for(lambda: entitlement.consumed and (p := purchase_of(entitlement)) and p.consumed_at, timeout)
    return purchase_of(entitlement)


# --- /buy ------------------------------------------------------------------------------------------------------


def test_buy_shows_only_the_stripe_link_while_no_pack_has_a_sku(bot, member):
    CreditPack.objects.update(discord_sku_id=None)

    answer = bot.answer(bot.command("buy", user=member()))

    assert [b["style"] for b in answer.buttons] == [LINK_STYLE]
    assert "in Discord" not in answer.content
    bot.wait_for(bot.bot.is_ready)
    assert not [c for c in bot.discord.snapshot() if c.route in ("list_entitlements", "consume_entitlement")]


def test_buy_shows_discords_purchase_button_for_each_pack_on_sale(shop, store, member):
    answer = shop.answer(shop.command("buy", user=member()))

    assert answer.status == 200 and answer.ephemeral
    link, *premium = answer.buttons
    assert link["style"] == LINK_STYLE and link["url"].startswith("http")
    assert [b["sku_id"] for b in premium] == [str(store["Starter"]), str(store["Big"])]  # not the retired one
    for button in premium:
        assert button["style"] == PREMIUM_STYLE
        assert not {"label", "custom_id", "url", "emoji"} & button.keys(), button
    assert "Starter (50 credits)" in answer.content and "Big (200 credits)" in answer.content


def test_the_fake_refuses_a_premium_button_discord_would_refuse(harness, store):
    fake = harness.discord
    good = {"type": 2, "style": PREMIUM_STYLE, "sku_id": str(store["Starter"])}
    fake._validate({"components": [{"type": 1, "components": [good]}]}, [], editing=None)
    for bad in (
        {**good, "label": "Buy"},
        {**good, "custom_id": "buy"},
        {**good, "url": "https://example.com"},
        {**good, "emoji": {"name": "🛒"}},
        {**good, "style": 1},
        {"type": 2, "style": PREMIUM_STYLE, "custom_id": "x"},
        {**good, "sku_id": "123"},
    ):
        with pytest.raises(Refused) as refused:
            fake._validate({"components": [{"type": 1, "components": [bad]}]}, [], editing=None)
        assert refused.value.status == 400, bad


# --- purchases ----------------------------------------------------------------------------------------------------


def test_a_purchase_is_credited_once_and_consumed_even_when_delivered_twice(shop, store, member, assert_audit_clean):
    user = member()
    entitlement = buy(shop, user, store["Starter"])
    purchase = wait_consumed(shop, entitlement)
    assert purchase.credits == 50 and account_balance(discord_user_id=user) == 50

    # The same event again (a gateway redelivery, as first sent: unconsumed), and an update.
    first_payload = {**entitlement.payload(shop.discord.APP_ID), "consumed": False}
    shop.run(shop.discord.dispatch("ENTITLEMENT_CREATE", first_payload))
    shop.run(shop.discord.dispatch("ENTITLEMENT_UPDATE", first_payload))
    # Bought again once consumed (Discord allows it now): a second, separate credit. It also marks the moment
    # the duplicates before it were handled.
    again = buy(shop, user, store["Starter"])
    wait_consumed(shop, again)
    time.sleep(0.3)

    assert account_balance(discord_user_id=user) == 100
    assert EntitlementPurchase.objects.filter(discord_user_id=user).count() == 2
    assert shop.discord.consume_calls == 2  # the duplicate found it credited and consumed: no second consume
    assert_audit_clean()


def test_a_consumable_cannot_be_bought_again_until_it_is_consumed(harness, store, member, assert_audit_clean):
    user = member()
    held = buy(harness, user, store["Big"])  # no bot connected: nobody consumes it

    with pytest.raises(Refused):
        buy(harness, user, store["Big"])
    buy(harness, member(), store["Big"])  # someone else may
    harness.start_bot()
    wait_consumed(harness, held)
    buy(harness, user, store["Big"])  # consumed: on sale to them again
    assert_audit_clean()


def test_a_purchase_made_while_the_bot_was_down_is_credited_and_consumed_at_start_up(
    shop, store, member, assert_audit_clean
):
    user, other = member(), member()
    shop.wait_for(shop.bot.is_ready)  # (stopping a bot before it is ready leaves discord.py's ready event behind)
    shop.stop_bot()
    missed = [buy(shop, user, store["Starter"]), buy(shop, other, store["Retired"])]  # taken off sale, still honoured
    assert not any(purchase_of(e) for e in missed)

    shop.start_bot()

    for entitlement in missed:
        wait_consumed(shop, entitlement)
    assert account_balance(discord_user_id=user) == 50 and account_balance(discord_user_id=other) == 75
    listed = [c for c in shop.discord.snapshot() if c.route == "list_entitlements"]
    assert listed and listed[-1].query["exclude_deleted"] == "0" and listed[-1].query["exclude_ended"] == "1"
    assert set(listed[-1].query["sku_ids"].split(",")) == {str(sku) for sku in store.values()}
    assert_audit_clean()


def test_a_failed_consume_is_retried_later_and_never_credits_twice(
    harness, store, member, settings, assert_audit_clean
):
    settings.DISCORD_CONSUME_RETRY_SECONDS = 0.3
    harness.start_bot()
    harness.discord.fail(lambda c: c.route == "consume_entitlement", status=400, code=0, message="nope", times=2)
    user = member()

    entitlement = buy(harness, user, store["Starter"])
    harness.wait_for(lambda: purchase_of(entitlement))
    assert account_balance(discord_user_id=user) == 50
    with pytest.raises(Refused):  # not consumed yet, so not on sale to them again
        buy(harness, user, store["Starter"])

    wait_consumed(harness, entitlement)
    assert account_balance(discord_user_id=user) == 50
    consumes = [c for c in harness.discord.snapshot() if c.route == "consume_entitlement"]
    assert [c.status < 300 for c in consumes] == [False, False, True]  # the event, the connection, the retry
    assert_audit_clean()


def test_a_consume_whose_answer_was_lost_is_confirmed_by_asking_discord(shop, store, member, assert_audit_clean):
    shop.discord.drop(lambda c: c.route == "consume_entitlement", applied=True)
    user = member()

    entitlement = buy(shop, user, store["Starter"])

    wait_consumed(shop, entitlement, timeout=20)  # discord.py resends it; Discord refuses a second consume
    assert account_balance(discord_user_id=user) == 50
    assert [c.route for c in shop.discord.snapshot() if c.route.endswith("entitlement")][-1] == "get_entitlement"
    assert_audit_clean()


# --- refunds ----------------------------------------------------------------------------------------------------


def test_a_refund_takes_back_the_credits_and_what_was_spent_becomes_owed(shop, store, member, assert_audit_clean):
    user = member()
    entitlement = buy(shop, user, store["Starter"])
    wait_consumed(shop, entitlement)
    credits_reserve(discord_user_id=user, amount=20, memo="spent on images")

    shop.run(shop.discord.refund(entitlement.id))

    shop.wait_for(lambda: purchase_of(entitlement).deleted_at)
    account = CreditAccount.objects.get(discord_user_id=user)
    assert account.balance == 0 and account.owed == 20
    assert_audit_clean()


def test_refunds_made_while_the_bot_was_down_are_clawed_back_at_start_up(shop, store, member, assert_audit_clean):
    user, late = member(), member()
    credited = buy(shop, user, store["Big"])
    wait_consumed(shop, credited)
    shop.wait_for(shop.bot.is_ready)  # (stopping a bot before it is ready leaves discord.py's ready event behind)
    shop.stop_bot()
    shop.run(shop.discord.refund(credited.id))
    never_seen = buy(shop, late, store["Starter"])
    shop.run(shop.discord.refund(never_seen.id))

    shop.start_bot()

    shop.wait_for(lambda: purchase_of(credited).deleted_at and purchase_of(never_seen))
    assert account_balance(discord_user_id=user) == 0
    tombstone = purchase_of(never_seen)
    assert tombstone.voucher is None and tombstone.deleted_at is not None
    assert not CreditAccount.objects.filter(discord_user_id=late).exists()
    assert_audit_clean()


def test_an_entitlement_of_a_sku_that_sells_no_pack_is_left_alone(shop, member, assert_audit_clean):
    other = shop.discord.add_sku("Badge", type=SKU_DURABLE)  # the app sells something else too
    user = member()

    entitlement = buy(shop, user, other)
    time.sleep(0.5)

    assert purchase_of(entitlement) is None and not entitlement.consumed
    assert not CreditAccount.objects.filter(discord_user_id=user).exists()
    assert_audit_clean()


# --- two bot processes ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_holder_killed_before_consuming_hands_over_and_the_stand_by_consumes_without_crediting_again(
    harness,
    store,
    processes,  # noqa: F811
    member,
    assert_audit_clean,
):
    user = member()
    serving = processes()
    standby = processes(standby=True)
    identified = harness.discord.identifies
    # The holder credits, then its consume fails, and it is killed before its retry.
    harness.discord.fail(lambda c: c.route == "consume_entitlement", status=400, code=0, message="nope", times=2)
    entitlement = buy(harness, user, store["Starter"])
    asked = lambda n: len([c for c in harness.discord.snapshot() if c.route == "get_entitlement"]) == n  # noqa: E731
    harness.wait_for(lambda: purchase_of(entitlement) and asked(1), 20)
    # The event again (a redelivery): still credited once, and the consume fails again.
    harness.run(harness.discord.send_entitlement_event("ENTITLEMENT_CREATE", entitlement))
    harness.wait_for(lambda: asked(2), 20)
    assert not entitlement.consumed

    serving.process.send_signal(signal.SIGKILL)
    serving.process.wait(10)
    harness.wait_for(lambda: harness.discord.identifies > identified, 30)  # the stand-by took over

    wait_consumed(harness, entitlement, timeout=20)
    assert account_balance(discord_user_id=user) == 50
    assert EntitlementPurchase.objects.filter(discord_user_id=user).count() == 1
    standby.wait_for_log("Reconciled 1 Discord entitlement(s)")
    assert_audit_clean()


def test_discord_py_reads_the_fakes_store_as_discord_documents_it(shop, store, member):
    """The fake's list, SKUs and consume answer the bot's own client; limits it refuses, Discord refuses."""
    bot, app_id = shop.bot, shop.discord.APP_ID
    skus = shop.run(bot.fetch_skus())
    assert {s.id for s in skus} >= set(store.values()) and {s.type for s in skus} == {discord.SKUType.consumable}

    user = member()
    entitlement = buy(shop, user, store["Starter"])
    wait_consumed(shop, entitlement)
    mine = shop.run(_collect(bot.entitlements(user=discord.Object(user), limit=None)))
    assert [(e.id, e.consumed, e.deleted) for e in mine] == [(entitlement.id, True, False)]
    for bad in ({"limit": 0}, {"limit": 101}, {"sku_ids": ["x"]}):
        with pytest.raises(discord.HTTPException) as error:
            shop.run(bot.http.get_entitlements(app_id, **bad))
        assert error.value.status == 400
    with pytest.raises(discord.HTTPException):  # consumed already
        shop.run(bot.http.consume_entitlement(app_id, entitlement.id))
    with pytest.raises(discord.NotFound):
        shop.run(bot.http.consume_entitlement(app_id, 1234567890123456789))


async def _collect(iterator) -> list:
    return [item async for item in iterator]


def test_test_entitlements_are_made_and_deleted_through_discord_py_and_credited_at_the_next_connection(
    shop, store, member, assert_audit_clean
):
    bot, user = shop.bot, member()
    owner = discord.EntitlementOwnerType.user
    shop.run(bot.create_entitlement(discord.Object(store["Big"]), discord.Object(user), owner))
    (made,) = [e for e in shop.discord.entitlements.values() if e.user_id == user]
    assert made.type == 4  # a test-mode purchase
    bought = buy(shop, member(), store["Starter"])
    wait_consumed(shop, bought)
    with pytest.raises(discord.NotFound):  # only test entitlements can be deleted
        shop.run(bot.http.delete_entitlement(shop.discord.APP_ID, bought.id))

    shop.stop_bot()
    shop.start_bot()

    wait_consumed(shop, made)
    assert account_balance(discord_user_id=user) == 200
    assert purchase_of(made).entitlement_type == 4
    assert_audit_clean()
