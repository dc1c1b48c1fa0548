"""PAYMENTS_BACKEND=test: the labelled local checkout and the same fulfilment; DEBUG only; fails check --deploy."""

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from storefront.checks import check_production_backends
from storefront.errors import CheckoutError
from storefront.models import Order
from storefront.payments import payments_backend
from storefront.services import order_test_pay
from tests.storefront.conftest import start_checkout
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db


@pytest.fixture
def test_mode(settings):
    settings.DEBUG = True
    settings.PAYMENTS_BACKEND = "test"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # any call to "Stripe" would fail loudly


def test_checkout_in_test_mode_goes_to_the_local_labelled_page(client, test_mode, pack):
    response = client.post("/checkout/", {"pack": pack.pk})

    order = Order.objects.get()
    assert response.status_code == 303
    assert response["Location"] == f"/checkout/test/{order.stripe_session_id}/"
    page = client.get(response["Location"]).content.decode()
    assert "TEST MODE – no real payment" in page
    assert "$12.00" in page and "150" in page


def test_pay_in_test_mode_fulfils_through_the_same_code(
    client, test_mode, pack, django_capture_on_commit_callbacks, assert_audit_clean
):
    order = start_checkout(client, pack)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/checkout/test/{order.stripe_session_id}/", {"action": "pay", "email": "dev@example.com"}
        )

    assert response.status_code == 303
    assert response["Location"] == f"/checkout/success/?session_id={order.stripe_session_id}"
    order.refresh_from_db()
    voucher = Voucher.objects.get(order=order)
    assert (order.status, order.email, voucher.credits) == ("paid", "dev@example.com", 150)
    page = client.get(response["Location"]).content.decode()
    assert voucher.code in page
    assert "TEST MODE" in page
    assert_audit_clean()


def test_pay_twice_in_test_mode_issues_one_voucher(client, test_mode, pack):
    order = start_checkout(client, pack)
    url = f"/checkout/test/{order.stripe_session_id}/"

    client.post(url, {"action": "pay"})
    client.post(url, {"action": "pay"})

    assert Voucher.objects.filter(order=order).count() == 1


def test_success_page_in_test_mode_before_paying_is_processing(client, test_mode, pack):
    order = start_checkout(client, pack)

    page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    assert "Payment processing" in page
    assert not Voucher.objects.exists()


def test_cancel_in_test_mode_leaves_the_order_unpaid(client, test_mode, pack):
    order = start_checkout(client, pack)

    response = client.post(f"/checkout/test/{order.stripe_session_id}/", {"action": "cancel"})

    assert response.status_code == 302
    assert response["Location"] == "/checkout/cancel/"
    order.refresh_from_db()
    assert order.status == "pending"
    assert not Voucher.objects.exists()


def test_invalid_email_in_test_mode_is_refused(client, test_mode, pack):
    order = start_checkout(client, pack)

    response = client.post(f"/checkout/test/{order.stripe_session_id}/", {"action": "pay", "email": "not-an-email"})

    assert response.status_code == 400
    assert "look right" in response.content.decode()
    assert not Voucher.objects.exists()


def test_test_checkout_page_is_404_for_unknown_sessions(client, test_mode, pack):
    assert client.get("/checkout/test/cs_localtest_nope/").status_code == 404
    assert client.post("/checkout/test/cs_localtest_nope/", {"action": "pay"}).status_code == 404


def test_test_checkout_is_off_without_debug(client, test_mode, pack, settings):
    order = start_checkout(client, pack)
    settings.DEBUG = False

    assert client.get(f"/checkout/test/{order.stripe_session_id}/").status_code == 404
    assert client.post(f"/checkout/test/{order.stripe_session_id}/", {"action": "pay"}).status_code == 404
    with pytest.raises(CheckoutError):
        order_test_pay(session_id=order.stripe_session_id)
    assert not Voucher.objects.exists()


def test_test_checkout_is_off_with_the_stripe_backend(client, fake_stripe, pack, settings):
    settings.DEBUG = True
    order = start_checkout(client, pack)

    response = client.post(f"/checkout/test/{order.stripe_session_id}/", {"action": "pay"})

    assert response.status_code == 404
    assert not Voucher.objects.exists()


def test_test_backend_without_debug_refuses_to_check_out(client, pack, settings):
    settings.DEBUG = False
    settings.PAYMENTS_BACKEND = "test"

    response = client.post("/checkout/", {"pack": pack.pk})

    assert response.status_code == 503
    with pytest.raises(CheckoutError):
        payments_backend()


def test_unknown_payments_backend_refuses_to_check_out(client, pack, settings):
    settings.PAYMENTS_BACKEND = "paypal"

    assert client.post("/checkout/", {"pack": pack.pk}).status_code == 503


# --- manage.py check --deploy ---------------------------------------------------------------------------


def _ids(errors: list[Error]) -> set[str]:
    return {e.id for e in errors}


def test_check_deploy_fails_with_the_test_payments_backend(settings):
    settings.PAYMENTS_BACKEND = "test"

    assert "storefront.E001" in _ids(check_production_backends(None))
    with pytest.raises(SystemCheckError, match="storefront.E001"):
        call_command("check", "--deploy", "--tag", "security")


def test_check_deploy_fails_with_stripe_but_no_keys(settings):
    settings.PAYMENTS_BACKEND = "stripe"
    settings.STRIPE_WEBHOOK_SECRET = ""

    assert "storefront.E002" in _ids(check_production_backends(None))


def test_check_deploy_accepts_stripe_with_keys(settings):
    settings.PAYMENTS_BACKEND = "stripe"

    assert not _ids(check_production_backends(None)) & {"storefront.E001", "storefront.E002"}
