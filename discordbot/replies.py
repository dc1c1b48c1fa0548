"""How the bot answers members: private replies, and the one mapping from errors to words.

Domain errors (`VoucherError`, `BotError`) carry their own member-safe message; cooldowns and failed checks get
a fixed sentence; anything else is unexpected, logged with its traceback, and answered with an apology.

Private answers rely only on what Discord documents:
- before any response, a private answer is an ephemeral initial response;
- after a private deferral, the first followup takes the deferral's (ephemeral) place;
- after a public deferral, the first followup would take the public "thinking..." message's place whatever its
  flags say, so the deferral is first resolved with a neutral word, then the answer goes out as an ephemeral
  followup (honoured once the deferral is resolved), and the public message is deleted. The channel never sees
  the private text, and is left with nothing.
"""

import logging
from contextlib import suppress

import discord
from discord import app_commands
from discord.utils import MISSING

from discordbot.errors import BotError
from vouchers.errors import VoucherError

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on our side. Please try again in a moment."
WITHDRAWN = "\N{BLACK SQUARE FOR STOP} This request was closed."
PUBLIC_MESSAGE = "public_message"  # key in `Interaction.extras`


def plural(n: int, word: str = "credit") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to at most `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"


class PublicMessage:
    """The public message a request owns in the channel: the original response of a public deferral, or a public
    followup. It will carry the image; until then it may show the place in line."""

    def __init__(
        self,
        interaction: discord.Interaction,
        *,
        message_id: int | None,
        followup: discord.WebhookMessage | None = None,
    ) -> None:
        self.interaction = interaction
        self.message_id = message_id
        self.followup = followup
        # An original response still "thinking..." (a deferral not yet resolved by an edit).
        self.loading = followup is None

    async def edit(self, **fields) -> discord.Message:
        if self.followup is not None:
            message = await self.followup.edit(**fields)
        else:
            message = await self.interaction.edit_original_response(**fields)
        self.loading = False
        return message

    async def fetch(self) -> discord.Message:
        if self.followup is not None:
            return await self.interaction.followup.fetch_message(self.followup.id)
        return await self.interaction.original_response()

    async def delete(self) -> None:
        if self.followup is not None:
            await self.followup.delete()
        else:
            await self.interaction.delete_original_response()


def error_message(error: BaseException) -> str | None:
    """What a member reads for an expected error; None for an unexpected one."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, VoucherError | BotError):
        return error.message
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} seconds."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    if isinstance(error, app_commands.TransformerError):
        return "One of the options you gave isn't valid."
    return None


async def send_private(interaction: discord.Interaction, text: str, *, view: discord.ui.View = MISSING) -> None:
    """Answer only the member who asked, whatever was sent before (see the module docstring)."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, view=view)
        return
    public: PublicMessage | None = interaction.extras.pop(PUBLIC_MESSAGE, None)
    if public is not None and public.loading:
        with suppress(discord.HTTPException):  # gone already: then the followup below has nothing to replace
            await public.edit(content=WITHDRAWN, attachments=[], view=None)
    await interaction.followup.send(text, ephemeral=True, view=view)
    if public is not None:
        with suppress(discord.HTTPException):
            await public.delete()


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """The central error handler's body: answer privately, log what we did not expect."""
    message = error_message(error)
    if message is None:
        command = interaction.command.qualified_name if interaction.command else interaction.data
        log.error("Unexpected error handling %s for user %s", command, interaction.user.id, exc_info=error)
        message = UNEXPECTED
    try:
        await send_private(interaction, message)
    except discord.HTTPException as exc:
        log.warning("Could not tell user %s about an error: %s", interaction.user.id, exc)
