"""OpenAI images through the async client (`AsyncOpenAI`), so a slow image never blocks the bot's event loop.

GPT image models always answer with base64 (`data[0].b64_json`); we ask for PNG explicitly. The client retries
429/5xx, timeouts and connection errors itself (`max_retries`); what is left after its retries is mapped to a
GenerationError with a plain-words message for the member.
"""

import base64
import binascii
import logging

import openai
from openai import AsyncOpenAI

from discordbot.errors import GenerationError
from discordbot.images import PNG_MAGIC

log = logging.getLogger(__name__)


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

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        try:
            response = await self.client.images.generate(
                model=self.model,
                prompt=prompt,
                size=size,
                quality=quality,
                n=1,
                output_format="png",
                safety_identifier=user_hash,
            )
        except openai.BadRequestError as exc:
            if exc.code == "moderation_blocked":
                raise GenerationError(
                    "The image service's safety system blocked this prompt. Try describing it differently.",
                    reason="moderation_blocked",
                ) from None
            log.warning("Image request refused: %s", exc.message)
            raise GenerationError("The image service refused this request.", reason="bad_request") from None
        except openai.RateLimitError:
            raise GenerationError(
                "The image service is too busy right now. Please try again in a minute.", reason="rate_limited"
            ) from None
        except openai.APITimeoutError:
            raise GenerationError("The image service took too long to answer.", reason="timeout") from None
        except openai.APIConnectionError:
            raise GenerationError("The image service could not be reached.", reason="unreachable") from None
        except openai.APIStatusError as exc:
            log.warning("Image service error %s: %s", exc.status_code, exc.message)
            raise GenerationError("The image service had a problem making this image.", reason="api_error") from None
        try:
            png = base64.b64decode(response.data[0].b64_json or "", validate=True)
        except (IndexError, TypeError, binascii.Error):
            png = b""
        if not png.startswith(PNG_MAGIC):
            raise GenerationError("The image service sent back something that is not an image.", "bad_response")
        return png

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
