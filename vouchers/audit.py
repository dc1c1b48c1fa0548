"""The credit invariants of DESIGN.md, checked against the database. Used by `manage.py auditcredits` and tests.

Each check returns human-readable problems; an empty list means the invariant holds.
"""

from collections import defaultdict

from django.db.models import Count, Q, Sum

from discordbot.models import Generation
from storefront.models import Order
from vouchers.models import CreditAccount, LedgerEntry, Voucher

Kind = LedgerEntry.Kind


def _balances_match_ledger() -> list[str]:
    problems = []
    sums = dict(
        LedgerEntry.objects.values("account_id").annotate(total=Sum("delta")).values_list("account_id", "total")
    )
    for account_id, discord_id, balance in CreditAccount.objects.values_list("pk", "discord_user_id", "balance"):
        total = sums.get(account_id) or 0
        if balance != total:
            problems.append(f"account {discord_id}: balance {balance} but ledger sums to {total}")
    return problems


def _no_negative_balances() -> list[str]:
    return [
        f"account {discord_id}: negative balance {balance}"
        for discord_id, balance in CreditAccount.objects.filter(balance__lt=0).values_list("discord_user_id", "balance")
    ]


def _ledger_signs() -> list[str]:
    bad = LedgerEntry.objects.filter(
        (Q(kind__in=LedgerEntry.POSITIVE_KINDS) & Q(delta__lte=0))
        | (Q(kind__in=LedgerEntry.NEGATIVE_KINDS) & Q(delta__gte=0))
    )
    return [f"ledger entry {e.pk}: kind {e.kind} with delta {e.delta}" for e in bad]


def _vouchers_redeemed_once() -> list[str]:
    problems = []
    redeems = defaultdict(list)
    for voucher_id, account_id, delta in LedgerEntry.objects.filter(kind=Kind.REDEEM).values_list(
        "voucher_id", "account_id", "delta"
    ):
        redeems[voucher_id].append((account_id, delta))
    for pk, code, status, credits, redeemed_by in Voucher.objects.values_list(
        "pk", "code", "status", "credits", "redeemed_by_id"
    ):
        entries = redeems.pop(pk, [])
        if status == Voucher.Status.REDEEMED:
            if entries != [(redeemed_by, credits)]:
                problems.append(f"voucher {code}: redeemed, but its redeem entries are {entries}")
        elif entries:
            problems.append(f"voucher {code}: {status}, yet credited {len(entries)} time(s)")
    for voucher_id, entries in redeems.items():
        problems.append(f"{len(entries)} redeem entr(ies) without a voucher (voucher id {voucher_id})")
    return problems


def _refunds_match_their_charge() -> list[str]:
    problems = []
    for entry in LedgerEntry.objects.filter(kind=Kind.REFUND).select_related("refund_of"):
        origin = entry.refund_of
        if origin is None or origin.kind != Kind.GENERATE:
            problems.append(f"refund entry {entry.pk} does not refund a generation charge")
        elif origin.account_id != entry.account_id or origin.delta != -entry.delta:
            problems.append(f"refund entry {entry.pk} does not mirror charge {origin.pk}")
    return problems


def _generations_settled() -> list[str]:
    """Each generation was charged exactly its cost once; refunded ones were refunded exactly once."""
    problems = []
    charges = defaultdict(list)
    refunds = defaultdict(int)
    for gen_id, kind, delta in LedgerEntry.objects.filter(generation__isnull=False).values_list(
        "generation_id", "kind", "delta"
    ):
        if kind == Kind.GENERATE:
            charges[gen_id].append(delta)
        elif kind == Kind.REFUND:
            refunds[gen_id] += 1
    for pk, status, cost in Generation.objects.values_list("pk", "status", "cost"):
        if charges.get(pk) != [-cost]:
            problems.append(f"generation {pk}: charged {charges.get(pk, [])}, expected one charge of {cost}")
        refunded = refunds.get(pk, 0)
        if status in (Generation.Status.REFUNDED, Generation.Status.FAILED) and refunded != 1:
            problems.append(f"generation {pk}: {status} but refunded {refunded} time(s)")
        if status == Generation.Status.SUCCEEDED and refunded:
            problems.append(f"generation {pk}: delivered yet refunded")
    return problems


def _paid_orders_have_one_voucher() -> list[str]:
    problems = []
    paid = (Order.Status.PAID, Order.Status.REFUNDED)
    for order in Order.objects.annotate(n=Count("voucher")).select_related("voucher"):
        if order.status in paid:
            if order.n != 1:
                problems.append(f"order {order.pk}: {order.status} with {order.n} vouchers")
            elif order.voucher.credits != order.credits:
                problems.append(f"order {order.pk}: voucher worth {order.voucher.credits}, order {order.credits}")
            elif order.status == Order.Status.REFUNDED and order.voucher.refunded_at is None:
                problems.append(f"order {order.pk}: refunded but its voucher was not settled")
        elif order.n:
            problems.append(f"order {order.pk}: {order.status} but has a voucher")
    return problems


def _clawbacks_bounded() -> list[str]:
    problems = []
    totals = LedgerEntry.objects.filter(kind=Kind.CLAWBACK).values("voucher_id").annotate(total=Sum("delta"))
    for row in totals:
        voucher = Voucher.objects.filter(pk=row["voucher_id"]).first()
        if voucher is None or voucher.refunded_at is None:
            problems.append(f"clawback without a refunded voucher (voucher id {row['voucher_id']})")
        elif -row["total"] > voucher.credits:
            problems.append(f"voucher {voucher.code}: clawed back {-row['total']} of {voucher.credits}")
    return problems


CHECKS = {
    "balance equals the sum of its ledger": _balances_match_ledger,
    "no negative balance": _no_negative_balances,
    "ledger signs match their kind": _ledger_signs,
    "each voucher credited at most once, only when redeemed": _vouchers_redeemed_once,
    "refunds mirror their charge": _refunds_match_their_charge,
    "each generation charged once, refunded at most once": _generations_settled,
    "each paid order has exactly one voucher": _paid_orders_have_one_voucher,
    "clawbacks never exceed the voucher": _clawbacks_bounded,
}


def audit_credits() -> dict[str, list[str]]:
    """Run every check; maps each invariant's name to its problems (empty when it holds)."""
    return {name: check() for name, check in CHECKS.items()}
