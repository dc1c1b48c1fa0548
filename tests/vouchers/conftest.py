"""Builders and checks shared by the vouchers tests."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from django.db import connection

from vouchers import services
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher


def db_state() -> dict[str, list[tuple]]:
    """Every row a credit service may write, in a comparable form."""
    return {
        "vouchers": list(
            Voucher.objects.order_by("pk").values_list(
                "pk", "code", "credits", "status", "redeemed_by_id", "redeemed_at", "refunded_at", "note"
            )
        ),
        "accounts": list(CreditAccount.objects.order_by("pk").values_list("pk", "discord_user_id", "balance", "owed")),
        "ledger": list(LedgerEntry.objects.order_by("pk").values_list("pk", "account_id", "delta", "kind")),
        "clawbacks": list(Clawback.objects.order_by("pk").values()),
    }


@contextmanager
def nothing_written() -> Iterator[None]:
    """Asserts that the block leaves vouchers, accounts, balances and the ledger exactly as they were."""
    before = db_state()
    yield
    assert db_state() == before


@contextmanager
def crash_at(matches: Callable[[str, tuple], bool]) -> Iterator[None]:
    """Every statement for which `matches(sql, params)` is true raises instead of running: a process killed there.

    Works on the statements themselves (a `connection.execute_wrapper`), so it needs no knowledge of which
    helper function sends them.
    """

    def wrapper(execute, sql, params, many, context):
        if matches(sql, tuple(params or ())):
            raise RuntimeError("process killed here")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def writes_row(kind: str) -> Callable[[str, tuple], bool]:
    """Matches the statement that inserts a ledger row of `kind` (by the ORM or by raw SQL)."""
    insert = f"INSERT INTO {LedgerEntry._meta.db_table} "
    return lambda sql, params: sql.replace('"', "").startswith(insert) and kind in params


@pytest.fixture
def funded() -> Callable[..., CreditAccount]:
    """`funded(discord_user_id, credits)`: an account holding `credits`, granted through the service."""

    def build(discord_user_id: int, credits: int) -> CreditAccount:
        services.credits_grant(discord_user_id=discord_user_id, amount=credits, memo="test funds")
        return CreditAccount.objects.get(discord_user_id=discord_user_id)

    return build


def child_database_url() -> str:
    """A DATABASE_URL that points another process at the test database this test runs against."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    assert connection.vendor == "postgresql", connection.vendor
    user = quote(settings.get("USER") or "", safe="")
    password = quote(settings.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings['NAME']}"
