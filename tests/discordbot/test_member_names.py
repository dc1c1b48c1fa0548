"""Members' Discord names: `account_name_record` (one UPDATE, only when changed, never creates an account), the
hourly throttle of `member_name_seen`, and the real bot recording the name when a member uses a command."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from discordbot.services import member_name_seen
from vouchers.models import CreditAccount
from vouchers.services import account_name_record

USER = 440_000_000_000_000_001


@pytest.mark.django_db
class TestRecord:
    def test_records_the_name_with_one_update_and_nothing_when_unchanged(self, fund):
        fund(USER, 1)
        with CaptureQueriesContext(connection) as first:
            account_name_record(discord_user_id=USER, name="Ada (@ada)")
        with CaptureQueriesContext(connection) as again:
            account_name_record(discord_user_id=USER, name="Ada (@ada)")

        assert CreditAccount.objects.get(discord_user_id=USER).discord_name == "Ada (@ada)"
        updates = [q["sql"] for q in first.captured_queries if q["sql"].startswith("UPDATE")]
        assert len(first.captured_queries) == 1 and len(updates) == 1
        assert len(again.captured_queries) == 1  # the same UPDATE, matching no row: nothing written

    def test_does_not_create_an_account(self, db):
        account_name_record(discord_user_id=USER, name="Ada")
        assert not CreditAccount.objects.exists()

    def test_keeps_one_printable_line_and_the_length_the_column_holds(self, fund):
        fund(USER, 1)
        account_name_record(discord_user_id=USER, name="  Ada\n\x00Lovelace\t " + "x" * 200)
        name = CreditAccount.objects.get(discord_user_id=USER).discord_name
        assert name.startswith("Ada Lovelace x") and len(name) == 100

    def test_a_blank_name_leaves_the_last_one(self, fund):
        fund(USER, 1)
        account_name_record(discord_user_id=USER, name="Ada")
        account_name_record(discord_user_id=USER, name=" \n ")
        assert CreditAccount.objects.get(discord_user_id=USER).discord_name == "Ada"

    def test_recording_a_name_does_not_count_as_a_change_of_credits(self, fund):
        fund(USER, 1)
        before = CreditAccount.objects.get(discord_user_id=USER).updated_at
        account_name_record(discord_user_id=USER, name="Ada")
        assert CreditAccount.objects.get(discord_user_id=USER).updated_at == before


@pytest.mark.django_db
class TestThrottle:
    def test_one_write_per_member_per_hour(self, fund):
        fund(USER, 1)
        assert member_name_seen(discord_user_id=USER, name="Ada") is True
        assert member_name_seen(discord_user_id=USER, name="Ada Renamed") is False
        assert CreditAccount.objects.get(discord_user_id=USER).discord_name == "Ada"

        cache.delete(f"member-name-seen:{USER}")  # an hour later
        assert member_name_seen(discord_user_id=USER, name="Ada Renamed") is True
        assert CreditAccount.objects.get(discord_user_id=USER).discord_name == "Ada Renamed"

    def test_a_member_without_an_account_does_not_use_up_the_hour(self, fund):
        assert member_name_seen(discord_user_id=USER, name="Ada") is False
        fund(USER, 1)  # e.g. their first /redeem created the account
        assert member_name_seen(discord_user_id=USER, name="Ada") is True
        assert CreditAccount.objects.get(discord_user_id=USER).discord_name == "Ada"


@pytest.mark.django_db(transaction=True)
def test_the_bot_records_the_name_of_a_member_who_uses_a_command(bot, member, fund):
    user, stranger = member(), member()
    fund(user, 3)
    name = f"Member {user % 10000} (@member{user % 10000})"  # the fake's global_name and username

    bot.answer(bot.command("balance", user=user))
    bot.answer(bot.command("balance", user=stranger))

    bot.wait_for(lambda: CreditAccount.objects.get(discord_user_id=user).discord_name == name)
    assert not CreditAccount.objects.filter(discord_user_id=stranger).exists()  # no account made for a name


@pytest.mark.django_db(transaction=True)
def test_the_bot_does_not_send_a_name_it_wrote_this_hour_to_the_database_again(fund):
    """The Members cog remembers the names this process wrote in the last hour: the same name again costs no
    database call (the shared throttle would refuse it anyway); a changed name still goes to the throttle."""
    import asyncio
    from types import SimpleNamespace

    from discordbot.cogs.members import Members

    fund(USER, 1)
    cog = Members()

    def used_a_command(display_name: str):
        user = SimpleNamespace(id=USER, bot=False, name="ada", display_name=display_name)
        asyncio.run(cog.on_app_command_completion(SimpleNamespace(user=user), None))

    def recorded() -> str:
        return CreditAccount.objects.get(discord_user_id=USER).discord_name

    used_a_command("Ada")
    assert recorded() == "Ada (@ada)"
    # Another process's write and the end of the shared hour: only this process's memory stands in the way now.
    CreditAccount.objects.filter(discord_user_id=USER).update(discord_name="written elsewhere")
    cache.delete(f"member-name-seen:{USER}")
    used_a_command("Ada")
    assert recorded() == "written elsewhere"  # the same name: not sent to the database
    used_a_command("Ada Renamed")
    assert recorded() == "Ada Renamed (@ada)"  # a new name goes through the shared throttle (free again)
