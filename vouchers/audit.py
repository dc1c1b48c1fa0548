"""The credit invariants of DESIGN.md, checked against the database. Used by `manage.py auditcredits` and tests.

Each check returns human-readable problems; an empty list means the invariant holds. Checks register themselves
with `@audit_check(name)`. This module holds the ledger's own; the other apps contribute theirs from their own
`audit.py` (discovered when the apps load, like `admin.py`), so this app never imports the apps built on it.
"""

from collections import defaultdict
from collections.abc import Callable

from django.db.models import Q, Sum

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


@audit_check("balance equals the sum of its ledger")
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


@audit_check("refunds mirror their charge")
def _refunds_match_their_charge() -> list[str]:
    """A refund gives back its own charge's credits to the same account: all of it, or (a request of several
    images, some not delivered) a positive part of it; the app that charged checks which part (discordbot.audit)."""
    problems = []
    for entry in LedgerEntry.objects.filter(kind=Kind.REFUND).select_related("refund_of"):
        origin = entry.refund_of
        if origin is None or origin.kind != Kind.GENERATE:
            problems.append(f"refund entry {entry.pk} does not refund a generation charge")
        elif origin.account_id != entry.account_id or not 0 < entry.delta <= -origin.delta:
            problems.append(f"refund entry {entry.pk} does not mirror charge {origin.pk}")
    return problems


@audit_check("clawbacks never exceed the voucher")
def _clawbacks_bounded() -> list[str]:
    problems = []
    in_force = (
        Clawback.objects.exclude(status=Clawback.Status.RETURNED).values("voucher_id").annotate(total=Sum("credits"))
    )
    credits = dict(Voucher.objects.values_list("pk", "credits"))
    for row in in_force:
        if row["total"] > credits[row["voucher_id"]]:
            problems.append(
                f"voucher id {row['voucher_id']}: clawbacks claim {row['total']} of {credits[row['voucher_id']]}"
            )
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
    problems = []
    expected: dict[int, int] = defaultdict(int)
    for account_id, owed, cancelled in Clawback.objects.filter(account__isnull=False).values_list(
        "account_id", "owed", "debt_cancelled"
    ):
        expected[account_id] += owed - cancelled
    for account_id, total in (
        LedgerEntry.objects.filter(kind=Kind.REPAY).values_list("account_id").annotate(total=Sum("delta"))
    ):
        expected[account_id] += total
    for account_id, discord_id, owed in CreditAccount.objects.values_list("pk", "discord_user_id", "owed"):
        want = expected.get(account_id, 0)
        if owed != want:
            problems.append(f"account {discord_id}: owes {owed}, but its clawbacks and repayments say {want}")
    return problems


def audit_credits() -> dict[str, list[str]]:
    """Run every check; maps each invariant's name to its problems (empty when it holds)."""
    return {name: check() for name, check in CHECKS.items()}
