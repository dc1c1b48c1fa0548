"""The Discord bot: slash commands to redeem, check, buy and spend image credits.

`manage.py runbot` runs it; `manage.py synccommands` registers its commands with Discord. The bot never blocks
its event loop: the database is reached through `discordbot.bridge.run_service`, images through async clients.

Across processes (an ECS rolling deploy starts the new task before stopping the old one): each bot process has an
identity and a heartbeat lease row (`BotProcess`). Only the lease holder connects to Discord's gateway and takes
requests. A process started while another holds a live lease waits in stand-by: it logs one line, does not
connect, and polls; it takes over when the holder releases the lease (a clean SIGTERM stop settles the holder's
work first) or stops renewing it for BOT_LEASE_SECONDS. On taking over, it settles what a dead holder left in
flight: undelivered generations are refunded, and uploads of unknown outcome are settled by asking Discord.
"""

import asyncio
import logging
import os
import secrets
import socket
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import MISSING
from django.conf import settings
from django.db import DatabaseError

from discordbot.bridge import run_service
from discordbot.images import ImageBackend, backend_from_settings
from discordbot.pipeline import GenerationPipeline, ask_discord, check_timeouts_fit
from discordbot.queue import GenerationQueue
from discordbot.replies import report_error
from discordbot.services import (
    bot_lease_acquire,
    bot_lease_release,
    bot_lease_renew,
    bot_process_register,
    generation_fail_and_refund,
    generation_succeed,
    generations_delivering_orphaned,
    generations_refund_stale,
)

log = logging.getLogger(__name__)

EXTENSIONS = (
    "discordbot.cogs.credits",
    "discordbot.cogs.images",
    "discordbot.cogs.help",
    "discordbot.cogs.members",
    "discordbot.cogs.server",
    "discordbot.cogs.store",
)
LOGIN_BACKOFF = (1, 2, 4, 8, 15, 30, 60)  # seconds between attempts to reach Discord at start-up
HEALTH_TOUCH_SECONDS = 10.0  # well inside the 20 s the container health check relies on


class BotCommandTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


class OneLineReconnects(logging.Filter):
    """discord.py logs each gateway reconnect attempt with a full traceback; one line says as much. Until the
    first connection succeeds, the bot logs its own line per attempt (`_connect_with_retry`), so these are
    dropped."""

    initial_connection = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Attempting a reconnect"):
            if self.initial_connection:
                return False
            exc = record.exc_info[1]
            record.msg = f"Discord gateway unreachable ({exc.__class__.__name__}: {exc}); {record.getMessage()}"
            record.args = ()
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


RECONNECT_FILTER = OneLineReconnects()
logging.getLogger("discord.client").addFilter(RECONNECT_FILTER)


def new_identity() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class ImageCreditsBot(commands.Bot):
    """The bot. `sweep=False` (for `synccommands`) leaves generations alone: another process may own them."""

    backend: ImageBackend
    pipeline: GenerationPipeline
    sweep: bool
    identity: str

    def __init__(self, *, backend: ImageBackend | None = None, sweep: bool = True, identity: str | None = None) -> None:
        # The bot never joins voice; without this, every start logs two warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True  # slash commands need nothing more; no message content, no member lists
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BotCommandTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
        )
        self.sweep = sweep
        self.identity = identity or new_identity()
        self.backend = backend or backend_from_settings()
        self.pipeline = GenerationPipeline(
            backend=self.backend,
            queue=GenerationQueue(
                global_limit=settings.MAX_CONCURRENT_GENERATIONS, per_member_limit=settings.GENERATIONS_PER_MEMBER
            ),
            timeout=settings.GENERATION_TIMEOUT_SECONDS,
            queue_timeout=settings.GENERATION_QUEUE_TIMEOUT_SECONDS,
            identity=self.identity,
            max_waiting_per_member=settings.MAX_WAITING_PER_MEMBER,
            upload_timeout=settings.DISCORD_UPLOAD_TIMEOUT_SECONDS,
            lease_margin=settings.DISCORD_UPLOAD_TIMEOUT_SECONDS + settings.BOT_HEARTBEAT_SECONDS,
        )
        self.lease_held = False
        self.standing_by = False
        self._lease_valid_until = 0.0  # time.monotonic() until which our last renewal holds
        self._stopping: asyncio.Event | None = None
        self._background: list[asyncio.Task] = []
        self._stop_lock: asyncio.Lock | None = None

    # --- start: lease, then Discord ------------------------------------------------------------------------

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        """Stand by until this process holds the bot lease, reach Discord (retrying), then serve until closed."""
        check_timeouts_fit()
        self._stopping = asyncio.Event()
        self._background.append(asyncio.create_task(self._health_loop(), name="bot-health"))
        if not await self._wait_for_lease():
            return
        self._background.append(asyncio.create_task(self._renew_loop(), name="bot-lease"))
        if not await self._login_with_retry(token):
            return
        await self._connect_with_retry(reconnect=reconnect)

    async def _wait_for_lease(self) -> bool:
        for attempt in range(1, 1_000_000):
            try:
                await run_service(
                    bot_process_register,
                    identity=self.identity,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    lease_seconds=settings.BOT_LEASE_SECONDS,
                )
                break
            except DatabaseError as exc:
                delay = LOGIN_BACKOFF[min(attempt, len(LOGIN_BACKOFF)) - 1]
                log.warning("The database is unreachable (attempt %d: %s); retrying in %d s", attempt, exc, delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    return False
        told = False
        while not self._stopping.is_set():
            asked_at = time.monotonic()  # the lease runs from (at the latest) the moment we asked
            try:
                state = await run_service(
                    bot_lease_acquire, identity=self.identity, lease_seconds=settings.BOT_LEASE_SECONDS
                )
            except Exception as exc:  # the database is away: keep standing by
                log.warning("Could not reach the database for the bot lease (%s); retrying", exc)
            else:
                if state.held:
                    self.lease_held, self.standing_by = True, False
                    self._lease_valid_until = asked_at + settings.BOT_LEASE_SECONDS
                    log.info("Process %s holds the bot lease", self.identity)
                    return True
                self.standing_by = True
                self._touch_health()
                if not told:
                    log.info(
                        "Stand-by: process %s holds the bot lease; %s will take over when it stops",
                        state.holder or "another process",
                        self.identity,
                    )
                    told = True
            await self._sleep(settings.BOT_HEARTBEAT_SECONDS)
        return False

    async def _login_with_retry(self, token: str) -> bool:
        for attempt in range(1, 1_000_000):
            try:
                await self.login(token)
                return True
            except (aiohttp.ClientError, OSError, TimeoutError, discord.DiscordServerError) as exc:
                delay = LOGIN_BACKOFF[min(attempt, len(LOGIN_BACKOFF)) - 1]
                log.warning(
                    "Discord is unreachable (attempt %d: %s: %s); retrying in %d s",
                    attempt,
                    exc.__class__.__name__,
                    str(exc)[:200],
                    delay,
                )
                await self.http.close()
                self.http.connector = MISSING  # its session closed the connector; login makes new ones
                await self._sleep(delay)
                if self._stopping.is_set():
                    return False
        return False

    async def _connect_with_retry(self, *, reconnect: bool) -> None:
        """The gateway connection. discord.py retries a lost connection itself, but not a first one that fails
        (it then raises on its missing websocket), so the first is retried here, one log line per attempt."""
        RECONNECT_FILTER.initial_connection = True
        for attempt in range(1, 1_000_000):
            try:
                await self.connect(reconnect=reconnect)
                return
            except Exception as exc:
                if self.ws is not None or self._stopping.is_set():
                    raise  # connected once: discord.py's own reconnecting gave up, or we are stopping
                cause = exc.__context__ if isinstance(exc, AttributeError) and exc.__context__ else exc
                delay = LOGIN_BACKOFF[min(attempt, len(LOGIN_BACKOFF)) - 1]
                log.warning(
                    "Discord gateway unreachable (attempt %d: %s: %s); retrying in %d s",
                    attempt,
                    cause.__class__.__name__,
                    str(cause)[:200],
                    delay,
                )
                await self._sleep(delay)
                if self._stopping.is_set():
                    return

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the bot is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def setup_hook(self) -> None:
        if self.sweep:
            # Before any interaction arrives: settle what a dead holder left in flight.
            await self.settle_orphans()
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("Could not load extension %s", extension)

    async def on_ready(self) -> None:
        RECONNECT_FILTER.initial_connection = False
        self._touch_health()
        log.info(
            "Connected as %s (id %s) to %d guild(s)", self.user, self.user.id if self.user else "?", len(self.guilds)
        )

    # --- the lease and the health file -------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(settings.BOT_HEARTBEAT_SECONDS)
            if self._stopping.is_set():
                return
            asked_at = time.monotonic()
            try:
                held = await run_service(
                    bot_lease_renew, identity=self.identity, lease_seconds=settings.BOT_LEASE_SECONDS
                )
            except Exception as exc:
                log.warning("Could not renew the bot lease (%s); retrying", exc)
                if time.monotonic() < self._lease_valid_until:
                    continue
                log.error("The bot lease ran out while the database was away: stopping")
                held = False
            else:
                if held:
                    self._lease_valid_until = asked_at + settings.BOT_LEASE_SECONDS
                    continue
                log.error("Another process took over the bot lease: stopping")
            self.lease_held = False
            self._background.append(asyncio.create_task(self.close(), name="bot-close"))
            return

    def healthy(self) -> bool:
        """Stand-by waiting for the lease, or the lease holder with its gateway connected."""
        if self.standing_by:
            return True
        return (
            self.lease_held
            and time.monotonic() < self._lease_valid_until
            and not self.is_closed()
            and self.is_ready()
            and self.ws is not None
            and self.ws.open
        )

    def _touch_health(self) -> None:
        if self.healthy():
            try:
                Path(settings.BOT_HEALTH_FILE).touch()
            except OSError as exc:
                log.warning("Could not touch the health file %s: %s", settings.BOT_HEALTH_FILE, exc)

    async def _health_loop(self) -> None:
        """Touch BOT_HEALTH_FILE while healthy; since this runs on the event loop, a stuck loop stops it too."""
        while not self._stopping.is_set():
            self._touch_health()
            await self._sleep(min(HEALTH_TOUCH_SECONDS, settings.BOT_HEARTBEAT_SECONDS))

    # --- settling what others left -----------------------------------------------------------------------------

    async def settle_orphans(self, *, own_older_than: timedelta | None = None) -> list[int]:
        """Refund undelivered generations nobody alive will finish, and settle orphaned uploads by asking
        Discord. Returns the ids settled."""
        options = {
            "identity": self.identity,
            "exclude_ids": self.pipeline.in_flight_ids,
            "own_older_than": own_older_than,
        }
        refunded = await run_service(generations_refund_stale, **options)
        if refunded:
            log.warning("Refunded %d generation(s) left in flight: %s", len(refunded), refunded)
        settled = list(refunded)
        for check in await run_service(generations_delivering_orphaned, **options):
            if check.channel_id is None or check.message_id is None:
                delivered = False  # no message was ever made for it, so none carries the image
            else:

                async def fetch(channel_id: int = check.channel_id, message_id: int = check.message_id) -> list[str]:
                    message = await self.http.get_message(channel_id, message_id)
                    return [attachment["filename"] for attachment in message.get("attachments", [])]

                delivered = await ask_discord(fetch, check.generation_id)
            if delivered is None:
                log.warning(
                    "Generation #%s: Discord could not say whether it was delivered; will ask again",
                    check.generation_id,
                )
                continue
            if delivered:
                done = await run_service(generation_succeed, generation_id=check.generation_id)
            else:
                done = await run_service(
                    generation_fail_and_refund,
                    generation_id=check.generation_id,
                    error="interrupted: the bot stopped during the upload, and Discord does not have the image",
                    delivery_checked=True,
                )
            if done:
                log.warning(
                    "Generation #%s, left mid-upload, was %s (as Discord says)",
                    check.generation_id,
                    "delivered: the charge stands" if delivered else "not delivered: refunded",
                )
                settled.append(check.generation_id)
        return settled

    # --- stop ------------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Settle this process's requests (with BOT_SHUTDOWN_GRACE_SECONDS for images being made) while still
        connected to Discord, release the lease for a stand-by, then disconnect."""
        if self._stop_lock is None:
            self._stop_lock = asyncio.Lock()
        async with self._stop_lock:
            if self._stopping is not None:
                self._stopping.set()
            if self.lease_held:
                log.info("Stopping: settling in-flight requests before releasing the bot lease")
            await self.pipeline.close(grace=settings.BOT_SHUTDOWN_GRACE_SECONDS if self.lease_held else 0)
            if self._stopping is not None:  # started: the process row exists
                try:
                    await run_service(bot_lease_release, identity=self.identity)
                except Exception as exc:
                    log.warning("Could not release the bot lease (%s); it expires by itself", exc)
                self.lease_held = self.standing_by = False
            for task in self._background:
                if task is not asyncio.current_task() and task.get_name() != "bot-close":
                    task.cancel()
            await super().close()
