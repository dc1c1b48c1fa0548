"""/server: a server's managers set its rules for image requests and run its wallet. Every answer is private.

Only members with the Manage Server permission (as Discord computes it for the interaction, administrators
included) may use these commands: Discord hides them from others by default (`default_permissions`), and since a
server can change who sees a command, each command checks the permissions Discord sent again. The rules
themselves live in `discordbot.guilds`.
"""

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands
from django.conf import settings

from discordbot.bridge import run_service
from discordbot.errors import BotError
from discordbot.guilds import (
    MemberUsage,
    ServerRules,
    guild_allowance_set,
    guild_channel_set,
    guild_member_bar,
    guild_rules_set,
    guild_summary,
    guild_usage,
    guild_wallet_open,
    guild_wallet_redeem,
)
from discordbot.replies import plural
from storefront.tokens import BUY_TOKEN_MAX_AGE_SECONDS, buy_token_make
from vouchers.codes import MAX_INPUT_LENGTH

MAX_MESSAGE_LENGTH = 2000


class ManagersOnly(BotError):
    reason = "not_a_manager"
    default_message = "Only members with the Manage Server permission can use /server commands."


def _manager(interaction: discord.Interaction) -> tuple[int, str]:
    """The server's id and name, if the member may manage it; ManagersOnly otherwise."""
    permissions = interaction.permissions
    if interaction.guild_id is None or not (permissions.manage_guild or permissions.administrator):
        raise ManagersOnly()
    return interaction.guild_id, (interaction.guild.name if interaction.guild and interaction.guild.name else "")


def rules_text(rules: ServerRules | None) -> str:
    if rules is None:
        return "No rules: every member may make images in every channel, each paying from their own balance."
    channels = ", ".join(f"<#{c}>" for c in rules.channel_ids) or "every channel"
    return "\n".join(
        [
            f"\N{BULLET} Channels: {channels}",
            f"\N{BULLET} Required role: {f'<@&{rules.required_role_id}>' if rules.required_role_id else 'none'}",
            f"\N{BULLET} Images per member per day: {rules.daily_image_cap or 'no limit'}",
            f"\N{BULLET} Most one image may cost: {plural(rules.max_image_cost) if rules.max_image_cost else 'any'}",
            f"\N{BULLET} Moderation: {rules.moderation or 'the image service default'}",
            f"\N{BULLET} Daily allowance from the server's wallet: {plural(rules.default_allowance)} per member",
        ]
    )


def usage_text(rows: list[MemberUsage]) -> str:
    if not rows:
        return "Nobody has made images here today (under this server's rules)."
    lines = [
        f"<@{row.discord_user_id}>: {plural(row.images, 'image')}, {row.allowance_used} of "
        f"{plural(row.allowance)} allowance used"
        for row in rows
    ]
    return ("Today (UTC):\n" + "\n".join(lines))[:MAX_MESSAGE_LENGTH]


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Server(commands.GroupCog, group_name="server", group_description="Manage this server's image rules and wallet"):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    async def _reply(self, interaction: discord.Interaction, text: str, **kwargs) -> None:
        await interaction.followup.send(
            text[:MAX_MESSAGE_LENGTH], ephemeral=True, allowed_mentions=discord.AllowedMentions.none(), **kwargs
        )

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Show this server's rules, wallet and allowances."""
        guild_id, _ = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        summary = await run_service(guild_summary, guild_id=guild_id)
        extra = ""
        if summary.allowances:
            extra += "\n\N{BULLET} Own allowances: " + ", ".join(f"<@{m}> {c}" for m, c in summary.allowances)
        if summary.barred:
            extra += "\n\N{BULLET} Barred: " + ", ".join(f"<@{m}>" for m in summary.barred)
        await self._reply(
            interaction, f"{rules_text(summary.rules)}{extra}\nServer wallet: **{plural(summary.wallet)}**."
        )

    @app_commands.command(name="rules")
    @app_commands.describe(
        daily_cap="Images each member may make a day (0: no limit)",
        max_cost="The most one image may cost, in credits (0: no limit)",
        moderation="How strictly the image service filters prompts",
        role="Only members with this role may make images",
        clear_role="Let every member make images again, whatever their roles",
    )
    async def rules(
        self,
        interaction: discord.Interaction,
        daily_cap: app_commands.Range[int, 0, 1_000_000] | None = None,
        max_cost: app_commands.Range[int, 0, 1_000_000] | None = None,
        moderation: Literal["auto", "low", "default"] | None = None,
        role: discord.Role | None = None,
        clear_role: bool = False,
    ) -> None:
        """Set who may make images here and within what limits."""
        guild_id, name = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        rules = await run_service(
            guild_rules_set,
            guild_id=guild_id,
            name=name,
            daily_image_cap=daily_cap,
            max_image_cost=max_cost,
            moderation=moderation,
            required_role_id=role.id if role else None,
            clear_role=clear_role,
        )
        await self._reply(interaction, "Saved. This server's rules:\n" + rules_text(rules))

    @app_commands.command(name="channel")
    @app_commands.describe(action="Allow a channel, remove it, or clear the list", channel="The channel")
    async def channel(
        self,
        interaction: discord.Interaction,
        action: Literal["allow", "remove", "clear"],
        channel: app_commands.AppCommandChannel | None = None,
    ) -> None:
        """Choose the channels where image commands work (none listed: every channel)."""
        guild_id, name = _manager(interaction)
        if action != "clear" and channel is None:
            raise BotError("Name the channel to allow or remove.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        rules = await run_service(
            guild_channel_set,
            guild_id=guild_id,
            name=name,
            channel_id=None if action == "clear" else channel.id,
            allow=action == "allow",
        )
        await self._reply(interaction, "Saved. This server's rules:\n" + rules_text(rules))

    @app_commands.command(name="bar")
    @app_commands.describe(member="The member who may no longer make images here")
    async def bar(self, interaction: discord.Interaction, member: discord.User) -> None:
        """Bar a member from making images in this server."""
        guild_id, name = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await run_service(guild_member_bar, guild_id=guild_id, discord_user_id=member.id, barred=True, name=name)
        await self._reply(interaction, f"{member.mention} can no longer make images in this server.")

    @app_commands.command(name="unbar")
    @app_commands.describe(member="The member who may make images here again")
    async def unbar(self, interaction: discord.Interaction, member: discord.User) -> None:
        """Let a barred member make images in this server again."""
        guild_id, name = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await run_service(guild_member_bar, guild_id=guild_id, discord_user_id=member.id, barred=False, name=name)
        await self._reply(interaction, f"{member.mention} may make images in this server again.")

    @app_commands.command(name="allowance")
    @app_commands.describe(
        credits="Credits a day from the server's wallet (leave out, with a member: back to the default)",
        member="Only this member (leave out: the default for everyone)",
    )
    async def allowance(
        self,
        interaction: discord.Interaction,
        credits: app_commands.Range[int, 0, 1_000_000] | None = None,
        member: discord.User | None = None,
    ) -> None:
        """Set how many credits a day each member may spend from the server's wallet."""
        guild_id, name = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await run_service(
            guild_allowance_set,
            guild_id=guild_id,
            credits=credits,
            discord_user_id=member.id if member else None,
            name=name,
        )
        who = member.mention if member else "Each member"
        what = f"{plural(credits)} a day" if credits is not None else "the server's default allowance"
        await self._reply(interaction, f"Saved. {who} may now spend {what} from the server's wallet.")

    @app_commands.command(name="usage")
    async def usage(self, interaction: discord.Interaction) -> None:
        """See what each member made and spent from the server's wallet today."""
        guild_id, _ = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        rows = await run_service(guild_usage, guild_id=guild_id)
        await self._reply(interaction, usage_text(rows))

    @app_commands.command(name="redeem")
    @app_commands.describe(code="A voucher code, like K7QH-2M9D-XR4T-8BWE")
    async def redeem(
        self, interaction: discord.Interaction, code: app_commands.Range[str, 1, MAX_INPUT_LENGTH]
    ) -> None:
        """Add a voucher's credits to the server's wallet."""
        guild_id, name = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        redemption = await run_service(
            guild_wallet_redeem, guild_id=guild_id, code=code, manager_id=interaction.user.id, name=name
        )
        await self._reply(
            interaction,
            f"\N{WHITE HEAVY CHECK MARK} Voucher `{redemption.voucher.code}` added {plural(redemption.credits)} to "
            f"the server's wallet. It now holds **{plural(redemption.balance)}**.",
        )

    @app_commands.command(name="buy")
    async def buy(self, interaction: discord.Interaction) -> None:
        """A checkout link whose credits go to the server's wallet."""
        guild_id, name = _manager(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await run_service(guild_wallet_open, guild_id=guild_id, name=name)
        label = f"the wallet of server {name}" if name else "this server's wallet"
        token = buy_token_make(discord_user_id=interaction.user.id, discord_name=label, discord_guild_id=guild_id)
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Buy credits for the server", url=f"{settings.SITE_URL}/?for={token}"))
        await self._reply(
            interaction,
            "Here is a checkout link for this server's wallet: credits bought through it go to the wallet, which "
            "pays for members' images within their daily allowance (`/server allowance`). It works for "
            f"{BUY_TOKEN_MAX_AGE_SECONDS // 60} minutes.",
            view=view,
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Server(bot))
