"""Members' Discord names for operators: when a member with an account has used a command, the bot records
their name ("Display (@username)") on the account, at most once an hour per member.

A listener on interactions, not a command. It listens for a command's completion rather than its arrival: by
then the command has answered (its own database work comes first and is never slowed or disturbed by this
one), and a first /redeem has created the account. It runs as its own task; a failure is logged and ignored.
"""

import logging
import time
from collections import OrderedDict

import discord
from discord.ext import commands

from discordbot.bridge import run_service
from discordbot.services import MEMBER_NAME_THROTTLE_SECONDS, member_name_seen
from storefront.tokens import discord_name_label

log = logging.getLogger(__name__)


REMEMBERED_MEMBERS = 10_000  # names this process wrote, newest last: a bound on memory, not a rule


class Members(commands.Cog):
    def __init__(self) -> None:
        # (name, when) of the names this process wrote in the last hour: the same name again is not sent to a
        # database thread at all (the shared throttle in `member_name_seen` would refuse it there anyway), so a
        # busy member's commands cost no hop from the event loop. A changed name still goes through the throttle.
        self._written: OrderedDict[int, tuple[str, float]] = OrderedDict()

    @commands.Cog.listener()
    async def on_app_command_completion(self, interaction: discord.Interaction, command: object) -> None:
        if interaction.user is None or interaction.user.bot:
            return
        user = interaction.user
        name = discord_name_label(username=user.name, display_name=user.display_name)
        now = time.monotonic()
        written = self._written.get(user.id)
        if written is not None and written[0] == name and now - written[1] < MEMBER_NAME_THROTTLE_SECONDS:
            return
        try:
            if await run_service(member_name_seen, discord_user_id=user.id, name=name):
                self._written[user.id] = (name, now)
                self._written.move_to_end(user.id)
                while len(self._written) > REMEMBERED_MEMBERS:
                    self._written.popitem(last=False)
        except Exception:
            log.exception("Could not record a member's Discord name")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Members())
