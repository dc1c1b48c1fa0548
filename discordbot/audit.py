"""The bot's contributions to `auditcredits`: every generation's credits are settled exactly once, and delivered
means charged (invariant 11 of DESIGN.md). A request for several images is charged once for all of them; if only
some were delivered, it ends succeeded with exactly one refund of `unit cost x missing images`."""

from collections import defaultdict

from django.db.models import Count, F, Q

from discordbot.models import EntitlementPurchase, Generation
from vouchers.audit import Kind, audit_check
from vouchers.models import Clawback, LedgerEntry


@audit_check("each generation charged once, refunded at most once")
def _generations_charged_once() -> list[str]:
    """Each generation was charged exactly its cost once; refunded ones were refunded exactly once."""
    problems = []
    charges = defaultdict(list)
    refunds = defaultdict(list)
    for gen_id, kind, delta in LedgerEntry.objects.filter(generation__isnull=False).values_list(
        "generation_id", "kind", "delta"
    ):
        if kind == Kind.GENERATE:
            charges[gen_id].append(delta)
        elif kind == Kind.REFUND:
            refunds[gen_id].append(delta)
    rows = Generation.objects.values_list("pk", "status", "cost", "count", "delivered_count")
    for pk, status, cost, count, delivered in rows:
        if charges.get(pk) != [-cost]:
            problems.append(f"generation {pk}: charged {charges.get(pk, [])}, expected one charge of {cost}")
        refunded = refunds.get(pk, [])
        if status in (Generation.Status.REFUNDED, Generation.Status.FAILED):
            if len(refunded) != 1:
                problems.append(f"generation {pk}: {status} but refunded {len(refunded)} time(s)")
            elif refunded != [cost]:
                problems.append(f"generation {pk}: {status} but refunded {refunded[0]} of its {cost} credits")
        if status == Generation.Status.SUCCEEDED:
            missing = count - (count if delivered is None else delivered)
            expected = [cost // count * missing] if missing else []
            if refunded != expected:
                problems.append(
                    f"generation {pk}: delivered {delivered} of {count} but refunded {refunded}, expected {expected}"
                )
    return problems


@audit_check("no generation settled twice")
def _generations_settled_once() -> list[str]:
    """A generation ends delivered (charge stands), refunded, or delivered in part (the missing images refunded),
    never refunded twice, never refunded in full once delivered."""
    problems = []
    whole = Q(delivered_count__isnull=True) | Q(delivered_count=F("count"))
    settled = Generation.objects.annotate(
        refunds=Count("ledger_entries", filter=Q(ledger_entries__kind=Kind.REFUND))
    ).filter(Q(refunds__gt=1) | (Q(refunds__gt=0, status=Generation.Status.SUCCEEDED) & whole))
    for pk, status, refunds in settled.values_list("pk", "status", "refunds"):
        problems.append(f"generation {pk}: {status} and refunded {refunds} time(s): settled twice")
    in_flight_but_refunded = Generation.objects.filter(
        status__in=Generation.IN_FLIGHT, ledger_entries__kind=Kind.REFUND
    ).values_list("pk", flat=True)
    problems += [f"generation {pk}: still in flight yet already refunded" for pk in in_flight_but_refunded]
    return problems


@audit_check("no refunded generation has a delivered message")
def _delivered_means_charged() -> list[str]:
    """Delivered means charged: a generation whose image reached Discord is never refunded."""
    return [
        f"generation {pk}: refunded, yet its image was delivered (message {message_id})"
        for pk, message_id in Generation.objects.filter(
            status=Generation.Status.REFUNDED, delivered_at__isnull=False
        ).values_list("pk", "message_id")
    ]


# --- Discord's own checkout (Premium Apps) -------------------------------------------------------------------------


@audit_check("each Discord purchase credited once, as its pack")
def _entitlements_credited_once() -> list[str]:
    """Every credited entitlement has its own voucher (one-to-one, unique entitlement id) worth the pack's credits
    at purchase time, redeemed once to the buyer; a consumed one was credited; a tombstone credited nothing."""
    problems = []
    purchases = EntitlementPurchase.objects.select_related("voucher__redeemed_by", "pack")
    redeems = dict(
        LedgerEntry.objects.filter(kind=Kind.REDEEM, voucher__entitlement_purchase__isnull=False)
        .values("voucher_id")
        .annotate(n=Count("pk"))
        .values_list("voucher_id", "n")
    )
    for purchase in purchases.iterator(chunk_size=2000):
        name = f"Discord entitlement {purchase.entitlement_id}"
        voucher = purchase.voucher
        if voucher is None:
            if purchase.credits or purchase.consumed_at or purchase.deleted_at is None:
                problems.append(f"{name}: no voucher, yet not a refunded tombstone")
            continue
        if voucher.credits != purchase.credits or purchase.credits <= 0:
            problems.append(f"{name}: voucher worth {voucher.credits}, purchase records {purchase.credits} credits")
        if purchase.pack is None or purchase.pack.discord_sku_id not in (None, purchase.sku_id):
            problems.append(f"{name}: SKU {purchase.sku_id} does not sell its pack")
        if voucher.status != voucher.Status.REDEEMED or voucher.redeemed_by is None:
            problems.append(f"{name}: its voucher is {voucher.status}, not redeemed to the buyer")
        elif voucher.redeemed_by.discord_user_id != purchase.discord_user_id:
            buyer, redeemer = purchase.discord_user_id, voucher.redeemed_by.discord_user_id
            problems.append(f"{name}: credited to {redeemer}, bought by {buyer}")
        if redeems.get(voucher.pk, 0) != 1:
            problems.append(f"{name}: credited {redeems.get(voucher.pk, 0)} time(s)")
    return problems


@audit_check("every refunded Discord purchase clawed back")
def _entitlements_refunds_clawed_back() -> list[str]:
    """A deleted (refunded) entitlement that had been credited has its clawback (cause "entitlement:<id>") for
    all its credits, in force: taken from the balance, the rest owed."""
    problems = []
    refunded = EntitlementPurchase.objects.filter(deleted_at__isnull=False, voucher__isnull=False)
    clawbacks = {
        c.cause: c
        for c in Clawback.objects.filter(cause__in=[p.clawback_cause for p in refunded.only("entitlement_id")])
    }
    for purchase in refunded:
        clawback = clawbacks.get(purchase.clawback_cause)
        if clawback is None:
            problems.append(f"Discord entitlement {purchase.entitlement_id}: refunded but not clawed back")
        elif clawback.voucher_id != purchase.voucher_id or clawback.status == Clawback.Status.RETURNED:
            problems.append(f"Discord entitlement {purchase.entitlement_id}: its clawback is not in force")
        elif clawback.credits != purchase.credits:
            problems.append(
                f"Discord entitlement {purchase.entitlement_id}: clawed back {clawback.credits} of {purchase.credits}"
            )
    return problems
