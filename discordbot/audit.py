"""The bot's contributions to `auditcredits`: every generation's credits are settled exactly once."""

from collections import defaultdict

from discordbot.models import Generation
from vouchers.audit import Kind, audit_check
from vouchers.models import LedgerEntry


@audit_check("each generation charged once, refunded at most once")
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
