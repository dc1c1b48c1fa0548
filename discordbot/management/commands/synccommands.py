"""`manage.py synccommands [--guild ID]`: register the bot's slash commands with Discord.

Syncing is explicit (run it after changing commands), never on every start: Discord rate-limits it. Global
commands reach every server within about an hour; `--guild` updates one server at once (for development;
`--guild` without an id uses DISCORD_TEST_GUILD_ID).
"""

import asyncio

import discord
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from discordbot.bot import ImageCreditsBot
from discordbot.bridge import close_db_connections


async def sync_commands(token: str, *, guild_id: int | None) -> list[discord.app_commands.AppCommand]:
    # sweep=False: this short-lived process must not touch generations a running bot owns.
    async with ImageCreditsBot(sweep=False) as bot:
        await bot.login(token)  # HTTP only; its setup_hook loads the cogs, which build the command tree
        try:
            if guild_id is None:
                return await bot.tree.sync()
            guild = discord.Object(id=guild_id)
            bot.tree.copy_global_to(guild=guild)
            return await bot.tree.sync(guild=guild)
        finally:
            await close_db_connections()


class Command(BaseCommand):
    help = "Register the slash commands with Discord, globally or (with --guild) in one server."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--guild",
            type=int,
            nargs="?",
            const=0,
            default=None,
            metavar="ID",
            help="sync to this server only (instant); without an ID, DISCORD_TEST_GUILD_ID",
        )

    def handle(self, *args, guild: int | None, **options) -> None:
        if not settings.DISCORD_TOKEN:
            raise CommandError("DISCORD_TOKEN is empty: set it to the bot's token (see .env.example).")
        if guild == 0:
            guild = settings.DISCORD_TEST_GUILD_ID
            if not guild:
                raise CommandError("--guild without an ID needs DISCORD_TEST_GUILD_ID.")
        try:
            synced = asyncio.run(sync_commands(settings.DISCORD_TOKEN, guild_id=guild))
        except discord.LoginFailure:
            raise CommandError("Discord refused DISCORD_TOKEN: check the bot token.") from None
        except discord.HTTPException as exc:
            raise CommandError(f"Discord refused the commands: {exc}") from None
        names = ", ".join(f"/{command.name}" for command in synced)
        where = f"to guild {guild}" if guild else "globally (they can take up to an hour to appear everywhere)"
        self.stdout.write(self.style.SUCCESS(f"Synced {len(synced)} command(s) {where}: {names}"))
