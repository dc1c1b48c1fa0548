"""The credit invariants of DESIGN.md, checked against the database. Used by `manage.py auditcredits` and tests.

Each check returns human-readable problems; an empty list means the invariant holds. Every check is a few SQL
aggregates (GROUP BY, conditional counts, joins on indexed keys) that return only the rows breaking an invariant:
Python never loops over the ledger, so a full pass costs a few scans of each table (linear in rows, memory flat)
instead of a million Python tuples.

`audit_credits(since=...)` (`auditcredits --since 1d`) checks a window instead: each check that takes `since` looks
only at what was written or changed since then (ledger rows, the accounts they moved, with their whole ledger summed,
vouchers, clawbacks, orders, generations), so its cost follows the activity of the window, not the size of the
history. A check without a `since` parameter (another app's, say) runs in full either way. Checks register themselves
with `@audit_check(name)`. This module holds the ledger's own; the other apps contribute theirs from their own
`audit.py` (discovered when the apps load, like `admin.py`), so this app never imports the apps built on it.
"""

import inspect
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

Kind = LedgerEntry.Kind
Check = Callable[..., list[str]]  # () -> problems, or (since: datetime | None = None) -> problems

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


def moved_since(since: datetime) -> QuerySet[LedgerEntry]:
    """Ledger rows written at or after `since` (the ledger's created_at index)."""
    return LedgerEntry.objects.filter(created_at__gte=since)


def _ledger_sum(**filters) -> Subquery:
    """The sum of one account's ledger deltas (matching `filters`), 0 when none: read by the account index."""
    rows = LedgerEntry.objects.filter(account_id=OuterRef("pk"), **filters).order_by().values("account_id")
    return Coalesce(Subquery(rows.annotate(total=Sum("delta")).values("total")), Value(0))


@audit_check("balance equals the sum of its ledger")
def _balances_match_ledger(since: datetime | None = None) -> list[str]:
    accounts = CreditAccount.objects.all()
    if since is not None:  # the accounts the window moved, each with its whole ledger summed
        accounts = accounts.filter(pk__in=moved_since(since).values("account_id"))
    wrong = (
        accounts.annotate(total=_ledger_sum())
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
def _ledger_signs(since: datetime | None = None) -> list[str]:
    rows = LedgerEntry.objects.all() if since is None else moved_since(since)
    bad = rows.filter(
        (Q(kind__in=LedgerEntry.POSITIVE_KINDS) & Q(delta__lte=0))
        | (Q(kind__in=LedgerEntry.NEGATIVE_KINDS) & Q(delta__gte=0))
    )
    return [f"ledger entry {e.pk}: kind {e.kind} with delta {e.delta}" for e in bad]


@audit_check("each voucher credited at most once, only when redeemed")
def _vouchers_redeemed_once(since: datetime | None = None) -> list[str]:
    problems = []
    redeem = Q(ledger_entries__kind=Kind.REDEEM)
    vouchers, rows = Voucher.objects.all(), LedgerEntry.objects.all()
    if since is not None:
        rows = moved_since(since)
        vouchers = vouchers.filter(
            Q(created_at__gte=since)
            | Q(redeemed_at__gte=since)
            | Q(pk__in=rows.filter(kind=Kind.REDEEM).values("voucher_id"))
        )
    counted = vouchers.annotate(
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
    orphans = rows.filter(kind=Kind.REDEEM, voucher__isnull=True).count()
    if orphans:
        problems.append(f"{orphans} redeem entr(ies) without a voucher (voucher id None)")
    return problems


@audit_check("refunds mirror their charge")
def _refunds_match_their_charge(since: datetime | None = None) -> list[str]:
    """A refund gives back its own charge's credits to the same account: all of it, or (a request of several
    images, some not delivered) a positive part of it; the app that charged checks which part (discordbot.audit)."""
    refunds = (LedgerEntry.objects.all() if since is None else moved_since(since)).filter(kind=Kind.REFUND)
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
def _clawbacks_match_ledger(since: datetime | None = None) -> list[str]:
    problems = []
    moved: dict[tuple[int, str], int] = defaultdict(int)
    clawbacks = Clawback.objects.all()
    rows = LedgerEntry.objects.filter(kind__in=[Kind.CLAWBACK, Kind.RESTORE])
    if since is not None:  # clawbacks made, taken or given back in the window, or whose rows are in it
        clawbacks = clawbacks.filter(
            Q(created_at__gte=since)
            | Q(taken_at__gte=since)
            | Q(returned_at__gte=since)
            | Q(pk__in=moved_since(since).filter(clawback__isnull=False).values("clawback_id"))
        )
        rows = rows.filter(clawback__in=clawbacks)
    for clawback_id, kind, delta in rows.values_list("clawback_id", "kind", "delta"):
        moved[(clawback_id, kind)] += delta
    for cb in clawbacks.select_related("voucher"):
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
def _owed_matches_clawbacks(since: datetime | None = None) -> list[str]:
    debts = (
        Clawback.objects.filter(account_id=OuterRef("pk"))
        .order_by()
        .values("account_id")
        .annotate(total=Sum(F("owed") - F("debt_cancelled")))
        .values("total")
    )
    # Repayments are rare: one scan of the ledger for them, summed here (a GROUP BY account would walk the account
    # index and read every row of the table out of order to find them).
    repaid: dict[int, int] = defaultdict(int)
    for account_id, delta in LedgerEntry.objects.filter(kind=Kind.REPAY).values_list("account_id", "delta"):
        repaid[account_id] += delta
    # Only accounts that owe, had a clawback or repaid can be wrong: every other account must owe 0 and does.
    concerned = ~Q(owed=0) | Q(pk__in=Clawback.objects.filter(account__isnull=False).values("account_id"))
    accounts = CreditAccount.objects.filter(concerned | Q(pk__in=list(repaid)))
    if since is not None:  # debts move with the ledger (a clawback's take, a repayment) or a clawback given back
        accounts = accounts.filter(
            Q(pk__in=moved_since(since).values("account_id"))
            | Q(pk__in=Clawback.objects.filter(returned_at__gte=since).values("account_id"))
        )
    rows = accounts.annotate(debt=Coalesce(Subquery(debts), Value(0))).values_list(
        "pk", "discord_user_id", "owed", "debt"
    )
    # An account outside these owes 0 (the filter says so) and has nothing that says otherwise.
    return [
        f"account {discord_id}: owes {owed}, but its clawbacks and repayments say {debt + repaid.get(pk, 0)}"
        for pk, discord_id, owed, debt in rows
        if owed != debt + repaid.get(pk, 0)
    ]


def audit_credits(*, since: datetime | None = None) -> dict[str, list[str]]:
    """Run every check; maps each invariant's name to its problems (empty when it holds). With `since`, each
    check that takes it looks only at the window (see the module docstring); the others run in full."""
    results = {}
    for name, check in CHECKS.items():
        windowed = since is not None and "since" in inspect.signature(check).parameters
        results[name] = check(since=since) if windowed else check()
    return results
