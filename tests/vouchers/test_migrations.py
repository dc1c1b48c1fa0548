"""The owed-credits migration on a database that already holds clawbacks made by the old full-refund rule."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from vouchers.audit import audit_credits

BEFORE = [("vouchers", "0001_initial")]
AFTER = [("vouchers", "0002_clawbacks_owed_debits")]


@pytest.mark.django_db(transaction=True)
def test_old_clawbacks_get_records_and_the_audit_passes_after_migrating():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Account, Voucher, Entry = (old.get_model("vouchers", m) for m in ("CreditAccount", "Voucher", "LedgerEntry"))
    now = timezone.now()
    account = Account.objects.create(discord_user_id=5, balance=0)
    redeemed = Voucher.objects.create(
        code="AAAA-AAAA-AAAA-AAAA", credits=20, status="redeemed", redeemed_by=account, redeemed_at=now, refunded_at=now
    )
    Entry.objects.create(account=account, delta=20, kind="redeem", voucher=redeemed)
    Entry.objects.create(account=account, delta=-20, kind="clawback", voucher=redeemed)
    voided = Voucher.objects.create(code="BBBB-BBBB-BBBB-BBBB", credits=7, status="void", refunded_at=now)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)

    new = executor.loader.project_state(AFTER).apps
    Clawback = new.get_model("vouchers", "Clawback")
    taken = Clawback.objects.get(voucher_id=redeemed.pk)
    assert (taken.status, taken.credits, taken.taken, taken.owed, taken.account_id) == ("taken", 20, 20, 0, account.pk)
    assert new.get_model("vouchers", "LedgerEntry").objects.get(kind="clawback").clawback_id == taken.pk
    held = Clawback.objects.get(voucher_id=voided.pk)
    assert (held.status, held.voided, held.credits) == ("held", True, 7)
    # The audit is today's code: it reads today's schema, so every later migration (of any app) is applied first,
    # which also leaves the database as the tests after this one expect it.
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    broken = {name: problems for name, problems in audit_credits().items() if problems}
    assert not broken, broken
