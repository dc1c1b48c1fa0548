"""Reads that several callers share (the bot's /balance and /history, the admin, the audit)."""

from vouchers.models import CreditAccount, LedgerEntry


def account_balance(*, discord_user_id: int) -> int:
    """The member's balance; 0 for a member who has no account yet."""
    balance = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("balance", flat=True).first()
    return balance or 0


def account_owed(*, discord_user_id: int) -> int:
    """Credits the member owes: what refunds or chargebacks could not take back yet (paid first from new credits)."""
    owed = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("owed", flat=True).first()
    return owed or 0


def ledger_history(*, discord_user_id: int, limit: int = 10) -> list[LedgerEntry]:
    """The member's most recent credit movements, newest first."""
    return list(
        LedgerEntry.objects.filter(account__discord_user_id=discord_user_id)
        .select_related("voucher")
        .order_by("-created_at", "-id")[:limit]
    )
