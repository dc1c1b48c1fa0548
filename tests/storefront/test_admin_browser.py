"""The back office in real headless Chromium at 1366 px: the dashboard and the main lists, screenshotted.

Checks what the screenshots are for: codes on one line, the important columns visible without scrolling sideways,
no Save button on pages where nothing can be saved, the shop's name in the header, charts drawn without a CDN.
Screenshots go to test-artifacts/screenshots/admin-*.png (listed at the end of the run).
"""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from storefront.models import Order
from tests.storefront.conftest import screenshot_path
from tests.storefront.test_browser import _async_unsafe_allowed, browser  # noqa: F401  (fixtures)
from tests.storefront.test_dashboard import ALICE, history  # noqa: F401  (fixture and a member)
from vouchers.codes import mask_code
from vouchers.models import CreditAccount, LedgerEntry, Voucher

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"viewport": {"width": 1366, "height": 768}}
PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture
def site(settings, live_server) -> str:
    settings.CSRF_COOKIE_SECURE = settings.SESSION_COOKIE_SECURE = False  # plain http://localhost
    settings.SHOP_NAME = "Pixel Forge"
    return live_server.url


def logged_in_page(browser, site: str, username: str):  # noqa: F811
    context = browser.new_context(**DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(site + reverse("admin:login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#site-name")
    return page


@pytest.fixture
def admin_page(browser, site, history):  # noqa: F811
    get_user_model().objects.create_superuser("boss", "boss@example.com", PASSWORD)
    page = logged_in_page(browser, site, "boss")
    yield page
    page.context.close()


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def headers_on_screen(page) -> list[str]:
    """Column headers that end beyond the right edge of the window (should be none)."""
    return page.evaluate(
        "[...document.querySelectorAll('#result_list thead th')]"
        ".filter(th => th.getBoundingClientRect().right > window.innerWidth).map(th => th.textContent.trim())"
    )


def single_line(page, selector: str) -> list[str]:
    """Texts in `selector` that wrap onto more than one line."""
    return page.evaluate(
        """sel => [...document.querySelectorAll(sel)].filter(el => {
            const range = document.createRange(); range.selectNodeContents(el);
            const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            return lines.size > 1;
        }).map(el => el.textContent)""",
        selector,
    )


def test_dashboard_at_1366(admin_page, site):
    from playwright.sync_api import expect

    admin_page.goto(site + reverse("admin:dashboard") + "?start=2026-11-01&end=2026-11-30")

    expect(admin_page.locator("#site-name")).to_have_text("Pixel Forge admin")
    expect(admin_page.get_by_role("heading", name="Money at a glance")).to_be_visible()
    expect(admin_page.locator("#credits-sold strong")).to_have_text("200")
    expect(admin_page.locator("tr.revenue-usd td.net")).to_have_text("$7.00")
    charts = admin_page.locator("figure.chart svg")
    expect(charts).to_have_count(4)
    assert charts.first.bounding_box()["height"] > 100  # drawn, not collapsed
    assert no_sideways_scroll(admin_page)
    # Everything on the page comes from this server: no CDN, no outside script, font or stylesheet.
    external = admin_page.evaluate(
        "[...document.querySelectorAll('script[src],link[href],img[src]')]"
        ".map(e => e.src || e.href).filter(u => !u.startsWith(location.origin))"
    )
    assert external == []
    admin_page.screenshot(path=screenshot_path("admin-1-dashboard"), full_page=True)


@pytest.mark.parametrize(
    "name, url_name, one_line",
    [
        ("vouchers", "admin:vouchers_voucher_changelist", "#result_list .field-code a"),
        ("orders", "admin:storefront_order_changelist", "#result_list td.field-voucher_code"),
        ("accounts", "admin:vouchers_creditaccount_changelist", "#result_list .field-member"),
        ("ledger", "admin:vouchers_ledgerentry_changelist", "#result_list td.field-code"),
        ("generations", "admin:discordbot_generation_changelist", "#result_list td.field-member"),
    ],
)
def test_main_lists_fit_1366_with_codes_on_one_line(admin_page, site, name, url_name, one_line):
    admin_page.goto(site + reverse(url_name))
    admin_page.screenshot(path=screenshot_path(f"admin-2-{name}"), full_page=True)

    assert admin_page.locator("#result_list tbody tr").count() > 0
    assert admin_page.locator(one_line).count() > 0
    assert single_line(admin_page, one_line) == []
    assert headers_on_screen(admin_page) == []
    assert no_sideways_scroll(admin_page)


def test_read_only_pages_have_no_save_button(admin_page, site):
    order = Order.objects.filter(status="paid").first()
    account = CreditAccount.objects.get(discord_user_id=ALICE)
    entry = LedgerEntry.objects.first()
    pages = {
        "order": reverse("admin:storefront_order_change", args=[order.pk]),
        "account": reverse("admin:vouchers_creditaccount_change", args=[account.pk]),
        "ledger-entry": reverse("admin:vouchers_ledgerentry_change", args=[entry.pk]),
        "generation": reverse("admin:discordbot_generation_change", args=[entry.generation_id or 1]),
    }
    for name, url in pages.items():
        admin_page.goto(site + url)
        assert admin_page.locator("input[type=submit][name^=_save], input[name=_continue]").count() == 0, name
        assert no_sideways_scroll(admin_page), name
        admin_page.screenshot(path=screenshot_path(f"admin-3-{name}-page"), full_page=True)
    # An editable page keeps its Save button: the voucher's note may be changed.
    admin_page.goto(site + reverse("admin:vouchers_voucher_change", args=[Voucher.objects.first().pk]))
    assert admin_page.locator("input[name=_save]").count() == 1


def test_view_only_staff_see_masked_codes_and_no_actions(browser, site, history):  # noqa: F811
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("viewer", "v@example.com", PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_voucher", "view_creditaccount"]))
    page = logged_in_page(browser, site, "viewer")
    try:
        page.goto(site + reverse("admin:vouchers_voucher_changelist"))
        codes = page.locator("#result_list .field-code a").all_text_contents()
        assert codes and all(c.startswith(mask_code("XXXX-XXXX-XXXX-XXXX")[:14]) for c in codes)
        for voucher in Voucher.objects.all():
            assert voucher.code not in page.content()
        assert page.locator("select[name=action]").count() == 0
        page.goto(site + reverse("admin:vouchers_creditaccount_changelist"))
        assert page.locator("select[name=action]").count() == 0
        assert page.get_by_role("link", name="Money at a glance").count() == 0
        page.screenshot(path=screenshot_path("admin-4-view-only-vouchers"), full_page=True)
    finally:
        page.context.close()
