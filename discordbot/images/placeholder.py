"""A local backend for keyless development (and the concurrency bench): the prompt written on a gradient.

Rendering is CPU work, so it runs in a thread; the image is drawn at a quarter of the requested size, which keeps
it cheap while keeping the aspect ratio.
"""

import asyncio
import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont

from discordbot.errors import GenerationError

SCALE = 4


def _render(prompt: str, size: str, quality: str) -> bytes:
    try:
        width, height = (max(64, int(side) // SCALE) for side in size.split("x", 1))
    except ValueError:
        raise GenerationError(f"{size} is not a size.", reason="invalid_options") from None
    digest = hashlib.sha256(prompt.encode()).digest()
    top, bottom = digest[:3], digest[3:6]
    # A vertical gradient between two colours derived from the prompt: a 256-step ramp, stretched.
    ramp = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), tuple(bottom)), Image.new("RGB", (width, height), tuple(top)), ramp
    )
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, width // 24))
    text = "\n".join(textwrap.wrap(prompt, width=28)[:8]) + f"\n\n{size} · {quality} · placeholder"
    draw.multiline_text(
        (width // 16, height // 16), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0)
    )
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class PlaceholderBackend:
    model = "placeholder"

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await asyncio.to_thread(_render, prompt, size, quality)

    async def aclose(self) -> None:
        return None
