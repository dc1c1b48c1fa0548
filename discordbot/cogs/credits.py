"""/redeem, /balance, /history and /buy: a member's own credits. Every answer is private (ephemeral)."""

import discord
from discord import app_commands
from discord.ext import commands
from django.conf import settings

from discordbot.bridge import run_service
from discordbot.entitlements import store_skus
from discordbot.guilds import guild_allowance_left
from discordbot.replies import plural, shorten
from discordbot.selectors import HistoryEntry, member_history
from discordbot.services import voucher_redeem_limited
from discordbot.views import buy_view
from storefront.tokens import BUY_TOKEN_MAX_AGE_SECONDS
from vouchers.codes import MAX_INPUT_LENGTH
from vouchers.selectors import account_balance

HISTORY_LENGTH = 10
PROMPT_SHOWN = 60  # characters of a prompt in /history
MEMO_SHOWN = 80
MAX_MESSAGE_LENGTH = 2000  # Discord's limit on a message's content


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
        allowance = ""
        if interaction.guild_id is not None:
            left = await run_service(
                guild_allowance_left, guild_id=interaction.guild_id, discord_user_id=interaction.user.id
            )
            if left:
                allowance = f" This server pays for requests of up to {plural(left)} more today (your allowance)."
        await interaction.followup.send(
            f"You have **{plural(balance)}**. An image costs {min(costs)} to {plural(max(costs))} "
            f"depending on size and quality. Use /generate to spend them, /buy or /redeem to add more.{allowance}",
            ephemeral=True,
        )

    @app_commands.command(name="history")
    async def history(self, interaction: discord.Interaction) -> None:
        """Show your latest credit movements, with links to your images."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        entries = await run_service(member_history, discord_user_id=interaction.user.id, limit=HISTORY_LENGTH)
        if not entries:
            await interaction.followup.send("No credit movements yet. Use /buy or /redeem to start.", ephemeral=True)
            return
        await interaction.followup.send(history_text(entries), ephemeral=True)

    @app_commands.command(name="buy")
    async def buy(self, interaction: discord.Interaction) -> None:
        """Buy credits: a personal checkout link whose credits go straight to your balance."""
        skus = await run_service(store_skus)
        text = (
            "Here is your personal checkout link. Credits you buy through it land in your balance automatically, "
            f"no voucher needed. It works for {BUY_TOKEN_MAX_AGE_SECONDS // 60} minutes; don't share it."
        )
        if skus:
            packs = ", ".join(f"{_escape(shorten(sku.name, 40))} ({plural(sku.credits)})" for sku in skus)
            text += (
                f"\nOr buy right here in Discord: {packs}. "
                "The credits land in your balance as soon as Discord confirms the purchase."
            )
        await interaction.response.send_message(text, view=buy_view(interaction.user, skus), ephemeral=True)


def _escape(text: str) -> str:
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def history_line(entry: HistoryEntry) -> str:
    if entry.prompt is not None:
        prompt = _escape(shorten(entry.prompt, PROMPT_SHOWN))
        what = f"{entry.kind}: \N{LEFT DOUBLE QUOTATION MARK}{prompt}\N{RIGHT DOUBLE QUOTATION MARK}"
        if entry.message_url:
            what += f" ([image](<{entry.message_url}>))"
    else:
        what = entry.kind + (f" \N{EM DASH} {_escape(shorten(entry.memo, MEMO_SHOWN))}" if entry.memo else "")
    return f"`{entry.delta:+d}` {what} \N{MIDDLE DOT} {discord.utils.format_dt(entry.created_at, 'R')}"


def history_text(entries: list[HistoryEntry]) -> str:
    """The /history answer, always within Discord's 2,000 characters: older lines give way if need be."""
    lines = [history_line(entry) for entry in entries]
    while True:
        text = f"Your latest {plural(len(lines), 'movement')}:\n" + "\n".join(lines)
        if len(text) <= MAX_MESSAGE_LENGTH or len(lines) == 1:
            return text[:MAX_MESSAGE_LENGTH]
        lines.pop()


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Credits(bot))
