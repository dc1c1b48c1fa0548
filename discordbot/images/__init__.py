"""Image backends: something that turns a prompt into PNG bytes.

Every backend has the same shape (`ImageBackend`) and raises `discordbot.errors.GenerationError` with a
member-facing message when it cannot deliver, so the caller can refund and say why. `backend_from_settings`
picks one from IMAGE_BACKEND: `openai` (the real thing) or `placeholder` (local Pillow images, no key needed).
"""

import hashlib
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageBackend(Protocol):
    model: str

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        """The image as PNG bytes; raises GenerationError (member-facing message) when it cannot."""
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
