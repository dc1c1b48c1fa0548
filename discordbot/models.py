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

    # Indexed by `generation_account_time` (account, created_at, id), which also serves every lookup by account.
    account = models.ForeignKey(
        "vouchers.CreditAccount", on_delete=models.PROTECT, related_name="generations", db_index=False
    )
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
        indexes = [
            # A member's generations newest first (the list searched by Discord id) without a sort.
            models.Index(fields=["account", "created_at", "id"], name="generation_account_time"),
        ]
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


# --- Per-server rules and server wallets (set by a server's managers with /server, or by operators) -------------


class GuildSettings(models.Model):
    """A Discord server's rules for image requests. No row: the server has no rules (every member, every channel,
    each paying from their own balance), as in a DM."""

    class Moderation(models.TextChoices):
        DEFAULT = "", "The image service's default"
        AUTO = "auto", "auto (standard filtering)"
        LOW = "low", "low (less restrictive filtering)"

    guild_id = models.BigIntegerField(unique=True)
    name = models.CharField(max_length=100, blank=True)  # as the bot last saw it, for operators
    # Channel ids where image commands work; empty: every channel. A thread counts as its parent channel.
    channel_ids = models.JSONField(default=list, blank=True)
    required_role_id = models.BigIntegerField(null=True, blank=True)
    daily_image_cap = models.PositiveIntegerField(null=True, blank=True, help_text="Images per member per day.")
    max_image_cost = models.PositiveIntegerField(null=True, blank=True, help_text="The most one image may cost.")
    # Sent as `moderation` to GPT image models' generations (the SDK's images.generate; edits have no such option).
    moderation = models.CharField(max_length=8, blank=True, choices=Moderation.choices)
    # Credits a day each member may spend from the server's wallet (0: the wallet pays for nobody by default).
    default_allowance = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "server settings"
        verbose_name_plural = "server settings"
        constraints = [
            models.CheckConstraint(condition=Q(moderation__in=["", "auto", "low"]), name="guildsettings_moderation"),
        ]

    def __str__(self) -> str:
        return f"Server {self.name or self.guild_id}"


class GuildMember(models.Model):
    """A member's standing in one server: barred from generating, and/or their own daily allowance."""

    guild_id = models.BigIntegerField()
    discord_user_id = models.BigIntegerField()
    barred = models.BooleanField(default=False)
    allowance = models.PositiveIntegerField(null=True, blank=True, help_text="Overrides the server's default.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "server member"
        constraints = [
            models.UniqueConstraint(fields=["guild_id", "discord_user_id"], name="guildmember_unique"),
        ]

    def __str__(self) -> str:
        return f"Member {self.discord_user_id} of server {self.guild_id}"


class GuildMemberDay(models.Model):
    """A member's use of one server on one day (UTC): images asked for (the daily cap) and credits taken from the
    server's wallet (the allowance). Both rise only by a conditional UPDATE that re-checks the limit, and fall
    only by a refund of what a request counted (`GuildCharge`)."""

    guild_id = models.BigIntegerField()
    discord_user_id = models.BigIntegerField()
    day = models.DateField()
    images = models.PositiveIntegerField(default=0)
    allowance_used = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "server member's day"
        ordering = ["-day", "guild_id", "discord_user_id"]
        constraints = [
            models.UniqueConstraint(fields=["guild_id", "discord_user_id", "day"], name="guildmemberday_unique"),
            models.CheckConstraint(condition=Q(images__gte=0), name="guildmemberday_images_non_negative"),
            models.CheckConstraint(condition=Q(allowance_used__gte=0), name="guildmemberday_allowance_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.discord_user_id} in {self.guild_id} on {self.day}"


class GuildCharge(models.Model):
    """What one request in a server with rules counted against them: its images (the daily cap) and, when the
    server's wallet paid, its credits (the allowance). A refund gives back its share of both, once."""

    generation = models.OneToOneField(Generation, on_delete=models.PROTECT, related_name="guild_charge")
    guild_id = models.BigIntegerField(db_index=True)
    discord_user_id = models.BigIntegerField()
    day = models.DateField()
    images = models.PositiveSmallIntegerField()
    allowance = models.PositiveIntegerField(default=0)  # credits from the allowance; 0: the member paid
    images_returned = models.PositiveSmallIntegerField(default=0)
    allowance_returned = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(images_returned__lte=F("images")), name="guildcharge_images_returned"),
            models.CheckConstraint(
                condition=Q(allowance_returned__lte=F("allowance")), name="guildcharge_allowance_returned"
            ),
        ]

    def __str__(self) -> str:
        return f"Server charge of generation #{self.generation_id}"


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
