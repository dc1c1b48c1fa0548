"""Runs the fakes and the real, unmodified bot on an event loop in a background thread.

The test itself stays synchronous, so it can use the ORM directly (the bot reaches the same test database from
its own threads) and read like a conversation: push an interaction, wait for the bot's REST calls, assert.
"""

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from discordbot.bot import ImageCreditsBot
from discordbot.bridge import close_db_connections
from discordbot.images import ImageBackend
from tests.discordbot.fake_discord import Call, FakeDiscord, Sent
from tests.discordbot.fake_openai import FakeOpenAI

T = TypeVar("T")
BOT_TOKEN = "fake-bot-token"


def is_final(call: Call) -> bool:
    """The bot's answer to an interaction: a message with content, not a deferral or a queue-position edit."""
    if not 200 <= call.status < 300:
        return False
    if call.route == "followup":
        return True
    if call.route == "callback":
        return (call.json or {}).get("type") == 4
    # A live preview (preview-ID.png) is an edit with an upload too, but not the answer.
    return call.route == "edit_message" and bool(call.uploads) and not call.uploads[0].filename.startswith("preview-")


async def _cancel_leftovers() -> None:
    """Cancel what discord.py leaves running after close (its ready-delay task), so no task outlives the loop."""
    for _ in range(5):  # cancelling can schedule more (event dispatches); repeat until nothing is left
        await asyncio.sleep(0)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class BotHarness:
    def __init__(self) -> None:
        self.discord = FakeDiscord()
        self.openai = FakeOpenAI()
        self.bot: ImageCreditsBot | None = None
        self._bot_task: asyncio.Task | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bot-harness", daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_servers(self) -> None:
        self._thread.start()
        self.run(self.discord.start())
        self.run(self.openai.start())

    def start_bot(self, *, backend: ImageBackend | None = None) -> ImageCreditsBot:
        """Start the bot (redirect discord.py first) and wait until it is connected to the fake gateway."""
        identified = self.discord.identifies

        async def start() -> ImageCreditsBot:
            bot = ImageCreditsBot(backend=backend)
            self._bot_task = asyncio.create_task(bot.start(BOT_TOKEN))
            return bot

        self.bot = self.run(start())
        self.discord.wait_for(lambda: self.discord.identifies > identified or self._bot_task.done())
        if self._bot_task.done():
            self._bot_task.result()  # raises whatever stopped the bot from starting
        return self.bot

    def stop_bot(self) -> None:
        if self.bot is None:
            return

        async def stop() -> None:
            await self.bot.close()
            await asyncio.wait_for(self._bot_task, 10)
            await close_db_connections()

        try:
            self.run(stop())
        finally:
            self.bot = None

    def close(self) -> None:
        try:
            self.stop_bot()
            self.run(self.openai.stop())
            self.run(self.discord.stop())
        finally:
            self.run(_cancel_leftovers())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    # --- talking to the bot ----------------------------------------------------------------------------------

    def command(
        self, name: str, *, user: int, in_guild: bool = True, channel_id: int | None = None, **options: Any
    ) -> Sent:
        return self.run(
            self.discord.send_command(name, user_id=user, options=options, in_guild=in_guild, channel_id=channel_id)
        )

    def click(self, custom_id: str, *, user: int, message_id: str) -> Sent:
        return self.run(self.discord.click_button(user_id=user, custom_id=custom_id, message_id=message_id))

    def calls(self, sent: Sent) -> list[Call]:
        return self.discord.calls_for(sent.token)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        return self.discord.wait_for(predicate, timeout)

    def answer(self, sent: Sent, timeout: float = 10.0) -> Call:
        """Wait for the bot's final answer to one interaction."""
        return self.wait_for(lambda: next((c for c in self.calls(sent) if is_final(c)), None), timeout)

    def answers(self, sents: list[Sent], timeout: float = 20.0) -> list[Call]:
        return [self.answer(sent, timeout) for sent in sents]

    def deferral(self, sent: Sent) -> Call:
        return self.wait_for(lambda: next((c for c in self.calls(sent) if c.route == "callback"), None))
