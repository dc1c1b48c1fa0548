"""The bot's contributions to `auditcredits`: every generation's credits are settled exactly once, and delivered
means charged (invariant 11 of DESIGN.md). A request for several images is charged once for all of them; if only
some were delivered, it ends succeeded with exactly one refund of `unit cost x missing images`."""

from collections import defaultdict
from datetime import datetime

from django.db.models import Case, Count, F, IntegerField, Q, Sum, Value, When
from django.db.models.functions import Coalesce

from discordbot.models import EntitlementPurchase, Generation, GuildCharge, GuildMemberDay
from vouchers.audit import Kind, audit_check, moved_since
from vouchers.models import Clawback, CreditAccount, LedgerEntry


def _window(since: datetime | None):
    """Every generation, or those made, delivered or finished in the window, or whose credits moved in it."""
    if since is None:
        return Generation.objects.all()
    moved = moved_since(since).filter(generation__isnull=False).values("generation_id")
    changed = Q(created_at__gte=since) | Q(finished_at__gte=since) | Q(delivered_at__gte=since)
    return Generation.objects.filter(changed | Q(pk__in=moved))


@audit_check("each generation charged once, refunded at most once")
def _generations_charged_once(since: datetime | None = None) -> list[str]:
    """Each generation was charged exactly its cost once; refunded ones were refunded exactly once.

    One GROUP BY of generations with their ledger rows (by the ledger's generation index) counts and sums each
    generation's charges and refunds in SQL; only the generations breaking the rule come back to Python, where
    their rows are read again to say what is wrong."""
    charge, refund = Q(ledger_entries__kind=Kind.GENERATE), Q(ledger_entries__kind=Kind.REFUND)
    missing = Case(
        When(delivered_count__isnull=True, then=Value(0)),
        default=F("count") - F("delivered_count"),
        output_field=IntegerField(),
    )
    counted = _window(since).annotate(
        charges=Count("ledger_entries", filter=charge),
        charged=Coalesce(Sum("ledger_entries__delta", filter=charge), Value(0)),
        refunds=Count("ledger_entries", filter=refund),
        refunded=Coalesce(Sum("ledger_entries__delta", filter=refund), Value(0)),
        missing=missing,
    )
    whole_refund = Q(status__in=(Generation.Status.REFUNDED, Generation.Status.FAILED)) & ~Q(
        refunds=1, refunded=F("cost")
    )
    partial = Q(status=Generation.Status.SUCCEEDED, missing__gt=0) & ~Q(
        refunds=1, refunded=F("cost") / F("count") * F("missing")
    )
    whole = Q(status=Generation.Status.SUCCEEDED, missing=0, refunds__gt=0)
    wrong = counted.filter(~Q(charges=1, charged=-F("cost")) | whole_refund | partial | whole)

    problems = []
    for pk, status, cost, count, delivered in wrong.values_list("pk", "status", "cost", "count", "delivered_count"):
        rows = list(LedgerEntry.objects.filter(generation_id=pk).order_by("pk").values_list("kind", "delta"))
        charges = [delta for kind, delta in rows if kind == Kind.GENERATE]
        refunded = [delta for kind, delta in rows if kind == Kind.REFUND]
        if charges != [-cost]:
            problems.append(f"generation {pk}: charged {charges}, expected one charge of {cost}")
        if status in (Generation.Status.REFUNDED, Generation.Status.FAILED):
            if len(refunded) != 1:
                problems.append(f"generation {pk}: {status} but refunded {len(refunded)} time(s)")
            elif refunded != [cost]:
                problems.append(f"generation {pk}: {status} but refunded {refunded[0]} of its {cost} credits")
        if status == Generation.Status.SUCCEEDED:
            missing_images = count - (count if delivered is None else delivered)
            expected = [cost // count * missing_images] if missing_images else []
            if refunded != expected:
                problems.append(
                    f"generation {pk}: delivered {delivered} of {count} but refunded {refunded}, expected {expected}"
                )
    return problems


@audit_check("no generation settled twice")
def _generations_settled_once(since: datetime | None = None) -> list[str]:
    """A generation ends delivered (charge stands), refunded, or delivered in part (the missing images refunded),
    never refunded twice, never refunded in full once delivered."""
    problems = []
    whole = Q(delivered_count__isnull=True) | Q(delivered_count=F("count"))
    settled = (
        _window(since)
        .annotate(refunds=Count("ledger_entries", filter=Q(ledger_entries__kind=Kind.REFUND)))
        .filter(Q(refunds__gt=1) | (Q(refunds__gt=0, status=Generation.Status.SUCCEEDED) & whole))
    )
    for pk, status, refunds in settled.values_list("pk", "status", "refunds"):
        problems.append(f"generation {pk}: {status} and refunded {refunds} time(s): settled twice")
    in_flight_but_refunded = (
        _window(since)
        .filter(status__in=Generation.IN_FLIGHT, ledger_entries__kind=Kind.REFUND)
        .values_list("pk", flat=True)
    )
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


# --- Server wallets and allowances (discordbot.guilds) ----------------------------------------------------------


@audit_check("server wallets pay only within allowances, and refunds give both back")
def _server_charges_match_ledger() -> list[str]:
    """A request counted against a server's rules (`GuildCharge`) was charged to the server's wallet exactly when
    it used the allowance, for exactly that much; what its refunds gave back to the wallet is what it gave back
    to the allowance; and its images counted and returned match the generation's."""
    problems = []
    charges = {
        gen_id: (account_id, kind, guild_id, delta)
        for gen_id, account_id, kind, guild_id, delta in LedgerEntry.objects.filter(
            kind=Kind.GENERATE, generation__guild_charge__isnull=False
        ).values_list("generation_id", "account_id", "account__kind", "account__discord_guild_id", "delta")
    }
    refunds = defaultdict(int)
    for gen_id, delta in LedgerEntry.objects.filter(
        kind=Kind.REFUND, generation__guild_charge__isnull=False
    ).values_list("generation_id", "delta"):
        refunds[gen_id] += delta
    rows = GuildCharge.objects.values_list(
        "generation_id",
        "guild_id",
        "images",
        "allowance",
        "images_returned",
        "allowance_returned",
        "generation__count",
        "generation__status",
        "generation__delivered_count",
    )
    for gen_id, guild_id, images, allowance, images_back, allowance_back, count, status, delivered in rows:
        charge = charges.get(gen_id)
        if charge is None:
            problems.append(f"generation {gen_id}: counted against server {guild_id} but never charged")
            continue
        _, kind, wallet_guild, delta = charge
        if allowance and (kind != CreditAccount.Kind.SERVER or wallet_guild != guild_id or -delta != allowance):
            problems.append(f"generation {gen_id}: used {allowance} of an allowance but was charged {delta} to {kind}")
        if not allowance and kind != CreditAccount.Kind.MEMBER:
            problems.append(f"generation {gen_id}: charged to server {wallet_guild}'s wallet without an allowance")
        if allowance and refunds.get(gen_id, 0) != allowance_back:
            problems.append(
                f"generation {gen_id}: the wallet got back {refunds.get(gen_id, 0)} but the allowance {allowance_back}"
            )
        if images != count:
            problems.append(f"generation {gen_id}: {count} images asked for but {images} counted against the cap")
        expected_back = 0
        if status == Generation.Status.REFUNDED:
            expected_back = count
        elif status == Generation.Status.SUCCEEDED and delivered is not None:
            expected_back = count - delivered
        if images_back != expected_back:
            problems.append(f"generation {gen_id}: {status}, {images_back} images given back, expected {expected_back}")
    wallet_charges = LedgerEntry.objects.filter(kind=Kind.GENERATE, account__kind=CreditAccount.Kind.SERVER).exclude(
        generation__guild_charge__allowance__gt=0
    )
    problems += [
        f"ledger entry {pk}: a wallet charge no allowance accounts for"
        for pk in wallet_charges.values_list("pk", flat=True)
    ]
    return problems


@audit_check("each member's day in a server matches its requests")
def _member_days_match_charges() -> list[str]:
    """A member's images and allowance used on a day are what that day's requests counted, less what refunds
    gave back: the counters move only with their requests."""
    expected = defaultdict(lambda: [0, 0])
    for guild_id, user_id, day, images, allowance in (
        GuildCharge.objects.values("guild_id", "discord_user_id", "day")
        .annotate(
            images=Sum(F("images") - F("images_returned")), allowance=Sum(F("allowance") - F("allowance_returned"))
        )
        .values_list("guild_id", "discord_user_id", "day", "images", "allowance")
    ):
        expected[(guild_id, user_id, day)] = [images, allowance]
    problems = []
    seen = set()
    for guild_id, user_id, day, images, used in GuildMemberDay.objects.values_list(
        "guild_id", "discord_user_id", "day", "images", "allowance_used"
    ):
        key = (guild_id, user_id, day)
        seen.add(key)
        if [images, used] != expected.get(key, [0, 0]):
            problems.append(
                f"member {user_id} in server {guild_id} on {day}: {images} images and {used} allowance used, "
                f"but its requests say {expected.get(key, [0, 0])}"
            )
    problems += [
        f"member {k[1]} in server {k[0]} on {k[2]}: requests counted but no day row"
        for k in expected
        if k not in seen and expected[k] != [0, 0]
    ]
    return problems


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
