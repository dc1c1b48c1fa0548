"""Discord's own checkout: purchases of credit packs as consumable SKUs (Premium Apps). Off until a pack has a SKU.

Thin: the rules are in `discordbot.entitlements`. This cog listens to the gateway's entitlement events, reads
Discord's list of entitlements when the bot connects (purchases and refunds made while it was down), and consumes
each entitlement once it is credited, retrying the consume later when Discord does not take it.
"""

import asyncio
import logging

import discord
from discord.ext import commands, tasks
from django.conf import settings

from discordbot.bridge import run_service
from discordbot.entitlements import (
    EntitlementError,
    entitlement_claw_back,
    entitlement_credit,
    entitlement_mark_consumed,
    entitlements_to_consume,
    store_sku_ids,
)

log = logging.getLogger(__name__)


def _owner(entitlement: discord.Entitlement) -> dict:
    return {
        "entitlement_id": entitlement.id,
        "sku_id": entitlement.sku_id,
        "discord_user_id": entitlement.user_id,
        "entitlement_type": entitlement.type.value,
    }


class Store(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self._settling: set[int] = set()  # entitlement ids being settled by this process right now
        self._reconciling = asyncio.Lock()
        self._reconciled_session: str | None = None  # the gateway session whose start was reconciled

    async def cog_load(self) -> None:
        self.retry_consumes.change_interval(seconds=settings.DISCORD_CONSUME_RETRY_SECONDS)
        self.retry_consumes.start()

    async def cog_unload(self) -> None:
        self.retry_consumes.cancel()

    # --- gateway events -----------------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_entitlement_create(self, entitlement: discord.Entitlement) -> None:
        await self.settle(entitlement)

    @commands.Cog.listener()
    async def on_entitlement_update(self, entitlement: discord.Entitlement) -> None:
        await self.settle(entitlement)

    @commands.Cog.listener()
    async def on_entitlement_delete(self, entitlement: discord.Entitlement) -> None:
        await self.refund(entitlement)

    # --- the work -----------------------------------------------------------------------------------------------

    async def settle(self, entitlement: discord.Entitlement) -> None:
        """Credit a purchase (once, whoever else is at it), then consume it in Discord."""
        if entitlement.deleted:
            await self.refund(entitlement)
            return
        if entitlement.id in self._settling:
            return  # this process is already at it (the event and the reconciliation at once)
        self._settling.add(entitlement.id)
        try:
            try:
                credit = await run_service(entitlement_credit, **_owner(entitlement))
            except EntitlementError as exc:
                log.warning("Discord entitlement %s (SKU %s) not credited: %s", entitlement.id, entitlement.sku_id, exc)
                return
            if entitlement.consumed and credit.consume:  # consumed in Discord, our record did not know yet
                await run_service(entitlement_mark_consumed, entitlement_id=entitlement.id)
            elif credit.consume:
                await self.consume(entitlement.id)
        finally:
            self._settling.discard(entitlement.id)

    async def consume(self, entitlement_id: int) -> bool:
        """Tell Discord the purchase was delivered, so the member can buy it again. False: try again later."""
        app_id = self.bot.application_id
        try:
            await self.bot.http.consume_entitlement(app_id, entitlement_id)
        except Exception as exc:
            # Discord refuses a second consume (another process did it, or an earlier answer was lost), and the
            # code it answers is not documented: ask it what is true rather than guess.
            try:
                data = await self.bot.http.get_entitlement(app_id, entitlement_id)
            except Exception:
                data = {}
            if data.get("deleted"):  # refunded meanwhile: take it back rather than retry
                await self.refund(discord.Entitlement(state=self.bot._connection, data=data))
                return False
            if not data.get("consumed"):
                log.warning("Could not consume Discord entitlement %s (%s); will try again", entitlement_id, exc)
                return False
        await run_service(entitlement_mark_consumed, entitlement_id=entitlement_id)
        return True

    async def refund(self, entitlement: discord.Entitlement) -> None:
        try:
            await run_service(entitlement_claw_back, **_owner(entitlement))
        except EntitlementError as exc:
            log.warning("Deleted Discord entitlement %s not handled: %s", entitlement.id, exc)

    async def reconcile(self) -> int:
        """Read Discord's entitlements for our SKUs (refunded ones too): credit and consume what is unconsumed,
        claw back what was deleted. Returns how many were looked at. Nothing to do while no pack has a SKU."""
        if self._reconciling.locked():
            return 0
        async with self._reconciling:
            sku_ids = await run_service(store_sku_ids)
            if not sku_ids:
                return 0
            seen = 0
            try:
                # `before` pages newest to oldest and, unlike `after` in discord.py, passes exclude_deleted on.
                async for entitlement in self.bot.entitlements(
                    limit=None,
                    before=discord.utils.utcnow(),
                    skus=[discord.Object(id=sku_id) for sku_id in sku_ids],
                    exclude_ended=True,
                    exclude_deleted=False,
                ):
                    seen += 1
                    if entitlement.deleted:
                        await self.refund(entitlement)
                    elif not entitlement.consumed:
                        await self.settle(entitlement)
            except discord.HTTPException as exc:
                log.warning("Could not read Discord's entitlements (%s); will try at the next connection", exc)
            if seen:
                log.info("Reconciled %d Discord entitlement(s)", seen)
            return seen

    @tasks.loop(seconds=60)
    async def retry_consumes(self) -> None:
        """Once per gateway session, as soon as the bot is ready: reconcile (what happened while it was away).
        Then, every DISCORD_CONSUME_RETRY_SECONDS: offer Discord again what was credited but not consumed.

        (A loop rather than an `on_ready` listener: discord.py leaves a listener's pending task behind when the
        bot is stopped before it is ready.)"""
        if not self.bot.is_ready():
            return
        try:
            session = getattr(self.bot.ws, "session_id", None)
            if session != self._reconciled_session:
                self._reconciled_session = session
                await self.reconcile()
                return
            for entitlement_id in await run_service(entitlements_to_consume):
                if entitlement_id not in self._settling:
                    await self.consume(entitlement_id)
        except Exception:
            self._reconciled_session = None  # reconcile again at the next turn
            log.exception("Settling Discord entitlements failed; will try again")

    @retry_consumes.before_loop
    async def _wait_until_ready(self) -> None:
        await self.bot.wait_until_ready()


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Store(bot))
