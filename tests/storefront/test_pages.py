"""The pages a buyer sees: pack list, success (paid / processing / unconfirmed), cancel; health check."""

import re
from urllib.parse import urlencode

import pytest
from django.core import mail
from django.utils.html import escape

from storefront.models import Order
from storefront.tokens import buy_token_make
from tests.storefront.conftest import make_pack, start_checkout
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db


# --- the pack list --------------------------------------------------------------------------------------


def test_pack_list_shows_active_packs_with_price_and_price_per_image(client, no_packs):
    make_pack(name="Starter", credits=50, price_cents=500, sort_order=1)
    make_pack(name="Studio", credits=400, price_cents=2800, sort_order=3)
    make_pack(name="Creator", credits=150, price_cents=1200, sort_order=2)
    make_pack(name="Retired", credits=10, price_cents=100, active=False)

    response = client.get("/")

    page = response.content.decode()
    assert response.status_code == 200
    assert re.findall(r'class="pack-name">(\w+)<', page) == ["Starter", "Creator", "Studio"]
    for text in ("$5.00", "$0.10 per credit", "$12.00", "$0.08 per credit", "$28.00", "$0.07 per credit"):
        assert text in page
    assert "Retired" not in page
    assert page.count('action="/checkout/"') == 3
    assert page.count('name="csrfmiddlewaretoken"') == 3
    assert "Best value" in page.split("Studio")[0].rsplit("<li", 1)[1]  # flagged on the Studio card only
    assert page.count("Best value") == 1


def test_pack_list_explains_how_redeeming_works(client, pack):
    page = client.get("/").content.decode()

    assert "How redeeming works" in page
    assert "/redeem" in page and "/generate" in page


def test_pack_list_uses_only_local_assets(client, pack):
    page = client.get("/").content.decode()

    assets = re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="([^"]+)"', page)
    assert assets, "the page should load its stylesheet"
    assert all(url.startswith(("/static/", "/gallery/")) for url in assets), assets
    assert "<script" not in page  # the pack list needs no JavaScript at all


def test_pack_list_carries_a_valid_buy_token_into_every_checkout_form(client, no_packs):
    make_pack(name="A")
    make_pack(name="B")
    token = buy_token_make(discord_user_id=99, discord_name="Ada (@ada)")

    page = client.get("/", {"for": token, "confirmed": "1"}).content.decode()

    assert page.count(f'<input type="hidden" name="for" value="{token}">') == 2
    assert "Buying for Ada (@ada)." in page


def test_pack_list_drops_an_invalid_buy_token_and_says_why(client, pack):
    page = client.get("/", {"for": "forged"}).content.decode()

    assert 'name="for"' not in page
    assert "not valid" in page and "/buy" in page


def test_pack_list_with_no_packs_says_so(client, no_packs):
    page = client.get("/").content.decode()

    assert "No packs are on sale" in page


def test_pack_list_escapes_pack_names(client):
    make_pack(name="<script>alert(1)</script>")

    page = client.get("/").content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


# --- the success page -----------------------------------------------------------------------------------


def test_success_page_fulfils_a_paid_session_and_shows_the_voucher(
    client, fake_stripe, pack, django_capture_on_commit_callbacks, assert_audit_clean
):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id, email="ada@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    page = response.content.decode()
    voucher = Voucher.objects.get(order=order)
    assert response.status_code == 200
    assert voucher.code in page
    assert 'data-copy-target="voucher-code"' in page
    assert f"/redeem code:{voucher.code}" in page
    assert "ada@example.com" in page
    assert 'http-equiv="refresh"' not in page
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    assert_audit_clean()


def test_success_page_reload_shows_the_same_voucher_and_sends_no_second_email(
    client, fake_stripe, pack, django_capture_on_commit_callbacks
):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)

    with django_capture_on_commit_callbacks(execute=True):
        first = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()
        second = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    code = Voucher.objects.get(order=order).code
    assert code in first and code in second
    assert Voucher.objects.count() == 1
    assert len(mail.outbox) == 1


def test_success_page_while_payment_processing_refreshes_itself(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_complete_unpaid(order.stripe_session_id)

    response = client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    page = response.content.decode()
    assert response.status_code == 200
    assert "Payment processing" in page
    assert f'<meta http-equiv="refresh" content="5;url=?session_id={order.stripe_session_id}&amp;n=1">' in page
    assert not Voucher.objects.exists()


def test_processing_page_backs_off_then_stops_reloading(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_complete_unpaid(order.stripe_session_id)

    def refresh_after(n: int | str) -> str | None:
        page = client.get("/checkout/success/", {"session_id": order.stripe_session_id, "n": n}).content.decode()
        found = re.search(r'http-equiv="refresh" content="(\d+);url=\?session_id=[^&]+&amp;n=(\d+)"', page)
        if found is None:
            assert "stopped checking by itself" in page and "Check now" in page
            return None
        assert int(found.group(2)) == (n + 1 if isinstance(n, int) else 1)
        return found.group(1)

    assert [refresh_after(n) for n in (0, 1, 2, 3, 4, 10, 14, 15, 999)] == [
        "5", "10", "20", "40", "60", "60", "60", None, None
    ]  # fmt: skip
    assert refresh_after("x") == "5"  # garbage counts as a first visit


def test_success_page_for_an_unknown_session_costs_no_stripe_call(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)
    foreign = fake_stripe.foreign_session(amount=100, client_reference_id=str(order.pk))

    response = client.get("/checkout/success/", {"session_id": foreign["id"]})

    assert response.status_code == 404
    assert fake_stripe.calls("GET") == []


def test_success_page_reload_of_a_paid_order_costs_no_stripe_call(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)
    first = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()
    calls = len(fake_stripe.calls("GET"))

    second = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    assert calls == 1 and len(fake_stripe.calls("GET")) == 1
    code = Voucher.objects.get(order=order).code
    assert code in first and code in second


def test_success_page_when_stripe_is_down_keeps_checking(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)
    fake_stripe.fail_next(500, method="GET")

    response = client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    page = response.content.decode()
    assert response.status_code == 502
    assert "couldn't confirm your payment" in page
    assert 'http-equiv="refresh"' in page
    assert not Voucher.objects.exists()


def test_success_page_for_an_expired_session_marks_the_order_expired(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_expired(order.stripe_session_id)

    page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    assert "expired" in page
    order.refresh_from_db()
    assert order.status == "expired"


@pytest.mark.parametrize("session_id", ["", "cs_test_unknown", "x" * 300])
def test_success_page_for_an_unknown_session_is_404(client, fake_stripe, pack, session_id):
    response = client.get("/checkout/success/", {"session_id": session_id})

    assert response.status_code == 404
    assert not Voucher.objects.exists()


def test_success_page_for_a_discord_order_says_whom_it_credited_and_offers_no_code(client, fake_stripe, pack):
    token = buy_token_make(discord_user_id=31337, discord_name="Grace <b> (@grace)")
    order = start_checkout(client, pack, **{"for": token})
    fake_stripe.mark_paid(order.stripe_session_id)

    page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    voucher = Voucher.objects.get(order=order)
    assert "150 credits were credited to" in page
    assert "Grace &lt;b&gt; (@grace)" in page
    assert voucher.status == "redeemed"
    assert voucher.code not in page
    assert "Copy code" not in page and "copy.js" not in page and "/redeem code:" not in page


def test_success_page_for_an_old_discord_token_without_a_name_still_credits(client, fake_stripe, pack):
    order = start_checkout(client, pack, **{"for": buy_token_make(discord_user_id=31337)})
    fake_stripe.mark_paid(order.stripe_session_id)

    page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    assert "150 credits were credited to your Discord account" in page
    assert order.discord_name == ""


def test_voucher_email_is_not_sent_without_an_address(client, fake_stripe, pack, django_capture_on_commit_callbacks):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id, email="")

    with django_capture_on_commit_callbacks(execute=True):
        client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    assert Voucher.objects.filter(order=order).exists()
    assert mail.outbox == []


def test_a_failing_mail_server_does_not_undo_the_voucher(
    client, fake_stripe, pack, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 1
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    voucher = Voucher.objects.get(order=order)
    assert response.status_code == 200
    assert voucher.code in response.content.decode()


# --- cancel, errors, health -----------------------------------------------------------------------------


def test_cancel_page_says_nothing_was_charged_and_leads_back(client):
    token = buy_token_make(discord_user_id=7)

    page = client.get("/checkout/cancel/", {"for": token}).content.decode()

    assert "No payment was taken" in page
    assert f'href="{escape("/?" + urlencode({"for": token, "confirmed": "1"}))}"' in page


def test_healthz_answers_when_the_database_does(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_pages_never_show_secrets(client, fake_stripe, pack, settings):
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id)
    pages = [
        client.get("/").content,
        client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content,
        client.get("/checkout/cancel/").content,
        client.post("/checkout/", {"pack": "nope"}).content,
    ]

    for page in pages:
        for secret in (settings.SECRET_KEY, settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET):
            assert secret.encode() not in page
    assert Order.objects.count() == 1
