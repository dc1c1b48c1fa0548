"""The bot's business rules (`discordbot.services`) against the database, without Discord."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from discordbot.errors import GenerationError, RedeemRateLimited
from discordbot.models import BotProcess, Generation
from discordbot.services import (
    bot_lease_acquire,
    bot_lease_release,
    bot_lease_renew,
    bot_process_register,
    generation_deliver_begin,
    generation_fail_and_refund,
    generation_price,
    generation_reserve,
    generation_reserve_again,
    generation_start,
    generation_succeed,
    generations_delivering_orphaned,
    generations_refund_stale,
    redeem_rate_limit_check,
    redeem_rate_limit_record_failure,
    voucher_redeem_limited,
)
from vouchers.errors import InsufficientCredits, VoucherNotFound
from vouchers.models import LedgerEntry
from vouchers.selectors import account_balance
from vouchers.services import voucher_issue

USER = 420_000_000_000_000_001
OTHER = 420_000_000_000_000_002


def reserve(**kwargs):
    return generation_reserve(**{"discord_user_id": USER, "prompt": "a cat", **kwargs})


def refunds_of(generation_id: int) -> int:
    return LedgerEntry.objects.filter(generation_id=generation_id, kind=LedgerEntry.Kind.REFUND).count()


@pytest.mark.django_db
class TestPrice:
    def test_defaults_are_the_first_size_at_medium_quality(self, settings):
        settings.GENERATION_COSTS = {"512x512": {"low": 1, "medium": 2}, "1024x1024": {"medium": 5}}
        assert generation_price() == ("512x512", "medium", 2)
        assert generation_price(size="1024x1024") == ("1024x1024", "medium", 5)

    @pytest.mark.parametrize(("size", "quality"), [("999x999", "medium"), ("1024x1024", "ultra"), ("", "x")])
    def test_options_not_on_offer_are_refused(self, size, quality):
        with pytest.raises(GenerationError) as caught:
            generation_price(size=size or "nope", quality=quality)
        assert caught.value.reason == "invalid_options"


@pytest.mark.django_db
class TestReserve:
    def test_creates_a_queued_generation_and_its_one_charge_together(self, fund):
        fund(USER, 5)

        reservation = reserve(size="1536x1024", quality="high", model="m", interaction_id=7, channel_id=8)

        generation = Generation.objects.get(pk=reservation.generation_id)
        assert generation.status == Generation.Status.QUEUED
        assert (generation.cost, generation.model, generation.interaction_id, generation.channel_id) == (4, "m", 7, 8)
        [charge] = LedgerEntry.objects.filter(generation=generation)
        assert (charge.kind, charge.delta) == (LedgerEntry.Kind.GENERATE, -4)
        assert reservation.balance == 1 == account_balance(discord_user_id=USER)

    def test_refuses_at_once_when_short_and_writes_nothing(self, fund):
        fund(USER, 2)

        with pytest.raises(InsufficientCredits) as caught:
            reserve(size="1024x1536", quality="high")

        assert caught.value.message.startswith("This image costs 4 credits and your balance is 2 credits.")
        assert not Generation.objects.exists()
        assert account_balance(discord_user_id=USER) == 2

    def test_refuses_a_member_without_an_account(self):
        with pytest.raises(InsufficientCredits, match="your balance is 0 credits"):
            reserve()
        assert not Generation.objects.exists()

    @pytest.mark.parametrize("prompt", ["", "   ", "x" * 1001, None])
    def test_refuses_an_empty_or_overlong_prompt(self, fund, prompt):
        fund(USER, 1)
        with pytest.raises(GenerationError) as caught:
            reserve(prompt=prompt)
        assert caught.value.reason == "invalid_prompt"
        assert account_balance(discord_user_id=USER) == 1

    def test_strips_the_prompt(self, fund):
        fund(USER, 1)
        assert reserve(prompt="  a dog \n").prompt == "a dog"


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_spend_more_than_the_balance(fund, assert_audit_clean):
    fund(USER, 5)
    results: list[str] = []
    barrier = threading.Barrier(12)

    def attempt() -> None:
        barrier.wait()
        try:
            reserve()
            results.append("ok")
        except InsufficientCredits:
            results.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["ok"] * 5 + ["refused"] * 7
    assert account_balance(discord_user_id=USER) == 0
    assert Generation.objects.count() == 5
    assert_audit_clean()


@pytest.mark.django_db
class TestReserveAgain:
    def test_copies_prompt_and_options_and_charges_again(self, fund):
        fund(USER, 5)
        source = reserve(prompt="a fox", size="1024x1536", quality="low")

        again = generation_reserve_again(source_id=source.generation_id, discord_user_id=USER)

        assert (again.prompt, again.size, again.quality, again.cost) == ("a fox", "1024x1536", "low", 1)
        assert again.generation_id != source.generation_id
        assert account_balance(discord_user_id=USER) == 3

    def test_only_the_owner_may_regenerate(self, fund):
        fund(USER, 1)
        fund(OTHER, 1)
        source = reserve()

        with pytest.raises(GenerationError) as caught:
            generation_reserve_again(source_id=source.generation_id, discord_user_id=OTHER)

        assert caught.value.reason == "not_owner"
        assert account_balance(discord_user_id=OTHER) == 1

    def test_unknown_source(self):
        with pytest.raises(GenerationError) as caught:
            generation_reserve_again(source_id=999_999, discord_user_id=USER)
        assert caught.value.reason == "not_found"


ME = "host:1:me"


def holder(identity: str = ME, lease_seconds: float = 60) -> str:
    """Register a bot process and give it the lease."""
    bot_process_register(identity=identity, host="host", pid=1, lease_seconds=lease_seconds)
    assert bot_lease_acquire(identity=identity, lease_seconds=lease_seconds).held
    return identity


def deliver(gid: int, *, owner: str = ME, message_id: int = 99) -> bool:
    return generation_deliver_begin(generation_id=gid, owner=owner, message_id=message_id, lease_margin=10)


@pytest.mark.django_db
class TestLifecycle:
    def test_start_deliver_succeed_records_times_and_message(self, fund, assert_audit_clean):
        fund(USER, 1)
        holder()
        gid = reserve(owner=ME).generation_id

        assert generation_start(generation_id=gid)
        assert not generation_start(generation_id=gid)  # only once
        assert deliver(gid)
        assert not deliver(gid)
        assert not generation_fail_and_refund(generation_id=gid, error="unknown outcome")  # must ask Discord first
        assert generation_succeed(generation_id=gid)
        assert not generation_succeed(generation_id=gid)
        assert not generation_fail_and_refund(generation_id=gid, error="late", delivery_checked=True)

        generation = Generation.objects.get(pk=gid)
        assert generation.status == Generation.Status.SUCCEEDED and generation.message_id == 99
        assert generation.started_at and generation.delivered_at and generation.finished_at
        assert refunds_of(gid) == 0
        assert_audit_clean()

    def test_succeed_requires_delivering(self, fund):
        fund(USER, 1)
        gid = reserve().generation_id
        assert not generation_succeed(generation_id=gid)
        generation_start(generation_id=gid)
        assert not generation_succeed(generation_id=gid)
        assert Generation.objects.get(pk=gid).status == Generation.Status.RUNNING

    def test_delivery_needs_the_owner_to_hold_the_lease_with_time_to_spare(self, fund):
        fund(USER, 3)
        holder()
        mine, theirs, short = (reserve(owner=ME).generation_id for _ in range(3))
        for gid in (mine, theirs, short):
            generation_start(generation_id=gid)

        assert not deliver(theirs, owner="host:2:other")  # not the owner
        assert not generation_deliver_begin(generation_id=short, owner=ME, message_id=1, lease_margin=120)
        assert deliver(mine)
        bot_lease_release(identity=ME)
        assert not deliver(theirs)  # released: no more uploads

    def test_a_checked_delivery_can_be_refunded(self, fund, assert_audit_clean):
        fund(USER, 1)
        holder()
        gid = reserve(owner=ME).generation_id
        generation_start(generation_id=gid)
        deliver(gid)

        assert generation_fail_and_refund(generation_id=gid, error="not there", delivery_checked=True)
        assert not generation_succeed(generation_id=gid)  # settled once
        assert account_balance(discord_user_id=USER) == 1
        assert_audit_clean()

    @pytest.mark.parametrize("started", [False, True])
    def test_fail_and_refund_is_idempotent(self, fund, started, assert_audit_clean):
        fund(USER, 3)
        gid = reserve().generation_id
        if started:
            generation_start(generation_id=gid)

        assert generation_fail_and_refund(generation_id=gid, error="moderation_blocked: no")
        assert not generation_fail_and_refund(generation_id=gid, error="again")

        generation = Generation.objects.get(pk=gid)
        assert generation.status == Generation.Status.REFUNDED and generation.error == "moderation_blocked: no"
        assert refunds_of(gid) == 1
        assert account_balance(discord_user_id=USER) == 3
        assert not generation_start(generation_id=gid)  # a refunded request never starts
        assert_audit_clean()


@pytest.mark.django_db(transaction=True)
def test_racing_refunds_of_one_generation_refund_once(fund, assert_audit_clean):
    fund(USER, 1)
    gid = reserve().generation_id
    outcomes: list[bool] = []
    barrier = threading.Barrier(6)

    def refund() -> None:
        barrier.wait()
        try:
            outcomes.append(generation_fail_and_refund(generation_id=gid, error="race"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=refund) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == [False] * 5 + [True]
    assert refunds_of(gid) == 1 and account_balance(discord_user_id=USER) == 1
    assert_audit_clean()


@pytest.mark.django_db
class TestRefundStale:
    def test_refunds_only_what_no_live_process_owns(self, fund, assert_audit_clean):
        fund(USER, 6)
        holder()
        bot_process_register(identity="host:2:dead", host="host", pid=2, lease_seconds=60)
        BotProcess.objects.filter(identity="host:2:dead").update(expires_at=timezone.now() - timedelta(seconds=1))
        mine = reserve(owner=ME).generation_id
        dead_queued, dead_running, dead_done, dead_delivering = (
            reserve(owner="host:2:dead").generation_id for _ in range(4)
        )
        ownerless = reserve().generation_id
        for gid in (dead_running, dead_done, dead_delivering):
            generation_start(generation_id=gid)
        Generation.objects.filter(pk__in=[dead_done, dead_delivering]).update(
            status=Generation.Status.DELIVERING, message_id=5, channel_id=6
        )
        generation_succeed(generation_id=dead_done)

        assert generations_refund_stale(identity=ME) == [dead_queued, dead_running, ownerless]
        assert generations_refund_stale(identity=ME) == []
        # Delivering: never refunded blindly; handed back to be checked with Discord.
        [check] = generations_delivering_orphaned(identity=ME)
        assert (check.generation_id, check.channel_id, check.message_id) == (dead_delivering, 6, 5)

        assert Generation.objects.get(pk=dead_queued).error.startswith("interrupted")
        assert Generation.objects.get(pk=mine).status == Generation.Status.QUEUED  # its owner is alive
        assert Generation.objects.get(pk=dead_done).status == Generation.Status.SUCCEEDED
        assert account_balance(discord_user_id=USER) == 3  # 6 - 6 reserved + 3 refunded
        assert_audit_clean()

    def test_a_live_owner_of_another_process_is_left_alone(self, fund):
        fund(USER, 1)
        holder("host:3:alive")
        gid = reserve(owner="host:3:alive").generation_id

        assert generations_refund_stale(identity=ME) == []
        assert Generation.objects.get(pk=gid).status == Generation.Status.QUEUED

    def test_the_sweep_refunds_own_leftovers_only_when_old_and_not_being_worked_on(self, fund, assert_audit_clean):
        fund(USER, 3)
        holder()
        old, old_but_busy, recent = (reserve(owner=ME).generation_id for _ in range(3))
        Generation.objects.filter(pk__in=[old, old_but_busy]).update(created_at=timezone.now() - timedelta(hours=1))

        refunded = generations_refund_stale(
            identity=ME, own_older_than=timedelta(minutes=30), exclude_ids={old_but_busy}
        )

        assert refunded == [old]
        assert set(Generation.objects.filter(status__in=Generation.IN_FLIGHT).values_list("pk", flat=True)) == {
            old_but_busy,
            recent,
        }
        assert_audit_clean()


@pytest.mark.django_db
class TestLease:
    def test_one_holder_others_stand_by_until_it_releases(self):
        holder("a")
        bot_process_register(identity="b", host="h", pid=2, lease_seconds=60)

        state = bot_lease_acquire(identity="b", lease_seconds=60)
        assert not state.held and state.holder == "a"
        assert bot_lease_renew(identity="a", lease_seconds=60)
        assert not bot_lease_renew(identity="b", lease_seconds=60)

        bot_lease_release(identity="a")
        assert bot_lease_acquire(identity="b", lease_seconds=60).held
        assert not bot_lease_acquire(identity="a", lease_seconds=60).held  # a stopped process never comes back

    def test_an_expired_holder_is_replaced_and_learns_it_on_renewal(self):
        holder("a")
        bot_process_register(identity="b", host="h", pid=2, lease_seconds=60)
        BotProcess.objects.filter(identity="a").update(expires_at=timezone.now() - timedelta(seconds=1))

        assert bot_lease_acquire(identity="b", lease_seconds=60).held
        assert not bot_lease_renew(identity="a", lease_seconds=60)  # it must stop serving
        assert list(BotProcess.objects.filter(active=True).values_list("identity", flat=True)) == ["b"]


@pytest.mark.django_db(transaction=True)
def test_racing_processes_never_both_hold_the_lease():
    for round_ in range(3):
        identities = [f"racer-{round_}-{i}" for i in range(6)]
        for identity in identities:
            bot_process_register(identity=identity, host="h", pid=1, lease_seconds=60)
        held: list[str] = []
        barrier = threading.Barrier(len(identities))

        def race(identity: str, barrier: threading.Barrier = barrier, held: list[str] = held) -> None:
            barrier.wait()
            try:
                if bot_lease_acquire(identity=identity, lease_seconds=60).held:
                    held.append(identity)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=race, args=(identity,)) for identity in identities]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(held) == 1, held
        assert BotProcess.objects.filter(active=True).count() == 1
        bot_lease_release(identity=held[0])


@pytest.mark.django_db
class TestRedeemRateLimit:
    def test_counts_failures_and_refuses_past_the_limit(self, settings):
        settings.REDEEM_MAX_FAILURES = 2
        redeem_rate_limit_check(discord_user_id=USER)
        assert redeem_rate_limit_record_failure(discord_user_id=USER) == 1
        redeem_rate_limit_check(discord_user_id=USER)
        assert redeem_rate_limit_record_failure(discord_user_id=USER) == 2

        with pytest.raises(RedeemRateLimited, match="wait up to 15 minutes"):
            redeem_rate_limit_check(discord_user_id=USER)
        redeem_rate_limit_check(discord_user_id=OTHER)  # per member

    def test_the_window_expires(self, settings):
        settings.REDEEM_MAX_FAILURES = 1
        settings.REDEEM_FAILURE_WINDOW_SECONDS = 1
        redeem_rate_limit_record_failure(discord_user_id=USER)
        with pytest.raises(RedeemRateLimited):
            redeem_rate_limit_check(discord_user_id=USER)
        time.sleep(1.1)
        redeem_rate_limit_check(discord_user_id=USER)

    def test_redeem_counts_only_refusals(self, settings):
        settings.REDEEM_MAX_FAILURES = 2
        good = voucher_issue(credits=3)
        voucher_redeem_limited(code=good.code, discord_user_id=USER)
        voucher_redeem_limited(code=voucher_issue(credits=1).code, discord_user_id=USER)
        redeem_rate_limit_check(discord_user_id=USER)  # successes cost nothing

        for _ in range(2):
            with pytest.raises(VoucherNotFound):
                voucher_redeem_limited(code="AAAA-AAAA-AAAA-AAAA", discord_user_id=USER)
        with pytest.raises(RedeemRateLimited):
            voucher_redeem_limited(code=voucher_issue(credits=1).code, discord_user_id=USER)
        assert account_balance(discord_user_id=USER) == 4


# --- several images per request: a partial delivery refunds exactly the missing ones ---------------------------


def _delivering(user: int, *, count: int, delivered: int, quality: str = "high") -> int:
    from discordbot.services import bot_lease_acquire, bot_process_register, generation_deliver_begin
    from vouchers.services import credits_grant

    credits_grant(discord_user_id=user, amount=20, memo="test funds")
    bot_process_register(identity="p1", host="h", pid=1, lease_seconds=120)
    assert bot_lease_acquire(identity="p1", lease_seconds=120).held
    reservation = generation_reserve(discord_user_id=user, prompt="four", quality=quality, count=count, owner="p1")
    assert generation_start(generation_id=reservation.generation_id)
    assert generation_deliver_begin(
        generation_id=reservation.generation_id, owner="p1", message_id=9, lease_margin=10, delivered_count=delivered
    )
    return reservation.generation_id


@pytest.mark.django_db
def test_recording_a_partial_delivery_refunds_the_missing_images_once(assert_audit_clean):
    from vouchers.models import LedgerEntry
    from vouchers.selectors import account_balance

    user = 450_000_000_000_000_001
    generation_id = _delivering(user, count=4, delivered=3)  # high at 1024x1024: 3 credits each

    assert generation_succeed(generation_id=generation_id)  # e.g. the sweep, after asking Discord
    assert not generation_succeed(generation_id=generation_id)  # a second recorder changes nothing

    entries = list(LedgerEntry.objects.filter(generation_id=generation_id).order_by("pk").values_list("kind", "delta"))
    assert entries == [("generate", -12), ("refund", 3)]
    assert account_balance(discord_user_id=user) == 20 - 9
    assert Generation.objects.get(pk=generation_id).delivered_count == 3
    assert_audit_clean()


@pytest.mark.django_db
def test_a_partial_upload_that_never_arrived_is_refunded_in_full_once(assert_audit_clean):
    from vouchers.models import LedgerEntry

    user = 450_000_000_000_000_002
    generation_id = _delivering(user, count=4, delivered=2)

    assert generation_fail_and_refund(generation_id=generation_id, error="gone", delivery_checked=True)
    assert not generation_succeed(generation_id=generation_id)  # settled: a late recorder cannot charge it now

    refunds = list(
        LedgerEntry.objects.filter(generation_id=generation_id, kind="refund").values_list("delta", flat=True)
    )
    assert refunds == [12]
    assert_audit_clean()


@pytest.mark.django_db
def test_more_delivered_than_asked_for_cannot_begin_delivery():
    from discordbot.services import generation_deliver_begin

    user = 450_000_000_000_000_003
    generation_id = _delivering(user, count=2, delivered=2)
    Generation.objects.filter(pk=generation_id).update(status=Generation.Status.RUNNING, delivered_count=None)
    assert not generation_deliver_begin(
        generation_id=generation_id, owner="p1", message_id=9, lease_margin=10, delivered_count=3
    )
