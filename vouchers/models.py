"""Vouchers, credit accounts and the append-only credit ledger.

Balances move only through `vouchers.services`, which writes a ledger row in the same transaction as every
balance change, so `balance == sum(ledger deltas)` holds at every commit. The database itself refuses a
negative balance (CHECK constraint) and a second refund of the same charge (unique `refund_of`).

Taking back what a refunded or disputed payment bought (a `Clawback`) works like this, and nothing else does:

- What is spendable now (`balance`) is taken at once, as a `clawback` ledger row.
- What cannot be taken now (credits reserved by queued or running generations, or already spent) is added to
  the account's `owed`, a second counter beside `balance` with its own CHECK `owed >= 0`. It is not a ledger
  movement: the balance did not change. The clawback record keeps how much it added (`owed`).
- Every credit that later enters the account (a generation refund, a grant, a redeem, a restore) pays the debt
  first, in the same transaction: its own positive row, then a `repay` row of `-min(owed, credits)` while `owed`
  drops by the same amount. So the balance never goes negative and the ledger still sums to it.
- Giving a clawback back (a dispute won, a refund that failed) cancels what is still owed of it and restores the
  rest (`restore` row), once.

So for every account: `owed == sum(clawback.owed) - sum(clawback.debt_cancelled) - sum(-repay deltas)`, which
`auditcredits` checks. Images already delivered are the buyer's: a debt is only ever paid from credits that
arrive later, never by taking an image back.
"""

from django.db import models
from django.db.models import F, Q

from vouchers.codes import FORMATTED_LENGTH, generate_code, mask_code


class Voucher(models.Model):
    """A code worth `credits`, redeemable once. Issued on payment, or by an operator."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REDEEMED = "redeemed", "Redeemed"
        VOID = "void", "Void"

    code = models.CharField(max_length=FORMATTED_LENGTH, unique=True, default=generate_code, editable=False)
    credits = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    order = models.OneToOneField(
        "storefront.Order", on_delete=models.PROTECT, null=True, blank=True, related_name="voucher"
    )
    redeemed_by = models.ForeignKey(
        "CreditAccount", on_delete=models.PROTECT, null=True, blank=True, related_name="redeemed_vouchers"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)
    # Set by the first clawback (refund or dispute) of the payment behind the voucher; shown to operators.
    refunded_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)  # the admin list's order

    class Meta:
        ordering = ["-created_at"]
        # Consequential operator actions each need their own permission (checked by the admin on every path).
        permissions = [
            ("issue_voucher", "Can issue vouchers"),
            ("void_voucher", "Can void vouchers"),
            ("see_voucher_code", "Can see voucher codes in full"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="voucher_credits_positive"),
            models.CheckConstraint(
                condition=Q(status="redeemed", redeemed_by__isnull=False, redeemed_at__isnull=False)
                | (~Q(status="redeemed") & Q(redeemed_by__isnull=True, redeemed_at__isnull=True)),
                name="voucher_redeemed_fields_consistent",
            ),
        ]

    def __str__(self) -> str:
        # Masked: str() reaches breadcrumbs, related-object links and the admin log, which every operator sees.
        return f"Voucher {mask_code(self.code)}"


class CreditAccount(models.Model):
    """Image credits: `balance` is spendable; `owed` is what clawbacks could not take yet.

    Most accounts are a Discord member's (`kind` member, keyed by `discord_user_id`). A server's wallet is an
    account of `kind` server, keyed by `discord_guild_id` instead (its `discord_user_id` is empty), so every
    lookup by member id never finds a server's wallet. Both move only through the one ledger.
    """

    class Kind(models.TextChoices):
        MEMBER = "member", "Member"
        SERVER = "server", "Server wallet"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.MEMBER)
    discord_user_id = models.BigIntegerField(unique=True, null=True, blank=True)
    discord_guild_id = models.BigIntegerField(unique=True, null=True, blank=True)
    # The member's Discord name as the bot last saw it ("Display (@username)"), for operators; blank until seen.
    discord_name = models.CharField(max_length=100, blank=True, default="")
    balance = models.BigIntegerField(default=0)
    owed = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        permissions = [
            ("grant_credits", "Can grant credits"),
            ("debit_credits", "Can debit or adjust credits"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="creditaccount_balance_non_negative"),
            models.CheckConstraint(condition=Q(owed__gte=0), name="creditaccount_owed_non_negative"),
            models.CheckConstraint(
                condition=Q(kind="member", discord_user_id__isnull=False, discord_guild_id__isnull=True)
                | Q(kind="server", discord_user_id__isnull=True, discord_guild_id__isnull=False),
                name="creditaccount_kind_owner",
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.SERVER:
            name = f"{self.discord_name} " if self.discord_name else ""
            return f"Server wallet {name}({self.discord_guild_id})"
        return (
            f"{self.discord_name} ({self.discord_user_id})"
            if self.discord_name
            else f"Discord user {self.discord_user_id}"
        )


class LedgerEntry(models.Model):
    """One credit movement. Append-only: never updated or deleted."""

    class Kind(models.TextChoices):
        REDEEM = "redeem", "Voucher redeemed"
        GENERATE = "generate", "Image generation"
        REFUND = "refund", "Refund"
        GRANT = "grant", "Operator grant"
        CLAWBACK = "clawback", "Payment refunded or disputed (clawback)"
        REPAY = "repay", "Owed credits repaid"
        RESTORE = "restore", "Clawback given back"
        DEBIT = "debit", "Operator debit"

    # The sign each kind must carry; checked by the database and by `auditcredits`.
    POSITIVE_KINDS = (Kind.REDEEM, Kind.REFUND, Kind.GRANT, Kind.RESTORE)
    NEGATIVE_KINDS = (Kind.GENERATE, Kind.CLAWBACK, Kind.REPAY, Kind.DEBIT)

    # Indexed by `ledger_account_time` (account, created_at, id), which also serves every lookup by account.
    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="ledger", db_index=False)
    delta = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    voucher = models.ForeignKey(Voucher, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries")
    generation = models.ForeignKey(
        "discordbot.Generation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
    )
    refund_of = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="refunded_by"
    )
    # The clawback that a `clawback` or `restore` row takes or gives back.
    clawback = models.ForeignKey(
        "Clawback", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            # A member's entries newest first (the account page, the ledger filtered or searched by member) read
            # in index order: no sort of a big member's hundred thousand rows. `delta` last makes the index cover
            # the audit's per-account sums (balance == sum of the ledger) without reading the table.
            models.Index(fields=["account", "created_at", "id", "delta"], name="ledger_account_time"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind__in=["redeem", "refund", "grant", "restore"]) & Q(delta__gt=0))
                | (Q(kind__in=["generate", "clawback", "repay", "debit"]) & Q(delta__lt=0)),
                name="ledgerentry_kind_sign",
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=["clawback", "restore"]) | Q(clawback__isnull=False),
                name="ledgerentry_clawback_has_record",
            ),
            models.CheckConstraint(condition=~Q(kind="debit") | ~Q(memo=""), name="ledgerentry_debit_has_memo"),
            models.CheckConstraint(
                condition=~Q(kind="refund") | Q(refund_of__isnull=False),
                name="ledgerentry_refund_has_origin",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.delta:+d}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise RuntimeError("Ledger entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RuntimeError("Ledger entries are append-only.")


class Clawback(models.Model):
    """Taking back what one voucher's payment bought, for one cause (a Stripe refund, a dispute). Once per cause.

    On an unredeemed voucher nothing is taken from anyone: a clawback that claims all that is left voids the
    voucher (`voided`), a smaller one is `held` and taken from the redeemer's account in the redeem transaction.
    On a redeemed voucher it is `taken`: `taken` credits from the balance at once, the rest (`owed`) as debt
    (see the module docstring). `returned` gives it back once: the unvoided voucher, or `restored` credits plus
    `debt_cancelled`, which together equal `taken + owed`.
    """

    class Status(models.TextChoices):
        HELD = "held", "Held on the unredeemed voucher"
        TAKEN = "taken", "Taken from the account"
        RETURNED = "returned", "Given back"

    voucher = models.ForeignKey(Voucher, on_delete=models.PROTECT, related_name="clawbacks")
    # Who asked for it, unique: e.g. "refund re_123" or "dispute du_123". Makes every clawback happen once.
    cause = models.CharField(max_length=120, unique=True)
    credits = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices)
    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, null=True, blank=True, related_name="clawbacks"
    )
    voided = models.BooleanField(default=False)
    taken = models.PositiveIntegerField(default=0)
    owed = models.PositiveIntegerField(default=0)
    restored = models.PositiveIntegerField(default=0)
    debt_cancelled = models.PositiveIntegerField(default=0)
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    taken_at = models.DateTimeField(null=True, blank=True)
    returned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="clawback_credits_positive"),
            models.CheckConstraint(
                condition=Q(taken_at__isnull=True) | Q(account__isnull=False, voided=False),
                name="clawback_taken_has_account",
            ),
            models.CheckConstraint(
                condition=Q(taken_at__isnull=True, taken=0, owed=0)
                | Q(taken_at__isnull=False, taken=F("credits") - F("owed")),
                name="clawback_taken_within_credits",
            ),
            models.CheckConstraint(
                condition=Q(restored__lte=F("taken") + F("owed") - F("debt_cancelled")),
                name="clawback_restore_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"Clawback of {self.credits} ({self.cause})"
