"""/generate and the Regenerate button, plus the periodic sweep that refunds generations a crash left behind."""

import logging
from datetime import timedelta

import discord
from discord import app_commands
from discord.ext import commands, tasks
from django.conf import settings

from discordbot.bot import ImageCreditsBot
from discordbot.bridge import run_service
from discordbot.services import MAX_PROMPT_LENGTH, generations_refund_stale
from discordbot.views import RegenerateButton

log = logging.getLogger(__name__)

QUALITY_ORDER = ("low", "medium", "high", "xhigh", "max")


def _size_choices() -> list[app_commands.Choice[str]]:
    choices = []
    for size in settings.GENERATION_COSTS:
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            choices.append(app_commands.Choice(name=size, value=size))  # e.g. "auto"
            continue
        shape = "Square" if width == height else "Landscape" if int(width) > int(height) else "Portrait"
        choices.append(app_commands.Choice(name=f"{shape} {width}\N{MULTIPLICATION SIGN}{height}", value=size))
    return choices


def _quality_choices() -> list[app_commands.Choice[str]]:
    qualities = {quality for options in settings.GENERATION_COSTS.values() for quality in options}
    ordered = sorted(qualities, key=lambda q: (QUALITY_ORDER.index(q) if q in QUALITY_ORDER else 99, q))
    return [app_commands.Choice(name=quality.title(), value=quality) for quality in ordered]


class Images(commands.Cog):
    def __init__(self, bot: ImageCreditsBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(RegenerateButton)
        if self.bot.sweep:
            self.sweep.change_interval(seconds=settings.GENERATION_SWEEP_INTERVAL_SECONDS)
            self.sweep.start()

    async def cog_unload(self) -> None:
        self.sweep.cancel()
        self.bot.remove_dynamic_items(RegenerateButton)

    @app_commands.command(name="generate")
    @app_commands.describe(
        prompt="What the image should show",
        size="Square by default; larger sizes cost more",
        quality="Medium by default; higher quality costs more",
    )
    @app_commands.choices(size=_size_choices(), quality=_quality_choices())
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        size: app_commands.Choice[str] | None = None,
        quality: app_commands.Choice[str] | None = None,
    ) -> None:
        """Turn a prompt into an image, paid with your credits (see /balance)."""
        await interaction.response.defer(thinking=True)
        await self.bot.pipeline.generate(
            interaction, prompt=prompt, size=size and size.value, quality=quality and quality.value
        )

    @tasks.loop(seconds=300)
    async def sweep(self) -> None:
        """Refund generations in flight for longer than any request may take (left by a crashed process)."""
        try:
            refunded = await run_service(
                generations_refund_stale,
                older_than=timedelta(seconds=settings.GENERATION_STALE_SECONDS),
                exclude_ids=self.bot.pipeline.in_flight_ids,
            )
        except Exception:
            log.exception("The stale-generation sweep failed; it will run again")
            return
        if refunded:
            log.warning("Sweep refunded %d stale generation(s): %s", len(refunded), refunded)


async def setup(bot: ImageCreditsBot) -> None:
    await bot.add_cog(Images(bot))
