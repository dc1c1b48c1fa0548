"""/help: what the bot does and what images cost, privately."""

import discord
from discord import app_commands
from discord.ext import commands

from discordbot.prices import price_table_text
from discordbot.replies import plural
from vouchers.pricing import operation_surcharges

HELP = (
    "**Image credits**: turn your credits into AI images.\n"
    "\N{BULLET} `/generate prompt` makes an image and posts it in this channel (choose a size and quality; "
    "bigger or better costs more; `count` up to 4 at once; `private` sends it to you alone). Your credits are "
    "refunded for every image that can't be made.\n"
    "\N{BULLET} `/edit prompt image` changes or combines your pictures (up to four, plus a `markup` drawn over "
    "the first); `/settings` stores your defaults for size, quality, count and private.\n"
    "\N{BULLET} `/balance` shows your credits, `/history` your latest credit movements.\n"
    "\N{BULLET} `/buy` gives you a personal checkout link; `/redeem code` adds a voucher's credits.\n"
    "\N{BULLET} Under your image: **Regenerate** makes another one, **Edit** reruns it with a changed prompt, "
    "**Vary** makes a variation of it (each charged again, its cost on the button), **Delete** removes the post.\n"
    "\N{BULLET} **In a server**, its managers may limit where and how much images are made, and its wallet may "
    "pay for you: a request is paid by the server if all of it fits in your allowance left today and its wallet, "
    "otherwise from your own balance. Managers: `/server show`, `rules`, `channel`, `bar`, `allowance`, "
    "`usage`, `redeem`, `buy`.\n"
    "\n**Prices** (credits per image; edits and variations cost more, see below):\n"
)


class Help(commands.Cog):
    @app_commands.command(name="help")
    async def help(self, interaction: discord.Interaction) -> None:
        """How the bot works and what images cost."""
        extra = ", ".join(
            f"{operation} +{plural(credits)}" for operation, credits in operation_surcharges().items() if credits
        )
        text = HELP + price_table_text() + (f"\nPer image on top: {extra}." if extra else "")
        await interaction.response.send_message(text[:2000], ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Help())
