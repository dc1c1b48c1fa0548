"""The image backends: the real `AsyncOpenAI` client against the fake OpenAI server, and the placeholder."""

import asyncio
import io
import socket

import pytest
from PIL import Image

from discordbot.errors import GenerationError
from discordbot.images import PNG_MAGIC, backend_from_settings, safety_identifier
from discordbot.images.openai_backend import OpenAIBackend
from discordbot.images.placeholder import PlaceholderBackend
from tests.discordbot.fake_openai import FakeOpenAI


def generate_with(fake: FakeOpenAI, *, base_url: str | None = None, timeout: float = 5, retries: int = 2) -> bytes:
    async def scenario() -> bytes:
        await fake.start()
        backend = OpenAIBackend(
            api_key="sk-test",
            base_url=base_url or fake.base_url,
            model="gpt-image-2.5-flare",
            timeout=timeout,
            max_retries=retries,
        )
        try:
            return await backend.generate(prompt="a fox", size="1024x1024", quality="low", user_hash="h" * 64)
        finally:
            await backend.aclose()
            await fake.stop()

    return asyncio.run(scenario())


def test_openai_sends_model_options_and_safety_identifier_and_decodes_base64():
    fake = FakeOpenAI()

    png = generate_with(fake)

    assert png == fake.png and png.startswith(PNG_MAGIC)
    [request] = fake.requests
    assert request.body == {
        "model": "gpt-image-2.5-flare",
        "prompt": "a fox",
        "size": "1024x1024",
        "quality": "low",
        "n": 1,
        "output_format": "png",
        "safety_identifier": "h" * 64,
    }


@pytest.mark.parametrize(
    ("mode", "reason", "attempts"),
    [
        ("moderation", "moderation_blocked", 1),  # a 400 is final: no retry
        ("rate_limit", "rate_limited", 3),  # the client retried twice before giving up
        ("error", "api_error", 1),  # the fake says x-should-retry: false
    ],
)
def test_openai_errors_become_member_facing_generation_errors(mode, reason, attempts):
    fake = FakeOpenAI(mode=mode)

    with pytest.raises(GenerationError) as caught:
        generate_with(fake)

    assert caught.value.reason == reason
    assert "sk-test" not in caught.value.message and "http" not in caught.value.message
    assert len(fake.requests) == attempts


def test_a_rate_limit_that_clears_within_the_retries_still_delivers():
    fake = FakeOpenAI()
    fake.script.extend(["rate_limit", "rate_limit"])
    assert generate_with(fake) == fake.png
    assert len(fake.requests) == 3


def test_openai_timeout():
    fake = FakeOpenAI(mode="slow", slow_seconds=5)
    with pytest.raises(GenerationError) as caught:
        generate_with(fake, timeout=0.3, retries=0)
    assert caught.value.reason == "timeout"


def test_openai_unreachable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GenerationError) as caught:
        generate_with(FakeOpenAI(), base_url=f"http://127.0.0.1:{port}/v1", retries=0)
    assert caught.value.reason == "unreachable"


def test_openai_answer_that_is_not_a_png_is_refused():
    fake = FakeOpenAI()
    fake.png = b"GIF89a not a png"
    with pytest.raises(GenerationError) as caught:
        generate_with(fake)
    assert caught.value.reason == "bad_response"


def test_placeholder_draws_a_png_of_the_requested_shape_after_its_delay():
    backend = PlaceholderBackend(delay=0.2)

    async def scenario() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        png = await backend.generate(prompt="a long prompt " * 20, size="1536x1024", quality="high", user_hash="h")
        return png, loop.time() - start

    png, took = asyncio.run(scenario())

    assert png.startswith(PNG_MAGIC) and took >= 0.2
    image = Image.open(io.BytesIO(png))
    assert image.size == (384, 256)  # a quarter of the requested size, same shape


def test_backend_from_settings(settings):
    settings.IMAGE_BACKEND = "placeholder"
    settings.PLACEHOLDER_DELAY_SECONDS = 1.5
    assert backend_from_settings().delay == 1.5

    settings.IMAGE_BACKEND = "openai"
    settings.OPENAI_API_KEY = ""  # no key is needed until the first image (synccommands never makes one)
    settings.IMAGE_MODEL = "gpt-image-2.6-flare"
    backend = backend_from_settings()
    assert isinstance(backend, OpenAIBackend) and backend.model == "gpt-image-2.6-flare"

    settings.IMAGE_BACKEND = "dall-e"
    with pytest.raises(Exception, match="IMAGE_BACKEND must be"):
        backend_from_settings()


def test_safety_identifier_is_a_stable_hash_not_the_id():
    first = safety_identifier(123456789012345678)
    assert first == safety_identifier(123456789012345678) != safety_identifier(123456789012345679)
    assert len(first) == 64 and "123456789012345678" not in first
