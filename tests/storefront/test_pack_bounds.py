"""Credit packs stay within what Stripe accepts: price at most 99,999,999 minor units, a currency Stripe supports."""

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from storefront.models import MAX_PACK_CREDITS, CreditPack
from tests.storefront.conftest import make_pack, start_checkout

pytestmark = pytest.mark.django_db


def pack_form(**fields) -> dict:
    form = {"name": "Mega", "credits": 1000, "price_cents": 6000, "currency": "usd", "active": "on", "sort_order": 5}
    form.update(fields)
    return form


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"price_cents": 100_000_000}, "99,999,999"),
        ({"price_cents": 0}, "99,999,999"),
        ({"currency": "xyz"}, "currency code that Stripe supports"),
        ({"currency": "us"}, "currency code that Stripe supports"),
        ({"credits": MAX_PACK_CREDITS + 1}, "1,000,000 credits"),
    ],
    ids=["price-too-high", "price-zero", "unknown-currency", "short-currency", "too-many-credits"],
)
def test_admin_refuses_a_pack_stripe_would_refuse(operator, no_packs, fields, error):
    response = operator.post(reverse("admin:storefront_creditpack_add"), pack_form(**fields))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not CreditPack.objects.exists()


def test_admin_accepts_the_largest_price_and_an_upper_case_zero_decimal_currency(operator, no_packs):
    response = operator.post(
        reverse("admin:storefront_creditpack_add"), pack_form(price_cents=99_999_999, currency="JPY")
    )

    assert response.status_code == 302
    pack = CreditPack.objects.get()
    assert (pack.price_cents, pack.currency, pack.price_display) == (99_999_999, "jpy", "¥99,999,999")


@pytest.mark.parametrize(
    "fields",
    [{"price_cents": 100_000_000}, {"currency": "xyz"}, {"credits": MAX_PACK_CREDITS + 1}],
    ids=["price", "currency", "credits"],
)
def test_the_database_refuses_an_out_of_bounds_pack_too(no_packs, fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_pack(**fields)


def test_a_zero_decimal_pack_checks_out_with_its_amount_as_is(client, fake_stripe, no_packs):
    pack = make_pack(name="Yen", credits=100, price_cents=1500, currency="jpy")

    order = start_checkout(client, pack)

    (create,) = fake_stripe.calls("POST")
    price = create.params["line_items"][0]["price_data"]
    assert (price["currency"], price["unit_amount"]) == ("jpy", "1500")
    assert order.amount_display == "¥1,500"
