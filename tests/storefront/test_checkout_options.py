"""The operator's Checkout options and the shop's text on Stripe Checkout, as the fake Stripe receives them."""

import re
from typing import Any

import pytest
from stripe.params.checkout import _session_create_params as stripe_params

from storefront.models import Order
from storefront.payments import checkout_session_options
from storefront.tokens import buy_token_make
from tests.storefront.conftest import make_order, start_checkout

pytestmark = pytest.mark.django_db

ALL_OPTIONS = {
    "STRIPE_CHECKOUT_PROMOTION_CODES": True,
    "STRIPE_CHECKOUT_AUTOMATIC_TAX": True,
    "STRIPE_CHECKOUT_INVOICE": True,
    "STRIPE_CHECKOUT_TERMS_CONSENT": True,
}


def assert_stripe_allows(value: dict[str, Any], typed: type, path: str = "params") -> None:
    """Every key is one stripe-python's own TypedDicts declare at that place, and every required key is there.

    The annotations are strings naming the nested TypedDicts (e.g. "Literal['']|SessionCreateParamsCustomText");
    a dict value is checked against the TypedDict named in its annotation, plain mappings (metadata) are free.
    """
    annotations = typed.__annotations__
    missing = set(getattr(typed, "__required_keys__", ())) - set(value)
    assert not missing, f"{path}: stripe requires {missing}"
    for key, item in value.items():
        assert key in annotations, f"{path}.{key} is not a parameter stripe-python knows ({typed.__name__})"
        if not isinstance(item, dict):
            continue
        names = re.findall(r"SessionCreateParams\w*", str(annotations[key]))
        nested = [getattr(stripe_params, n) for n in names if hasattr(getattr(stripe_params, n), "__required_keys__")]
        if nested:
            assert_stripe_allows(item, nested[0], f"{path}.{key}")


def test_the_check_itself_refuses_a_parameter_stripe_does_not_have():
    with pytest.raises(AssertionError, match="allow_coupons"):
        assert_stripe_allows({"allow_coupons": True}, stripe_params.SessionCreateParams)
    with pytest.raises(AssertionError, match="requires"):
        assert_stripe_allows({"automatic_tax": {}}, stripe_params.SessionCreateParams)
    with pytest.raises(AssertionError, match=r"custom_text\.submit\.text"):
        unknown_nested = {"custom_text": {"submit": {"message": "hi", "text": "hi"}}}
        assert_stripe_allows(unknown_nested, stripe_params.SessionCreateParams)


def test_options_off_by_default_send_only_the_shops_text(client, fake_stripe, pack, settings):
    settings.SHOP_NAME, settings.SUPPORT_CONTACT = "Pixel Forge", "help@pixelforge.test"

    order = start_checkout(client, pack)

    (call,) = fake_stripe.calls("POST")
    for key in ("allow_promotion_codes", "automatic_tax", "invoice_creation", "consent_collection"):
        assert key not in call.params
    assert call.params["custom_text"] == {
        "submit": {
            "message": "Your 150 image credits for Pixel Forge come as a voucher code as soon as the payment clears. "
            "Questions: help@pixelforge.test."
        }
    }
    assert order.status == "pending"


def test_every_option_on_reaches_stripe_as_stripe_spells_it(client, fake_stripe, pack, settings):
    for name, value in ALL_OPTIONS.items():
        setattr(settings, name, value)
    settings.SUPPORT_CONTACT = "help@pixelforge.test"

    order = start_checkout(client, pack, **{"for": buy_token_make(discord_user_id=77, discord_name="@ada")})

    (call,) = fake_stripe.calls("POST")
    params = call.params
    assert params["allow_promotion_codes"] == "true"
    assert params["automatic_tax"] == {"enabled": "true"}
    assert params["invoice_creation"] == {
        "enabled": "true",
        "invoice_data": {
            "description": f"Creator: 150 image credits (order #{order.pk})",
            "metadata": {"order_id": str(order.pk)},
            "footer": "Questions: help@pixelforge.test",
        },
    }
    assert params["consent_collection"] == {"terms_of_service": "required"}
    assert params["custom_text"]["terms_of_service_acceptance"]["message"] == (
        "I agree to the [terms of service](http://127.0.0.1:8000/terms/) and the "
        "[refund policy](http://127.0.0.1:8000/refunds/)."
    )
    assert "go straight to your Discord account" in params["custom_text"]["submit"]["message"]
    # The order-carrying parameters are untouched by the options.
    assert params["metadata"] == {"order_id": str(order.pk)}
    assert params["line_items"][0]["price_data"]["unit_amount"] == "1200"


@pytest.mark.parametrize("enabled", [{}, ALL_OPTIONS])
def test_options_use_only_parameters_stripe_python_declares(settings, pack, enabled):
    for name, value in enabled.items():
        setattr(settings, name, value)
    order = make_order(pack=pack)

    assert_stripe_allows(checkout_session_options(order=order), stripe_params.SessionCreateParams)


def test_a_long_support_contact_is_cut_to_stripes_limit(settings, pack):
    settings.SUPPORT_CONTACT = "x" * 3000

    options = checkout_session_options(order=make_order(pack=pack))

    assert len(options["custom_text"]["submit"]["message"]) == 1200
    assert Order.objects.count() == 1
