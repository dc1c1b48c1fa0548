"""The shop's records: credit packs for sale, orders, their refunds and disputes, and the Stripe events we have seen."""

from django.db import models
from django.db.models import Q

from storefront.money import MAX_AMOUNT, SUPPORTED_CURRENCIES, format_money, format_unit_price

# Generous, but far from anything that overflows a 32-bit column or a voucher (vouchers cap one movement at 1M).
MAX_PACK_CREDITS = 1_000_000


class CreditPack(models.Model):
    """A pack of image credits for sale. Editable in the admin; prices are integer cents."""

    name = models.CharField(max_length=80)
    credits = models.PositiveIntegerField()
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    sort_order = models.PositiveIntegerField(default=0)
    # Optional: the consumable SKU in the app's Discord store that sells this pack (Premium Apps). Blank: the pack
    # is sold only through Stripe. The bot's /buy shows Discord's purchase button for it, and credits its
    # entitlements (see discordbot/entitlements.py). Kept after the pack is deactivated, so purchases still credit.
    discord_sku_id = models.BigIntegerField(
        "Discord SKU id",
        null=True,
        blank=True,
        unique=True,
        help_text="A consumable SKU id from the Developer Portal (Monetization > SKUs), at no higher price than here. "
        "Blank: not sold in Discord.",
    )

    class Meta:
        ordering = ["sort_order", "price_cents"]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="creditpack_credits_positive"),
            models.CheckConstraint(condition=Q(price_cents__gt=0), name="creditpack_price_positive"),
            models.CheckConstraint(condition=Q(credits__lte=MAX_PACK_CREDITS), name="creditpack_credits_bounded"),
            # Stripe refuses a unit_amount above 99,999,999 minor units.
            models.CheckConstraint(condition=Q(price_cents__lte=MAX_AMOUNT), name="creditpack_price_bounded"),
            models.CheckConstraint(condition=Q(currency__in=sorted(SUPPORTED_CURRENCIES)), name="creditpack_currency"),
            models.CheckConstraint(condition=Q(discord_sku_id__gt=0), name="creditpack_discord_sku_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.credits} credits)"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        self.currency = (self.currency or "").strip().lower()
        errors = {}
        if self.currency not in SUPPORTED_CURRENCIES:
            errors["currency"] = "Use a three-letter currency code that Stripe supports, e.g. usd, eur, jpy."
        if self.price_cents is not None and not 0 < self.price_cents <= MAX_AMOUNT:
            errors["price_cents"] = f"The price must be 1 to {MAX_AMOUNT:,} in the currency's smallest unit."
        if self.credits is not None and not 0 < self.credits <= MAX_PACK_CREDITS:
            errors["credits"] = f"A pack holds 1 to {MAX_PACK_CREDITS:,} credits."
        if self.discord_sku_id is not None and not 0 < self.discord_sku_id < 2**63:
            errors["discord_sku_id"] = "A Discord SKU id is a positive number (copy it from the Developer Portal)."
        if errors:
            raise ValidationError(errors)

    @property
    def price_display(self) -> str:
        return format_money(self.price_cents, self.currency)

    @property
    def price_per_image_display(self) -> str:
        return format_unit_price(self.price_cents, self.credits, self.currency)


class Order(models.Model):
    """One attempt to buy one pack. Credits and amount are copied at purchase time."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        EXPIRED = "expired", "Expired"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"

    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="orders")
    credits = models.PositiveIntegerField()
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    stripe_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    email = models.EmailField(blank=True, db_index=True)  # the admin finds a whole address exactly
    discord_user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # How the `/buy` member was named when they asked for the link ("Ada (@ada)"), to say whom it credited.
    discord_name = models.CharField(max_length=100, blank=True)
    # A server-bound link (`/server buy`): the credits go to this server's wallet, not to `discord_user_id` (the
    # manager who asked for the link, kept for the record).
    discord_guild_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)  # the admin list's order
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # What Stripe says was paid, recorded at fulfilment; `auditcredits` checks it equals amount and currency.
    amount_paid = models.PositiveIntegerField(null=True, blank=True)
    currency_paid = models.CharField(max_length=3, blank=True)
    # Sum of this order's refunds that have not failed (minor units).
    amount_refunded = models.PositiveIntegerField(default=0)
    # Why a payment naming this order was not fulfilled (wrong amount, currency or mode), for an operator.
    problem = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Consequential operator actions each need their own permission (checked by the admin on every path).
        permissions = [
            ("refund_order", "Can refund orders"),
            ("resend_voucher_email", "Can resend the voucher email"),
            ("view_dashboard", "Can view the money dashboard and export its CSV files"),
        ]

    def __str__(self) -> str:
        return f"Order #{self.pk} ({self.status})"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount_cents, self.currency)


class StripeEvent(models.Model):
    """Each verified Stripe event, recorded once (unique id) before the webhook answers 2xx, then processed once.

    Acknowledge-then-process (storefront/eventqueue.py): the webhook stores the event's object here and answers;
    a processor claims it (a conditional UPDATE that sets `claimed_until`), runs its handler, and marks it
    processed, or keeps the error and schedules the next attempt with a growing delay.
    """

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)  # the admin list's order
    processed_at = models.DateTimeField(null=True, blank=True)
    # How many times a processor claimed it (a failed attempt is tried again after a delay).
    attempts = models.PositiveIntegerField(default=0)
    # The last failure, kept after a later success as a record of what went wrong.
    error = models.TextField(blank=True)
    # The event's `data.object`, as verified; what the handler acts on.
    payload = models.JSONField(default=dict, blank=True)
    # Not tried before this moment (the retry back-off); null once processed.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A processor holds it until then; a claim past this moment is a crashed or killed process's, and is taken over.
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            # The processors' poll: unprocessed events that are due, oldest first.
            models.Index(
                fields=["next_attempt_at"], condition=Q(processed_at__isnull=True), name="stripeevent_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class LegalPage(models.Model):
    """Terms, privacy and refund policy: sensible defaults (seeded), edited by the operator in the admin.

    The body is plain text: a blank line starts a paragraph, `## ` a heading, `- ` a list item. The words
    {shop_name}, {legal_entity}, {support_contact} and {site_url} are filled in from the settings when shown.
    """

    class Kind(models.TextChoices):
        TERMS = "terms", "Terms of service"
        PRIVACY = "privacy", "Privacy policy"
        REFUNDS = "refunds", "Refund policy"

    kind = models.CharField(max_length=16, choices=Kind.choices, unique=True)
    title = models.CharField(max_length=120)
    body = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return self.title


class SampleImage(models.Model):
    """An image in the home page's sample gallery, managed by the operator in the admin.

    The picture is kept in the database, not on a disk: every web container (one host on SQLite, several
    behind a load balancer on PostgreSQL) serves the same gallery with no shared file storage to set up.
    """

    prompt = models.CharField(max_length=300, help_text="The prompt that made it; also the image's alt text.")
    size = models.CharField(max_length=16, blank=True, help_text="e.g. 1024x1024")
    quality = models.CharField(max_length=16, blank=True, help_text="e.g. medium")
    image = models.BinaryField()
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    digest = models.CharField(max_length=64, help_text="SHA-256 of the image, in its URL.")
    active = models.BooleanField(default=True)
    sort_order = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sort_order", "pk"]

    def __str__(self) -> str:
        return self.prompt[:60]


class Refund(models.Model):
    """One Stripe refund of an order's payment: what it clawed back, once, and given back once if it failed."""

    FAILED_STATUSES = ("failed", "canceled")

    stripe_refund_id = models.CharField(max_length=255, unique=True)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    amount = models.PositiveIntegerField()
    status = models.CharField(max_length=32)  # Stripe's: pending, requires_action, succeeded, failed, canceled
    credits = models.PositiveIntegerField(default=0)  # clawed back for it
    applied_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Refund {self.stripe_refund_id} ({self.status})"


class Dispute(models.Model):
    """A chargeback (or inquiry) on an order's payment, as Stripe reports it, and what it did to the credits."""

    OPEN_STATUSES = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")
    RETURNING_STATUSES = ("won", "warning_closed")  # closed in our favour: what was frozen is given back

    class Credits(models.TextChoices):
        NONE = "", "Not yet touched"
        FROZEN = "frozen", "Frozen (taken back while the dispute is open)"
        RETURNED = "returned", "Returned (dispute closed in our favour)"
        FINAL = "final", "Taken for good (dispute lost)"

    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="disputes")
    status = models.CharField(max_length=32)
    reason = models.CharField(max_length=64, blank=True)
    amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    evidence_due_by = models.DateTimeField(null=True, blank=True)
    credits_state = models.CharField(max_length=16, choices=Credits.choices, blank=True, default=Credits.NONE)
    credits_frozen = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Dispute {self.stripe_dispute_id} ({self.status})"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount, self.currency)
