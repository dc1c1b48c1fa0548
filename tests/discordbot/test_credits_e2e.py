"""/redeem, /balance, /history and /buy, end to end: the real bot, the fake Discord, real interaction payloads.

Each test checks what the bot really sent over REST: a deferral within Discord's 3 seconds, the ephemeral flag
on every private answer, and the words the member reads.
"""

from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection

from storefront.tokens import buy_token_read
from tests.discordbot.fake_discord import EPHEMERAL, Call, Sent
from tests.discordbot.harness import BotHarness
from vouchers.models import CreditAccount, LedgerEntry, Voucher
from vouchers.selectors import account_balance
from vouchers.services import voucher_issue

pytestmark = pytest.mark.django_db(transaction=True)


def private_answer(bot: BotHarness, sent: Sent) -> Call:
    """The answer, after checking it came the private way: deferred fast and ephemerally, answered ephemerally."""
    deferral = bot.deferral(sent)
    assert deferral.at - sent.at < 3.0
    assert deferral.json["type"] == 5 and deferral.ephemeral, deferral.json
    answer = bot.answer(sent)
    assert answer.route == "followup" and answer.ephemeral, answer.json
    assert answer.query.get("wait") == "1"
    return answer


def test_redeem_adds_the_vouchers_credits_privately(bot, member, assert_audit_clean):
    user = member()
    voucher = voucher_issue(credits=25)

    answer = private_answer(bot, bot.command("redeem", user=user, code=voucher.code.lower().replace("-", " ")))

    assert "added 25 credits" in answer.content and "balance is now **25 credits**" in answer.content
    assert account_balance(discord_user_id=user) == 25
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.REDEEMED and voucher.redeemed_by.discord_user_id == user
    assert_audit_clean()


def test_redeem_unknown_code_is_refused_and_changes_nothing(bot, member, assert_audit_clean):
    user = member()

    answer = private_answer(bot, bot.command("redeem", user=user, code="ZZZZ-ZZZZ-ZZZZ-ZZZZ"))

    assert "No voucher has that code" in answer.content
    assert not CreditAccount.objects.filter(discord_user_id=user).exists()
    assert_audit_clean()


def test_redeem_already_redeemed_voucher_is_refused(bot, member, assert_audit_clean):
    first, second = member(), member()
    voucher = voucher_issue(credits=5)
    private_answer(bot, bot.command("redeem", user=first, code=voucher.code))

    again = private_answer(bot, bot.command("redeem", user=first, code=voucher.code))
    other = private_answer(bot, bot.command("redeem", user=second, code=voucher.code))

    assert "You already redeemed that voucher" in again.content
    assert "already been redeemed" in other.content
    assert account_balance(discord_user_id=first) == 5
    assert account_balance(discord_user_id=second) == 0
    assert_audit_clean()


@pytest.mark.parametrize(
    "code",
    [
        "'; DROP TABLE vouchers_voucher; --",
        "' OR '1'='1",
        "K7QH-2M9D-XR4T-8BWE' OR 1=1 --",
        "%",
        "\x00",
    ],
)
def test_redeem_sql_looking_input_is_just_not_a_code(bot, member, code, assert_audit_clean):
    user = member()
    voucher = voucher_issue(credits=7)

    answer = private_answer(bot, bot.command("redeem", user=user, code=code))

    assert "doesn't look like a voucher code" in answer.content
    assert account_balance(discord_user_id=user) == 0
    assert "vouchers_voucher" in connection.introspection.table_names()
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.ACTIVE
    assert_audit_clean()


def test_two_members_racing_for_one_voucher_exactly_one_wins(bot, member, assert_audit_clean):
    for _ in range(3):  # a few rounds, since the race is only as tight as the scheduler makes it
        first, second = member(), member()
        voucher = voucher_issue(credits=10)

        sents = [bot.command("redeem", user=user, code=voucher.code) for user in (first, second)]
        answers = [private_answer(bot, sent) for sent in sents]

        won = ["added 10 credits" in answer.content for answer in answers]
        assert sorted(won) == [False, True], [a.content for a in answers]
        loser = answers[won.index(False)]
        assert "already been redeemed" in loser.content
        assert account_balance(discord_user_id=first) + account_balance(discord_user_id=second) == 10
        assert LedgerEntry.objects.filter(voucher=voucher).count() == 1
    assert_audit_clean()


def test_repeated_failed_redeems_are_rate_limited_per_member(bot, member, settings, assert_audit_clean):
    settings.REDEEM_MAX_FAILURES = 3
    guesser, bystander = member(), member()
    voucher = voucher_issue(credits=4)

    for guess in ("AAAA-AAAA-AAAA-AAAA", "BBBB-BBBB-BBBB-BBBB", "not a code"):
        assert "Too many" not in private_answer(bot, bot.command("redeem", user=guesser, code=guess)).content
    # Even the right code is refused now: the limit is on the member, not on what they type.
    limited = private_answer(bot, bot.command("redeem", user=guesser, code=voucher.code))
    other = private_answer(bot, bot.command("redeem", user=bystander, code=voucher.code))

    assert "Too many failed voucher attempts" in limited.content
    assert "added 4 credits" in other.content
    assert account_balance(discord_user_id=guesser) == 0
    assert_audit_clean()


def test_balance_is_private_and_counts_zero_for_a_newcomer(bot, member, fund):
    rich, newcomer = member(), member()
    fund(rich, 12)

    assert "You have **12 credits**" in private_answer(bot, bot.command("balance", user=rich)).content
    assert "You have **0 credits**" in private_answer(bot, bot.command("balance", user=newcomer)).content


def test_history_lists_the_latest_movements_newest_first(bot, member, fund):
    user = member()
    fund(user, 3)
    voucher = voucher_issue(credits=9)
    private_answer(bot, bot.command("redeem", user=user, code=voucher.code))

    answer = private_answer(bot, bot.command("history", user=user))

    lines = answer.content.splitlines()
    assert lines[0] == "Your latest 2 movements:"
    assert lines[1].startswith("`+9` Voucher redeemed") and voucher.code in lines[1]
    assert lines[2].startswith("`+3` Operator grant")
    assert "<t:" in lines[1]  # a Discord timestamp, shown in the reader's own time zone


def test_history_of_a_newcomer_says_so(bot, member):
    answer = private_answer(bot, bot.command("history", user=member()))
    assert "No credit movements yet" in answer.content


def test_buy_gives_a_private_link_with_a_signed_token_for_that_member(bot, member, settings):
    user = member()

    sent = bot.command("buy", user=user)
    reply = bot.answer(sent)

    assert reply.route == "callback" and reply.at - sent.at < 3.0
    assert reply.json["type"] == 4 and reply.flags & EPHEMERAL
    [button] = reply.buttons
    assert button["style"] == 5  # a link button
    url = urlparse(button["url"])
    assert f"{url.scheme}://{url.netloc}" == settings.SITE_URL and url.path == "/"
    [token] = parse_qs(url.query)["for"]
    assert buy_token_read(token=token) == user
    assert not CreditAccount.objects.exists()  # /buy writes nothing


def test_commands_work_in_direct_messages_too(bot, member, fund):
    user = member()
    fund(user, 2)
    sent = bot.command("balance", user=user, in_guild=False)
    assert "You have **2 credits**" in private_answer(bot, sent).content
