"""/generate, /edit, /settings and the image buttons, plus the periodic sweep that settles generations a dead
process left behind."""

import logging
from datetime import timedelta

import discord
from discord import app_commands
from discord.ext import commands, tasks
from django.conf import settings

from discordbot.bot import ImageCreditsBot
from discordbot.bridge import run_service
from discordbot.pipeline import Request
from discordbot.prices import quality_choice_names, size_choice_names, size_name
from discordbot.replies import send_private
from discordbot.services import MAX_PROMPT_LENGTH, member_settings_get, member_settings_set
from discordbot.views import DeleteButton, EditButton, RegenerateButton, VaryButton

log = logging.getLogger(__name__)

MAX_CHOICE_NAME = 100  # Discord's limit on a choice's name
MAX_COUNT = 4  # images per request: one message carries them (settings.IMAGE_MAX_COUNT may not exceed it)


def _choices(names: dict[str, str]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=name[:MAX_CHOICE_NAME], value=value) for value, name in names.items()]


class Images(commands.Cog):
    def __init__(self, bot: ImageCreditsBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(RegenerateButton, EditButton, VaryButton, DeleteButton)
        if self.bot.sweep:
            self.sweep.change_interval(seconds=settings.GENERATION_SWEEP_INTERVAL_SECONDS)
            self.sweep.start()

    async def cog_unload(self) -> None:
        self.sweep.cancel()
        self.bot.remove_dynamic_items(RegenerateButton, EditButton, VaryButton, DeleteButton)

    @app_commands.command(name="generate")
    @app_commands.describe(
        prompt="What the image should show",
        size="Square by default; larger sizes cost more",
        quality="Medium by default; higher quality costs more",
        count="How many images (1-4); each is charged only if it is delivered",
        private="Send the result to you alone, not the channel",
    )
    @app_commands.choices(size=_choices(size_choice_names()), quality=_choices(quality_choice_names()))
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        size: app_commands.Choice[str] | None = None,
        quality: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        private: bool | None = None,
    ) -> None:
        """Turn a prompt into images, posted in this channel (or only to you) and paid with your credits."""
        # No deferral here: the pipeline reserves first, so a refusal can be private (see discordbot.pipeline).
        await self.bot.pipeline.request(
            interaction,
            Request(
                prompt=prompt,
                size=size and size.value,
                quality=quality and quality.value,
                count=count,
                private=private,
            ),
        )

    @app_commands.command(name="edit")
    @app_commands.describe(
        prompt="What to change, or how to combine the pictures",
        image="The picture to edit (PNG, JPEG or WebP)",
        image2="Another picture to combine",
        image3="Another picture to combine",
        image4="Another picture to combine",
        markup="A transparent PNG drawn over the first picture to show where to edit",
        size="Square by default; larger sizes cost more",
        quality="Medium by default; higher quality costs more",
        count="How many images (1-4); each is charged only if it is delivered",
        private="Send the result to you alone, not the channel",
    )
    @app_commands.choices(size=_choices(size_choice_names()), quality=_choices(quality_choice_names()))
    async def edit(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        image: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        markup: discord.Attachment | None = None,
        size: app_commands.Choice[str] | None = None,
        quality: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        private: bool | None = None,
    ) -> None:
        """Edit a picture, or combine up to four, as the prompt says; paid with your credits (see /help)."""
        pictures = tuple(picture for picture in (image, image2, image3, image4) if picture is not None)
        await self.bot.pipeline.request(
            interaction,
            Request(
                operation="edit",
                prompt=prompt,
                size=size and size.value,
                quality=quality and quality.value,
                count=count,
                private=private,
                attachments=pictures,
                markup=markup,
            ),
        )

    @app_commands.command(name="settings")
    @app_commands.describe(
        size="Your default size",
        quality="Your default quality",
        count="How many images by default (1-4)",
        private="Send your results to you alone by default",
    )
    @app_commands.choices(size=_choices(size_choice_names()), quality=_choices(quality_choice_names()))
    async def member_settings(
        self,
        interaction: discord.Interaction,
        size: app_commands.Choice[str] | None = None,
        quality: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        private: bool | None = None,
    ) -> None:
        """Your defaults for /generate and /edit, used when you leave an option out. Without options: show them."""
        if size is None and quality is None and count is None and private is None:
            defaults = await run_service(member_settings_get, discord_user_id=interaction.user.id)
            heading = "Your defaults"
        else:
            defaults = await run_service(
                member_settings_set,
                discord_user_id=interaction.user.id,
                size=size and size.value,
                quality=quality and quality.value,
                count=count,
                private=private,
            )
            heading = "Saved. Your defaults"
        size_text = size_name(defaults.size) if defaults.size else f"{size_name(next(iter(settings.GENERATION_COSTS)))}"
        await send_private(
            interaction,
            f"{heading} for /generate and /edit:\n"
            f"- size: {size_text}\n"
            f"- quality: {(defaults.quality or settings.GENERATION_DEFAULT_QUALITY).title()}\n"
            f"- count: {defaults.count or 1}\n"
            f"- {'private (sent to you alone)' if defaults.private else 'public (posted in the channel)'}",
        )

    @tasks.loop(seconds=300)
    async def sweep(self) -> None:
        """Settle generations whose owner's lease expired, and this process's own that outlived any request."""
        try:
            await self.bot.settle_orphans(own_older_than=timedelta(seconds=settings.GENERATION_STALE_SECONDS))
        except Exception:
            log.exception("The stale-generation sweep failed; it will run again")


async def setup(bot: ImageCreditsBot) -> None:
    await bot.add_cog(Images(bot))
