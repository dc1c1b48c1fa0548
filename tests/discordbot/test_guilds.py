"""Server rules and wallets at the service level: races with real threads on the real test database (a file for
SQLite, PostgreSQL under CI=true), refunds given back once, the audit catching what it exists to catch, and a
server's wallet never found by a lookup of a member."""

from collections import Counter

import pytest
from django.db import IntegrityError, transaction

from discordbot.errors import GenerationError
from discordbot.guilds import (
    ServerSettingsError,
    guild_allowance_set,
    guild_channel_set,
    guild_request_check,
    guild_rules_set,
    guild_usage,
)
from discordbot.models import Generation, GuildCharge, GuildMemberDay
from discordbot.services import generation_fail_and_refund, generation_reserve
from tests.vouchers.test_concurrency import attempt, race_threads
from vouchers.audit import audit_credits
from vouchers.errors import InsufficientCredits
from vouchers.models import CreditAccount, LedgerEntry
from vouchers.selectors import account_balance
from vouchers.services import (
    credits_grant,
    credits_reserve,
    server_account_get_or_create,
    server_credits_reserve,
    server_voucher_redeem,
    voucher_issue,
)

pytestmark = pytest.mark.django_db(transaction=True)

GUILD = 700_000_000_000_000_001
CHANNEL = 700_000_000_000_000_002


def member(n: int) -> int:
    return 710_000_000_000_000_000 + n


def fund_wallet(credits: int) -> None:
    server_voucher_redeem(code=voucher_issue(credits=credits).code, discord_guild_id=GUILD, name="Cats")


def reserve(user: int, **options):
    return generation_reserve(discord_user_id=user, prompt="a fox", guild_id=GUILD, channel_id=CHANNEL, **options)


def test_members_racing_for_a_wallet_never_take_it_below_zero_nor_exceed_their_allowances(assert_audit_clean):
    fund_wallet(10)
    guild_allowance_set(guild_id=GUILD, credits=3)
    users = [member(i) for i in range(4)]  # 4 x 3 allowance = 12 > 10 in the wallet; no own credits

    outcomes = race_threads(16, lambda i: [attempt(reserve, user=users[i % 4])])

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"Reservation": 10, "InsufficientCredits": 6}, kinds
    assert CreditAccount.objects.get(discord_guild_id=GUILD).balance == 0
    used = dict(GuildMemberDay.objects.values_list("discord_user_id", "allowance_used"))
    assert all(0 <= n <= 3 for n in used.values()) and sum(used.values()) == 10, used
    assert all(o.paid_by_server for o in outcomes if not isinstance(o, Exception))
    assert not CreditAccount.objects.filter(discord_user_id__in=users, balance__gt=0).exists()
    assert_audit_clean()


def test_the_daily_image_cap_holds_under_a_race(assert_audit_clean):
    user = member(1)
    credits_grant(discord_user_id=user, amount=100, memo="test")
    guild_rules_set(guild_id=GUILD, daily_image_cap=3)

    outcomes = race_threads(8, lambda i: [attempt(reserve, user=user)])

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"Reservation": 3, "GenerationError": 5}, kinds
    assert GuildMemberDay.objects.get().images == 3
    assert account_balance(discord_user_id=user) == 97
    assert_audit_clean()


def test_a_refund_gives_back_the_wallets_credits_and_the_allowance_once(assert_audit_clean):
    fund_wallet(10)
    guild_allowance_set(guild_id=GUILD, credits=4)
    user = member(2)
    reservation = reserve(user, count=2)
    assert reservation.paid_by_server and reservation.balance == 0

    assert generation_fail_and_refund(generation_id=reservation.generation_id, error="error: test")
    assert not generation_fail_and_refund(generation_id=reservation.generation_id, error="error: again")

    assert CreditAccount.objects.get(discord_guild_id=GUILD).balance == 10
    day = GuildMemberDay.objects.get()
    assert (day.allowance_used, day.images) == (0, 0)
    assert_audit_clean()


def test_refunds_racing_reservations_of_the_same_member_neither_deadlock_nor_lose_allowance(assert_audit_clean):
    fund_wallet(20)
    guild_allowance_set(guild_id=GUILD, credits=10)
    user = member(9)
    earlier = [reserve(user).generation_id for _ in range(5)]

    def work(i: int) -> list:
        if i % 2:
            return [attempt(generation_fail_and_refund, generation_id=earlier[i // 2], error="error: test")]
        return [attempt(reserve, user=user)]

    outcomes = race_threads(10, work)

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"Reservation": 5, "bool": 5}, kinds
    assert GuildMemberDay.objects.get().allowance_used == 5
    assert CreditAccount.objects.get(discord_guild_id=GUILD).balance == 15
    assert_audit_clean()


def test_a_member_who_must_pay_and_cannot_leaves_nothing_behind():
    guild_allowance_set(guild_id=GUILD, credits=1)  # the wallet does not exist: the member pays, and has nothing
    user = member(3)

    with pytest.raises(InsufficientCredits, match="your balance is 0 credits"):
        reserve(user)

    assert not Generation.objects.exists() and not GuildCharge.objects.exists()
    assert not CreditAccount.objects.filter(discord_user_id=user).exists()
    assert GuildMemberDay.objects.filter(images__gt=0).count() == 0


def test_rules_check_each_rule_and_a_thread_counts_as_its_parent_channel():
    guild_channel_set(guild_id=GUILD, channel_id=CHANNEL, allow=True)
    facts = {"guild_id": GUILD, "discord_user_id": member(4), "role_ids": []}

    guild_request_check(channel_ids=[CHANNEL], **facts)
    guild_request_check(channel_ids=[123456789012345678, CHANNEL], **facts)  # a thread in the allowed channel
    with pytest.raises(GenerationError, match="this channel"):
        guild_request_check(channel_ids=[123456789012345678], **facts)
    guild_request_check(channel_ids=[1], guild_id=None, discord_user_id=member(4), role_ids=[])  # a DM


@pytest.mark.parametrize(
    "options",
    [{"daily_image_cap": -1}, {"max_image_cost": "3"}, {"moderation": "high"}, {"required_role_id": 0}],
)
def test_invalid_settings_are_refused_and_write_nothing(options):
    with pytest.raises(ServerSettingsError):
        guild_rules_set(guild_id=GUILD, **options)
    with pytest.raises(ServerSettingsError):
        guild_allowance_set(guild_id=GUILD, credits=-5)


def test_a_wallet_is_never_found_by_a_lookup_of_a_member():
    fund_wallet(5)
    account = CreditAccount.objects.get(discord_guild_id=GUILD)

    assert (account.kind, account.discord_user_id, account.discord_name) == ("server", None, "Cats")
    assert account_balance(discord_user_id=GUILD) == 0
    with pytest.raises(InsufficientCredits):
        credits_reserve(discord_user_id=GUILD, amount=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.create(kind="server", discord_guild_id=GUILD + 1, discord_user_id=5)
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.create(kind="member", discord_guild_id=GUILD + 2, discord_user_id=6)


def test_usage_lists_each_members_day_with_their_allowance():
    fund_wallet(10)
    guild_allowance_set(guild_id=GUILD, credits=2)
    guild_allowance_set(guild_id=GUILD, credits=5, discord_user_id=member(6))
    reserve(member(5))
    reserve(member(6), count=3)

    rows = {row.discord_user_id: row for row in guild_usage(guild_id=GUILD)}

    assert (rows[member(5)].allowance_used, rows[member(5)].allowance) == (1, 2)
    assert (rows[member(6)].allowance_used, rows[member(6)].images, rows[member(6)].allowance) == (3, 3, 5)


# --- The audit ----------------------------------------------------------------------------------------------


def problems(name: str) -> list[str]:
    return audit_credits()[name]


def test_audit_reports_a_days_allowance_that_does_not_match_its_requests(assert_audit_clean):
    fund_wallet(5)
    guild_allowance_set(guild_id=GUILD, credits=3)
    reserve(member(7))
    assert_audit_clean()

    GuildMemberDay.objects.update(allowance_used=3)  # as if the allowance moved without a request

    assert problems("each member's day in a server matches its requests")


def test_audit_reports_a_wallet_charge_no_allowance_accounts_for():
    fund_wallet(5)
    user = member(8)
    credits_grant(discord_user_id=user, amount=5, memo="test")
    generation = Generation.objects.create(account=CreditAccount.objects.get(discord_user_id=user), prompt="x", cost=1)
    server_credits_reserve(discord_guild_id=GUILD, amount=1, generation_id=generation.pk)  # outside the rules

    assert problems("server wallets pay only within allowances, and refunds give both back")


def test_audit_reports_a_refund_to_the_wallet_that_did_not_give_back_the_allowance():
    fund_wallet(5)
    guild_allowance_set(guild_id=GUILD, credits=3)
    gid = reserve(member(9)).generation_id
    from vouchers.services import credits_refund

    charge = LedgerEntry.objects.get(generation_id=gid, kind="generate")
    credits_refund(entry_id=charge.pk)  # the credits back, but not through the generation's refund
    Generation.objects.filter(pk=gid).update(status=Generation.Status.REFUNDED)

    assert problems("server wallets pay only within allowances, and refunds give both back")


def test_a_server_account_name_is_kept_to_one_printable_line():
    account = server_account_get_or_create(discord_guild_id=GUILD, name="  Cats\n\x00 and   dogs ")
    assert account.discord_name == "Cats and dogs"
