"""Per-server rules and server wallets, end to end: the real bot against the fake Discord, which sends the guild,
the channel, the member's roles and their permissions in each interaction as Discord does.

The attacks first: a member without Manage Server runs /server; a request from a channel, role or member the rules
exclude, over the daily cap or over the most one image may cost (each refused privately, charging nothing, then
allowed once the rule allows it); a funded wallet spent by three members at once (never below zero, no allowance
exceeded); a failed and a partly delivered request (credits and allowance both given back)."""

import pytest

from discordbot.models import Generation, GuildCharge, GuildMember, GuildMemberDay, GuildSettings
from tests.discordbot.fake_discord import (
    ADMINISTRATOR,
    EPHEMERAL,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    ChannelOption,
    RoleOption,
    UserOption,
)
from tests.discordbot.harness import BotHarness
from tests.discordbot.test_generate_e2e import assert_image, assert_refused_before_any_deferral
from vouchers.models import CreditAccount, LedgerEntry
from vouchers.selectors import account_balance
from vouchers.services import voucher_issue

pytestmark = pytest.mark.django_db(transaction=True)

GUILD = 1_300_000_000_000_000_010  # FakeDiscord.GUILD_ID
OTHER_CHANNEL = 1_300_000_000_000_000_777
ROLE = 1_300_000_000_000_000_555
SERVER_COMMANDS = [
    ("server show", {}),
    ("server rules", {"daily_cap": 5}),
    ("server channel", {"action": "allow", "channel": ChannelOption(OTHER_CHANNEL)}),
    ("server bar", {"member": UserOption(420_000_000_000_000_001)}),
    ("server unbar", {"member": UserOption(420_000_000_000_000_001)}),
    ("server allowance", {"credits": 10}),
    ("server usage", {}),
    ("server redeem", {"code": "AAAA-BBBB-CCCC-DDDD"}),
    ("server buy", {}),
]


def manager(bot: BotHarness, user: int, *, admin: bool = False) -> int:
    bot.discord.member_permissions[user] = MEMBER_PERMISSIONS | (ADMINISTRATOR if admin else MANAGE_GUILD)
    return user


def server(bot: BotHarness, user: int, name: str, **options) -> str:
    """Run a /server command as `user`; its private answer."""
    answer = bot.answer(bot.command(f"server {name}", user=user, **options))
    assert answer.ephemeral or (answer.json.get("data") or {}).get("flags", 0) & EPHEMERAL, answer.json
    return answer.content


def refused(bot: BotHarness, user: int, words: str, command: str = "generate", **options) -> None:
    """A request refused by the server's rules: privately, at once, nothing charged, nothing asked of OpenAI."""
    before = (Generation.objects.count(), LedgerEntry.objects.count(), len(bot.openai.requests))
    sent = bot.command(command, user=user, **options)
    answer = bot.answer(sent)
    assert_refused_before_any_deferral(bot, sent, answer)
    assert words in answer.content and "Nothing was charged" in answer.content, answer.content
    assert (Generation.objects.count(), LedgerEntry.objects.count(), len(bot.openai.requests)) == before


def made(bot: BotHarness, user: int, **options) -> None:
    answer = bot.answer(bot.command("generate", user=user, **options))
    if options.get("count", 1) == 1:
        assert_image(answer)
    assert len(answer.uploads) == options.get("count", 1) and all(u.is_png for u in answer.uploads), answer
    bot.wait_for(lambda: not Generation.objects.filter(status__in=Generation.IN_FLIGHT).exists())


# --- Who may manage a server -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", SERVER_COMMANDS)
def test_a_member_without_manage_server_is_refused_every_server_command(bot, member, name, options):
    user = member()  # the fake's plain member: no Manage Server, no Administrator

    sent = bot.command(name, user=user, **options)
    answer = bot.answer(sent)

    assert answer.route == "callback" and answer.json["type"] == 4 and answer.ephemeral, answer.json
    assert "Manage Server" in answer.content
    assert not GuildSettings.objects.exists() and not GuildMember.objects.exists()
    assert not CreditAccount.objects.filter(kind=CreditAccount.Kind.SERVER).exists()


def test_server_commands_do_not_work_in_a_dm(bot, member):
    user = manager(bot, member())

    answer = bot.answer(bot.command("server rules", user=user, in_guild=False, daily_cap=3))

    assert answer.ephemeral and "server" in answer.content
    assert not GuildSettings.objects.exists()


def test_a_manager_sets_the_rules_and_sees_them(bot, member):
    boss, admin, someone = manager(bot, member()), manager(bot, member(), admin=True), member()

    text = server(bot, boss, "rules", daily_cap=4, max_cost=2, moderation="low", role=RoleOption(ROLE))
    assert "Images per member per day: 4" in text and "2 credits" in text and "low" in text
    server(bot, admin, "channel", action="allow", channel=ChannelOption(OTHER_CHANNEL))
    server(bot, boss, "bar", member=UserOption(someone))
    server(bot, boss, "allowance", credits=3)
    server(bot, boss, "allowance", credits=7, member=UserOption(someone))

    rules = GuildSettings.objects.get(guild_id=GUILD)
    assert (rules.daily_image_cap, rules.max_image_cost, rules.moderation) == (4, 2, "low")
    assert (rules.required_role_id, rules.channel_ids, rules.default_allowance) == (ROLE, [OTHER_CHANNEL], 3)
    assert GuildMember.objects.filter(discord_user_id=someone, barred=True, allowance=7).exists()
    shown = server(bot, boss, "show")
    assert f"<#{OTHER_CHANNEL}>" in shown and f"<@&{ROLE}>" in shown and f"<@{someone}>" in shown

    server(bot, boss, "rules", daily_cap=0, max_cost=0, moderation="default", clear_role=True)
    server(bot, boss, "channel", action="clear")
    server(bot, boss, "allowance", member=UserOption(someone))  # back to the default
    rules.refresh_from_db()
    assert (rules.daily_image_cap, rules.max_image_cost, rules.moderation, rules.required_role_id) == (
        None,
        None,
        "",
        None,
    )
    assert rules.channel_ids == [] and GuildMember.objects.get(discord_user_id=someone).allowance is None


def test_an_invalid_setting_is_refused_and_writes_nothing(bot, member):
    boss = manager(bot, member())
    server(bot, boss, "rules", daily_cap=3)

    text = server(bot, boss, "rules", role=RoleOption(ROLE), clear_role=True)

    assert "not both" in text
    assert GuildSettings.objects.get().required_role_id is None


# --- Each rule refusing, then allowing -------------------------------------------------------------------


def test_channels_rule(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 5)
    server(bot, boss, "channel", action="allow", channel=ChannelOption(OTHER_CHANNEL))

    refused(bot, user, "can't be made in this channel", prompt="a fox")
    made(bot, user, prompt="a fox", channel_id=OTHER_CHANNEL)
    assert account_balance(discord_user_id=user) == 4
    assert_audit_clean()


def test_required_role_rule(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 5)
    server(bot, boss, "rules", role=RoleOption(ROLE))

    refused(bot, user, f"<@&{ROLE}>", prompt="a fox")
    bot.discord.member_roles[user] = [ROLE]
    made(bot, user, prompt="a fox")
    assert_audit_clean()


def test_barred_member_rule(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 10)
    server(bot, boss, "bar", member=UserOption(user))

    refused(bot, user, "barred", prompt="a fox")
    server(bot, boss, "unbar", member=UserOption(user))
    made(bot, user, prompt="a fox")
    assert_audit_clean()


def test_most_one_image_may_cost_rule(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 10)
    server(bot, boss, "rules", max_cost=2)

    refused(bot, user, "at most 2 credits", prompt="a fox", size="1536x1024", quality="high")  # 4 credits
    made(bot, user, prompt="a fox", count=2)  # 1 credit each: the limit is per image
    assert account_balance(discord_user_id=user) == 8
    assert_audit_clean()


def test_daily_image_cap_rule_counts_images_and_covers_the_buttons(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 10)
    server(bot, boss, "rules", daily_cap=3)

    made(bot, user, prompt="a fox", count=2)
    refused(bot, user, "you have 1 left today", prompt="two more", count=2)
    made(bot, user, prompt="one more")
    generation = Generation.objects.order_by("-pk").first()
    message_id = str(generation.message_id)
    before = LedgerEntry.objects.count()
    sent = bot.click(f"regenerate:{generation.pk}", user=user, message_id=message_id)
    answer = bot.answer(sent)
    assert answer.ephemeral and "0 left today" in answer.content and "Nothing was charged" in answer.content
    assert LedgerEntry.objects.count() == before
    assert GuildMemberDay.objects.get(discord_user_id=user).images == 3
    assert account_balance(discord_user_id=user) == 7
    assert_audit_clean()


def test_a_rule_change_applies_to_the_buttons_of_earlier_images(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 5)
    made(bot, user, prompt="a fox")
    generation = Generation.objects.get()
    server(bot, boss, "channel", action="allow", channel=ChannelOption(OTHER_CHANNEL))

    answer = bot.answer(bot.click(f"regenerate:{generation.pk}", user=user, message_id=str(generation.message_id)))

    assert answer.ephemeral and "can't be made in this channel" in answer.content
    assert Generation.objects.count() == 1 and account_balance(discord_user_id=user) == 4
    assert_audit_clean()


def test_moderation_is_sent_to_the_image_service(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 5)

    made(bot, user, prompt="no setting")
    server(bot, boss, "rules", moderation="low")
    made(bot, user, prompt="low")
    server(bot, boss, "rules", moderation="auto")
    made(bot, user, prompt="auto")

    assert [r.body.get("moderation") for r in bot.openai.requests] == [None, "low", "auto"]
    assert_audit_clean()


def test_a_dm_keeps_todays_behaviour_whatever_a_server_decided(bot, member, fund, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund(user, 10)
    server(bot, boss, "bar", member=UserOption(user))
    server(bot, boss, "rules", daily_cap=1, max_cost=1, role=RoleOption(ROLE))

    answer = bot.answer(bot.command("generate", user=user, prompt="a fox", count=2, quality="high", in_guild=False))

    assert answer.uploads, answer.content
    assert answer.uploads[0].is_png
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert not GuildCharge.objects.exists() and not GuildMemberDay.objects.exists()
    assert_audit_clean()


# --- Server wallets -----------------------------------------------------------------------------------------


def fund_server(bot: BotHarness, boss: int, credits: int) -> None:
    voucher = voucher_issue(credits=credits)
    text = server(bot, boss, "redeem", code=voucher.code)
    assert f"added {credits} credits to the server's wallet" in text, text


def wallet() -> int:
    return CreditAccount.objects.get(discord_guild_id=GUILD).balance


def test_three_members_spend_a_wallet_at_once_within_allowances_and_never_below_zero(bot, member, assert_audit_clean):
    boss = manager(bot, member())
    users = [member(), member(), member()]  # no credits of their own
    fund_server(bot, boss, 5)
    server(bot, boss, "allowance", credits=2)

    # Nine requests of 1 credit pushed at once: the allowances would pay six, the wallet holds five.
    sents = [bot.command("generate", user=user, prompt=f"a fox {i}") for i in range(3) for user in users]
    answers = bot.answers(sents, timeout=60)

    images = [a for a in answers if a.uploads]
    refusals = [a for a in answers if not a.uploads]
    assert len(images) == 5 and len(refusals) == 4, [a.content for a in answers]
    assert all("your balance is 0 credits" in a.content and a.ephemeral for a in refusals)
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).count() == 5)
    assert wallet() == 0
    days = list(GuildMemberDay.objects.values_list("discord_user_id", "allowance_used", "images"))
    assert all(used <= 2 for _, used, _ in days) and sum(used for _, used, _ in days) == 5, days
    assert all(account_balance(discord_user_id=user) == 0 for user in users)
    assert LedgerEntry.objects.filter(kind="generate", account__kind="server").count() == 5
    usage = server(bot, boss, "usage")
    assert all(f"<@{user}>" in usage for user in users) and "of 2 credits allowance used" in usage
    assert_audit_clean()


def test_past_the_allowance_the_member_pays_all_of_a_request_from_their_own_balance(
    bot, member, fund, assert_audit_clean
):
    boss, user = manager(bot, member()), member()
    fund(user, 10)
    fund_server(bot, boss, 100)
    server(bot, boss, "allowance", credits=3)

    balance = bot.answer(bot.command("balance", user=user)).content
    assert "You have **10 credits**" in balance and "up to 3 credits more today" in balance
    made(bot, user, prompt="fits", count=2)  # 2 of 3: the wallet pays
    made(bot, user, prompt="does not fit", count=2)  # 2 > 1 left: the member pays all of it, the allowance none

    assert (wallet(), account_balance(discord_user_id=user)) == (98, 8)
    assert GuildMemberDay.objects.get(discord_user_id=user).allowance_used == 2
    server(bot, boss, "allowance", credits=0, member=UserOption(user))  # this member's own: none
    made(bot, user, prompt="own allowance none")
    assert (wallet(), account_balance(discord_user_id=user)) == (98, 7)
    assert_audit_clean()


def test_a_failed_request_gives_back_the_wallets_credits_and_the_allowance(bot, member, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund_server(bot, boss, 10)
    server(bot, boss, "allowance", credits=4)
    server(bot, boss, "rules", daily_cap=4)
    bot.openai.mode = "error"

    answer = bot.answer(bot.command("generate", user=user, prompt="a fox", count=2), timeout=30)

    assert "refunded" in answer.content and answer.ephemeral
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.REFUNDED).exists())
    assert wallet() == 10
    day = GuildMemberDay.objects.get(discord_user_id=user)
    assert (day.allowance_used, day.images) == (0, 0)
    assert_audit_clean()


def test_a_partly_delivered_request_gives_back_the_missing_images_share(bot, member, assert_audit_clean):
    boss, user = manager(bot, member()), member()
    fund_server(bot, boss, 10)
    server(bot, boss, "allowance", credits=4)
    bot.openai.mode = "fewer"  # one image fewer than asked for

    answer = bot.answer(bot.command("generate", user=user, prompt="a fox", count=3), timeout=30)

    assert len(answer.uploads) == 2
    bot.wait_for(lambda: Generation.objects.filter(status=Generation.Status.SUCCEEDED).exists())
    assert wallet() == 8
    day = GuildMemberDay.objects.get(discord_user_id=user)
    assert (day.allowance_used, day.images) == (2, 2)
    charge = GuildCharge.objects.get()
    assert (charge.allowance, charge.allowance_returned, charge.images_returned) == (3, 1, 1)
    assert_audit_clean()


def test_server_redeem_refuses_a_bad_code_and_buy_gives_a_server_bound_link(bot, member, settings):
    boss = manager(bot, member())

    text = server(bot, boss, "redeem", code="AAAA-BBBB-CCCC-DDDD")
    assert "voucher" in text.lower()
    assert not LedgerEntry.objects.exists()

    answer = bot.answer(bot.command("server buy", user=boss))
    [button] = answer.buttons
    assert button["url"].startswith(f"{settings.SITE_URL}/?for=")
    from storefront.tokens import buy_token_open

    buy_for = buy_token_open(token=button["url"].split("for=", 1)[1])
    assert (buy_for.discord_guild_id, buy_for.discord_user_id) == (GUILD, boss)
    assert CreditAccount.objects.filter(discord_guild_id=GUILD, kind="server", balance=0).exists()
