"""The bot's contributions to `auditcredits`: every generation's credits are settled exactly once, and delivered
means charged (invariant 11 of DESIGN.md)."""

from collections import defaultdict

from django.db.models import Count, Q

from discordbot.models import Generation
from vouchers.audit import Kind, audit_check
from vouchers.models import LedgerEntry


@audit_check("each generation charged once, refunded at most once")
def _generations_charged_once() -> list[str]:
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
    return problems


@audit_check("no generation settled twice")
def _generations_settled_once() -> list[str]:
    """A generation ends delivered (charge stands) or refunded, never both, never refunded twice."""
    problems = []
    settled = Generation.objects.annotate(
        refunds=Count("ledger_entries", filter=Q(ledger_entries__kind=Kind.REFUND))
    ).filter(Q(refunds__gt=1) | Q(refunds__gt=0, status=Generation.Status.SUCCEEDED))
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
