"""Members' Discord names for operators: when a member with an account uses a command (or a button), the bot
records their name ("Display (@username)") on the account, at most once an hour per member.

A listener, not a command: it runs as its own task beside the command it saw, so it never delays an answer,
and a failure here is logged and otherwise ignored.
"""

import logging

import discord
from discord.ext import commands

from discordbot.bridge import run_service
from discordbot.services import member_name_seen
from storefront.tokens import discord_name_label

log = logging.getLogger(__name__)

# Autocomplete fires on every keystroke and pings carry no member: only commands and components count.
COUNTED = (discord.InteractionType.application_command, discord.InteractionType.component)


class Members(commands.Cog):
    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type not in COUNTED or interaction.user is None or interaction.user.bot:
            return
        user = interaction.user
        name = discord_name_label(username=user.name, display_name=user.display_name)
        try:
            await run_service(member_name_seen, discord_user_id=user.id, name=name)
        except Exception:
            log.exception("Could not record a member's Discord name")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Members())
