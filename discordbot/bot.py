"""The Discord bot: slash commands to redeem, check, buy and spend image credits.

`manage.py runbot` runs it; `manage.py synccommands` registers its commands with Discord. The bot never blocks
its event loop: the database is reached through `discordbot.bridge.run_service`, images through async clients.
"""

import logging

import discord
from discord import app_commands
from discord.ext import commands
from django.conf import settings

from discordbot.bridge import run_service
from discordbot.images import ImageBackend, backend_from_settings
from discordbot.pipeline import GenerationPipeline
from discordbot.queue import GenerationQueue
from discordbot.replies import report_error
from discordbot.services import generations_refund_stale

log = logging.getLogger(__name__)

EXTENSIONS = (
    "discordbot.cogs.credits",
    "discordbot.cogs.images",
)


class BotCommandTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


class ImageCreditsBot(commands.Bot):
    """The bot. `sweep=False` (for `synccommands`) leaves generations alone: another process may own them."""

    backend: ImageBackend
    pipeline: GenerationPipeline
    sweep: bool

    def __init__(self, *, backend: ImageBackend | None = None, sweep: bool = True) -> None:
        # The bot never joins voice; without this, every start logs two warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True  # slash commands need nothing more; no message content, no member lists
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BotCommandTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
        )
        self.sweep = sweep
        self.backend = backend or backend_from_settings()
        self.pipeline = GenerationPipeline(
            backend=self.backend,
            queue=GenerationQueue(
                global_limit=settings.MAX_CONCURRENT_GENERATIONS, per_member_limit=settings.GENERATIONS_PER_MEMBER
            ),
            timeout=settings.GENERATION_TIMEOUT_SECONDS,
            queue_timeout=settings.GENERATION_QUEUE_TIMEOUT_SECONDS,
        )

    async def setup_hook(self) -> None:
        if self.sweep:
            # Before any interaction arrives: whatever is still in flight belongs to a process that died.
            refunded = await run_service(generations_refund_stale)
            if refunded:
                log.warning("Refunded %d generation(s) left in flight by a previous run: %s", len(refunded), refunded)
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("Could not load extension %s", extension)

    async def on_ready(self) -> None:
        log.info(
            "Connected as %s (id %s) to %d guild(s)", self.user, self.user.id if self.user else "?", len(self.guilds)
        )

    async def close(self) -> None:
        # Refund (and tell) members whose images are unfinished while the connection to Discord is still open.
        await self.pipeline.close()
        await super().close()
