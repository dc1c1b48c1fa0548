"""One accepted /generate (or Regenerate click), from its reservation to a posted image or a refund.

    deferred (by the caller) -> reserve (refused at once if short) -> wait in line (position shown)
    -> start -> backend, with no transaction open -> post the PNG -> succeed
                                         any failure on the way -> refund, and say why in plain words

The rules (what a generation costs, when it may be refunded) live in `discordbot.services`; this module only
orders the steps and talks to Discord. A generation is marked succeeded only after Discord accepted the image,
so a member is never charged for an image they did not get; if this process dies half-way, the start-up refund
and the periodic sweep give the credit back.
"""

import asyncio
import io
import logging
from collections.abc import Callable

import discord

from discordbot.bridge import run_service
from discordbot.errors import BotError, GenerationError
from discordbot.images import ImageBackend, safety_identifier
from discordbot.queue import GenerationQueue, QueueTimeout
from discordbot.replies import UNEXPECTED, plural, send_private
from discordbot.services import (
    Reservation,
    generation_fail_and_refund,
    generation_reserve,
    generation_reserve_again,
    generation_start,
    generation_succeed,
)
from discordbot.views import image_view
from vouchers.errors import VoucherError
from vouchers.selectors import account_balance

log = logging.getLogger(__name__)

MAX_PROMPT_SHOWN = 1500  # of Discord's 2,000 characters per message


class GenerationPipeline:
    def __init__(self, *, backend: ImageBackend, queue: GenerationQueue, timeout: float, queue_timeout: float) -> None:
        self.backend = backend
        self.queue = queue
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self._tasks: set[asyncio.Task] = set()
        self._posting: set[asyncio.Task] = set()  # uploading the finished image: let them finish
        self._in_flight: set[int] = set()
        self._closing = False
        self._closed = False

    @property
    def in_flight_ids(self) -> frozenset[int]:
        """Generations this process is working on (the sweep leaves them alone)."""
        return frozenset(self._in_flight)

    async def generate(
        self, interaction: discord.Interaction, *, prompt: str, size: str | None, quality: str | None
    ) -> None:
        await self._run(interaction, generation_reserve, prompt=prompt, size=size, quality=quality)

    async def regenerate(self, interaction: discord.Interaction, *, source_id: int) -> None:
        await self._run(interaction, generation_reserve_again, source_id=source_id)

    async def close(self, *, timeout: float = 10.0) -> None:
        """Stop: refund and tell every member whose image is still in line or in the making.

        Requests already uploading their image are left to finish: cancelling one could not tell whether
        Discord had got the image, and would refund it."""
        if self._closed:
            return
        self._closing = True
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            if task not in self._posting:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self.backend.aclose()
        self._closed = True

    async def _run(self, interaction: discord.Interaction, reserve: Callable[..., Reservation], **options) -> None:
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)  # public: the image is for the channel
        if self._closing:
            await send_private(
                interaction, "The bot is restarting. Please try again in a minute.", replace_deferral=True
            )
            return
        try:
            reservation = await run_service(
                reserve,
                discord_user_id=interaction.user.id,
                model=self.backend.model,
                interaction_id=interaction.id,
                channel_id=interaction.channel_id,
                **options,
            )
        except (VoucherError, BotError) as exc:
            await send_private(interaction, exc.message, replace_deferral=True)
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        self._in_flight.add(reservation.generation_id)
        try:
            await self._settle(interaction, reservation)
        finally:
            self._tasks.discard(task)
            self._posting.discard(task)
            self._in_flight.discard(reservation.generation_id)

    async def _settle(self, interaction: discord.Interaction, reservation: Reservation) -> None:
        generation_id = reservation.generation_id
        try:
            message_id = await self._make_and_post(interaction, reservation)
        except asyncio.CancelledError:
            await self._refund(
                interaction, reservation, "interrupted", "The bot restarted before your image was finished."
            )
            raise
        except GenerationError as exc:
            await self._refund(interaction, reservation, exc.reason, exc.message)
            return
        except discord.HTTPException as exc:
            log.warning("Discord refused the image of generation #%s: %s", generation_id, exc)
            await self._refund(
                interaction,
                reservation,
                "discord_send_failed",
                "Discord did not accept the image, so it was not posted.",
            )
            return
        except Exception:
            log.exception("Generation #%s failed unexpectedly", generation_id)
            await self._refund(interaction, reservation, "error", UNEXPECTED)
            return
        # Delivered: from here on the member has their image, so nothing below may refund it.
        try:
            if not await run_service(generation_succeed, generation_id=generation_id, message_id=message_id):
                log.warning("Generation #%s was delivered after it had been settled (refunded)", generation_id)
        except Exception:
            log.exception("Could not record generation #%s as delivered; the sweep will refund it", generation_id)

    async def _make_and_post(self, interaction: discord.Interaction, reservation: Reservation) -> int:
        """Wait for a slot, make the image and post it; returns the message id. Raises on any failure."""
        if self._closing:  # reserved while `close` was already under way, so `close` did not see this task
            raise asyncio.CancelledError()
        waited = False

        async def show_position(position: int) -> None:
            nonlocal waited
            waited = True
            await interaction.edit_original_response(
                content=f"\N{HOURGLASS WITH FLOWING SAND} You're **#{position}** in line. "
                f"Your {plural(reservation.cost)} {'is' if reservation.cost == 1 else 'are'} set aside for it."
            )

        try:
            async with self.queue.slot(interaction.user.id, timeout=self.queue_timeout, on_wait=show_position):
                if not await run_service(generation_start, generation_id=reservation.generation_id):
                    raise GenerationError("This request expired before it could start.", reason="expired")
                if waited:
                    await interaction.edit_original_response(content="\N{ARTIST PALETTE} Making your image...")
                # No transaction is open here: each service call above committed on its own.
                try:
                    async with asyncio.timeout(self.timeout):
                        png = await self.backend.generate(
                            prompt=reservation.prompt,
                            size=reservation.size,
                            quality=reservation.quality,
                            user_hash=safety_identifier(interaction.user.id),
                        )
                except TimeoutError:
                    raise GenerationError("The image service took too long to answer.", reason="timeout") from None
        except QueueTimeout:
            raise GenerationError("The line is too long right now. Please try again later.", "queue_timeout") from None

        if self._closing:
            raise asyncio.CancelledError()  # made, but the bot is stopping: refund rather than race the close
        self._posting.add(asyncio.current_task())
        balance = await run_service(account_balance, discord_user_id=interaction.user.id)
        prompt = discord.utils.escape_mentions(discord.utils.escape_markdown(reservation.prompt))
        if len(prompt) > MAX_PROMPT_SHOWN:
            prompt = prompt[: MAX_PROMPT_SHOWN - 1] + "\N{HORIZONTAL ELLIPSIS}"
        size = reservation.size.replace("x", "\N{MULTIPLICATION SIGN}")
        content = (
            f"**Prompt:** {prompt}\n"
            f"-# {size} \N{MIDDLE DOT} {reservation.quality} \N{MIDDLE DOT} {plural(reservation.cost)} "
            f"\N{MIDDLE DOT} {plural(balance)} left"
        )
        image = discord.File(io.BytesIO(png), filename=f"image-{reservation.generation_id}.png")
        message = await interaction.edit_original_response(
            content=content,
            attachments=[image],
            view=image_view(reservation.generation_id, cost=reservation.cost),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        return message.id

    async def _refund(self, interaction: discord.Interaction, reservation: Reservation, reason: str, text: str) -> None:
        generation_id = reservation.generation_id
        try:
            await run_service(generation_fail_and_refund, generation_id=generation_id, error=f"{reason}: {text}")
        except Exception:
            log.exception("Could not refund generation #%s now; the sweep will", generation_id)
            text += " Your credits will be refunded shortly."
        else:
            log.info("Generation #%s refunded (%s)", generation_id, reason)
            text += f" Your {plural(reservation.cost)} {'was' if reservation.cost == 1 else 'were'} refunded."
        try:
            await send_private(interaction, text, replace_deferral=True)
        except discord.HTTPException as exc:
            log.warning("Could not tell user %s why generation #%s failed: %s", interaction.user.id, generation_id, exc)
