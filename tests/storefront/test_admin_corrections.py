"""Corrections from the order admin: resending the voucher email (its own permission, a reason, the admin log),
the link to the payment in Stripe's dashboard, masked codes and session ids, and generations' Discord links."""

import pytest
from django.contrib.admin.models import LogEntry
from django.core import mail
from django.urls import reverse

from discordbot.models import Generation
from discordbot.services import generation_reserve, generation_start, generation_succeed
from storefront.admin import stripe_payment_url
from storefront.models import Order
from tests.storefront.conftest import make_order
from vouchers import services
from vouchers.codes import mask_code
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db

SESSION = "cs_test_b1a2c3d4e5f6a7b8c9d0e1f2"


@pytest.fixture
def paid(db) -> Order:
    order = make_order(status="paid", email="ada@example.com", stripe_session_id=SESSION, payment_intent_id="pi_3Abc")
    services.voucher_issue(credits=order.credits, order=order, note=f"Order #{order.pk}")
    return Order.objects.select_related("voucher").get(pk=order.pk)


def resend_url(order: Order) -> str:
    return reverse("admin:storefront_order_resend_email", args=[order.pk])


def change_url(order: Order) -> str:
    return reverse("admin:storefront_order_change", args=[order.pk])


# --- resend the voucher email ----------------------------------------------------------------------------------


def test_resend_with_the_permission_asks_why_then_sends_and_logs(staff_login, paid, assert_audit_clean):
    operator = staff_login("storefront.view_order", "storefront.resend_voucher_email")
    page = operator.get(change_url(paid)).content.decode()
    assert resend_url(paid) in page

    asks = operator.get(resend_url(paid))
    assert asks.status_code == 200 and "ada@example.com" in asks.content.decode()
    assert mail.outbox == []

    response = operator.post(resend_url(paid), {"memo": "buyer lost the email"})

    assert response.status_code == 302 and response["Location"] == change_url(paid)
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    assert paid.voucher.code in mail.outbox[0].body
    log = LogEntry.objects.get()
    assert (log.user.username, log.object_id) == ("staff1", str(paid.pk))
    assert log.change_message == "Voucher email resent to ada@example.com: buyer lost the email"
    assert_audit_clean()


def test_resend_without_a_reason_sends_nothing(staff_login, paid):
    operator = staff_login("storefront.view_order", "storefront.resend_voucher_email")

    response = operator.post(resend_url(paid), {"memo": ""})

    assert response.status_code == 200 and response.context["form"].errors
    assert mail.outbox == [] and not LogEntry.objects.exists()


def test_resend_without_the_permission_is_absent_and_refused(staff_login, paid):
    viewer = staff_login("storefront.view_order", "vouchers.view_voucher")

    page = viewer.get(change_url(paid))
    asked = viewer.get(resend_url(paid))
    forged = viewer.post(resend_url(paid), {"memo": "spam the buyer"})

    assert page.status_code == 200 and resend_url(paid) not in page.content.decode()
    assert (asked.status_code, forged.status_code) == (403, 403)
    assert mail.outbox == [] and not LogEntry.objects.exists()


def test_resend_refuses_unpaid_orders_and_void_vouchers(staff_login, paid):
    operator = staff_login("storefront.view_order", "storefront.resend_voucher_email")
    pending = make_order(email="bob@example.com")
    services.voucher_void(code=paid.voucher.code, memo="refunded")

    unpaid = operator.post(resend_url(pending), {"memo": "x"}, follow=True)
    void = operator.post(resend_url(paid), {"memo": "x"}, follow=True)

    assert "nothing to resend" in str(list(unpaid.context["messages"])[0])
    assert "void" in str(list(void.context["messages"])[0])
    assert mail.outbox == [] and not LogEntry.objects.exists()


def test_resend_of_an_unknown_order_is_not_found(staff_login, db):
    operator = staff_login("storefront.view_order", "storefront.resend_voucher_email")
    assert operator.get(reverse("admin:storefront_order_resend_email", args=[999])).status_code == 404
    assert operator.get(reverse("admin:storefront_order_resend_email", args=["x"])).status_code == 404


# --- link to Stripe ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, backend, intent, url",
    [
        ("sk_test_abc", "stripe", "pi_3Abc", "https://dashboard.stripe.com/test/payments/pi_3Abc"),
        ("rk_test_abc", "stripe", "pi_3Abc", "https://dashboard.stripe.com/test/payments/pi_3Abc"),
        ("sk_live_abc", "stripe", "pi_3Abc", "https://dashboard.stripe.com/payments/pi_3Abc"),
        ("sk_test_abc", "stripe", "", None),
        ("", "test", "pi_localtest_4", None),
        ("whatever", "stripe", "pi_3Abc", None),
    ],
)
def test_stripe_dashboard_link_follows_the_key_mode(settings, key, backend, intent, url):
    settings.STRIPE_SECRET_KEY, settings.PAYMENTS_BACKEND = key, backend
    assert stripe_payment_url(intent) == url


def test_order_page_links_to_its_payment_in_stripe(operator, paid, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_fake_for_link"

    page = operator.get(change_url(paid)).content.decode()

    assert 'href="https://dashboard.stripe.com/test/payments/pi_3Abc"' in page
    assert "Open in Stripe (test mode)" in page


# --- codes and session ids masked on orders -------------------------------------------------------------------


def test_order_pages_mask_the_code_and_session_id_without_see_codes(staff_login, paid):
    viewer = staff_login("storefront.view_order")
    code = paid.voucher.code

    for url in [reverse("admin:storefront_order_changelist"), change_url(paid)]:
        html = viewer.get(url).content.decode()
        assert code not in html and SESSION not in html and SESSION[8:24] not in html
    assert mask_code(code) in viewer.get(reverse("admin:storefront_order_changelist")).content.decode()
    seer = staff_login("storefront.view_order", "vouchers.see_voucher_code")
    assert code in seer.get(change_url(paid)).content.decode()
    assert SESSION in seer.get(change_url(paid)).content.decode()


@pytest.mark.parametrize("term, found", [(SESSION[:14], False), (SESSION, True), ("ada@example", True)])
def test_order_search_by_session_id_needs_the_whole_id_without_see_codes(staff_login, paid, term, found):
    viewer = staff_login("storefront.view_order")
    response = viewer.get(reverse("admin:storefront_order_changelist"), {"q": term})
    assert (list(response.context["cl"].result_list) == [paid]) is found


def test_voucher_search_by_session_id_needs_the_whole_id_without_see_codes(staff_login, paid):
    viewer = staff_login("vouchers.view_voucher")
    url = reverse("admin:vouchers_voucher_changelist")
    assert list(viewer.get(url, {"q": SESSION[:14]}).context["cl"].result_list) == []
    assert list(viewer.get(url, {"q": SESSION}).context["cl"].result_list) == [Voucher.objects.get(order=paid)]


# --- generations and their Discord message ----------------------------------------------------------------------


def test_generation_page_links_to_its_discord_message(operator, db):
    services.credits_grant(discord_user_id=31337, amount=5, memo="test funds")
    gid = generation_reserve(discord_user_id=31337, prompt="a fox", guild_id=111, channel_id=222).generation_id
    generation_start(generation_id=gid)
    Generation.objects.filter(pk=gid).update(status=Generation.Status.DELIVERING)  # as the bot does, under its lease
    generation_succeed(generation_id=gid, message_id=333)

    page = operator.get(reverse("admin:discordbot_generation_change", args=[gid])).content.decode()

    assert Generation.objects.get(pk=gid).message_id == 333
    assert 'href="https://discord.com/channels/111/222/333"' in page
