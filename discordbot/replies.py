"""How the bot answers members: private replies, and the one mapping from errors to words.

Domain errors (`VoucherError`, `BotError`) carry their own member-safe message; cooldowns and failed checks get
a fixed sentence; anything else is unexpected, logged with its traceback, and answered with an apology.
"""

import logging
from contextlib import suppress

import discord
from discord import app_commands

from discordbot.errors import BotError
from vouchers.errors import VoucherError

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on our side. Please try again in a moment."


def plural(n: int, word: str = "credit") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


async def send_private(interaction: discord.Interaction, text: str, *, replace_deferral: bool = False) -> None:
    """Answer only the member who asked.

    `replace_deferral`: the interaction was deferred publicly ("thinking..."); that message is deleted first,
    so the answer does not become a public message in the channel.
    """
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    if replace_deferral:
        with suppress(discord.HTTPException):
            await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


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
