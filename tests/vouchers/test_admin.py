"""The operator admin: finding things, issuing and voiding vouchers, granting credits through the services."""

import pytest
from django.urls import reverse

from vouchers import services
from vouchers.codes import normalize_code
from vouchers.models import CreditAccount, LedgerEntry, Voucher

pytestmark = pytest.mark.django_db


def test_admin_index_lists_every_model(operator):
    page = operator.get(reverse("admin:index")).content.decode()
    for label in ["Vouchers", "Credit accounts", "Ledger entries"]:
        assert label in page


def test_issuing_from_the_admin_generates_a_code_through_the_service(operator):
    response = operator.post(reverse("admin:vouchers_voucher_add"), {"credits": 25, "note": "giveaway"})
    assert response.status_code == 302
    voucher = Voucher.objects.get()
    assert normalize_code(voucher.code) == voucher.code
    assert (voucher.credits, voucher.note, voucher.status) == (25, "giveaway (by operator)", Voucher.Status.ACTIVE)


@pytest.mark.parametrize("credits", ["0", "-5", "abc", "10000000"])
def test_issuing_bad_credits_shows_a_form_error_and_writes_nothing(operator, credits):
    response = operator.post(reverse("admin:vouchers_voucher_add"), {"credits": credits, "note": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["credits"]
    assert not Voucher.objects.exists()


def test_voucher_search_finds_a_code_typed_the_way_customers_type_it(operator):
    wanted = services.voucher_issue(credits=5)
    services.voucher_issue(credits=5)
    sloppy = " " + wanted.code.lower().replace("-", " ") + " "
    response = operator.get(reverse("admin:vouchers_voucher_changelist"), {"q": sloppy})
    assert list(response.context["cl"].result_list) == [wanted]


def test_voucher_search_by_redeemer_discord_id_and_status_filter(operator):
    redeemed = services.voucher_issue(credits=5)
    services.voucher_redeem(code=redeemed.code, discord_user_id=123456789012345678)
    services.voucher_issue(credits=7)
    by_id = operator.get(reverse("admin:vouchers_voucher_changelist"), {"q": "123456789012345678"})
    assert list(by_id.context["cl"].result_list) == [redeemed]
    by_status = operator.get(reverse("admin:vouchers_voucher_changelist"), {"status__exact": "redeemed"})
    assert list(by_status.context["cl"].result_list) == [redeemed]


def test_void_action_voids_active_vouchers_and_refuses_redeemed_ones(operator):
    active = services.voucher_issue(credits=5)
    redeemed = services.voucher_issue(credits=5)
    services.voucher_redeem(code=redeemed.code, discord_user_id=42)
    url = reverse("admin:vouchers_voucher_changelist")
    selected = {"action": "void_vouchers", "_selected_action": [active.pk, redeemed.pk]}
    asks = operator.post(url, selected)
    assert asks.status_code == 200 and b"Reason" in asks.content
    assert Voucher.objects.filter(status=Voucher.Status.VOID).count() == 0  # asking wrote nothing
    response = operator.post(url, {**selected, "apply": "1", "memo": "fraud report #12"}, follow=True)
    active.refresh_from_db()
    redeemed.refresh_from_db()
    assert active.status == Voucher.Status.VOID
    assert redeemed.status == Voucher.Status.REDEEMED
    texts = [str(m) for m in response.context["messages"]]
    assert any("Voided 1 voucher" in t for t in texts)
    assert any(redeemed.code in t and "can't be voided" in t for t in texts)
    assert active.note == "Voided: fraud report #12 (by operator)"


def test_vouchers_cannot_be_deleted_from_the_admin(operator):
    voucher = services.voucher_issue(credits=5)
    response = operator.post(reverse("admin:vouchers_voucher_delete", args=[voucher.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert Voucher.objects.filter(pk=voucher.pk).exists()


def test_grant_action_asks_for_amount_and_memo_then_writes_ledger_rows(operator, assert_audit_clean):
    a = services.account_get_or_create(discord_user_id=1001)
    b = services.account_get_or_create(discord_user_id=1002)
    url = reverse("admin:vouchers_creditaccount_changelist")
    form_page = operator.post(url, {"action": "grant_credits", "_selected_action": [a.pk, b.pk]})
    assert form_page.status_code == 200 and b"Grant credits" in form_page.content
    assert not LedgerEntry.objects.exists()

    operator.post(
        url,
        {"action": "grant_credits", "_selected_action": [a.pk, b.pk], "apply": "1", "amount": "3", "memo": "outage"},
    )
    assert sorted(CreditAccount.objects.values_list("balance", flat=True)) == [3, 3]
    entries = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.GRANT)
    assert entries.count() == 2
    assert all(e.memo.startswith("outage (by operator)") for e in entries)
    assert_audit_clean()


@pytest.mark.parametrize("amount,memo", [("0", "why"), ("-1", "why"), ("5", "")])
def test_grant_action_with_bad_input_shows_errors_and_grants_nothing(operator, amount, memo):
    account = services.account_get_or_create(discord_user_id=1001)
    response = operator.post(
        reverse("admin:vouchers_creditaccount_changelist"),
        {"action": "grant_credits", "_selected_action": [account.pk], "apply": "1", "amount": amount, "memo": memo},
    )
    assert response.status_code == 200
    assert response.context["form"].errors
    assert not LedgerEntry.objects.exists()


def test_adding_an_account_grants_credits_to_a_new_member(operator, assert_audit_clean):
    response = operator.post(
        reverse("admin:vouchers_creditaccount_add"),
        {"discord_user_id": "555000111", "amount": "10", "memo": "welcome gift"},
    )
    assert response.status_code == 302
    account = CreditAccount.objects.get(discord_user_id=555000111)
    assert account.balance == 10
    assert account.ledger.get().memo.startswith("welcome gift")
    # The same form on an existing member adds to their account rather than failing.
    operator.post(
        reverse("admin:vouchers_creditaccount_add"),
        {"discord_user_id": "555000111", "amount": "5", "memo": "more"},
    )
    account.refresh_from_db()
    assert account.balance == 15
    assert_audit_clean()


def test_account_page_shows_its_ledger_inline_read_only(operator):
    services.credits_grant(discord_user_id=77, amount=4, memo="hello ledger")
    account = CreditAccount.objects.get(discord_user_id=77)
    page = operator.get(reverse("admin:vouchers_creditaccount_change", args=[account.pk]))
    assert page.status_code == 200
    assert b"hello ledger" in page.content
    assert b'name="ledger-0-delta"' not in page.content  # shown, not editable


def test_ledger_is_read_only_in_the_admin(operator):
    entry = services.credits_grant(discord_user_id=77, amount=4, memo="x")
    assert operator.get(reverse("admin:vouchers_ledgerentry_add")).status_code == 403
    assert (
        operator.post(reverse("admin:vouchers_ledgerentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    )
    change = operator.post(reverse("admin:vouchers_ledgerentry_change", args=[entry.pk]), {"delta": "999"})
    assert change.status_code == 403
    entry.refresh_from_db()
    assert entry.delta == 4
    search = operator.get(reverse("admin:vouchers_ledgerentry_changelist"), {"q": "77"})
    assert list(search.context["cl"].result_list) == [entry]
