"""What makes the shop trustworthy: honest prices, the way back to Discord, legal pages, receipts, error pages.

The price test reads the figures off the rendered pack page and checks each against the bot's own
`generation_price`, so the shop can never again promise more images than the bot will make.
"""

import re
from html import unescape
from io import BytesIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from discordbot.services import generation_price
from storefront.models import LegalPage, Order, SampleImage
from storefront.tokens import buy_token_make, buy_token_open, discord_name_label
from tests.storefront.conftest import make_pack, start_checkout
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db

CELL = re.compile(r'<td data-size="([^"]+)" data-quality="([^"]+)">(\d+)</td>')


def pack_cells(page: str, pack_name: str) -> dict[tuple[str, str], int]:
    card = page.split(f'class="pack-name">{pack_name}<', 1)[1].split("</article>", 1)[0]
    return {(size, quality): int(n) for size, quality, n in CELL.findall(card)}


# --- honest prices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "costs",
    [
        None,  # the shipped GENERATION_COSTS
        {"512x512": {"low": 2, "hd": 7}, "2048x2048": {"medium": 9, "ultra": 25}, "1024x1024": {"low": 0}},
    ],
)
def test_pack_page_figures_agree_with_the_bots_generation_price(client, no_packs, settings, costs):
    if costs is not None:
        settings.GENERATION_COSTS = costs
    make_pack(name="Starter", credits=50, price_cents=500, sort_order=1)
    make_pack(name="Studio", credits=401, price_cents=2800, sort_order=2)

    page = client.get("/").content.decode()

    offered = {
        (size, quality)
        for size, qualities in settings.GENERATION_COSTS.items()
        for quality, cost in qualities.items()
        if cost > 0
    }
    for name, credits in (("Starter", 50), ("Studio", 401)):
        cells = pack_cells(page, name)
        assert set(cells) == offered, name  # every price the bot charges, and nothing it refuses
        for (size, quality), images in cells.items():
            _, _, cost = generation_price(size=size, quality=quality)
            assert images == credits // cost, (name, size, quality)
    # The price table states the bot's cost for each offer.
    table = page.split('class="price-table"', 1)[1].split("</table>", 1)[0]
    for size, qualities in settings.GENERATION_COSTS.items():
        for quality, cost in qualities.items():
            if cost > 0:
                assert generation_price(size=size, quality=quality)[2] == cost
                assert f"{cost} credit" in table


def test_the_shop_makes_no_claim_the_bot_contradicts(client, pack):
    pages = [client.get("/").content.decode(), client.get("/terms/").content.decode()]

    for page in pages:
        assert "One credit makes one image" not in page
        assert not re.search(r"\$[\d.]+ per image", page)  # a credit is not an image: money is per credit
    assert "1 to 4 credits" in pages[0]  # the shipped table: cheapest 1, dearest 4


# --- /buy: whom the link credits ---------------------------------------------------------------------------


def test_buy_link_names_the_account_and_asks_before_showing_any_buy_button(client, no_packs):
    make_pack(name="A")
    token = buy_token_make(discord_user_id=42, discord_name=discord_name_label(username="ada", display_name="Ada L"))

    page = client.get("/", {"for": token}).content.decode()

    assert "Who are these credits for?" in page
    assert "Ada L (@ada)" in page
    assert 'name="for"' not in page and 'action="/checkout/"' not in page  # nothing to pay until confirmed
    confirm = unescape(re.search(r'href="([^"]+)">Yes, credit Ada L \(@ada\)', page).group(1))
    assert "No, buy a voucher instead" in page

    confirmed = client.get(confirm).content.decode()

    assert f'<input type="hidden" name="for" value="{token}">' in confirmed
    assert "Buying for Ada L (@ada)." in confirmed


def test_buy_link_made_before_names_were_carried_still_works_with_a_general_warning(client, pack):
    token = buy_token_make(discord_user_id=42)

    page = client.get("/", {"for": token}).content.decode()
    confirmed = client.get("/", {"for": token, "confirmed": "1"}).content.decode()

    assert "the Discord account that ran <code>/buy</code>" in page
    assert "their account gets the credits" in page
    assert f'name="for" value="{token}"' in confirmed
    assert buy_token_open(token=token).name == ""


def test_the_name_in_a_buy_token_cannot_be_changed_without_breaking_it(client, pack):
    token = buy_token_make(discord_user_id=42, discord_name="@ada")
    payload, rest = token.split(":", 1)
    forged = buy_token_make(discord_user_id=42, discord_name="@mallory").split(":", 1)[0] + ":" + rest

    page = client.get("/", {"for": forged}).content.decode()

    assert "not valid" in page and "@mallory" not in page and 'name="for"' not in page


def test_discord_name_label():
    assert discord_name_label(username="ada", display_name="Ada L") == "Ada L (@ada)"
    assert discord_name_label(username="ada", display_name="ada") == "@ada"
    assert discord_name_label(username="ada") == "@ada"
    assert len(discord_name_label(username="a" * 40, display_name="b" * 90)) == 100
    assert discord_name_label(username="ada", display_name="Ada\r\nBcc: x@y\x00") == "Ada Bcc: x@y (@ada)"
    token = buy_token_make(discord_user_id=1, discord_name="Ada\nSubject: hi")
    assert buy_token_open(token=token).name == "Ada Subject: hi"  # one line, whoever made the token


# --- receipt, invite, footer -------------------------------------------------------------------------------


def test_success_page_is_a_receipt_with_an_invite(
    client, fake_stripe, pack, settings, django_capture_on_commit_callbacks
):
    settings.DISCORD_INVITE_URL = "https://discord.gg/pixelforge"
    settings.SUPPORT_CONTACT = "help@pixelforge.test"
    settings.LEGAL_ENTITY = "Pixel Forge Ltd"
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id, email="ada@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        page = client.get("/checkout/success/", {"session_id": order.stripe_session_id}).content.decode()

    order.refresh_from_db()
    receipt = re.sub(
        r"\s+", " ", re.sub(r"<[^>]+>", " ", page.split('class="summary receipt"', 1)[1].split("</dl>")[0])
    )
    assert f"Order #{order.pk}" in receipt
    assert f"Date {order.paid_at:%-d %B %Y}" in receipt
    assert "Pack Creator" in receipt and "Credits 150" in receipt and "Amount paid $12.00" in receipt
    assert "Sold by Pixel Forge Ltd" in receipt
    assert 'href="https://discord.gg/pixelforge"' in page and "Open our Discord server" in page
    assert 'href="mailto:help@pixelforge.test"' in page
    # The email carries the same receipt, the invite and the legal pages.
    (email,) = mail.outbox
    assert f"Order:   #{order.pk}" in email.body and "Amount:  $12.00" in email.body
    assert "https://discord.gg/pixelforge" in email.body
    for path in ("/terms/", "/privacy/", "/refunds/"):
        assert f"http://127.0.0.1:8000{path}" in email.body
        assert f"http://127.0.0.1:8000{path}" in email.alternatives[0][0]


def test_buy_purchase_email_says_whom_it_credited_and_has_no_code(
    client, fake_stripe, pack, django_capture_on_commit_callbacks
):
    order = start_checkout(client, pack, **{"for": buy_token_make(discord_user_id=5, discord_name="Ada (@ada)")})
    fake_stripe.mark_paid(order.stripe_session_id, email="ada@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    (email,) = mail.outbox
    code = Voucher.objects.get(order=order).code
    assert email.subject == "150 image credits added to Ada (@ada)"
    assert "150 image credits were credited to Ada (@ada)." in email.body
    assert code not in email.body and code not in email.alternatives[0][0]


def test_footer_links_the_legal_pages_and_no_longer_promises_a_voucher_email(client, pack, settings):
    settings.SUPPORT_CONTACT = "https://help.pixelforge.test/"

    for url in ("/", "/terms/", "/checkout/cancel/"):
        page = client.get(url).content.decode()
        assert "Reply to your voucher email" not in page
        for path in ("/terms/", "/privacy/", "/refunds/"):
            assert f'href="{path}"' in page
        assert 'href="https://help.pixelforge.test/"' in page


def test_without_a_support_contact_the_footer_offers_no_broken_contact(client, pack, settings):
    settings.SUPPORT_CONTACT = ""

    page = client.get("/").content.decode()

    assert "Questions about an order?" not in page and "mailto:" not in page


def test_shop_name_is_used_in_header_and_title(client, pack, settings):
    settings.SHOP_NAME = "Pixel Forge"

    page = client.get("/").content.decode()

    assert "<title>Buy image credits · Pixel Forge</title>" in page
    assert "✦</span> Pixel Forge</a>" in page


# --- legal pages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, heading", [("terms", "Terms of service"), ("privacy", "Privacy policy"), ("refunds", "Refund policy")]
)
def test_legal_pages_have_sensible_defaults_filled_in_from_settings(client, settings, kind, heading):
    settings.SHOP_NAME, settings.LEGAL_ENTITY, settings.SUPPORT_CONTACT = "Pixel Forge", "PF Ltd", "help@pf.test"

    response = client.get(f"/{kind}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert f'<h1 id="legal-title">{heading}</h1>' in page
    assert "help@pf.test" in page and "{support_contact}" not in page and "{shop_name}" not in page
    assert "<h2>" in page  # the seeded wording has sections


def test_operator_wording_is_shown_escaped_and_an_empty_body_falls_back(client):
    LegalPage.objects.filter(kind="refunds").update(
        title="Refunds", body="## Our promise\n\nAsk within <b>30 days</b>.\n\n- one\n- two"
    )

    page = client.get("/refunds/").content.decode()

    assert "<h2>Our promise</h2>" in page
    assert "<p>Ask within &lt;b&gt;30 days&lt;/b&gt;.</p>" in page
    assert "<ul><li>one</li><li>two</li></ul>" in page
    assert "Last updated" in page

    LegalPage.objects.filter(kind="refunds").update(body="  ")
    assert "Unused credits" in client.get("/refunds/").content.decode()  # the default wording


def test_operator_edits_legal_pages_in_the_admin_but_cannot_delete_them(operator):
    page = LegalPage.objects.get(kind="terms")
    url = reverse("admin:storefront_legalpage_change", args=[page.pk])

    response = operator.post(url, {"title": "Terms", "body": "Be nice.\n\nThat's all."})

    assert response.status_code == 302
    assert "<p>Be nice.</p>" in operator.get("/terms/").content.decode()
    assert operator.get(reverse("admin:storefront_legalpage_add")).status_code == 403
    assert (
        operator.post(reverse("admin:storefront_legalpage_delete", args=[page.pk]), {"post": "yes"}).status_code == 403
    )
    assert LegalPage.objects.count() == 3


# --- the sample gallery -----------------------------------------------------------------------------------


def test_seedgallery_fills_an_empty_gallery_with_placeholder_images_once(client, pack):
    call_command("seedgallery", "--if-empty")
    call_command("seedgallery", "--if-empty")

    samples = list(SampleImage.objects.all())
    page = client.get("/").content.decode()
    urls = re.findall(r'<img src="(/gallery/[^"]+)" alt="([^"]+)"', page)
    assert len(samples) == len(urls) == 4
    response = client.get(urls[0][0])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "immutable" in response["Cache-Control"]
    with Image.open(BytesIO(response.content)) as image:
        assert image.format == "PNG" and image.size == (samples[0].width, samples[0].height)
    assert urls[0][1] == samples[0].prompt


def test_gallery_image_with_a_wrong_digest_is_not_found(client):
    call_command("seedgallery")
    sample = SampleImage.objects.first()

    assert client.get(f"/gallery/{sample.pk}/{'0' * 64}/").status_code == 404
    assert client.get(f"/gallery/{sample.pk}/{sample.digest}/").status_code == 200


def test_empty_gallery_hides_the_section(client, pack):
    assert "Made with the bot" not in client.get("/").content.decode()


def png_bytes(size=(40, 30)) -> bytes:
    out = BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


def test_operator_uploads_a_sample_image_and_a_non_image_is_refused(operator, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    add = reverse("admin:storefront_sampleimage_add")
    fake = SimpleUploadedFile("evil.png", b"<script>alert(1)</script>", content_type="image/png")
    refused = operator.post(add, {"prompt": "x", "upload": fake, "sort_order": 0, "active": "on"})

    assert refused.status_code == 200 and "not an image we can show" in refused.content.decode()
    assert not SampleImage.objects.exists()

    real = SimpleUploadedFile("fox.png", png_bytes(), content_type="image/png")
    response = operator.post(
        add, {"prompt": "A red fox", "size": "1024x1024", "upload": real, "sort_order": 0, "active": "on"}
    )

    assert response.status_code == 302
    sample = SampleImage.objects.get()
    assert (sample.content_type, sample.width, sample.height) == ("image/png", 40, 30)
    assert 'alt="A red fox"' in operator.get("/").content.decode()
    assert operator.get(reverse("admin:storefront_sampleimage_changelist")).status_code == 200


# --- error pages (DEBUG off, as in production) ---------------------------------------------------------------


def test_unknown_page_gets_the_branded_404(client, settings):
    settings.SHOP_NAME = "Pixel Forge"

    response = client.get("/no-such-page/")

    page = response.content.decode()
    assert response.status_code == 404
    assert "We can't find that page" in page and "Pixel Forge" in page and 'href="/terms/"' in page


def test_wrong_method_gets_the_branded_405_with_its_allow_header(client):
    response = client.put("/checkout/cancel/")

    assert response.status_code == 405
    assert "This page works only from a button" in response.content.decode()
    assert response["Allow"] == "GET"


def test_webhook_405_stays_bare_for_machines(client):
    response = client.get("/stripe/webhook/")

    assert response.status_code == 405 and response.content == b""


def test_a_crashing_page_gets_the_branded_500(client, settings):
    settings.ROOT_URLCONF = "tests.storefront.urls_with_a_broken_page"
    settings.SUPPORT_CONTACT = "help@pf.test"
    client.raise_request_exception = False

    response = client.get("/broken/")

    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in page and "help@pf.test" in page
    assert "RuntimeError" not in page and "tests only" not in page


def test_unknown_checkout_session_is_not_called_a_failed_checkout(client, fake_stripe):
    response = client.get("/checkout/success/", {"session_id": "cs_test_nobody"})

    page = response.content.decode()
    assert response.status_code == 404
    assert "We can't find that order" in page
    assert "We couldn't start that checkout" not in page


def test_get_checkout_keeps_a_buy_link_and_its_confirmation(client):
    token = buy_token_make(discord_user_id=9, discord_name="@ada")

    response = client.get("/checkout/", {"for": token})

    assert response.status_code == 303
    assert response["Location"].startswith("/?for=") and response["Location"].endswith("&confirmed=1")
    assert not Order.objects.exists()


def test_check_deploy_warns_about_a_missing_contact_and_invite(settings):
    from django.core.checks import run_checks

    settings.SUPPORT_CONTACT, settings.DISCORD_INVITE_URL = "", ""
    ids = {message.id for message in run_checks(include_deployment_checks=True)}
    assert {"storefront.W001", "storefront.W002"} <= ids

    settings.SUPPORT_CONTACT, settings.DISCORD_INVITE_URL = "help@pf.test", "https://discord.gg/pf"
    ids = {message.id for message in run_checks(include_deployment_checks=True)}
    assert not ids & {"storefront.W001", "storefront.W002"}


def test_make_run_on_a_taken_port_says_which_port_to_try(settings):
    import socket

    from django.core.management.base import CommandError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=rf"Port {port} is already in use\. .*make run PORT={port + 1}"):
            call_command("rundev", f"127.0.0.1:{port}")
