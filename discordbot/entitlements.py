"""Discord's own checkout (Premium Apps): credit packs sold as consumable SKUs, and what their entitlements do.

Off until an operator gives a credit pack a Discord SKU id (`CreditPack.discord_sku_id`, in the admin). Then
`/buy` shows Discord's purchase button for each active pack that has one, beside the Stripe link, and the bot
turns each purchase (an entitlement) into credits:

- `entitlement_credit` credits a member once per entitlement: a voucher issued for it, recorded against the
  entitlement id (unique), and redeemed to the buyer, all in one transaction. So the money rules are the ones a
  Stripe `/buy` order follows (any debt is repaid first; `auditcredits` checks the voucher), and a second
  delivery, a reconciliation racing the gateway event, or a second bot process finds the row and credits nothing.
- Only then does the bot consume the entitlement in Discord (which lets the member buy the pack again); when that
  call fails it is retried later (`entitlements_to_consume`), never by crediting again. Discord's list of
  entitlements is read at start-up (`cogs/store.py`) for purchases made while the bot was down.
- `entitlement_claw_back`: Discord deleted the entitlement (a refund). What it bought is taken back under the
  rules of a Stripe refund (`vouchers.services.voucher_claw_back`, cause "entitlement:<id>"): spendable credits
  at once, what was already spent as owed. An entitlement deleted before it was credited leaves a tombstone, so a
  late creation event cannot credit it.

Typed sync functions with keyword-only arguments; the Store cog calls them through `run_service`.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from discordbot.errors import BotError
from discordbot.models import EntitlementPurchase, entitlement_cause
from storefront.models import CreditPack
from vouchers.models import Clawback
from vouchers.services import voucher_claw_back, voucher_issue, voucher_redeem

log = logging.getLogger(__name__)

MAX_SNOWFLAKE = 2**63 - 1


class EntitlementError(BotError):
    """An entitlement that cannot be credited (not a member's, or its SKU sells no pack): left unconsumed."""

    reason = "entitlement"
    default_message = "That purchase could not be credited."


@dataclass(frozen=True)
class StoreSku:
    """A pack sold in Discord: what /buy shows beside its purchase button."""

    sku_id: int
    name: str
    credits: int


@dataclass(frozen=True)
class EntitlementCredit:
    """What `entitlement_credit` found or did. `consume` says whether Discord should now be told to consume it."""

    entitlement_id: int
    credits: int
    credited_now: bool
    consumed: bool  # our record says Discord already acknowledged the consume
    deleted: bool  # refunded: never to be consumed (Discord refuses it anyway)

    @property
    def consume(self) -> bool:
        return not (self.consumed or self.deleted)


def _require_snowflake(value: object, what: str) -> int:
    if type(value) is not int or not 0 < value <= MAX_SNOWFLAKE:
        raise EntitlementError(f"{what} must be a Discord id.", reason="bad_id")
    return value


def store_skus() -> list[StoreSku]:
    """The packs on sale in Discord, in the shop's order: active packs with a SKU id. Empty: the feature is off."""
    packs = CreditPack.objects.filter(active=True, discord_sku_id__isnull=False)
    return [StoreSku(sku_id=p.discord_sku_id, name=p.name, credits=p.credits) for p in packs]


def store_sku_ids() -> list[int]:
    """Every SKU id that credits a pack, active or not (a pack taken off sale still honours what was bought)."""
    return list(
        CreditPack.objects.filter(discord_sku_id__isnull=False).order_by("pk").values_list("discord_sku_id", flat=True)
    )


def _result(purchase: EntitlementPurchase, *, credited_now: bool) -> EntitlementCredit:
    return EntitlementCredit(
        entitlement_id=purchase.entitlement_id,
        credits=purchase.credits,
        credited_now=credited_now,
        consumed=purchase.consumed_at is not None,
        deleted=purchase.deleted_at is not None,
    )


def entitlement_credit(
    *, entitlement_id: int, sku_id: int, discord_user_id: int | None, entitlement_type: int = 1
) -> EntitlementCredit:
    """Credit the buyer of one entitlement with its pack's credits, once; later calls return what was done.

    Raises EntitlementError (nothing written) for an entitlement owned by a server rather than a member, or whose
    SKU sells no pack: it stays unconsumed in Discord, so it is credited once an operator maps the SKU.
    """
    _require_snowflake(entitlement_id, "The entitlement")
    _require_snowflake(sku_id, "The SKU")
    existing = EntitlementPurchase.objects.filter(entitlement_id=entitlement_id).first()
    if existing is not None:
        return _result(existing, credited_now=False)
    if discord_user_id is None:
        raise EntitlementError("Only a member's own purchase is credited (not a server's).", reason="not_a_member")
    _require_snowflake(discord_user_id, "The buyer")
    pack = CreditPack.objects.filter(discord_sku_id=sku_id).first()
    if pack is None:
        raise EntitlementError(f"SKU {sku_id} sells no credit pack.", reason="unknown_sku")
    try:
        # One transaction: the voucher, the record that makes it once per entitlement, and the redeem. A racing
        # caller (the gateway event and the start-up reconciliation, or another bot process) fails on the unique
        # entitlement id and rolls back its voucher with it.
        with transaction.atomic():
            voucher = voucher_issue(credits=pack.credits, note=f"Discord entitlement {entitlement_id}")
            purchase = EntitlementPurchase.objects.create(
                entitlement_id=entitlement_id,
                sku_id=sku_id,
                discord_user_id=discord_user_id,
                entitlement_type=entitlement_type,
                pack=pack,
                credits=pack.credits,
                voucher=voucher,
            )
            voucher_redeem(code=voucher.code, discord_user_id=discord_user_id)
    except IntegrityError:
        existing = EntitlementPurchase.objects.filter(entitlement_id=entitlement_id).first()
        if existing is None:
            raise
        return _result(existing, credited_now=False)
    log.info("Discord entitlement %s credited: %s credits (pack %s)", entitlement_id, pack.credits, pack.pk)
    return _result(purchase, credited_now=True)


def entitlement_mark_consumed(*, entitlement_id: int) -> bool:
    """Record that Discord consumed the entitlement. True the first time."""
    return bool(
        EntitlementPurchase.objects.filter(
            entitlement_id=entitlement_id, voucher__isnull=False, consumed_at__isnull=True
        ).update(consumed_at=timezone.now())
    )


def entitlements_to_consume(*, credited_before: timedelta = timedelta(0), limit: int = 100) -> list[int]:
    """Entitlements credited (longer ago than `credited_before`) but not yet consumed, nor refunded: oldest first."""
    return list(
        EntitlementPurchase.objects.filter(
            voucher__isnull=False,
            consumed_at__isnull=True,
            deleted_at__isnull=True,
            created_at__lte=timezone.now() - credited_before,
        )
        .order_by("created_at", "pk")
        .values_list("entitlement_id", flat=True)[:limit]
    )


def entitlement_claw_back(
    *, entitlement_id: int, sku_id: int, discord_user_id: int | None, entitlement_type: int = 1
) -> Clawback | None:
    """Discord deleted the entitlement (a refund): take back what it bought, once. Returns the clawback, or None
    when nothing had been credited (a tombstone then stops any later credit) or the SKU sells no pack."""
    _require_snowflake(entitlement_id, "The entitlement")
    _require_snowflake(sku_id, "The SKU")
    # Already handled (every connection's reconciliation sees each refund again): answer without a write lock.
    done = EntitlementPurchase.objects.filter(entitlement_id=entitlement_id, deleted_at__isnull=False).first()
    if done is not None:
        return Clawback.objects.filter(cause=entitlement_cause(entitlement_id)).first() if done.voucher_id else None
    now = timezone.now()
    with transaction.atomic():
        purchase = EntitlementPurchase.objects.filter(entitlement_id=entitlement_id).first()
        if purchase is None:
            pack = CreditPack.objects.filter(discord_sku_id=sku_id).first()
            if pack is None:
                return None
            try:
                with transaction.atomic():
                    EntitlementPurchase.objects.create(
                        entitlement_id=entitlement_id,
                        sku_id=sku_id,
                        discord_user_id=discord_user_id,
                        entitlement_type=entitlement_type,
                        pack=pack,
                        deleted_at=now,
                    )
                log.warning("Discord entitlement %s deleted before it was credited: it never will be", entitlement_id)
                return None
            except IntegrityError:  # credited meanwhile by another caller: claw that back below
                purchase = EntitlementPurchase.objects.get(entitlement_id=entitlement_id)
        EntitlementPurchase.objects.filter(pk=purchase.pk, deleted_at__isnull=True).update(deleted_at=now)
        if purchase.voucher_id is None:
            return None
        clawback = voucher_claw_back(
            voucher_id=purchase.voucher_id,
            credits=purchase.credits,
            cause=entitlement_cause(entitlement_id),
            memo=f"Discord refunded entitlement {entitlement_id}",
        )
    if clawback is not None:
        log.warning(
            "Discord entitlement %s refunded: %s credits taken back, %s owed",
            entitlement_id,
            clawback.taken,
            clawback.owed,
        )
    return clawback
