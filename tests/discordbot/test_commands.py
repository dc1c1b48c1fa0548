"""`manage.py synccommands` against the fake Discord, and `runbot`'s refusals of a broken configuration."""

import pytest
from django.core.management import CommandError, call_command

from discordbot.models import Generation
from discordbot.services import generation_reserve

EXPECTED = {"redeem", "balance", "history", "buy", "generate", "edit", "settings", "help", "server"}


@pytest.fixture
def discord_token(settings):
    settings.DISCORD_TOKEN = "fake-bot-token"


@pytest.mark.django_db(transaction=True)
def test_synccommands_registers_every_command_globally(harness, discord_token, fund, capsys):
    fund(440_000_000_000_000_001, 1)
    in_flight = generation_reserve(discord_user_id=440_000_000_000_000_001, prompt="mine").generation_id

    call_command("synccommands")

    [sync] = [call for call in harness.discord.snapshot() if call.route == "sync_commands"]
    assert sync.method == "PUT" and sync.path == f"/applications/{harness.discord.APP_ID}/commands"
    commands = {command["name"]: command for command in sync.json}
    assert set(commands) == EXPECTED
    generate = {option["name"]: option for option in commands["generate"]["options"]}
    assert generate["prompt"]["required"] and generate["prompt"]["max_length"] == 1000
    assert [c["value"] for c in generate["size"]["choices"]] == ["1024x1024", "1536x1024", "1024x1536"]
    assert [c["value"] for c in generate["quality"]["choices"]] == ["low", "medium", "high"]
    # Each choice shows what it costs (from GENERATION_COSTS), so a member sees the price before choosing.
    assert [c["name"] for c in generate["size"]["choices"]] == [
        "Square 1024\N{MULTIPLICATION SIGN}1024 \N{MIDDLE DOT} 1-3 credits",
        "Landscape 1536\N{MULTIPLICATION SIGN}1024 \N{MIDDLE DOT} 1-4 credits",
        "Portrait 1024\N{MULTIPLICATION SIGN}1536 \N{MIDDLE DOT} 1-4 credits",
    ]
    assert [c["name"] for c in generate["quality"]["choices"]] == [
        "Low \N{MIDDLE DOT} 1 credit",
        "Medium \N{MIDDLE DOT} 1-2 credits",
        "High \N{MIDDLE DOT} 3-4 credits",
    ]
    assert generate["count"]["type"] == 4 and (generate["count"]["min_value"], generate["count"]["max_value"]) == (1, 4)
    assert generate["private"]["type"] == 5 and not generate["private"]["required"]
    edit = {option["name"]: option for option in commands["edit"]["options"]}
    assert edit["image"]["type"] == 11 and edit["image"]["required"]
    assert all(edit[name]["type"] == 11 and not edit[name]["required"] for name in ("image2", "image4", "markup"))
    assert commands["redeem"]["description"] == "Add a voucher's credits to your balance."
    # /server: shown only to members with Manage Server (a server may change that; each command checks again),
    # and only in servers.
    server = commands["server"]
    assert int(server["default_member_permissions"]) == 1 << 5 and server["contexts"] == [0]
    assert {sub["name"] for sub in server["options"]} == {
        "show",
        "rules",
        "channel",
        "bar",
        "unbar",
        "allowance",
        "usage",
        "redeem",
        "buy",
    }
    assert "Synced 9 command(s) globally" in capsys.readouterr().out
    assert harness.discord.identifies == 0  # HTTP only: no gateway session
    # A one-off command must not refund what a running bot is working on.
    assert Generation.objects.get(pk=in_flight).status == Generation.Status.QUEUED


@pytest.mark.django_db(transaction=True)
def test_synccommands_to_a_guild(harness, discord_token, settings, capsys):
    settings.DISCORD_TEST_GUILD_ID = 555
    call_command("synccommands", "--guild")
    call_command("synccommands", "--guild", "777")

    paths = [call.path for call in harness.discord.snapshot() if call.route == "sync_commands"]
    app = harness.discord.APP_ID
    assert paths == [f"/applications/{app}/guilds/555/commands", f"/applications/{app}/guilds/777/commands"]
    assert "to guild 777" in capsys.readouterr().out


def test_synccommands_needs_a_token(settings):
    settings.DISCORD_TOKEN = ""
    with pytest.raises(CommandError, match="DISCORD_TOKEN is empty"):
        call_command("synccommands")


def test_synccommands_guild_flag_without_id_needs_the_test_guild(settings):
    settings.DISCORD_TOKEN = "x"
    settings.DISCORD_TEST_GUILD_ID = None
    with pytest.raises(CommandError, match="DISCORD_TEST_GUILD_ID"):
        call_command("synccommands", "--guild")


def test_runbot_needs_a_token(settings):
    settings.DISCORD_TOKEN = ""
    with pytest.raises(CommandError, match="DISCORD_TOKEN is empty"):
        call_command("runbot")


def test_runbot_refuses_openai_without_a_key(settings):
    settings.DISCORD_TOKEN = "x"
    settings.IMAGE_BACKEND = "openai"
    settings.OPENAI_API_KEY = ""
    with pytest.raises(CommandError, match="OPENAI_API_KEY is empty"):
        call_command("runbot")


@pytest.mark.django_db(transaction=True)
def test_runbot_reports_a_rejected_token(harness, settings):
    settings.DISCORD_TOKEN = "wrong"
    harness.discord.fail(lambda call: call.route == "users_me", status=401, code=0, message="401: Unauthorized")
    with pytest.raises(CommandError, match="Discord refused DISCORD_TOKEN"):
        call_command("runbot")


@pytest.mark.parametrize(
    ("queue", "generation", "upload"),
    [(900, 180, 30), (600, 300, 30), (700, 100, 60)],
)
def test_runbot_refuses_timeouts_that_do_not_fit_in_discords_15_minute_token(settings, queue, generation, upload):
    settings.DISCORD_TOKEN = "x"
    settings.IMAGE_BACKEND = "placeholder"
    settings.GENERATION_QUEUE_TIMEOUT_SECONDS = queue
    settings.GENERATION_TIMEOUT_SECONDS = generation
    settings.DISCORD_UPLOAD_TIMEOUT_SECONDS = upload
    with pytest.raises(CommandError, match="must fit in Discord's 900 s interaction token"):
        call_command("runbot")


def test_runbot_refuses_a_lease_shorter_than_an_upload(settings):
    settings.DISCORD_TOKEN = "x"
    settings.IMAGE_BACKEND = "placeholder"
    settings.BOT_LEASE_SECONDS = 30
    with pytest.raises(CommandError, match="BOT_LEASE_SECONDS"):
        call_command("runbot")


def test_the_default_timeouts_fit():
    from discordbot.pipeline import check_timeouts_fit

    check_timeouts_fit()
