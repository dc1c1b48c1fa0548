"""Members' Discord names for operators: when a member with an account has used a command, the bot records
their name ("Display (@username)") on the account, at most once an hour per member.

A listener on interactions, not a command. It listens for a command's completion rather than its arrival: by
then the command has answered (its own database work comes first and is never slowed or disturbed by this
one), and a first /redeem has created the account. It runs as its own task; a failure is logged and ignored.
"""

import logging

import discord
from discord.ext import commands

from discordbot.bridge import run_service
from discordbot.services import member_name_seen
from storefront.tokens import discord_name_label

log = logging.getLogger(__name__)


class Members(commands.Cog):
    @commands.Cog.listener()
    async def on_app_command_completion(self, interaction: discord.Interaction, command: object) -> None:
        if interaction.user is None or interaction.user.bot:
            return
        user = interaction.user
        name = discord_name_label(username=user.name, display_name=user.display_name)
        try:
            await run_service(member_name_seen, discord_user_id=user.id, name=name)
        except Exception:
            log.exception("Could not record a member's Discord name")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Members())
