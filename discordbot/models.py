"""Image generations requested in Discord, and the bot processes that make them.

Each generation's cost is a `generate` ledger debit on its account. Each `runbot` process registers a
`BotProcess` row (its identity and heartbeat lease); at most one row is `active` (a partial unique constraint):
that process alone is connected to Discord's gateway and accepts requests. A generation records its `owner`, the
process that accepted it, so other processes settle it only once that owner's lease has expired.
"""

from django.db import models
from django.db.models import F, Q


class Generation(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        # The image is being uploaded to Discord: whether it arrived is known only once Discord answers (or is
        # asked). Never refunded without asking Discord first.
        DELIVERING = "delivering", "Delivering"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"

    # Statuses whose credit is still in flight: settled by the owner, or after its lease expired by another process.
    IN_FLIGHT = (Status.QUEUED, Status.RUNNING, Status.DELIVERING)
    # In flight and certainly not delivered: these may be refunded without asking Discord.
    UNDELIVERED = (Status.QUEUED, Status.RUNNING)

    account = models.ForeignKey("vouchers.CreditAccount", on_delete=models.PROTECT, related_name="generations")
    prompt = models.TextField()
    size = models.CharField(max_length=16, blank=True)
    quality = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=64, blank=True)
    cost = models.PositiveIntegerField()  # the whole request: unit cost x count, all reserved up front
    # generate | edit | variation (vouchers.pricing.IMAGE_OPERATIONS); each priced by image_unit_cost.
    operation = models.CharField(max_length=16, default="generate")
    count = models.PositiveSmallIntegerField(default=1)  # images asked for (1 to IMAGE_MAX_COUNT)
    # Images in the delivered message, recorded when the upload begins (so whoever settles the upload knows);
    # fewer than `count` means the missing ones are refunded when the delivery is recorded (one partial refund).
    delivered_count = models.PositiveSmallIntegerField(null=True, blank=True)
    private = models.BooleanField(default=False)  # the result went to the member only (an ephemeral message)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    # The identity of the bot process that accepted it (BotProcess.identity); empty for one made outside the bot.
    owner = models.CharField(max_length=80, blank=True, db_index=True)
    interaction_id = models.BigIntegerField(null=True, blank=True)
    guild_id = models.BigIntegerField(null=True, blank=True)
    channel_id = models.BigIntegerField(null=True, blank=True)
    # The message that carries (or, while delivering, is being given) the image.
    message_id = models.BigIntegerField(null=True, blank=True)
    # What the image service charged for it, in micro-dollars (from the usage the backend reports and the price
    # table); null until reported. Counted by the dashboard and the daily spend guard.
    image_spend_micros = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gt=0), name="generation_cost_positive"),
            models.CheckConstraint(condition=Q(count__gte=1) & Q(cost__gte=F("count")), name="generation_count_priced"),
            models.CheckConstraint(
                condition=Q(delivered_count__isnull=True)
                | (Q(delivered_count__gte=1) & Q(delivered_count__lte=F("count"))),
                name="generation_delivered_within_count",
            ),
            models.CheckConstraint(
                condition=Q(image_spend_micros__isnull=True) | Q(image_spend_micros__gte=0),
                name="generation_image_spend_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"Generation #{self.pk} ({self.status})"

    @property
    def unit_cost(self) -> int:
        """Credits per image: every image of one request is priced alike."""
        return self.cost // self.count

    @property
    def message_url(self) -> str | None:
        """A link to the image message in Discord, once delivered."""
        if self.status != self.Status.SUCCEEDED or not (self.message_id and self.channel_id):
            return None
        return f"https://discord.com/channels/{self.guild_id or '@me'}/{self.channel_id}/{self.message_id}"


class BotProcess(models.Model):
    """One `runbot` process: its identity and heartbeat lease. At most one is active (holds the bot lease)."""

    identity = models.CharField(max_length=80, unique=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()
    # The process is alive (its generations are its own to settle) until this moment, unless it renews.
    expires_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name_plural = "bot processes"
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_bot_process"),
        ]

    def __str__(self) -> str:
        return f"{self.identity} ({'active' if self.active else 'stand-by'})"


class MemberSettings(models.Model):
    """A member's defaults for image requests (/settings), used for each option a request leaves out.
    Blank (or null) means "the bot's default"."""

    discord_user_id = models.BigIntegerField(unique=True)
    size = models.CharField(max_length=16, blank=True)
    quality = models.CharField(max_length=16, blank=True)
    count = models.PositiveSmallIntegerField(null=True, blank=True)
    private = models.BooleanField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "member settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(count__isnull=True) | (Q(count__gte=1) & Q(count__lte=10)), name="member_settings_count"
            ),
        ]

    def __str__(self) -> str:
        return f"Settings of {self.discord_user_id}"


# --- Discord's own checkout (Premium Apps): credit packs bought as consumable SKUs ---------------------------------


class EntitlementPurchase(models.Model):
    """A credit pack bought in Discord's store: one consumable SKU's entitlement, credited once.

    `discordbot.entitlements.entitlement_credit` makes it in one transaction with a voucher issued for it and
    redeemed to the buyer, so the ledger, `auditcredits` and a refund's clawback treat it like a Stripe order's
    voucher. The unique `entitlement_id` makes crediting happen once, whatever the number of gateway deliveries,
    reconciliations and bot processes. A row without a voucher is a tombstone: Discord deleted (refunded) the
    entitlement before it was credited, so it never will be.
    """

    # Discord's entitlement types that matter here (https://discord.com/developers/docs/resources/entitlement).
    TYPE_NAMES = {1: "purchase", 3: "developer gift", 4: "test-mode purchase", 5: "free purchase", 6: "user gift"}

    entitlement_id = models.BigIntegerField(unique=True)
    sku_id = models.BigIntegerField()
    discord_user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    entitlement_type = models.PositiveSmallIntegerField(default=1)
    pack = models.ForeignKey(
        "storefront.CreditPack", on_delete=models.PROTECT, null=True, blank=True, related_name="entitlement_purchases"
    )
    # Copied from the pack when credited (the pack may change later); the voucher carries the same number.
    credits = models.PositiveIntegerField(default=0)
    voucher = models.OneToOneField(
        "vouchers.Voucher", on_delete=models.PROTECT, null=True, blank=True, related_name="entitlement_purchase"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Discord acknowledged the consume call: the member may buy the SKU again. Null: retried until it is.
    consumed_at = models.DateTimeField(null=True, blank=True)
    # Discord deleted the entitlement (a refund): what it bought was clawed back (cause "entitlement:<id>").
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(voucher__isnull=False) & Q(credits__gt=0) & Q(discord_user_id__isnull=False))
                | (Q(voucher__isnull=True) & Q(credits=0) & Q(deleted_at__isnull=False)),
                name="entitlementpurchase_credited_or_tombstone",
            ),
            models.CheckConstraint(
                condition=Q(consumed_at__isnull=True) | Q(voucher__isnull=False),
                name="entitlementpurchase_consumed_only_when_credited",
            ),
        ]

    def __str__(self) -> str:
        return f"Discord entitlement {self.entitlement_id}"

    @property
    def clawback_cause(self) -> str:
        return entitlement_cause(self.entitlement_id)


def entitlement_cause(entitlement_id: int) -> str:
    """The clawback cause of a refunded entitlement: once per entitlement, like a Stripe refund's."""
    return f"entitlement:{entitlement_id}"
