"""/help: what the bot does and what images cost, privately."""

import discord
from discord import app_commands
from discord.ext import commands

from discordbot.prices import price_table_text

HELP = (
    "**Image credits**: turn your credits into AI images.\n"
    "\N{BULLET} `/generate prompt` makes an image and posts it in this channel (choose a size and quality; "
    "bigger or better costs more). Your credits are refunded if it can't be made.\n"
    "\N{BULLET} `/balance` shows your credits, `/history` your latest credit movements.\n"
    "\N{BULLET} `/buy` gives you a personal checkout link; `/redeem code` adds a voucher's credits.\n"
    "\N{BULLET} Under your image: **Regenerate** makes another one (charged again), **Delete** removes the post.\n"
    "\n**Prices** (credits per image):\n"
)


class Help(commands.Cog):
    @app_commands.command(name="help")
    async def help(self, interaction: discord.Interaction) -> None:
        """How the bot works and what images cost."""
        await interaction.response.send_message((HELP + price_table_text())[:2000], ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Help())
