"""The credit invariants of DESIGN.md, checked against the database. Used by `manage.py auditcredits` and tests.

Each check returns human-readable problems; an empty list means the invariant holds. Every check is a few SQL
aggregates (GROUP BY, conditional counts, joins on indexed keys) that return only the rows breaking an invariant:
Python never loops over the ledger, so a full pass costs a few scans of each table (linear in rows, memory flat)
instead of a million Python tuples. Checks register themselves
with `@audit_check(name)`. This module holds the ledger's own; the other apps contribute theirs from their own
`audit.py` (discovered when the apps load, like `admin.py`), so this app never imports the apps built on it.
"""

from collections import defaultdict
from collections.abc import Callable

from django.db.models import Count, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

Kind = LedgerEntry.Kind
Check = Callable[[], list[str]]

# Invariant name -> check, in registration order (this app's first, then each app's in INSTALLED_APPS order).
CHECKS: dict[str, Check] = {}


def audit_check(name: str) -> Callable[[Check], Check]:
    """Register a check under the invariant's name, as `auditcredits` prints it."""

    def register(check: Check) -> Check:
        if CHECKS.get(name, check) is not check:
            raise ValueError(f"Two audit checks are named {name!r}.")
        CHECKS[name] = check
        return check

    return register


def _ledger_sum(**filters) -> Subquery:
    """The sum of one account's ledger deltas (matching `filters`), 0 when none: read by the account index."""
    rows = LedgerEntry.objects.filter(account_id=OuterRef("pk"), **filters).order_by().values("account_id")
    return Coalesce(Subquery(rows.annotate(total=Sum("delta")).values("total")), Value(0))


@audit_check("balance equals the sum of its ledger")
def _balances_match_ledger() -> list[str]:
    wrong = (
        CreditAccount.objects.annotate(total=_ledger_sum())
        .exclude(balance=F("total"))
        .values_list("discord_user_id", "balance", "total")
    )
    return [
        f"account {discord_id}: balance {balance} but ledger sums to {total}" for discord_id, balance, total in wrong
    ]


@audit_check("no negative balance")
def _no_negative_balances() -> list[str]:
    return [
        f"account {discord_id}: negative balance {balance}"
        for discord_id, balance in CreditAccount.objects.filter(balance__lt=0).values_list("discord_user_id", "balance")
    ]


@audit_check("ledger signs match their kind")
def _ledger_signs() -> list[str]:
    bad = LedgerEntry.objects.filter(
        (Q(kind__in=LedgerEntry.POSITIVE_KINDS) & Q(delta__lte=0))
        | (Q(kind__in=LedgerEntry.NEGATIVE_KINDS) & Q(delta__gte=0))
    )
    return [f"ledger entry {e.pk}: kind {e.kind} with delta {e.delta}" for e in bad]


@audit_check("each voucher credited at most once, only when redeemed")
def _vouchers_redeemed_once() -> list[str]:
    problems = []
    redeem = Q(ledger_entries__kind=Kind.REDEEM)
    counted = Voucher.objects.annotate(
        redeems=Count("ledger_entries", filter=redeem),
        exact=Count(
            "ledger_entries",
            filter=redeem & Q(ledger_entries__account_id=F("redeemed_by_id"), ledger_entries__delta=F("credits")),
        ),
    )
    wrong = counted.filter(
        (Q(status=Voucher.Status.REDEEMED) & ~Q(redeems=1, exact=1))
        | (~Q(status=Voucher.Status.REDEEMED) & Q(redeems__gt=0))
    )
    for pk, code, status, redeems in wrong.values_list("pk", "code", "status", "redeems"):
        if status == Voucher.Status.REDEEMED:
            entries = list(
                LedgerEntry.objects.filter(voucher_id=pk, kind=Kind.REDEEM)
                .order_by("pk")
                .values_list("account_id", "delta")
            )
            problems.append(f"voucher {code}: redeemed, but its redeem entries are {entries}")
        else:
            problems.append(f"voucher {code}: {status}, yet credited {redeems} time(s)")
    orphans = LedgerEntry.objects.filter(kind=Kind.REDEEM, voucher__isnull=True).count()
    if orphans:
        problems.append(f"{orphans} redeem entr(ies) without a voucher (voucher id None)")
    return problems


@audit_check("refunds mirror their charge")
def _refunds_match_their_charge() -> list[str]:
    """A refund gives back its own charge's credits to the same account: all of it, or (a request of several
    images, some not delivered) a positive part of it; the app that charged checks which part (discordbot.audit)."""
    refunds = LedgerEntry.objects.filter(kind=Kind.REFUND)
    not_of_a_charge = refunds.filter(Q(refund_of__isnull=True) | ~Q(refund_of__kind=Kind.GENERATE))
    problems = [
        f"refund entry {pk} does not refund a generation charge" for pk in not_of_a_charge.values_list("pk", flat=True)
    ]
    not_mirrored = refunds.filter(refund_of__kind=Kind.GENERATE).filter(
        ~Q(refund_of__account_id=F("account_id")) | Q(delta__lte=0) | Q(delta__gt=-F("refund_of__delta"))
    )
    problems += [
        f"refund entry {pk} does not mirror charge {origin}"
        for pk, origin in not_mirrored.values_list("pk", "refund_of_id")
    ]
    return problems


@audit_check("clawbacks never exceed the voucher")
def _clawbacks_bounded() -> list[str]:
    problems = []
    over = (
        Clawback.objects.exclude(status=Clawback.Status.RETURNED)
        .values("voucher_id", "voucher__credits")
        .annotate(total=Sum("credits"))
        .filter(total__gt=F("voucher__credits"))
        .order_by("voucher_id")
    )
    for row in over:
        problems.append(f"voucher id {row['voucher_id']}: clawbacks claim {row['total']} of {row['voucher__credits']}")
    for clawback in Clawback.objects.filter(status=Clawback.Status.HELD, voided=True).select_related("voucher"):
        if clawback.voucher.status != Voucher.Status.VOID:
            problems.append(f"clawback {clawback.pk} voided its voucher, which is {clawback.voucher.status}")
    return problems


@audit_check("each clawback is in the ledger as recorded")
def _clawbacks_match_ledger() -> list[str]:
    problems = []
    moved: dict[tuple[int, str], int] = defaultdict(int)
    for clawback_id, kind, delta in LedgerEntry.objects.filter(kind__in=[Kind.CLAWBACK, Kind.RESTORE]).values_list(
        "clawback_id", "kind", "delta"
    ):
        moved[(clawback_id, kind)] += delta
    for cb in Clawback.objects.select_related("voucher"):
        if -moved.pop((cb.pk, Kind.CLAWBACK), 0) != cb.taken:
            problems.append(f"clawback {cb.pk} ({cb.cause}): took {cb.taken}, but its ledger rows say otherwise")
        if moved.pop((cb.pk, Kind.RESTORE), 0) != cb.restored:
            problems.append(f"clawback {cb.pk} ({cb.cause}): restored {cb.restored}, but its ledger rows say otherwise")
        if (
            cb.status == Clawback.Status.RETURNED
            and cb.account_id
            and cb.restored + cb.debt_cancelled != cb.taken + cb.owed
        ):
            problems.append(
                f"clawback {cb.pk} ({cb.cause}): returned {cb.restored + cb.debt_cancelled} of {cb.taken + cb.owed}"
            )
        if cb.status == Clawback.Status.HELD and cb.voucher.status == Voucher.Status.REDEEMED and not cb.voided:
            problems.append(f"clawback {cb.pk} ({cb.cause}): held, but its voucher was redeemed without taking it")
    for (clawback_id, kind), total in moved.items():
        problems.append(f"{kind} entries of {total} without a clawback record (clawback id {clawback_id})")
    return problems


@audit_check("what is owed is what clawbacks could not take, less repayments")
def _owed_matches_clawbacks() -> list[str]:
    debts = (
        Clawback.objects.filter(account_id=OuterRef("pk"))
        .order_by()
        .values("account_id")
        .annotate(total=Sum(F("owed") - F("debt_cancelled")))
        .values("total")
    )
    # Only accounts that owe, had a clawback or repaid can be wrong: every other account must owe 0 and does.
    concerned = (
        ~Q(owed=0)
        | Q(pk__in=Clawback.objects.filter(account__isnull=False).values("account_id"))
        | Q(pk__in=LedgerEntry.objects.filter(kind=Kind.REPAY).values("account_id"))
    )
    wrong = (
        CreditAccount.objects.filter(concerned)
        .annotate(want=Coalesce(Subquery(debts), Value(0)) + _ledger_sum(kind=Kind.REPAY))
        .exclude(owed=F("want"))
        .values_list("discord_user_id", "owed", "want")
    )
    # An account outside `concerned` owes 0 (the filter says so) and has nothing that says otherwise.
    return [
        f"account {discord_id}: owes {owed}, but its clawbacks and repayments say {want}"
        for discord_id, owed, want in wrong
    ]


def audit_credits() -> dict[str, list[str]]:
    """Run every check; maps each invariant's name to its problems (empty when it holds)."""
    return {name: check() for name, check in CHECKS.items()}
