"""Image backends: something that turns a prompt (and, for edits, pictures) into PNG images.

Every backend has the same shape (`ImageBackend`):

- `check(job)` validates a job against the model's limits without any network call, so the caller can refuse
  bad input before it reserves credits (it raises `ImageInputError` / `GenerationError`, member-facing);
- `render(job, on_preview=...)` makes `job.count` images for a generate, an edit (1-16 input pictures, an optional
  markup or mask) or a variation (an edit of one earlier result with its prompt). It returns an `ImageBatch`:
  one slot per requested image, each either PNG bytes or the error that image met (so the caller charges the
  delivered ones and refunds exactly the missing ones), plus the tokens the service reported and their cost in
  micro-dollars (`discordbot.spend`). When the request as a whole fails (moderation, rate limit, timeout) and
  no image came back it raises `GenerationError` instead. With `job.partial_images` > 0 and an `on_preview`
  callback, partial images are passed to the callback as they arrive (a backend that cannot stream skips them);
- `generate(prompt=, size=, quality=, user_hash=) -> bytes` is the one-image shorthand the pipeline used first.

`backend_from_settings` picks one from IMAGE_BACKEND: `openai` (the real thing) or `placeholder` (local Pillow
images, no key needed).
"""

import hashlib
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from discordbot.images.base import (
    OPERATIONS,
    PNG_MAGIC,
    ImageBatch,
    ImageJob,
    ImageSlot,
    InputImage,
    ModelLimits,
    Preview,
    PreviewCallback,
    job_check,
    model_limits,
)

__all__ = [
    "OPERATIONS",
    "PNG_MAGIC",
    "ImageBackend",
    "ImageBatch",
    "ImageJob",
    "ImageSlot",
    "InputImage",
    "ModelLimits",
    "Preview",
    "PreviewCallback",
    "backend_from_settings",
    "job_check",
    "model_limits",
    "safety_identifier",
]


class ImageBackend(Protocol):
    model: str

    def check(self, job: ImageJob) -> None:
        """Raise GenerationError/ImageInputError (member-facing) when the model cannot take `job`. No network."""
        ...

    async def render(self, job: ImageJob, *, on_preview: PreviewCallback | None = None) -> ImageBatch:
        """`job.count` slots (PNG or error each), usage and spend; raises GenerationError when no image came."""
        ...

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        """One generated image as PNG bytes; raises GenerationError (member-facing message) when it cannot."""
        ...

    async def aclose(self) -> None: ...


def safety_identifier(discord_user_id: int) -> str:
    """A stable, non-identifying id for a member, sent to the image service for abuse detection."""
    return hashlib.sha256(f"discord:{discord_user_id}".encode()).hexdigest()


def backend_from_settings() -> ImageBackend:
    if settings.IMAGE_BACKEND == "openai":
        from discordbot.images.openai_backend import OpenAIBackend

        return OpenAIBackend(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL or None,
            model=settings.IMAGE_MODEL,
            timeout=settings.GENERATION_TIMEOUT_SECONDS,
            max_retries=settings.OPENAI_MAX_RETRIES,
        )
    if settings.IMAGE_BACKEND == "placeholder":
        from discordbot.images.placeholder import PlaceholderBackend

        return PlaceholderBackend(delay=settings.PLACEHOLDER_DELAY_SECONDS)
    raise ImproperlyConfigured(f"IMAGE_BACKEND must be 'openai' or 'placeholder', not {settings.IMAGE_BACKEND!r}.")
