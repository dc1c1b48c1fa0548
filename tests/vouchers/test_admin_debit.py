"""The "Debit credits" correction: its own permission on every path, a required reason, never below zero,
attributed in the ledger memo and the admin log, and `auditcredits` clean after each."""

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from tests.vouchers.conftest import nothing_written
from vouchers import services
from vouchers.models import CreditAccount, LedgerEntry

pytestmark = pytest.mark.django_db

VIEW_ONLY = ("vouchers.view_voucher", "vouchers.view_creditaccount", "vouchers.view_ledgerentry")
ACCOUNTS = reverse("admin:vouchers_creditaccount_changelist")


def offered_actions(response) -> set[str]:
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


def debit(client, accounts: list[CreditAccount], amount: str, memo: str):
    return client.post(
        ACCOUNTS,
        {
            "action": "debit_credits",
            "_selected_action": [a.pk for a in accounts],
            "apply": "1",
            "amount": amount,
            "memo": memo,
        },
    )


@pytest.fixture
def member(funded) -> CreditAccount:
    return funded(4242, 10)


def test_view_only_staff_is_not_offered_debit_and_a_forged_debit_is_refused(staff_login, member):
    viewer = staff_login(*VIEW_ONLY)
    assert "debit_credits" not in offered_actions(viewer.get(ACCOUNTS))

    with nothing_written():
        forged = debit(viewer, [member], "10", "take it all")
        asked = viewer.post(ACCOUNTS, {"action": "debit_credits", "_selected_action": [member.pk]})

    assert (forged.status_code, asked.status_code) == (403, 403)
    assert not LogEntry.objects.exists()


def test_grant_permission_does_not_open_debit(staff_login, member):
    granter = staff_login(*VIEW_ONLY, "vouchers.grant_credits")
    assert offered_actions(granter.get(ACCOUNTS)) == {"grant_credits"}
    with nothing_written():
        assert debit(granter, [member], "1", "x").status_code == 403


def test_debit_permission_debits_and_is_attributed(staff_login, member, assert_audit_clean):
    debiter = staff_login(*VIEW_ONLY, "vouchers.debit_credits")
    assert offered_actions(debiter.get(ACCOUNTS)) == {"debit_credits"}
    asks = debiter.post(ACCOUNTS, {"action": "debit_credits", "_selected_action": [member.pk]})
    assert asks.status_code == 200 and "Debit credits" in asks.content.decode()

    response = debit(debiter, [member], "4", "granted twice by mistake")

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.balance == 6
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.DEBIT)
    assert (entry.delta, entry.memo) == (-4, "granted twice by mistake (by staff1)")
    log = LogEntry.objects.get()
    assert (log.user.username, log.object_id) == ("staff1", str(member.pk))
    assert "Debited 4 credit(s): granted twice by mistake (by staff1)" in log.change_message
    assert_audit_clean()


@pytest.mark.parametrize("amount, memo", [("4", ""), ("4", "   "), ("0", "why"), ("-3", "why"), ("abc", "why")])
def test_debit_without_a_reason_or_a_positive_amount_asks_again_and_writes_nothing(staff_login, member, amount, memo):
    debiter = staff_login(*VIEW_ONLY, "vouchers.debit_credits")

    with nothing_written():
        response = debit(debiter, [member], amount, memo)

    assert response.status_code == 200 and response.context["form"].errors
    assert not LogEntry.objects.exists()


def test_debit_never_goes_below_zero_and_debits_the_others(staff_login, funded, assert_audit_clean):
    debiter = staff_login(*VIEW_ONLY, "vouchers.debit_credits")
    poor, rich = funded(1, 3), funded(2, 50)

    response = debit(debiter, [poor, rich], "5", "abuse")

    assert response.status_code == 302
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("1: That member's balance is smaller than that." in m for m in messages)
    assert CreditAccount.objects.get(pk=poor.pk).balance == 3
    assert CreditAccount.objects.get(pk=rich.pk).balance == 45
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.DEBIT).count() == 1
    assert LogEntry.objects.get().object_id == str(rich.pk)
    assert_audit_clean()


def test_debit_takes_spendable_credits_only_never_creating_a_debt(staff_login, funded, assert_audit_clean):
    debiter = staff_login(*VIEW_ONLY, "vouchers.debit_credits")
    member = funded(9, 5)
    services.credits_reserve(discord_user_id=9, amount=4)  # reserved by a generation in flight

    with nothing_written():
        debit(debiter, [member], "5", "abuse")

    assert debit(debiter, [member], "1", "abuse").status_code == 302
    member.refresh_from_db()
    assert (member.balance, member.owed) == (0, 0)
    assert_audit_clean()
