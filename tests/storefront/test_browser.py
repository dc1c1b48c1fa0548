"""The purchase in real headless Chromium against the live server, with the test-mode payments backend.

Skipped when /usr/bin/chromium is missing, except under CI=true, where a missing browser fails the run.
Screenshots go to test-artifacts/screenshots/ and are listed at the end of the pytest run.
"""

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from django.core import mail

from storefront.models import CreditPack, Order
from storefront.tokens import buy_token_make
from tests.storefront.conftest import make_pack, screenshot_path
from vouchers.models import CreditAccount, Voucher

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="module")
def _async_unsafe_allowed() -> Iterator[None]:
    # Playwright's sync API runs an event loop in this thread, so Django would refuse the tests' own ORM
    # calls (and pytest-django's flush) as "async context". Test-only; the product never sets this.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


def require_chromium(path: Path, environ: Mapping[str, str]) -> None:
    """Skip without a browser locally; under CI=true a missing browser is a failure, never a silent skip."""
    if path.exists():
        return
    if environ.get("CI") == "true":
        pytest.fail(f"CI=true but {path} is missing: the browser tests must run in CI.")
    pytest.skip(f"{path} is missing (install Debian's chromium to run the browser tests)")


@pytest.fixture(scope="module")
def browser(_async_unsafe_allowed):
    require_chromium(CHROMIUM, os.environ)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shop(settings, live_server) -> str:
    """The live server in test mode (DEBUG on, PAYMENTS_BACKEND=test) with three packs for sale."""
    settings.DEBUG = True
    settings.PAYMENTS_BACKEND = "test"
    settings.CSRF_COOKIE_SECURE = settings.SESSION_COOKIE_SECURE = False  # plain http://localhost
    CreditPack.objects.all().delete()
    make_pack(name="Starter", credits=50, price_cents=500, sort_order=1)
    make_pack(name="Creator", credits=150, price_cents=1200, sort_order=2)
    make_pack(name="Studio", credits=400, price_cents=2800, sort_order=3)
    return live_server.url


@pytest.fixture
def page(browser):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.django_db(transaction=False)
def test_missing_chromium_fails_under_ci_and_skips_locally(tmp_path):
    missing = tmp_path / "chromium"

    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_chromium(missing, {"CI": "true"})
    with pytest.raises(pytest.skip.Exception):
        require_chromium(missing, {})
    require_chromium(Path(__file__), {"CI": "true"})  # present: neither


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_pick_a_pack_pay_in_test_mode_and_see_the_voucher(page, shop):
    from playwright.sync_api import expect

    page.goto(shop + "/")
    expect(page.get_by_role("heading", name="Buy image credits")).to_be_visible()
    expect(page.get_by_text("TEST MODE – no real payment.")).to_be_visible()
    expect(page.get_by_text("$0.08 per credit")).to_be_visible()
    # The stylesheet is served locally (whitenoise / staticfiles) and applied.
    assert page.evaluate("getComputedStyle(document.querySelector('.packs')).display") == "grid"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.screenshot(path=screenshot_path("1-pack-list-desktop"), full_page=True)

    page.get_by_role("button", name=re.compile(r"^Buy Creator")).click()

    expect(page.get_by_role("heading", name="TEST MODE – no real payment")).to_be_visible()
    page.get_by_label(re.compile("Email for the voucher")).fill("newcomer@example.com")
    page.screenshot(path=screenshot_path("2-test-mode-checkout"), full_page=True)
    page.get_by_role("button", name=re.compile(r"^Pay \$12\.00")).click()

    expect(page.get_by_role("heading", name="Thank you! Here is your voucher")).to_be_visible()
    order = Order.objects.get()
    voucher = Voucher.objects.get(order=order)
    expect(page.locator("#voucher-code")).to_have_text(voucher.code)
    expect(page.get_by_text(f"/redeem code:{voucher.code}")).to_be_visible()
    assert (order.status, order.email, voucher.credits) == ("paid", "newcomer@example.com", 150)
    copy = page.get_by_role("button", name="Copy code")
    expect(copy).to_be_visible()  # revealed by the script
    copy.click()
    expect(page.get_by_role("status").filter(has_text="Copied!")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == voucher.code
    page.screenshot(path=screenshot_path("3-voucher-desktop"), full_page=True)
    assert [m.to for m in mail.outbox] == [["newcomer@example.com"]]
    assert voucher.code in mail.outbox[0].body

    page.reload()  # the page stays reloadable, and shows the same voucher
    expect(page.locator("#voucher-code")).to_have_text(voucher.code)
    assert Voucher.objects.count() == 1


def test_cancel_path_takes_no_payment(page, shop):
    from playwright.sync_api import expect

    page.goto(shop + "/")
    page.get_by_role("button", name=re.compile(r"^Buy Starter")).click()
    page.get_by_role("button", name="Cancel").click()

    expect(page.get_by_role("heading", name="Checkout cancelled")).to_be_visible()
    expect(page.get_by_text("No payment was taken")).to_be_visible()
    page.screenshot(path=screenshot_path("4-cancelled"), full_page=True)
    order = Order.objects.get()
    assert order.status == "pending"
    assert not Voucher.objects.exists()

    page.get_by_role("link", name="Back to the packs").click()
    expect(page.get_by_role("heading", name="Credit packs")).to_be_visible()


def test_phone_width_is_usable_end_to_end(browser, shop):
    from playwright.sync_api import expect

    context = browser.new_context(**PHONE)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(shop + "/")
        assert no_horizontal_scroll(page)
        for button in page.get_by_role("button", name=re.compile(r"^Buy ")).all():
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box
            assert box["height"] >= 44, box  # a comfortable touch target
        page.screenshot(path=screenshot_path("5-pack-list-phone"), full_page=True)

        page.get_by_role("button", name=re.compile(r"^Buy Studio")).tap()
        expect(page.get_by_role("heading", name="TEST MODE – no real payment")).to_be_visible()
        assert no_horizontal_scroll(page)
        page.screenshot(path=screenshot_path("6-test-mode-checkout-phone"), full_page=True)
        page.get_by_role("button", name=re.compile(r"^Pay ")).tap()

        expect(page.get_by_role("heading", name="Thank you! Here is your voucher")).to_be_visible()
        code = page.locator("#voucher-code")
        expect(code).to_have_text(Voucher.objects.get().code)
        box = code.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box  # the whole code is on screen
        assert no_horizontal_scroll(page)
        page.screenshot(path=screenshot_path("7-voucher-phone"), full_page=True)
    finally:
        context.close()


def test_purchase_works_without_javascript(browser, shop):
    from playwright.sync_api import expect

    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(shop + "/")
        page.get_by_role("button", name=re.compile(r"^Buy Starter")).click()
        page.get_by_role("button", name=re.compile(r"^Pay ")).click()

        expect(page.get_by_role("heading", name="Thank you! Here is your voucher")).to_be_visible()
        expect(page.locator("#voucher-code")).to_have_text(Voucher.objects.get().code)
        expect(page.get_by_role("button", name="Copy code")).to_be_hidden()  # enhancement only
        page.screenshot(path=screenshot_path("8-voucher-no-javascript"), full_page=True)
    finally:
        context.close()


def test_buy_link_from_discord_names_the_account_asks_and_credits_it(page, shop):
    from playwright.sync_api import expect

    page.goto(shop + "/?for=" + buy_token_make(discord_user_id=555000111, discord_name="Ada L (@ada)"))
    expect(page.get_by_role("heading", name="Who are these credits for?")).to_be_visible()
    expect(page.get_by_text("Ada L (@ada)").first).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"^Buy "))).to_have_count(0)  # nothing to pay yet
    page.get_by_role("link", name="Yes, credit Ada L (@ada)").click()

    expect(page.get_by_text("Buying for Ada L (@ada).")).to_be_visible()
    page.get_by_role("button", name=re.compile(r"^Buy Creator")).click()
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()

    expect(page.get_by_text("150 credits were credited to Ada L (@ada).")).to_be_visible()
    voucher = Voucher.objects.get()
    expect(page.get_by_text(voucher.code)).to_have_count(0)  # credited already: no code to copy
    expect(page.get_by_role("button", name="Copy code")).to_have_count(0)
    page.screenshot(path=screenshot_path("9-discord-buy-link"), full_page=True)
    assert CreditAccount.objects.get(discord_user_id=555000111).balance == 150
    assert voucher.status == "redeemed"
