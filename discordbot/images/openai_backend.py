"""OpenAI images through the async client (`AsyncOpenAI`), so a slow image never blocks the bot's event loop.

Generations go to `images.generate`, edits and variations to `images.edit` (multipart: the pictures, and a
markup or mask when given). GPT image models always answer with base64; we ask for PNG explicitly.

Several images: one request with `n`, unless previews are wanted. The service streams only with n=1 ("Streaming
is only supported with n=1"), and a stream's partial-image events do not say which of several images they belong
to, so with previews each image is its own streamed request (n=1, run concurrently); a failure then costs only
that image, but an edit's input pictures are billed once per request (the spend shows it). The client retries
429/5xx, timeouts and connection errors itself (`max_retries`); what is left after its retries is mapped
to a GenerationError with a plain-words message for the member.
"""

import asyncio
import base64
import binascii
import logging
from typing import Any

import openai
from openai import AsyncOpenAI

from discordbot.errors import GenerationError
from discordbot.images.base import (
    PNG_MAGIC,
    ImageBatch,
    ImageJob,
    ImageSlot,
    Preview,
    PreviewCallback,
    job_check,
    model_limits,
)
from discordbot.spend import ImageUsage, image_spend

log = logging.getLogger(__name__)


def _error_from(exc: Exception) -> GenerationError:
    """The member-facing error for what the openai client raised (after its own retries)."""
    if isinstance(exc, openai.BadRequestError):
        if exc.code == "moderation_blocked":
            return GenerationError(
                "The image service's safety system blocked this prompt. Try describing it differently.",
                reason="moderation_blocked",
            )
        log.warning("Image request refused: %s", exc.message)
        return GenerationError("The image service refused this request.", reason="bad_request")
    if isinstance(exc, openai.RateLimitError):
        return GenerationError(
            "The image service is too busy right now. Please try again in a minute.", reason="rate_limited"
        )
    if isinstance(exc, openai.APITimeoutError):
        return GenerationError("The image service took too long to answer.", reason="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return GenerationError("The image service could not be reached.", reason="unreachable")
    if isinstance(exc, openai.APIStatusError):
        log.warning("Image service error %s: %s", exc.status_code, exc.message)
        return GenerationError("The image service had a problem making this image.", reason="api_error")
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        body = exc.body if isinstance(exc.body, dict) else {}
        if body.get("code") == "moderation_blocked":
            return GenerationError(
                "The image service's safety system blocked this prompt. Try describing it differently.",
                reason="moderation_blocked",
            )
        log.warning("Image stream error: %s", exc.message)
        return GenerationError("The image service had a problem making this image.", reason="api_error")
    raise exc


def _png(b64: str | None) -> bytes | None:
    try:
        png = base64.b64decode(b64 or "", validate=True)
    except (TypeError, binascii.Error):
        return None
    return png if png.startswith(PNG_MAGIC) else None


def _not_an_image() -> GenerationError:
    return GenerationError("The image service sent back something that is not an image.", reason="bad_response")


def _not_returned() -> GenerationError:
    return GenerationError("The image service sent back fewer images than asked for.", reason="not_returned")


class OpenAIBackend:
    def __init__(self, *, api_key: str, base_url: str | None, model: str, timeout: float, max_retries: int) -> None:
        self.model = model
        self._options = {"api_key": api_key, "base_url": base_url, "timeout": timeout, "max_retries": max_retries}
        self._client: AsyncOpenAI | None = None

    @property
    def client(self) -> AsyncOpenAI:
        # Made on first use, so that `synccommands` (which never generates) needs no API key.
        if self._client is None:
            self._client = AsyncOpenAI(**self._options)
        return self._client

    def check(self, job: ImageJob) -> None:
        job_check(job, model_limits(self.model))

    def _params(self, job: ImageJob, *, n: int) -> dict[str, Any]:
        """Exactly the parameters the SDK's ImageGenerateParams / ImageEditParams take for this job."""
        params: dict[str, Any] = {
            "model": self.model,
            "prompt": job.prompt,
            "size": job.size,
            "quality": job.quality,
            "n": n,
            "output_format": "png",
            "safety_identifier": job.user_hash,
        }
        if job.moderation and job.operation == "generate":  # images.edit takes no `moderation` (openai SDK 3.5x)
            params["moderation"] = job.moderation
        if job.operation != "generate":
            images = [image.upload for image in job.images]
            params["image"] = images[0] if len(images) == 1 else images
            if job.markup is not None:
                params["markup"] = job.markup.upload
            if job.mask is not None:
                params["mask"] = job.mask.upload
        return params

    async def _call(self, params: dict[str, Any], *, operation: str, stream: bool = False) -> Any:
        images = self.client.images
        call = images.generate if operation == "generate" else images.edit
        return await call(**params, stream=True) if stream else await call(**params)

    async def render(self, job: ImageJob, *, on_preview: PreviewCallback | None = None) -> ImageBatch:
        self.check(job)
        if job.partial_images and on_preview is not None:
            outcomes = await asyncio.gather(
                *(self._streamed(job, index, on_preview) for index in range(job.count)), return_exceptions=True
            )
            slots, usage = [], ImageUsage()
            for index, outcome in enumerate(outcomes):
                if isinstance(outcome, GenerationError):
                    slots.append(ImageSlot(index=index, error=outcome))
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    png, used = outcome
                    usage += used
                    slots.append(ImageSlot(index=index, png=png))
            if all(slot.png is None for slot in slots):
                raise slots[0].error  # nothing came back: the request failed as a whole
        else:
            try:
                response = await self._call(self._params(job, n=job.count), operation=job.operation)
            except openai.APIError as exc:
                raise _error_from(exc) from None
            data = list(response.data or [])
            slots = []
            for index in range(job.count):
                # The service may answer with fewer images than asked for; each missing one is its own failure.
                if index >= len(data):
                    slots.append(ImageSlot(index=index, error=_not_returned()))
                    continue
                png = _png(data[index].b64_json)
                slots.append(ImageSlot(index=index, png=png, error=None if png else _not_an_image()))
            usage = ImageUsage.from_openai(response.usage)
            if all(slot.png is None for slot in slots):
                raise _not_an_image()
        return ImageBatch(
            model=self.model,
            slots=tuple(slots),
            usage=usage,
            spend_micro_usd=image_spend(model=self.model, usage=usage),
        )

    async def _streamed(self, job: ImageJob, index: int, on_preview: PreviewCallback) -> tuple[bytes, ImageUsage]:
        """One image as its own streamed request: partial images to `on_preview`, then the final PNG."""
        params = self._params(job, n=1) | {"partial_images": job.partial_images}
        try:
            stream = await self._call(params, operation=job.operation, stream=True)
            async with stream:
                async for event in stream:
                    if event.type.endswith(".partial_image"):
                        partial = _png(event.b64_json)
                        if partial is not None:
                            await _show(on_preview, Preview(index, event.partial_image_index, partial))
                    elif event.type.endswith(".completed"):
                        png = _png(event.b64_json)
                        if png is None:
                            raise _not_an_image()
                        return png, ImageUsage.from_openai(event.usage)
        except openai.APIError as exc:
            raise _error_from(exc) from None
        raise GenerationError("The image service stopped before the image was finished.", reason="bad_response")

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        job = ImageJob(operation="generate", prompt=prompt, size=size, quality=quality, user_hash=user_hash)
        return (await self.render(job)).delivered[0]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


async def _show(on_preview: PreviewCallback, preview: Preview) -> None:
    # A preview that cannot be shown (Discord hiccup) must not cost the member the image itself.
    try:
        await on_preview(preview)
    except Exception:
        log.warning("Preview %s/%s could not be shown", preview.image_index, preview.partial_index, exc_info=True)
