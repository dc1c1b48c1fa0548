"""Every page a buyer can reach, in real headless Chromium at desktop and phone widths (and the phone in dark mode),
checked by axe-core.

axe-core (the `axe.min.js` that axe-playwright-python bundles) is injected into each page by Playwright and run
with its default WCAG rules; a serious or critical violation fails the test with axe's own description of it.
Each page is also checked for sideways scrolling and screenshotted to test-artifacts/screenshots/a11y-*.png.

Skipped when /usr/bin/chromium is missing, except under CI=true (see test_browser.require_chromium).
"""

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.core.management import call_command
from django.utils import timezone

from storefront import services
from storefront.models import CreditPack, Order
from storefront.tokens import buy_token_make
from tests.storefront.conftest import make_order, make_pack, screenshot_path
from tests.storefront.test_browser import PHONE, _async_unsafe_allowed, browser  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
# The site follows the system's colour scheme, so the dark palette gets its own contrast check.
WIDTHS = {"desktop": DESKTOP, "phone": PHONE, "phone-dark": {**PHONE, "color_scheme": "dark"}}
BLOCKING_IMPACTS = ("serious", "critical")


@pytest.fixture
def shop_settings(settings):
    """Test-mode payments (DEBUG on) with shop details set, three packs and the placeholder gallery."""
    settings.DEBUG = True
    settings.PAYMENTS_BACKEND = "test"
    settings.CSRF_COOKIE_SECURE = settings.SESSION_COOKIE_SECURE = False
    settings.SHOP_NAME = "Pixel Forge"
    settings.SUPPORT_CONTACT = "help@pixelforge.test"
    settings.DISCORD_INVITE_URL = "https://discord.gg/pixelforge-test"
    settings.LEGAL_ENTITY = "Pixel Forge Ltd"
    CreditPack.objects.all().delete()
    make_pack(name="Starter", credits=50, price_cents=500, sort_order=1)
    make_pack(name="Creator", credits=150, price_cents=1200, sort_order=2)
    make_pack(name="Studio", credits=400, price_cents=2800, sort_order=3)
    # The command runs its own event loop; Playwright's is running in this thread, so it gets a thread of its own.
    seeding = threading.Thread(target=call_command, args=("seedgallery",))
    seeding.start()
    seeding.join(timeout=120)
    return settings


def _order(status: str, *, pay: bool = False, **fields) -> str:
    """A test-mode order in a given state; returns its success-page path."""
    session_id = f"cs_localtest_{status}_{Order.objects.count()}"
    order = make_order(pack=CreditPack.objects.get(name="Creator"), stripe_session_id=session_id, **fields)
    if pay:
        services.order_test_pay(session_id=session_id, email="ada@example.com")
    if status != "paid":
        Order.objects.filter(pk=order.pk).update(status=status, paid_at=timezone.now() if pay else None)
    return f"/checkout/success/?session_id={session_id}"


@dataclass(frozen=True)
class Page:
    """A page and how to reach it: `path` builds the state and returns the URL path; `heading` proves we got there."""

    name: str
    path: Callable[[], str]
    heading: str
    production: bool = False  # served with DEBUG off (the branded error pages)


def _buy_token() -> str:
    return buy_token_make(discord_user_id=4242, discord_name="Ada L (@ada)")


PAGES = [
    Page("home", lambda: "/", "Buy image credits"),
    Page("buy-confirm", lambda: f"/?for={_buy_token()}", "Buy image credits"),  # then "Who are these credits for?"
    Page("buy-confirmed", lambda: f"/?for={_buy_token()}&confirmed=1", "Buy image credits"),
    Page("test-checkout", lambda: f"/checkout/test/{_order('pending').split('=')[1]}/", "TEST MODE – no real payment"),
    Page("voucher", lambda: _order("paid", pay=True), "Thank you! Here is your voucher"),
    Page(
        "credited-to-discord",
        lambda: _order("paid", pay=True, discord_user_id=4242, discord_name="Ada L (@ada)"),
        "Thank you! Your credits are in",
    ),
    Page("processing", lambda: _order("pending"), "Payment processing…"),
    Page("expired", lambda: _order("expired"), "This checkout expired"),
    Page("failed", lambda: _order("failed"), "The payment didn't go through"),
    Page("refunded", lambda: _order("refunded", pay=True), "This order was refunded"),
    Page("cancelled", lambda: "/checkout/cancel/", "Checkout cancelled"),
    Page("unknown-order", lambda: "/checkout/success/?session_id=cs_localtest_nobody", "We can't find that order"),
    Page("terms", lambda: "/terms/", "Terms of service"),
    Page("privacy", lambda: "/privacy/", "Privacy policy"),
    Page("refunds", lambda: "/refunds/", "Refund policy"),
    Page("not-found", lambda: "/no-such-page/", "We can't find that page", production=True),
    Page("wrong-method", lambda: "/checkout/success/#post", "This page works only from a button", production=True),
    Page("form-without-token", lambda: "/checkout/#post-without-token", "Please try that again", production=True),
    Page("server-error", lambda: "/broken/", "Something went wrong on our side", production=True),
]


def axe_blocking_violations(page) -> list[str]:
    """axe-core's serious and critical violations on the page, one readable line each."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at {[n['target'] for n in v['nodes']][:5]}"
        for v in results.response["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]


def open_page(page, base_url: str, path: str) -> None:
    """Go to `path`; `PATH#post` and `PATH#post-without-token` send a form there from the pack list instead
    (with the page's CSRF token, or without it), as a stale or forged form would."""
    if "#post" not in path:
        page.goto(base_url + path)
        return
    path, _, how = path.partition("#")
    page.goto(base_url + "/")
    page.evaluate(
        """([url, withToken]) => {
             const f = document.createElement('form'); f.method = 'post'; f.action = url;
             if (withToken) f.append(document.querySelector('input[name=csrfmiddlewaretoken]').cloneNode());
             document.body.append(f); f.submit(); }""",
        [path, how == "post"],
    )
    page.wait_for_load_state()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("spec", PAGES, ids=[p.name for p in PAGES])
def test_every_page_is_accessible_at_desktop_and_phone_width(browser, live_server, shop_settings, spec, width):  # noqa: F811
    from playwright.sync_api import expect

    if spec.production:
        shop_settings.DEBUG = False
        shop_settings.PAYMENTS_BACKEND = "stripe"
        shop_settings.ROOT_URLCONF = "tests.storefront.urls_with_a_broken_page"
    path = spec.path()
    context = browser.new_context(**WIDTHS[width])
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        open_page(page, live_server.url, path)
        expect(page.get_by_role("heading", level=1, name=spec.heading)).to_be_visible()
        assert page.title().endswith("· Pixel Forge")
        # Every page leads to the legal pages and back to Discord.
        for name in ("Terms", "Privacy", "Refunds"):
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="Discord server", exact=True)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "scrolls sideways"
        # Lazy images load when scrolled to; load them all, and check that every one really is a picture.
        page.evaluate("document.querySelectorAll('img').forEach(img => { img.loading = 'eager'; })")
        page.wait_for_function("[...document.images].every(img => img.complete)")
        broken = page.evaluate("[...document.images].filter(img => !img.naturalWidth).map(img => img.src)")
        assert not broken, broken
        page.screenshot(path=screenshot_path(f"a11y-{spec.name}-{width}"), full_page=True)
        violations = axe_blocking_violations(page)
        assert not violations, "\n".join(violations)
    finally:
        context.close()


def test_the_accessibility_check_itself_catches_a_serious_violation(browser):  # noqa: F811
    page = browser.new_page()
    try:
        page.set_content('<html lang="en"><body><main><img src="x.png"><button></button></main></body></html>')
        violations = axe_blocking_violations(page)
    finally:
        page.close()
    assert any(re.match(r"critical: (image-alt|button-name)", v) for v in violations), violations


def test_processing_page_shows_the_voucher_once_the_payment_clears_without_a_reload_loop(
    browser,  # noqa: F811
    live_server,
    shop_settings,
):
    from playwright.sync_api import expect

    path = _order("pending")
    page = browser.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(live_server.url + path)
        expect(page.get_by_role("heading", level=1, name="Payment processing…")).to_be_visible()
        navigations = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.wait_for_timeout(6_500)  # one background check (5 s) finds nothing new: no reload
        assert navigations == []

        services.order_test_pay(session_id=path.split("=", 1)[1])

        # The next background check comes 10 s after the first (it backs off: 5 s, 10 s, 20 s, ... up to 60 s).
        expect(page.get_by_role("heading", level=1, name="Thank you! Here is your voucher")).to_be_visible(
            timeout=20_000
        )
        assert len(navigations) == 1
    finally:
        page.close()
