"""/redeem, /balance, /history and /buy: a member's own credits. Every answer is private (ephemeral)."""

import discord
from discord import app_commands
from discord.ext import commands
from django.conf import settings

from discordbot.bridge import run_service
from discordbot.replies import plural
from discordbot.services import voucher_redeem_limited
from storefront.tokens import BUY_TOKEN_MAX_AGE_SECONDS, buy_token_make, discord_name_label
from vouchers.codes import MAX_INPUT_LENGTH
from vouchers.selectors import account_balance, ledger_history

HISTORY_LENGTH = 10


class Credits(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="redeem")
    @app_commands.describe(code="Your voucher code, like K7QH-2M9D-XR4T-8BWE")
    async def redeem(
        self, interaction: discord.Interaction, code: app_commands.Range[str, 1, MAX_INPUT_LENGTH]
    ) -> None:
        """Add a voucher's credits to your balance."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        redemption = await run_service(voucher_redeem_limited, code=code, discord_user_id=interaction.user.id)
        await interaction.followup.send(
            f"\N{WHITE HEAVY CHECK MARK} Voucher `{redemption.voucher.code}` added {plural(redemption.credits)}. "
            f"Your balance is now **{plural(redemption.balance)}**.",
            ephemeral=True,
        )

    @app_commands.command(name="balance")
    async def balance(self, interaction: discord.Interaction) -> None:
        """Show how many image credits you have."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        balance = await run_service(account_balance, discord_user_id=interaction.user.id)
        costs = [cost for qualities in settings.GENERATION_COSTS.values() for cost in qualities.values()]
        await interaction.followup.send(
            f"You have **{plural(balance)}**. An image costs {min(costs)} to {plural(max(costs))} "
            "depending on size and quality. Use /generate to spend them, /buy or /redeem to add more.",
            ephemeral=True,
        )

    @app_commands.command(name="history")
    async def history(self, interaction: discord.Interaction) -> None:
        """Show your latest credit movements."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        entries = await run_service(ledger_history, discord_user_id=interaction.user.id, limit=HISTORY_LENGTH)
        if not entries:
            await interaction.followup.send("No credit movements yet. Use /buy or /redeem to start.", ephemeral=True)
            return
        lines = [
            f"`{entry.delta:+d}` {entry.get_kind_display()}"
            + (f" \N{EM DASH} {discord.utils.escape_markdown(entry.memo)}" if entry.memo else "")
            + f" \N{MIDDLE DOT} {discord.utils.format_dt(entry.created_at, 'R')}"
            for entry in entries
        ]
        await interaction.followup.send(
            f"Your latest {plural(len(entries), 'movement')}:\n" + "\n".join(lines), ephemeral=True
        )

    @app_commands.command(name="buy")
    async def buy(self, interaction: discord.Interaction) -> None:
        """Buy credits: a personal checkout link whose credits go straight to your balance."""
        # The name rides in the signed token so the shop can show whom the link credits and ask to confirm.
        name = discord_name_label(username=interaction.user.name, display_name=interaction.user.display_name)
        url = f"{settings.SITE_URL}/?for={buy_token_make(discord_user_id=interaction.user.id, discord_name=name)}"
        view = discord.ui.View(timeout=None)  # a link button: nothing to listen for
        view.add_item(discord.ui.Button(label="Buy credits", url=url, emoji="\N{SHOPPING TROLLEY}"))
        await interaction.response.send_message(
            "Here is your personal checkout link. Credits you buy through it land in your balance automatically, "
            f"no voucher needed. It works for {BUY_TOKEN_MAX_AGE_SECONDS // 60} minutes; don't share it.\n<{url}>",
            view=view,
            ephemeral=True,
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Credits(bot))
