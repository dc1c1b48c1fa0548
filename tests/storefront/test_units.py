"""Small pure pieces: money display, the pack seeding migration, best-value flag, the session parser."""

import importlib

import pytest
from django.apps import apps

from storefront.models import CreditPack
from storefront.money import format_money, format_unit_price
from storefront.payments import StripeBackend
from storefront.selectors import packs_for_sale
from tests.storefront.conftest import make_pack
from tests.storefront.fake_stripe import parse_form


@pytest.mark.parametrize(
    "amount, currency, shown",
    [
        (500, "usd", "$5.00"),
        (1999, "usd", "$19.99"),
        (123456, "eur", "€1,234.56"),
        (500, "jpy", "¥500"),
        (750, "sek", "7.50 SEK"),
        (15000, "krw", "15,000 KRW"),
        (99_999_999, "vnd", "99,999,999 VND"),
        (1500, "xof", "1,500 XOF"),
        (99_999_999, "usd", "$999,999.99"),
    ],
)
def test_format_money(amount, currency, shown):
    assert format_money(amount, currency) == shown


@pytest.mark.parametrize(
    "amount, units, shown",
    [(500, 50, "$0.10"), (1200, 150, "$0.08"), (1000, 120, "$0.083"), (2800, 400, "$0.07"), (999, 1, "$9.99")],
)
def test_format_unit_price(amount, units, shown):
    assert format_unit_price(amount, units, "usd") == shown


def test_seed_migration_fills_an_empty_table_once(db):
    seed = importlib.import_module("storefront.migrations.0003_seed_credit_packs")
    CreditPack.objects.all().delete()

    seed.seed_packs(apps, None)
    seed.seed_packs(apps, None)  # a second run changes nothing

    packs = list(CreditPack.objects.values_list("name", "credits", "price_cents", "active"))
    assert packs == [("Starter", 50, 500, True), ("Creator", 150, 1200, True), ("Studio", 400, 2800, True)]


def test_seed_migration_leaves_an_operators_packs_alone(db):
    seed = importlib.import_module("storefront.migrations.0003_seed_credit_packs")
    CreditPack.objects.all().delete()
    make_pack(name="Custom")

    seed.seed_packs(apps, None)

    assert list(CreditPack.objects.values_list("name", flat=True)) == ["Custom"]


def test_best_value_is_the_cheapest_per_image(db):
    CreditPack.objects.all().delete()
    make_pack(name="Small", credits=10, price_cents=100)
    make_pack(name="Big", credits=300, price_cents=2400)
    make_pack(name="Mid", credits=100, price_cents=900)

    flagged = [p.name for p in packs_for_sale() if p.best_value]

    assert flagged == ["Big"]


def test_fake_stripe_parses_nested_form_params():
    body = "line_items[0][price_data][currency]=usd&line_items[0][quantity]=1&metadata[order_id]=7&mode=payment"

    assert parse_form(body) == {
        "line_items": [{"price_data": {"currency": "usd"}, "quantity": "1"}],
        "metadata": {"order_id": "7"},
        "mode": "payment",
    }


def test_session_parser_reads_only_our_order_ids():
    import stripe

    def parse(**fields):
        session = stripe.checkout.Session.construct_from({"id": "cs_1", "object": "checkout.session", **fields}, "k")
        return StripeBackend._parse(session)

    # client_reference_id proves nothing (a Payment Link takes it from its URL); only our metadata names an order.
    assert parse(client_reference_id="12").order_id is None
    assert parse(client_reference_id=None, metadata={"order_id": "5"}).order_id == 5
    assert parse(client_reference_id="5", metadata={"order_id": "abc"}).order_id is None
    assert parse(metadata={"order_id": "-3"}).order_id is None
    paid = parse(payment_status="paid", payment_intent={"id": "pi_9"}, customer_details={"email": "a@b.c"})
    assert (paid.is_paid, paid.payment_intent_id, paid.email) == (True, "pi_9", "a@b.c")
    priced = parse(
        mode="payment", amount_total=2800, amount_subtotal=2800, currency="USD", total_details={"amount_tax": 0}
    )
    assert (priced.mode, priced.amount_total, priced.amount_subtotal, priced.currency) == ("payment", 2800, 2800, "usd")
    adaptive = parse(
        amount_total=4200,
        currency="eur",
        currency_conversion={"source_currency": "usd", "amount_total": 2800, "amount_subtotal": 2800},
    )
    assert (adaptive.amount_total, adaptive.currency) == (2800, "usd")
