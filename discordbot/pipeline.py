"""One /generate (or Regenerate click), from its reservation to a posted image or a refund.

    reserve (before any response) -- refused: an ephemeral answer, nothing charged, nothing in the channel
      | accepted
    public deferral ("thinking...") -> wait in line (first places told their position) -> start
    -> backend, with no transaction open -> delivering -> post the PNG -> succeeded (charged)
                            any failure on the way -> refund, and say why privately

A request that finds a free slot (nobody waiting) takes it before reserving and is reserved already started, so
nothing stands between its deferral and the image service; a request without pictures reads the member's
/settings in its reservation's own database call. Both keep the order above, with fewer database round trips.

The rules (what a generation costs, when it may be refunded) live in `discordbot.services`; this module orders
the steps and talks to Discord. Delivered means charged: a generation is marked delivering before the upload, and
one whose upload ended without a clear answer is settled by asking Discord whether the message carries the image,
never by guessing. Discord's interaction token lives 15 minutes, so the queue and generation timeouts must fit
in it (`check_timeouts_fit`, at start-up).
"""

import asyncio
import contextlib
import io
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import discord
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from discordbot.attachments import attachments_read
from discordbot.bridge import run_service
from discordbot.errors import BotError, GenerationError
from discordbot.guilds import guild_request_check, interaction_facts, server_rules_refuse
from discordbot.images import ImageBackend, ImageBatch, ImageJob, InputImage, Preview, safety_identifier
from discordbot.queue import GenerationQueue, QueueTimeout, Ticket
from discordbot.replies import PUBLIC_MESSAGE, UNEXPECTED, PublicMessage, plural, send_private
from discordbot.services import (
    RequestDefaults,
    Reservation,
    generation_deliver_begin,
    generation_fail_and_refund,
    generation_price,
    generation_record_spend,
    generation_reserve,
    generation_reserve_again,
    generation_start,
    generation_succeed,
    generation_variation_source,
    member_settings_get,
)
from discordbot.views import buy_view, image_view
from vouchers.errors import InsufficientCredits, VoucherError
from vouchers.pricing import image_unit_cost

log = logging.getLogger(__name__)

MAX_PROMPT_SHOWN = 1500  # of Discord's 2,000 characters per message
INTERACTION_TOKEN_SECONDS = 15 * 60  # Discord: an interaction token works for 15 minutes
TOKEN_SAFETY_SECONDS = 60  # reserving, the database, retries on 429: slack inside those 15 minutes
# Discord drops an interaction not answered within 3 seconds; the reservation gets this long to decide whether the
# first response is a private refusal or a public deferral, else the request is acknowledged privately first.
RESERVE_BEFORE_RESPONSE_SECONDS = 2.0
POSITIONS_SHOWN = 10  # only the first places in line are kept up to date (each update is a Discord edit)
POSITION_REPORT_INTERVAL = 2.0  # at most one position edit per request per this many seconds
RECORD_DELAYS = (0.5, 1, 2, 4, 8, 15, 30, 30)  # retries of the delivery record on a database hiccup
ASK_DELAYS = (0, 1, 2, 4)  # asking Discord whether an upload arrived
RESTARTING = "The bot is restarting. Please try again in a minute."
STOPPED_BEFORE_FINISHED = "The bot restarted before your image was finished."

TRANSIENT_DISCORD_ERRORS = (TimeoutError, aiohttp.ClientError, OSError, discord.DiscordServerError)


def image_filename(generation_id: int, index: int = 0) -> str:
    """The name of a generation's image in its message: `image-ID.png`, then `image-ID-2.png`, ... for a batch."""
    return f"image-{generation_id}.png" if index == 0 else f"image-{generation_id}-{index + 1}.png"


def carries_image(filenames: list[str], generation_id: int) -> bool:
    """Does a message carry this generation's images? The first is always among them when any is."""
    return image_filename(generation_id) in filenames


@dataclass(frozen=True)
class Request:
    """What a member asked for, before it is priced and reserved: the same shape for every operation."""

    operation: str = "generate"
    prompt: str = ""
    size: str | None = None
    quality: str | None = None
    count: int | None = None  # None: the member's /settings default, else 1
    private: bool | None = None  # None: the member's /settings default, else public
    attachments: tuple[Any, ...] = ()  # discord.Attachment (or alike) to read before anything is charged
    markup: Any = None


def with_defaults(request: Request, defaults: RequestDefaults) -> Request:
    """The request with the member's /settings (else the bot's defaults) where it left an option out."""
    return replace(
        request,
        size=request.size or defaults.size,
        quality=request.quality or defaults.quality,
        count=request.count if request.count is not None else (defaults.count or 1),
        private=request.private if request.private is not None else bool(defaults.private),
    )


def variation_cost(size: str, quality: str) -> int | None:
    """What the Vary button charges (None: a variation at this size and quality is not on offer)."""
    try:
        return image_unit_cost(operation="variation", size=size, quality=quality)
    except ValueError:
        return None


def check_timeouts_fit() -> None:
    """Start-up check: a request's whole life must fit in its interaction token's 15 minutes, or its answer
    (the image, or the refund message) could not be sent."""
    needed = (
        settings.GENERATION_QUEUE_TIMEOUT_SECONDS
        + settings.GENERATION_TIMEOUT_SECONDS
        + settings.DISCORD_UPLOAD_TIMEOUT_SECONDS
        + RESERVE_BEFORE_RESPONSE_SECONDS
        + TOKEN_SAFETY_SECONDS
    )
    if needed > INTERACTION_TOKEN_SECONDS:
        raise ImproperlyConfigured(
            f"GENERATION_QUEUE_TIMEOUT_SECONDS ({settings.GENERATION_QUEUE_TIMEOUT_SECONDS:g}) + "
            f"GENERATION_TIMEOUT_SECONDS ({settings.GENERATION_TIMEOUT_SECONDS:g}) + "
            f"DISCORD_UPLOAD_TIMEOUT_SECONDS ({settings.DISCORD_UPLOAD_TIMEOUT_SECONDS:g}) + "
            f"{RESERVE_BEFORE_RESPONSE_SECONDS + TOKEN_SAFETY_SECONDS:g} s of slack must fit in Discord's "
            f"{INTERACTION_TOKEN_SECONDS} s interaction token; it adds up to {needed:g} s."
        )
    margin = settings.DISCORD_UPLOAD_TIMEOUT_SECONDS + settings.BOT_HEARTBEAT_SECONDS
    if settings.BOT_LEASE_SECONDS <= margin + settings.BOT_HEARTBEAT_SECONDS:
        raise ImproperlyConfigured(
            f"BOT_LEASE_SECONDS ({settings.BOT_LEASE_SECONDS:g}) must exceed DISCORD_UPLOAD_TIMEOUT_SECONDS + "
            f"twice BOT_HEARTBEAT_SECONDS ({margin + settings.BOT_HEARTBEAT_SECONDS:g}): a process uploads only "
            "while its lease outlasts the upload."
        )


async def ask_discord(fetch: Callable[[], Awaitable[list[str]]], generation_id: int) -> bool | None:
    """Does the message carry this generation's image? `fetch` returns the message's attachment filenames.
    True or False as Discord says (a message that is gone carries nothing); None if Discord could not be asked."""
    for attempt, delay in enumerate(ASK_DELAYS, 1):
        await asyncio.sleep(delay)
        try:
            filenames = await fetch()
        except discord.NotFound:
            return False
        except (discord.HTTPException, *TRANSIENT_DISCORD_ERRORS) as exc:
            log.warning("Could not ask Discord about generation #%s (attempt %d): %s", generation_id, attempt, exc)
            continue
        return carries_image(filenames, generation_id)
    return None


class GenerationPipeline:
    def __init__(
        self,
        *,
        backend: ImageBackend,
        queue: GenerationQueue,
        timeout: float,
        queue_timeout: float,
        identity: str = "",
        max_waiting_per_member: int = 3,
        upload_timeout: float = 30.0,
        lease_margin: float = 40.0,
    ) -> None:
        self.backend = backend
        self.queue = queue
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.identity = identity
        self.max_waiting_per_member = max_waiting_per_member
        self.upload_timeout = upload_timeout
        self.lease_margin = lease_margin
        # Each request's task and its phase: reserving, waiting, running, delivering.
        self._tasks: dict[asyncio.Task, str] = {}
        self._waiting: Counter[int] = Counter()  # per member: reserving or waiting in line
        self._in_flight: set[int] = set()
        self._closing = False
        self._closed = False

    @property
    def in_flight_ids(self) -> frozenset[int]:
        """Generations this process is working on (the sweep leaves them alone)."""
        return frozenset(self._in_flight)

    async def generate(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        size: str | None,
        quality: str | None,
        count: int = 1,
        private: bool = False,
    ) -> None:
        await self.request(
            interaction, Request(prompt=prompt, size=size, quality=quality, count=count, private=private)
        )

    async def request(self, interaction: discord.Interaction, request: Request) -> None:
        """Every operation (generate, edit, variation) goes through here: read the pictures, check the job against
        the model and price it, all before anything is charged; then the one reserve-queue-make-deliver path.
        Options the member left out take their /settings defaults: read in the reservation's own database call
        for a request without pictures (one round trip before the first response, not two), else first."""
        if None in (request.size, request.quality, request.count, request.private):
            if not request.attachments and request.markup is None:
                await self._run(interaction, self._reserve_with_defaults, request=request)
                return
            try:
                defaults = await run_service(member_settings_get, discord_user_id=interaction.user.id)
            except DatabaseError:
                log.warning("Could not read the settings of user %s; using the bot's defaults", interaction.user.id)
                defaults = RequestDefaults()
            request = with_defaults(request, defaults)
        await self._run(interaction, generation_reserve, request=request)

    def _reserve_with_defaults(
        self, *, request: Request, discord_user_id: int, rules_facts: dict | None = None, **options: Any
    ) -> Reservation:
        """On a database thread: the server's rules are checked (`rules_facts`: `interaction_facts`, as
        `server_rules_refuse` checks them), the member's /settings fill in what a request without pictures left
        out, the job is checked against the model, then reserved (as `request` does in steps for one with
        pictures)."""
        if rules_facts is not None and rules_facts["guild_id"] is not None:
            count = request.count or 1
            try:
                _, _, cost = generation_price(
                    size=request.size, quality=request.quality, operation=request.operation, count=count
                )
                unit_cost = cost // count
            except GenerationError:
                unit_cost = None  # not on offer: the check below says so
            try:
                guild_request_check(**rules_facts, count=count, unit_cost=unit_cost)
            except GenerationError as exc:
                raise GenerationError(f"{exc.message} Nothing was charged.", reason=exc.reason) from None
        try:
            defaults = member_settings_get(discord_user_id=discord_user_id)
        except DatabaseError:
            log.warning("Could not read the settings of user %s; using the bot's defaults", discord_user_id)
            defaults = RequestDefaults()
        request = with_defaults(request, defaults)
        try:
            self._check(discord_user_id, request, (), None)
        except GenerationError as exc:
            raise GenerationError(f"{exc.message} Nothing was charged.", reason=exc.reason) from None
        return generation_reserve(
            discord_user_id=discord_user_id,
            prompt=request.prompt,
            size=request.size,
            quality=request.quality,
            operation=request.operation,
            count=request.count,
            private=request.private,
            **options,
        )

    async def vary(self, interaction: discord.Interaction, *, source_id: int) -> None:
        """The Vary button: an edit of the result with its own prompt and options. The picture is read from the
        message the button is on (Discord sends it, with a fresh CDN link, in the click's payload), so nothing is
        stored on our side and a variation works after any restart for as long as the message exists."""
        try:
            source = await run_service(
                generation_variation_source, source_id=source_id, discord_user_id=interaction.user.id
            )
        except BotError as exc:
            await send_private(interaction, exc.message)
            return
        message = interaction.message
        picture = next(
            (a for a in (message.attachments if message else []) if a.filename == image_filename(source_id)), None
        )
        if picture is None:
            await send_private(interaction, "That image is no longer on its message, so it cannot be varied.")
            return
        await self.request(
            interaction,
            Request(
                operation="variation",
                prompt=source.prompt,
                size=source.size,
                quality=source.quality,
                count=1,
                private=source.private,
                attachments=(picture,),
            ),
        )

    async def regenerate(self, interaction: discord.Interaction, *, source_id: int, prompt: str | None = None) -> None:
        """Regenerate (same prompt) or the Edit button's modal (a new prompt): the source's options, charged anew."""
        await self._run(interaction, generation_reserve_again, request=None, source_id=source_id, prompt=prompt)

    async def close(self, *, grace: float = 0.0) -> None:
        """Stop, settling every request: those in line are refunded (and told) at once; images being made get
        `grace` seconds to finish and be posted, then are refunded; uploads under way are left to finish, since
        cancelling one could not tell whether Discord had got the image."""
        if self._closed:
            return
        self._closing = True
        for task, phase in list(self._tasks.items()):
            if phase == "waiting":
                task.cancel()
        making = [task for task, phase in self._tasks.items() if phase in ("reserving", "running")]
        if making and grace > 0:
            await asyncio.wait(making, timeout=grace)
        for task, phase in list(self._tasks.items()):
            # Uploads are left to finish (see above); reservations too: they are short, and then answer
            # "restarting" and refund, which a cancelled one could not.
            if phase not in ("delivering", "reserving"):
                task.cancel()
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.upload_timeout + 15)
        await self.backend.aclose()
        self._closed = True

    # --- one request -------------------------------------------------------------------------------------------

    async def _run(
        self,
        interaction: discord.Interaction,
        reserve: Callable[..., Reservation],
        *,
        request: Request | None,
        **options: Any,
    ) -> None:
        member = interaction.user.id
        if self._closing:
            await send_private(interaction, RESTARTING)
            return
        # A server's own rules (discordbot.guilds). A request without pictures checks them inside its reservation,
        # on the same database thread (one hop from the event loop less per request, see `_reserve_with_defaults`).
        folded = request is not None and reserve == self._reserve_with_defaults
        if not folded and await server_rules_refuse(interaction, request):
            return
        if self._waiting[member] >= self.max_waiting_per_member:
            await send_private(
                interaction,
                f"You already have {plural(self._waiting[member], 'request')} waiting in line, the most one member "
                "may have. Please ask again once one of them has started. Nothing was charged.",
            )
            return
        task = asyncio.current_task()
        self._waiting[member] += 1
        self._tasks[task] = "reserving"
        waiting = True

        def stop_waiting() -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                self._waiting[member] -= 1
                if self._waiting[member] <= 0:
                    del self._waiting[member]

        try:
            early: PublicMessage | None = None
            images: tuple[InputImage, ...] = ()
            markup: InputImage | None = None
            if folded:
                # Server rules, defaults, check and reservation in one database call.
                options.update(request=request, rules_facts=interaction_facts(interaction))
            elif request is not None:
                if request.attachments or request.markup is not None:
                    # Reading pictures from Discord's CDN may take longer than Discord's 3 seconds: acknowledge
                    # first, with the visibility the result will have, then read, check and reserve.
                    try:
                        early = await self._acknowledge(interaction, private=request.private)
                    except discord.HTTPException as exc:
                        # Too late (an overloaded process): the interaction is gone and nothing was charged yet.
                        # One line, not a traceback: under overload a traceback per request only adds to it.
                        log.warning("Could not acknowledge a request of user %s in time: %s", member, exc)
                        return
                try:
                    if request.attachments:
                        images = tuple(await attachments_read(attachments=request.attachments))
                    if request.markup is not None:
                        [markup] = await attachments_read(attachments=[request.markup])
                    self._check(interaction.user.id, request, images, markup)
                except GenerationError as exc:  # a picture or option the model cannot take: nothing charged
                    await send_private(interaction, f"{exc.message} Nothing was charged.")
                    return
                options.update(
                    prompt=request.prompt,
                    size=request.size,
                    quality=request.quality,
                    operation=request.operation,
                    count=request.count,
                    input_images=len(images),
                    private=request.private,
                )
            # A slot free now (nobody waiting) is taken before reserving, so the generation is created running: one
            # database round trip less between the request and the image service. Refused: the slot is given back.
            held = self.queue.try_enter(member)
            try:
                accepted = await self._reserve(interaction, reserve, early=early, start=held is not None, **options)
                if accepted is None:
                    return
                reservation, public = accepted
                self._in_flight.add(reservation.generation_id)
                try:
                    await self._settle(
                        interaction, reservation, public, stop_waiting, images=images, markup=markup, ticket=held
                    )
                finally:
                    self._in_flight.discard(reservation.generation_id)
            finally:
                if held is not None:
                    self.queue.leave(held)
        finally:
            stop_waiting()
            self._tasks.pop(task, None)

    async def _acknowledge(self, interaction: discord.Interaction, *, private: bool) -> PublicMessage:
        """Defer at once, publicly or (a private request) ephemerally. A later refusal goes through
        `send_private`, which withdraws a public deferral first (see discordbot.replies)."""
        response = await interaction.response.defer(thinking=True, ephemeral=private)
        early = PublicMessage(interaction, message_id=response.message_id if response else None)
        if not private:
            interaction.extras[PUBLIC_MESSAGE] = early
        return early

    def _check(self, user_id: int, request: Request, images: tuple[InputImage, ...], markup: Any) -> None:
        """Price the request and check the job against the model (no network, no database): raises
        GenerationError."""
        size, quality, _ = generation_price(
            size=request.size,
            quality=request.quality,
            operation=request.operation,
            count=request.count,
            input_images=len(images),
        )
        self.backend.check(
            ImageJob(
                operation=request.operation,
                prompt=request.prompt,
                size=size,
                quality=quality,
                user_hash=safety_identifier(user_id),
                count=request.count,
                images=images,
                markup=markup,
            )
        )

    async def _reserve(
        self,
        interaction: discord.Interaction,
        reserve: Callable[..., Reservation],
        *,
        early: PublicMessage | None = None,
        **options: Any,
    ) -> tuple[Reservation, PublicMessage] | None:
        """Reserve first, then answer: a refusal is an ephemeral initial response, and only an accepted request
        gets a public message (a private one, an ephemeral one). Returns None when refused (and answered).
        `early`: the request was acknowledged already (it read pictures first)."""
        reserving = asyncio.ensure_future(
            run_service(
                reserve,
                discord_user_id=interaction.user.id,
                model=self.backend.model,
                owner=self.identity,
                interaction_id=interaction.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                **options,
            )
        )
        done, _ = await asyncio.wait({reserving}, timeout=None if early else RESERVE_BEFORE_RESPONSE_SECONDS)
        if not done:
            # The database is slow: acknowledge privately within Discord's 3 seconds and decide afterwards.
            log.info("Reservation for user %s is slow; deferring privately", interaction.user.id)
            try:
                await interaction.response.defer(ephemeral=True, thinking=True)
            except discord.HTTPException as exc:  # too late: the interaction is gone, so must be the charge
                log.warning("Could not acknowledge a slow /generate in time: %s", exc)
                with contextlib.suppress(VoucherError, BotError):
                    await self._refund(interaction, await reserving, "discord_unreachable", UNEXPECTED, tell=False)
                return None
        try:
            reservation = await reserving
        except InsufficientCredits as exc:
            await send_private(interaction, exc.message, view=buy_view(interaction.user))
            return None
        except (VoucherError, BotError) as exc:
            await send_private(interaction, exc.message)
            return None
        if self._closing:  # reserved while `close` was already under way
            await self._refund(interaction, reservation, "interrupted", RESTARTING)
            return None
        try:
            if early is not None:
                public = early
            elif not interaction.response.is_done():
                # Public, the image is for the channel; or ephemeral, for the member alone.
                response = await interaction.response.defer(thinking=True, ephemeral=reservation.private)
                public = PublicMessage(interaction, message_id=response.message_id if response else None)
            elif reservation.private:
                # After a private deferral (slow reservation), that deferral is the place for a private result.
                public = PublicMessage(interaction, message_id=None)
            else:
                # After a private deferral the first followup takes its (private) place; the image then gets a
                # public message of its own.
                await interaction.followup.send(
                    "Your request was accepted; the image will be posted in this channel.", ephemeral=True
                )
                followup = await interaction.followup.send("\N{ARTIST PALETTE} Making an image...", wait=True)
                public = PublicMessage(interaction, message_id=followup.id, followup=followup)
        except discord.HTTPException as exc:
            log.warning("Could not answer the interaction of generation #%s: %s", reservation.generation_id, exc)
            await self._refund(interaction, reservation, "discord_unreachable", UNEXPECTED, tell=False)
            return None
        if not reservation.private:
            interaction.extras[PUBLIC_MESSAGE] = public
        return reservation, public

    async def _settle(
        self,
        interaction: discord.Interaction,
        reservation: Reservation,
        public: PublicMessage,
        stop_waiting: Callable[[], None],
        *,
        images: tuple[InputImage, ...] = (),
        markup: InputImage | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        generation_id = reservation.generation_id
        try:
            batch = await self._make(
                interaction, reservation, public, stop_waiting, images=images, markup=markup, ticket=ticket
            )
        except asyncio.CancelledError:
            await self._refund(interaction, reservation, "interrupted", STOPPED_BEFORE_FINISHED)
            raise
        except GenerationError as exc:
            await self._refund(interaction, reservation, exc.reason, exc.message)
            return
        except Exception:
            log.exception("Generation #%s failed unexpectedly", generation_id)
            await self._refund(interaction, reservation, "error", UNEXPECTED)
            return
        await self._record_spend(generation_id, batch)
        self._tasks[asyncio.current_task()] = "delivering"
        await self._deliver(interaction, reservation, public, batch.delivered)

    async def _record_spend(self, generation_id: int, batch: ImageBatch) -> None:
        # What the image service charged (from the usage it reported), for the dashboard and the daily spend guard.
        # Unknown (an unpriced model) stays NULL rather than zero. A database hiccup here must not cost the member
        # the image they paid for: it is logged and the delivery goes ahead.
        if batch.spend_micro_usd is None:
            return
        try:
            await run_service(generation_record_spend, generation_id=generation_id, micros=batch.spend_micro_usd)
        except DatabaseError:
            log.warning("Could not record the image spend of generation #%s", generation_id, exc_info=True)

    async def _make(
        self,
        interaction: discord.Interaction,
        reservation: Reservation,
        public: PublicMessage,
        stop_waiting: Callable[[], None],
        *,
        images: tuple[InputImage, ...] = (),
        markup: InputImage | None = None,
        ticket: Ticket | None = None,
    ) -> ImageBatch:
        """Wait for a slot (`ticket`: held since before the reservation, which started the generation) and make
        the images. Raises when none could be made."""
        waited = False
        set_aside = f"Your {plural(reservation.cost)} {'is' if reservation.cost == 1 else 'are'} set aside for it."

        async def show_position(position: int) -> None:
            nonlocal waited
            waited = True
            place = (
                f"You're **#{position}** in line."
                if position <= POSITIONS_SHOWN
                else f"You're in line, behind more than {POSITIONS_SHOWN} requests."
            )
            try:
                await public.edit(content=f"\N{HOURGLASS WITH FLOWING SAND} {place} {set_aside}")
            except discord.HTTPException as exc:
                log.warning("Could not show generation #%s its place in line: %s", reservation.generation_id, exc)

        self._tasks[asyncio.current_task()] = "waiting"
        try:
            async with self.queue.slot(
                interaction.user.id,
                timeout=self.queue_timeout,
                on_wait=show_position,
                min_report_interval=POSITION_REPORT_INTERVAL,
                show_places=POSITIONS_SHOWN,
                ticket=ticket,
            ):
                stop_waiting()
                self._tasks[asyncio.current_task()] = "running"
                if ticket is None and not await run_service(generation_start, generation_id=reservation.generation_id):
                    raise GenerationError("This request expired before it could start.", reason="expired")
                if waited:
                    try:
                        await public.edit(content="\N{ARTIST PALETTE} Making your image...")
                    except discord.HTTPException as exc:
                        log.warning("Could not update generation #%s: %s", reservation.generation_id, exc)
                # No transaction is open here: each service call above committed on its own.
                try:
                    async with asyncio.timeout(self.timeout):
                        partials = settings.IMAGE_PREVIEW_PARTIALS
                        return await self.backend.render(
                            ImageJob(
                                operation=reservation.operation,
                                prompt=reservation.prompt,
                                size=reservation.size,
                                quality=reservation.quality,
                                user_hash=safety_identifier(interaction.user.id),
                                count=reservation.count,
                                images=images,
                                markup=markup,
                                partial_images=partials,
                                moderation=reservation.moderation,
                            ),
                            on_preview=self._previewer(reservation, public) if partials else None,
                        )
                except TimeoutError:
                    raise GenerationError("The image service took too long to answer.", reason="timeout") from None
        except QueueTimeout:
            raise GenerationError("The line is too long right now. Please try again later.", "queue_timeout") from None

    def _previewer(self, reservation: Reservation, public: PublicMessage) -> Callable[[Preview], Awaitable[None]]:
        """Show partial images in the request's message as they arrive: at most one edit per
        IMAGE_PREVIEW_INTERVAL_SECONDS (Discord rate-limits edits of a message; a preview arriving sooner is
        dropped, the next one or the final image follows). A preview is never named like a result image, so
        asking Discord whether the result arrived cannot mistake one for it."""
        interval = settings.IMAGE_PREVIEW_INTERVAL_SECONDS
        last_edit = -interval
        generation_id = reservation.generation_id

        async def show(preview: Preview) -> None:
            nonlocal last_edit
            now = asyncio.get_running_loop().time()
            if now - last_edit < interval:
                return
            last_edit = now
            which = f" {preview.image_index + 1} of {reservation.count}" if reservation.count > 1 else ""
            await public.edit(
                content=f"\N{ARTIST PALETTE} Making your image{which}... (preview {preview.partial_index + 1})",
                attachments=[discord.File(io.BytesIO(preview.png), filename=f"preview-{generation_id}.png")],
            )

        return show

    async def _deliver(
        self, interaction: discord.Interaction, reservation: Reservation, public: PublicMessage, pngs: list[bytes]
    ) -> None:
        generation_id = reservation.generation_id
        delivered = len(pngs)
        try:
            begun = await run_service(
                generation_deliver_begin,
                generation_id=generation_id,
                owner=self.identity,
                message_id=public.message_id,
                lease_margin=self.lease_margin,
                delivered_count=delivered,
            )
        except DatabaseError:
            log.exception("Could not mark generation #%s as delivering", generation_id)
            begun = False
        if not begun:
            # This process no longer holds the bot lease with time to spare (it is handing over), or the
            # generation was settled meanwhile: posting now could race the new holder's settlement.
            await self._refund(
                interaction, reservation, "handover", "The bot was restarting, so your image could not be posted."
            )
            return
        prompt = discord.utils.escape_mentions(discord.utils.escape_markdown(reservation.prompt))
        if len(prompt) > MAX_PROMPT_SHOWN:
            prompt = prompt[: MAX_PROMPT_SHOWN - 1] + "\N{HORIZONTAL ELLIPSIS}"
        size = reservation.size.replace("x", "\N{MULTIPLICATION SIGN}")
        missing = reservation.count - delivered
        charged = reservation.unit_cost * delivered
        refunded = ""
        if missing:
            refunded = (
                f"\n-# {plural(missing, 'image')} of {reservation.count} could not be made; "
                f"{plural(reservation.unit_cost * missing)} {'was' if reservation.unit_cost * missing == 1 else 'were'}"
                " refunded."
            )
        # The balance is the member's business, not the channel's: the public post shows only what this cost.
        content = (
            f"**Prompt:** {prompt}\n"
            f"-# {size} \N{MIDDLE DOT} {reservation.quality} \N{MIDDLE DOT} {plural(charged)} "
            f"\N{MIDDLE DOT} for {interaction.user.mention}{refunded}"
        )
        files = [
            discord.File(io.BytesIO(png), filename=image_filename(generation_id, index))
            for index, png in enumerate(pngs)
        ]
        try:
            async with asyncio.timeout(self.upload_timeout):
                message = await public.edit(
                    content=content,
                    attachments=files,
                    view=image_view(
                        generation_id,
                        cost=reservation.cost,
                        vary_cost=variation_cost(reservation.size, reservation.quality),
                        regenerate=reservation.operation == "generate",
                        delete=not reservation.private,
                    ),
                    allowed_mentions=discord.AllowedMentions.none(),
                )
        except discord.HTTPException as exc:
            if exc.status >= 500:
                delivered = await self._ask(public, generation_id, exc)
            else:  # Discord answered, and refused: the message is as it was, without the image
                log.warning("Discord refused the image of generation #%s: %s", generation_id, exc)
                delivered = False
        except TRANSIENT_DISCORD_ERRORS as exc:
            delivered = await self._ask(public, generation_id, exc)
        else:
            delivered = True
            public.message_id = message.id
        if delivered is None:
            log.error(
                "Generation #%s: whether its image reached Discord is unknown; it stays delivering and the sweep "
                "will ask Discord again",
                generation_id,
            )
            return
        if not delivered:
            await self._refund(
                interaction,
                reservation,
                "discord_send_failed",
                "Discord did not accept the image, so it was not posted.",
                delivery_checked=True,
            )
            return
        # Delivered: from here on the member has their image, so nothing may withdraw or refund it.
        interaction.extras.pop(PUBLIC_MESSAGE, None)
        await self._record_delivery(generation_id, public.message_id)

    async def _ask(self, public: PublicMessage, generation_id: int, exc: BaseException) -> bool | None:
        log.warning(
            "The upload of generation #%s ended without an answer (%s); asking Discord whether it arrived",
            generation_id,
            exc.__class__.__name__,
        )

        async def fetch() -> list[str]:
            message = await public.fetch()
            return [attachment.filename for attachment in message.attachments]

        return await ask_discord(fetch, generation_id)

    async def _record_delivery(self, generation_id: int, message_id: int | None) -> None:
        """Record the delivery, retrying through database hiccups: the member has the image, so the charge must
        stand. If the database stays away, the generation stays delivering and the sweep asks Discord."""
        for attempt, delay in enumerate((*RECORD_DELAYS, None), 1):
            try:
                if not await run_service(generation_succeed, generation_id=generation_id, message_id=message_id):
                    log.error("Generation #%s was delivered but was no longer delivering", generation_id)
                return
            except DatabaseError as exc:
                if delay is None:
                    break
                log.warning(
                    "Could not record generation #%s as delivered (attempt %d: %s); retrying in %g s",
                    generation_id,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        log.error("Gave up recording generation #%s as delivered; the sweep will ask Discord", generation_id)

    async def _refund(
        self,
        interaction: discord.Interaction,
        reservation: Reservation,
        reason: str,
        text: str,
        *,
        delivery_checked: bool = False,
        tell: bool = True,
    ) -> None:
        generation_id = reservation.generation_id
        try:
            refunded = await run_service(
                generation_fail_and_refund,
                generation_id=generation_id,
                error=f"{reason}: {text}",
                delivery_checked=delivery_checked,
            )
        except Exception:
            log.exception("Could not refund generation #%s now; the sweep will", generation_id)
            text += " Your credits will be refunded shortly."
        else:
            if refunded:
                log.info("Generation #%s refunded (%s)", generation_id, reason)
            text += f" Your {plural(reservation.cost)} {'was' if reservation.cost == 1 else 'were'} refunded."
        if not tell:
            return
        try:
            await send_private(interaction, text)
        except discord.HTTPException as exc:
            log.warning("Could not tell user %s why generation #%s failed: %s", interaction.user.id, generation_id, exc)
