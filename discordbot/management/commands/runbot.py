"""`manage.py runbot`: run the Discord bot until SIGTERM (how ECS stops a container) or Ctrl-C.

While another process holds the bot lease, this one stands by (see `discordbot.bot`). SIGTERM settles this
process's requests, releases the lease for a stand-by, and exits 0.
"""

import asyncio
import logging
import signal

import discord
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from discordbot.bot import ImageCreditsBot
from discordbot.bridge import close_db_connections
from discordbot.pipeline import check_timeouts_fit

log = logging.getLogger("discordbot.runbot")


async def main(token: str) -> None:
    loop = asyncio.get_running_loop()
    async with ImageCreditsBot() as bot:
        closing: set[asyncio.Task] = set()

        def stop(signame: str) -> None:
            log.info("%s received: settling unfinished images, then releasing the bot lease", signame)
            task = asyncio.ensure_future(bot.close())
            closing.add(task)
            task.add_done_callback(closing.discard)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        try:
            await bot.start(token)
        finally:
            # `start` returns once `close` has run; wait for a close begun by a signal to finish too.
            if closing:
                await asyncio.gather(*closing, return_exceptions=True)
            await close_db_connections()
    log.info("Bot stopped")


class Command(BaseCommand):
    help = "Run the Discord bot (slash commands /redeem /balance /buy /generate /history) until SIGTERM or Ctrl-C."

    def handle(self, *args, **options) -> None:
        if not settings.DISCORD_TOKEN:
            raise CommandError("DISCORD_TOKEN is empty: set it to the bot's token (see .env.example).")
        if settings.IMAGE_BACKEND == "openai" and not settings.OPENAI_API_KEY:
            raise CommandError("IMAGE_BACKEND is 'openai' but OPENAI_API_KEY is empty (see .env.example).")
        try:
            check_timeouts_fit()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        try:
            asyncio.run(main(settings.DISCORD_TOKEN))
        except discord.LoginFailure:
            raise CommandError("Discord refused DISCORD_TOKEN: check the bot token.") from None
