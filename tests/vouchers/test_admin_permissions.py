"""Each consequential admin action needs its own permission, on every request path, and writes nothing without it.

The attack from issue 10: a staff user holding only view permissions POSTed "Grant credits" with 1,000,000
credits and "Void vouchers" on a paid voucher. Each path (the action list, a forged action POST, the add forms)
is tried here by such a user, and then by a user holding the one permission the action needs.
"""

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from tests.vouchers.conftest import nothing_written
from vouchers import services
from vouchers.codes import mask_code
from vouchers.models import CreditAccount, LedgerEntry, Voucher

pytestmark = pytest.mark.django_db

VIEW_ONLY = ("vouchers.view_voucher", "vouchers.view_creditaccount", "vouchers.view_ledgerentry")
ACCOUNTS = reverse("admin:vouchers_creditaccount_changelist")
VOUCHERS = reverse("admin:vouchers_voucher_changelist")


def offered_actions(response) -> set[str]:
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


@pytest.fixture
def member() -> CreditAccount:
    services.credits_grant(discord_user_id=4242, amount=1, memo="seed")
    return CreditAccount.objects.get(discord_user_id=4242)


@pytest.fixture
def paid_voucher() -> Voucher:
    return services.voucher_issue(credits=150, note="Order #1")


# --- view-only staff: every path refused, nothing written ------------------------------------------------


def test_view_only_staff_is_not_offered_grant_and_a_forged_grant_is_refused(staff_login, member):
    viewer = staff_login(*VIEW_ONLY)
    assert "grant_credits" not in offered_actions(viewer.get(ACCOUNTS))
    forged = {"action": "grant_credits", "_selected_action": [member.pk], "apply": "1"}

    with nothing_written():
        response = viewer.post(ACCOUNTS, {**forged, "amount": "1000000", "memo": "mine now"})
        asked = viewer.post(ACCOUNTS, {"action": "grant_credits", "_selected_action": [member.pk]})

    assert (response.status_code, asked.status_code) == (403, 403)
    member.refresh_from_db()
    assert member.balance == 1
    assert not LogEntry.objects.exists()


def test_view_only_staff_cannot_grant_through_the_add_form(staff_login, member):
    viewer = staff_login(*VIEW_ONLY)
    add = reverse("admin:vouchers_creditaccount_add")

    with nothing_written():
        assert viewer.get(add).status_code == 403
        response = viewer.post(add, {"discord_user_id": "4242", "amount": "1000000", "memo": "x"})

    assert response.status_code == 403


def test_view_only_staff_is_not_offered_void_and_a_forged_void_is_refused(staff_login, paid_voucher):
    viewer = staff_login(*VIEW_ONLY)
    assert offered_actions(viewer.get(VOUCHERS)) == set()

    with nothing_written():
        response = viewer.post(
            VOUCHERS, {"action": "void_vouchers", "_selected_action": [paid_voucher.pk], "apply": "1", "memo": "x"}
        )
        delete = viewer.post(VOUCHERS, {"action": "delete_selected", "_selected_action": [paid_voucher.pk]})

    assert (response.status_code, delete.status_code) == (403, 403)
    paid_voucher.refresh_from_db()
    assert paid_voucher.status == Voucher.Status.ACTIVE


def test_view_only_staff_cannot_issue_vouchers(staff_login):
    viewer = staff_login(*VIEW_ONLY)
    add = reverse("admin:vouchers_voucher_add")

    with nothing_written():
        assert viewer.get(add).status_code == 403
        response = viewer.post(add, {"credits": "1000000", "note": "for me"})

    assert response.status_code == 403


def test_view_only_staff_cannot_edit_a_voucher_note(staff_login, paid_voucher):
    viewer = staff_login(*VIEW_ONLY)

    with nothing_written():
        response = viewer.post(reverse("admin:vouchers_voucher_change", args=[paid_voucher.pk]), {"note": "x"})

    assert response.status_code == 403


def test_the_builtin_add_permission_alone_does_not_grant_or_issue(staff_login, member):
    # Django's own add_* permissions are not the consequential ones: adding an account IS granting credits.
    adder = staff_login(*VIEW_ONLY, "vouchers.add_creditaccount", "vouchers.add_voucher")

    with nothing_written():
        grant = adder.post(
            reverse("admin:vouchers_creditaccount_add"), {"discord_user_id": "4242", "amount": "5", "memo": "x"}
        )
        issue = adder.post(reverse("admin:vouchers_voucher_add"), {"credits": "5", "note": "x"})

    assert (grant.status_code, issue.status_code) == (403, 403)


def test_one_permission_does_not_open_the_others(staff_login, member, paid_voucher):
    granter = staff_login(*VIEW_ONLY, "vouchers.grant_credits")

    with nothing_written():
        void = granter.post(
            VOUCHERS, {"action": "void_vouchers", "_selected_action": [paid_voucher.pk], "apply": "1", "memo": "x"}
        )
        issue = granter.post(reverse("admin:vouchers_voucher_add"), {"credits": "5", "note": "x"})

    assert (void.status_code, issue.status_code) == (403, 403)


# --- the one permission each action needs: allowed, and attributed ----------------------------------------


def test_grant_permission_grants_and_is_attributed(staff_login, member, assert_audit_clean):
    granter = staff_login(*VIEW_ONLY, "vouchers.grant_credits")
    assert offered_actions(granter.get(ACCOUNTS)) == {"grant_credits"}

    response = granter.post(
        ACCOUNTS,
        {"action": "grant_credits", "_selected_action": [member.pk], "apply": "1", "amount": "7", "memo": "outage"},
    )

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.balance == 8
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.GRANT, delta=7)
    assert entry.memo == "outage (by staff1)"
    log = LogEntry.objects.get()
    assert (log.user.username, log.object_id) == ("staff1", str(member.pk))
    assert "Granted 7 credit(s): outage (by staff1)" in log.change_message
    assert_audit_clean()


def test_grant_permission_grants_through_the_add_form_and_is_logged(staff_login, assert_audit_clean):
    granter = staff_login(*VIEW_ONLY, "vouchers.grant_credits")

    response = granter.post(
        reverse("admin:vouchers_creditaccount_add"), {"discord_user_id": "777", "amount": "3", "memo": "welcome"}
    )

    assert response.status_code == 302
    assert CreditAccount.objects.get(discord_user_id=777).balance == 3
    log = LogEntry.objects.get()
    assert log.user.username == "staff1" and "Granted 3 credit(s): welcome" in log.change_message
    assert_audit_clean()


def test_void_permission_voids_and_is_attributed(staff_login, paid_voucher, assert_audit_clean):
    voider = staff_login(*VIEW_ONLY, "vouchers.void_voucher")
    assert offered_actions(voider.get(VOUCHERS)) == {"void_vouchers"}

    response = voider.post(
        VOUCHERS,
        {"action": "void_vouchers", "_selected_action": [paid_voucher.pk], "apply": "1", "memo": "chargeback"},
    )

    assert response.status_code == 302
    paid_voucher.refresh_from_db()
    assert paid_voucher.status == Voucher.Status.VOID
    assert paid_voucher.note == "Voided: chargeback (by staff1)"
    log = LogEntry.objects.get()
    assert (log.user.username, log.object_id) == ("staff1", str(paid_voucher.pk))
    assert "chargeback" in log.change_message
    assert paid_voucher.code not in log.object_repr  # the log shows the masked code to everyone
    assert_audit_clean()


def test_void_without_a_reason_asks_again_and_writes_nothing(staff_login, paid_voucher):
    voider = staff_login(*VIEW_ONLY, "vouchers.void_voucher")

    with nothing_written():
        response = voider.post(
            VOUCHERS, {"action": "void_vouchers", "_selected_action": [paid_voucher.pk], "apply": "1", "memo": " "}
        )

    assert response.status_code == 200
    assert response.context["form"].errors["memo"]


def test_issue_permission_issues_and_is_attributed(staff_login, assert_audit_clean):
    issuer = staff_login(*VIEW_ONLY, "vouchers.issue_voucher")

    response = issuer.post(reverse("admin:vouchers_voucher_add"), {"credits": "20", "note": "stream giveaway"})

    assert response.status_code == 302
    voucher = Voucher.objects.get()
    assert (voucher.credits, voucher.note) == (20, "stream giveaway (by staff1)")
    log = LogEntry.objects.get()
    assert log.user.username == "staff1" and log.object_id == str(voucher.pk)
    assert_audit_clean()


def test_issuing_requires_a_reason(staff_login):
    issuer = staff_login(*VIEW_ONLY, "vouchers.issue_voucher")

    response = issuer.post(reverse("admin:vouchers_voucher_add"), {"credits": "20", "note": ""})

    assert response.status_code == 200
    assert not Voucher.objects.exists()


# --- codes masked without "see codes" ----------------------------------------------------------------------


@pytest.fixture
def redeemed_voucher() -> Voucher:
    voucher = services.voucher_issue(credits=5, note="Order #9")
    services.voucher_redeem(code=voucher.code, discord_user_id=9090)
    voucher.refresh_from_db()
    return voucher


def pages_showing(client, voucher: Voucher) -> dict[str, str]:
    account = voucher.redeemed_by
    entry = LedgerEntry.objects.get(voucher=voucher)
    urls = {
        "voucher list": VOUCHERS,
        "voucher page": reverse("admin:vouchers_voucher_change", args=[voucher.pk]),
        "voucher history": reverse("admin:vouchers_voucher_history", args=[voucher.pk]),
        "account page": reverse("admin:vouchers_creditaccount_change", args=[account.pk]),
        "ledger list": reverse("admin:vouchers_ledgerentry_changelist"),
        "ledger entry": reverse("admin:vouchers_ledgerentry_change", args=[entry.pk]),
    }
    pages = {}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, name
        pages[name] = response.content.decode()
    return pages


def test_codes_are_masked_everywhere_for_staff_without_see_codes(staff_login, redeemed_voucher):
    viewer = staff_login(*VIEW_ONLY)

    for name, html in pages_showing(viewer, redeemed_voucher).items():
        assert redeemed_voucher.code not in html, name
        assert redeemed_voucher.code[:9] not in html, name
    assert mask_code(redeemed_voucher.code) in pages_showing(viewer, redeemed_voucher)["voucher list"]


def test_codes_are_shown_with_see_codes(staff_login, redeemed_voucher):
    seer = staff_login(*VIEW_ONLY, "vouchers.see_voucher_code")

    pages = pages_showing(seer, redeemed_voucher)

    for name in ["voucher list", "voucher page", "ledger list", "ledger entry", "account page"]:
        assert redeemed_voucher.code in pages[name], name


@pytest.mark.parametrize(
    "url, lookup",
    [(VOUCHERS, "voucher"), (ACCOUNTS, "account"), (reverse("admin:vouchers_ledgerentry_changelist"), "entry")],
)
def test_a_partial_code_finds_nothing_without_see_codes_but_the_whole_code_does(
    staff_login, redeemed_voucher, url, lookup
):
    viewer = staff_login(*VIEW_ONLY)
    code = redeemed_voucher.code
    expected = {
        "voucher": redeemed_voucher,
        "account": redeemed_voucher.redeemed_by,
        "entry": LedgerEntry.objects.get(voucher=redeemed_voucher),
    }[lookup]

    # A substring search would let a viewer recover a code one character at a time.
    partial = viewer.get(url, {"q": code[:6]})
    whole = viewer.get(url, {"q": code.lower().replace("-", " ")})
    seer = staff_login(*VIEW_ONLY, "vouchers.see_voucher_code").get(url, {"q": code[:6]})

    assert list(partial.context["cl"].result_list) == []
    assert list(whole.context["cl"].result_list) == [expected]
    assert list(seer.context["cl"].result_list) == [expected]


# --- the permissions themselves, and the read-only history ---------------------------------------------------------


def test_each_consequential_action_has_its_own_permission():
    from django.contrib.auth.models import Permission

    defined = set(
        Permission.objects.filter(
            codename__in=[
                "issue_voucher",
                "void_voucher",
                "see_voucher_code",
                "grant_credits",
                "debit_credits",
                "refund_order",
                "resend_voucher_email",
                "view_dashboard",
            ]
        ).values_list("content_type__app_label", "codename")
    )
    assert defined == {
        ("vouchers", "issue_voucher"),
        ("vouchers", "void_voucher"),
        ("vouchers", "see_voucher_code"),
        ("vouchers", "grant_credits"),
        ("vouchers", "debit_credits"),
        ("storefront", "refund_order"),
        ("storefront", "resend_voucher_email"),
        ("storefront", "view_dashboard"),
    }


@pytest.mark.parametrize(
    "changelist, view_perm",
    [
        ("admin:vouchers_ledgerentry_changelist", "vouchers.view_ledgerentry"),
        ("admin:storefront_order_changelist", "storefront.view_order"),
        ("admin:storefront_stripeevent_changelist", "storefront.view_stripeevent"),
        ("admin:discordbot_generation_changelist", "discordbot.view_generation"),
        ("admin:storefront_creditpack_changelist", "storefront.view_creditpack"),
    ],
)
def test_a_forged_delete_of_history_is_refused(staff_login, member, changelist, view_perm):
    viewer = staff_login(view_perm)
    entry = LedgerEntry.objects.get()

    with nothing_written():
        response = viewer.post(reverse(changelist), {"action": "delete_selected", "_selected_action": [entry.pk]})

    assert response.status_code == 403
