"""The generations admin: a read-only list with status filter, search by prompt or Discord id, and timings."""

from datetime import timedelta

import pytest
from django.urls import reverse

from discordbot.models import Generation
from discordbot.services import generation_fail_and_refund, generation_reserve, generation_start, generation_succeed

pytestmark = pytest.mark.django_db

ALICE = 430_000_000_000_000_001
BOB = 430_000_000_000_000_002


@pytest.fixture
def generations(fund):
    fund(ALICE, 5)
    fund(BOB, 5)
    done = generation_reserve(discord_user_id=ALICE, prompt="a sunny meadow").generation_id
    generation_start(generation_id=done)
    Generation.objects.filter(pk=done).update(status=Generation.Status.DELIVERING)  # what the bot does, briefly
    generation_succeed(generation_id=done, message_id=1)
    Generation.objects.filter(pk=done).update(
        started_at=Generation.objects.get(pk=done).created_at + timedelta(seconds=2),
        finished_at=Generation.objects.get(pk=done).created_at + timedelta(seconds=9.5),
    )
    blocked = generation_reserve(discord_user_id=BOB, prompt="something forbidden").generation_id
    generation_fail_and_refund(generation_id=blocked, error="moderation_blocked: no")
    return Generation.objects.get(pk=done), Generation.objects.get(pk=blocked)


def changelist(admin_client, **params):
    response = admin_client.get(reverse("admin:discordbot_generation_changelist"), params)
    assert response.status_code == 200
    return response


def test_lists_generations_with_member_status_and_timings(admin_client, generations):
    html = changelist(admin_client).content.decode()
    assert "a sunny meadow" in html and "something forbidden" in html
    assert str(ALICE) in html and "2.0 s" in html and "7.5 s" in html


def test_filters_by_status(admin_client, generations):
    html = changelist(admin_client, status__exact="refunded").content.decode()
    assert "something forbidden" in html and "a sunny meadow" not in html


@pytest.mark.parametrize(
    ("term", "shown", "hidden"), [("meadow", "a sunny meadow", "forbidden"), (str(BOB), "forbidden", "meadow")]
)
def test_searches_prompts_and_discord_ids(admin_client, generations, term, shown, hidden):
    html = changelist(admin_client, q=term).content.decode()
    assert shown in html and hidden not in html


def test_is_read_only(admin_client, generations):
    done, _ = generations
    assert admin_client.get(reverse("admin:discordbot_generation_add")).status_code == 403
    page = admin_client.get(reverse("admin:discordbot_generation_change", args=[done.pk]))
    assert page.status_code == 200 and b'name="prompt"' not in page.content
    assert (
        admin_client.post(reverse("admin:discordbot_generation_delete", args=[done.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert Generation.objects.filter(pk=done.pk).exists()


def test_bot_processes_show_who_holds_the_lease_read_only(admin_client):
    from discordbot.services import bot_lease_acquire, bot_process_register

    bot_process_register(identity="web-1:42:abcd", host="web-1", pid=42, lease_seconds=60)
    bot_process_register(identity="web-2:43:ef01", host="web-2", pid=43, lease_seconds=60)
    assert bot_lease_acquire(identity="web-1:42:abcd", lease_seconds=60).held

    page = admin_client.get(reverse("admin:discordbot_botprocess_changelist"), {"active__exact": "1"})
    html = page.content.decode()
    assert page.status_code == 200 and "web-1:42:abcd" in html and "web-2:43:ef01" not in html
    assert admin_client.get(reverse("admin:discordbot_botprocess_add")).status_code == 403


# --- Server settings and usage --------------------------------------------------------------------------------


def test_an_operator_edits_a_servers_rules_and_sees_usage_per_member(admin_client):
    from discordbot.guilds import guild_allowance_set
    from discordbot.models import GuildMemberDay, GuildSettings
    from vouchers.services import server_voucher_redeem, voucher_issue

    guild = 430_000_000_000_000_100
    server_voucher_redeem(code=voucher_issue(credits=9).code, discord_guild_id=guild)
    guild_allowance_set(guild_id=guild, credits=2)
    generation_reserve(discord_user_id=ALICE, prompt="a hill", guild_id=guild)
    rules = GuildSettings.objects.get()
    url = reverse("admin:discordbot_guildsettings_change", args=[rules.pk])
    form = {
        "guild_id": guild,
        "name": "Cats",
        "channel_ids": "[5, 6]",
        "required_role_id": "",
        "daily_image_cap": "4",
        "max_image_cost": "",
        "moderation": "low",
        "default_allowance": "3",
    }

    bad = admin_client.post(url, {**form, "channel_ids": '["general"]'})
    assert bad.status_code == 200 and "A list of Discord channel ids" in bad.content.decode()
    assert admin_client.post(url, form).status_code == 302

    rules.refresh_from_db()
    assert (rules.channel_ids, rules.daily_image_cap, rules.moderation, rules.default_allowance) == (
        [5, 6],
        4,
        "low",
        3,
    )
    listing = admin_client.get(reverse("admin:discordbot_guildsettings_changelist")).content.decode()
    assert "Cats" in listing and ">8<" in listing  # the wallet after one image paid from it
    usage = admin_client.get(reverse("admin:discordbot_guildmemberday_changelist")).content.decode()
    assert str(ALICE) in usage
    assert GuildMemberDay.objects.get().allowance_used == 1
    accounts = admin_client.get(reverse("admin:vouchers_creditaccount_changelist")).content.decode()
    ledger = admin_client.get(reverse("admin:vouchers_ledgerentry_changelist")).content.decode()
    assert f"Server wallet ({guild})" in accounts and f"Server wallet ({guild})" in ledger and "None" not in accounts
