"""Property: any sequence of issue/redeem/reserve/refund/grant/debit/void/clawback/return keeps every invariant.

A hypothesis state machine drives the services and keeps a plain-Python model of what the books should say
(balances, voucher states, which charges were refunded, how many ledger rows exist). After every step the
database must match the model exactly and `audit_credits()` must find nothing. Each run is one savepoint,
rolled back at the end, so runs start from an empty database without paying for commits.
"""

from dataclasses import dataclass

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from vouchers import services
from vouchers.audit import audit_credits
from vouchers.codes import generate_code, normalize_code
from vouchers.errors import (
    AlreadyRefunded,
    InsufficientCredits,
    InvalidAmount,
    InvalidCode,
    VoucherAlreadyRedeemed,
    VoucherNotFound,
    VoucherVoid,
)
from vouchers.models import CreditAccount, LedgerEntry, Voucher

MEMBERS = (101, 202, 303)
TYPINGS = {
    "as issued": lambda code: code,
    "lower-case": str.lower,
    "no dashes": lambda code: code.replace("-", ""),
    "spaces": lambda code: code.replace("-", " "),
    "padded": lambda code: f"  {code}\t",
}
BAD_AMOUNTS = (0, -1, -50, True, 1.5, "5", None, services.MAX_CREDITS_PER_MOVEMENT + 1)

members = st.sampled_from(MEMBERS)
amounts = st.integers(min_value=1, max_value=30)
picks = st.integers(min_value=0, max_value=10_000)


@dataclass
class VoucherModel:
    pk: int
    code: str
    credits: int
    status: str = "active"
    redeemed_by: int | None = None
    refunded: bool = False


@dataclass
class ChargeModel:
    entry_id: int
    member: int
    amount: int
    refunded: bool = False


class CreditBooks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._savepoint = transaction.atomic()
        self._savepoint.__enter__()
        self.balances: dict[int, int] = {}  # only members who have an account
        self.owed: dict[int, int] = {}
        self.clawbacks: dict[int, tuple[int, int, int]] = {}  # voucher pk -> (member, taken, owed) while in force
        self.vouchers: list[VoucherModel] = []
        self.charges: list[ChargeModel] = []
        self.ledger_rows = 0

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._savepoint.__exit__(None, None, None)

    def _credit(self, member: int, delta: int) -> None:
        self.balances[member] = self.balances.get(member, 0) + delta
        self.ledger_rows += 1

    def _credit_in(self, member: int, amount: int) -> int:
        """Credits arriving: their row, then the debt paid first (a `repay` row). Returns what was repaid."""
        self._credit(member, amount)
        repaid = min(self.owed.get(member, 0), amount)
        if repaid:
            self.owed[member] -= repaid
            self._credit(member, -repaid)
        return repaid

    # --- rules -------------------------------------------------------------------------------------------

    @rule(credits=amounts)
    def issue(self, credits: int) -> None:
        voucher = services.voucher_issue(credits=credits)
        self.vouchers.append(VoucherModel(pk=voucher.pk, code=voucher.code, credits=credits))

    @precondition(lambda self: self.vouchers)
    @rule(pick=picks, member=members, typing=st.sampled_from(sorted(TYPINGS)))
    def redeem(self, pick: int, member: int, typing: str) -> None:
        voucher = self.vouchers[pick % len(self.vouchers)]
        expected = {"redeemed": VoucherAlreadyRedeemed, "void": VoucherVoid}.get(voucher.status)
        if expected:
            with pytest.raises(expected):
                services.voucher_redeem(code=TYPINGS[typing](voucher.code), discord_user_id=member)
            return
        result = services.voucher_redeem(code=TYPINGS[typing](voucher.code), discord_user_id=member)
        voucher.status, voucher.redeemed_by = "redeemed", member
        repaid = self._credit_in(member, voucher.credits)
        assert (result.credits, result.balance, result.debt_repaid) == (voucher.credits, self.balances[member], repaid)

    @rule(member=members)
    def redeem_unknown_code(self, member: int) -> None:
        code = generate_code()
        with pytest.raises(VoucherNotFound):
            services.voucher_redeem(code=code, discord_user_id=member)

    @rule(member=members, typed=st.text(max_size=24).filter(lambda text: normalize_code(text) is None))
    def redeem_garbage(self, member: int, typed: str) -> None:
        with pytest.raises(InvalidCode):
            services.voucher_redeem(code=typed, discord_user_id=member)

    @rule(member=members, amount=amounts)
    def reserve(self, member: int, amount: int) -> None:
        if self.balances.get(member, 0) < amount:
            with pytest.raises(InsufficientCredits):
                services.credits_reserve(discord_user_id=member, amount=amount)
            return
        entry = services.credits_reserve(discord_user_id=member, amount=amount)
        self._credit(member, -amount)
        self.charges.append(ChargeModel(entry_id=entry.pk, member=member, amount=amount))

    @precondition(lambda self: self.charges)
    @rule(pick=picks)
    def refund(self, pick: int) -> None:
        charge = self.charges[pick % len(self.charges)]
        if charge.refunded:
            with pytest.raises(AlreadyRefunded):
                services.credits_refund(entry_id=charge.entry_id)
            return
        services.credits_refund(entry_id=charge.entry_id)
        charge.refunded = True
        self._credit_in(charge.member, charge.amount)

    @rule(member=members, amount=amounts)
    def grant(self, member: int, amount: int) -> None:
        services.credits_grant(discord_user_id=member, amount=amount, memo="property test")
        self._credit_in(member, amount)

    @rule(member=members, amount=amounts)
    def debit(self, member: int, amount: int) -> None:
        if self.balances.get(member, 0) < amount:
            with pytest.raises(InsufficientCredits):
                services.credits_debit(discord_user_id=member, amount=amount, memo="property test")
            return
        services.credits_debit(discord_user_id=member, amount=amount, memo="property test")
        self._credit(member, -amount)

    @precondition(lambda self: self.vouchers)
    @rule(pick=picks)
    def void(self, pick: int) -> None:
        voucher = self.vouchers[pick % len(self.vouchers)]
        expected = {"redeemed": VoucherAlreadyRedeemed, "void": VoucherVoid}.get(voucher.status)
        if expected:
            with pytest.raises(expected):
                services.voucher_void(code=voucher.code)
            return
        services.voucher_void(code=voucher.code)
        voucher.status = "void"

    @precondition(lambda self: self.vouchers)
    @rule(pick=picks)
    def payment_refunded(self, pick: int) -> None:
        voucher = self.vouchers[pick % len(self.vouchers)]
        outcome = services.voucher_claw_back(voucher_id=voucher.pk, credits=voucher.credits, cause=f"v{voucher.pk}")
        if voucher.refunded:
            return  # the same cause again: nothing
        voucher.refunded = True
        if voucher.status == "active":
            voucher.status = "void"
            assert outcome.voided
        elif voucher.status == "redeemed":
            member = voucher.redeemed_by
            take = min(self.balances[member], voucher.credits)
            assert (outcome.taken, outcome.owed) == (take, voucher.credits - take)
            if take:
                self._credit(member, -take)
            self.owed[member] = self.owed.get(member, 0) + voucher.credits - take
            self.clawbacks[voucher.pk] = (member, take, voucher.credits - take)

    @precondition(lambda self: self.clawbacks)
    @rule(pick=picks)
    def clawback_returned(self, pick: int) -> None:
        """A dispute won: what the clawback took comes back (what is still owed of it is forgiven)."""
        pk = sorted(self.clawbacks)[pick % len(self.clawbacks)]
        member, taken, owed = self.clawbacks.pop(pk)
        cancel = min(owed, self.owed.get(member, 0))
        self.owed[member] = self.owed.get(member, 0) - cancel
        restore = taken + owed - cancel
        returned = services.voucher_claw_back_return(cause=f"v{pk}")
        assert (returned.restored, returned.debt_cancelled) == (restore, cancel)
        if restore:
            self._credit_in(member, restore)

    @rule(service=st.sampled_from(["issue", "reserve", "grant"]), amount=st.sampled_from(BAD_AMOUNTS), member=members)
    def bad_amount(self, service: str, amount: object, member: int) -> None:
        with pytest.raises(InvalidAmount):
            if service == "issue":
                services.voucher_issue(credits=amount)  # type: ignore[arg-type]
            elif service == "reserve":
                services.credits_reserve(discord_user_id=member, amount=amount)  # type: ignore[arg-type]
            else:
                services.credits_grant(discord_user_id=member, amount=amount, memo="x")  # type: ignore[arg-type]

    # --- after every step --------------------------------------------------------------------------------

    @invariant()
    def database_matches_the_model(self) -> None:
        assert dict(CreditAccount.objects.values_list("discord_user_id", "balance")) == self.balances
        owed = {m: o for m, o in CreditAccount.objects.values_list("discord_user_id", "owed") if o}
        assert owed == {m: o for m, o in self.owed.items() if o}
        stored = {
            pk: (code, credits, status, redeemed_by, refunded_at is not None)
            for pk, code, credits, status, redeemed_by, refunded_at in Voucher.objects.values_list(
                "pk", "code", "credits", "status", "redeemed_by__discord_user_id", "refunded_at"
            )
        }
        assert stored == {v.pk: (v.code, v.credits, v.status, v.redeemed_by, v.refunded) for v in self.vouchers}
        assert LedgerEntry.objects.count() == self.ledger_rows
        refunded = set(LedgerEntry.objects.filter(kind="refund").values_list("refund_of_id", flat=True))
        assert refunded == {c.entry_id for c in self.charges if c.refunded}

    @invariant()
    def every_audit_check_passes(self) -> None:
        broken = {name: problems for name, problems in audit_credits().items() if problems}
        assert not broken, broken


@pytest.mark.django_db
def test_random_sequences_of_credit_operations_keep_every_invariant() -> None:
    run_state_machine_as_test(
        CreditBooks,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            database=None,  # the shared working tree gets no .hypothesis/ directory
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
