"""Vouchers, credit accounts and the append-only credit ledger.

Balances move only through `vouchers.services`, which writes a ledger row in the same transaction as every
balance change, so `balance == sum(ledger deltas)` holds at every commit. The database itself refuses a
negative balance (CHECK constraint) and a second refund of the same charge (unique `refund_of`).
"""

from django.db import models
from django.db.models import Q

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
    # Set once when the payment behind the voucher is refunded; claims the clawback exactly once.
    refunded_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

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
    """A Discord member's image credits."""

    discord_user_id = models.BigIntegerField(unique=True)
    balance = models.BigIntegerField(default=0)
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
        ]

    def __str__(self) -> str:
        return f"Discord user {self.discord_user_id}"


class LedgerEntry(models.Model):
    """One credit movement. Append-only: never updated or deleted."""

    class Kind(models.TextChoices):
        REDEEM = "redeem", "Voucher redeemed"
        GENERATE = "generate", "Image generation"
        REFUND = "refund", "Refund"
        GRANT = "grant", "Operator grant"
        CLAWBACK = "clawback", "Payment refunded (clawback)"

    # The sign each kind must carry; checked by the database and by `auditcredits`.
    POSITIVE_KINDS = (Kind.REDEEM, Kind.REFUND, Kind.GRANT)
    NEGATIVE_KINDS = (Kind.GENERATE, Kind.CLAWBACK)

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="ledger")
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
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind__in=["redeem", "refund", "grant"]) & Q(delta__gt=0))
                | (Q(kind__in=["generate", "clawback"]) & Q(delta__lt=0)),
                name="ledgerentry_sign_matches_kind",
            ),
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
