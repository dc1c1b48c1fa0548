"""A local backend for keyless development (and the concurrency bench): every operation, drawn with Pillow.

A generation is the prompt written on a gradient whose colours come from the prompt. An edit or a variation
visibly derives from its inputs: the pictures blended together, tinted with the prompt's colour, the markup laid
over the first, and the prompt written on top. Previews are coarse pixelated versions of the final image, sent
before it, the way a streaming service sharpens its partial images. Several images differ by their index.

Rendering is CPU work, so it runs in a thread, during PLACEHOLDER_DELAY_SECONDS (the service's answer time);
images are drawn at a quarter of the requested size, which keeps them cheap while keeping the aspect ratio. It
reports no tokens: its spend is what IMAGE_SPEND_PRICES says for the model "placeholder" (normally unpriced).
"""

import asyncio
import hashlib
import io
import logging
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

from discordbot.errors import GenerationError
from discordbot.images.base import ImageBatch, ImageJob, ImageSlot, Preview, PreviewCallback, job_check, model_limits
from discordbot.spend import ImageUsage, image_spend

SCALE = 4
log = logging.getLogger(__name__)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _canvas_size(size: str) -> tuple[int, int]:
    try:
        width, height = (max(64, int(side) // SCALE) for side in size.split("x", 1))
    except ValueError:
        raise GenerationError(f"{size} is not a size.", reason="invalid_options") from None
    return width, height


def _colours(prompt: str, index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    digest = hashlib.sha256(f"{prompt}\x00{index}".encode()).digest()
    return tuple(digest[:3]), tuple(digest[3:6])


def _open(data: bytes, size: tuple[int, int]) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.fit(ImageOps.exif_transpose(image).convert("RGBA"), size)


def _draw(job: ImageJob, index: int) -> Image.Image:
    width, height = _canvas_size(job.size)
    top, bottom = _colours(job.prompt, index)
    if job.operation == "generate":
        # A vertical gradient between two colours derived from the prompt: a 256-step ramp, stretched.
        ramp = Image.linear_gradient("L").resize((width, height))
        image = Image.composite(Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), ramp)
        label = f"{job.size} · {job.quality} · placeholder"
    else:
        inputs = [_open(picture.data, (width, height)) for picture in job.images]
        image = inputs[0]
        for number, other in enumerate(inputs[1:], start=2):
            image = Image.blend(image, other, 1 / number)  # an even mix of all the pictures
        if job.markup is not None:
            image = Image.alpha_composite(image, _open(job.markup.data, (width, height)))
        # Each image of a batch is tinted a little differently, so several candidates are told apart.
        image = Image.blend(image.convert("RGB"), Image.new("RGB", (width, height), top), 0.3)
        label = f"{job.operation} of {len(job.images)} · {job.size} · {job.quality} · placeholder"
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, width // 24))
    text = "\n".join(textwrap.wrap(job.prompt, width=28)[:8]) + f"\n\n{label}"
    if job.count > 1:
        text += f" · {index + 1}/{job.count}"
    draw.multiline_text(
        (width // 16, height // 16), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0)
    )
    return image


def _render(job: ImageJob, index: int) -> tuple[bytes, list[bytes]]:
    """The final PNG and its previews (coarsest first)."""
    image = _draw(job, index)
    previews = []
    for step in range(job.partial_images):
        factor = 2 ** (job.partial_images - step + 2)  # 3 previews: 32x, 16x, 8x coarser
        small = image.resize((max(1, image.width // factor), max(1, image.height // factor)), Image.BILINEAR)
        previews.append(_png(small.resize(image.size, Image.NEAREST)))
    return _png(image), previews


class PlaceholderBackend:
    model = "placeholder"

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay

    def check(self, job: ImageJob) -> None:
        job_check(job, model_limits(self.model))

    async def render(self, job: ImageJob, *, on_preview: PreviewCallback | None = None) -> ImageBatch:
        self.check(job)
        steps = job.partial_images if on_preview is not None else 0
        # The delay stands for an image service's whole answer time, its drawing included: the drawing happens
        # during the first part of the wait, as a service's rendering happens while the bot waits for it.
        first_wait = asyncio.ensure_future(asyncio.sleep(self.delay / (steps + 1) if self.delay else 0))
        try:
            rendered = [await asyncio.to_thread(_render, job, index) for index in range(job.count)]
            await first_wait
        finally:
            first_wait.cancel()
        # The delay is spread over the previews, so a demo shows them arriving one after another.
        for step in range(steps):
            if self.delay and step:
                await asyncio.sleep(self.delay / (steps + 1))
            for index, (_, previews) in enumerate(rendered):
                try:
                    await on_preview(Preview(image_index=index, partial_index=step, png=previews[step]))
                except Exception:
                    log.warning("Preview %s/%s could not be shown", index, step, exc_info=True)
        if self.delay and steps:
            await asyncio.sleep(self.delay / (steps + 1))
        usage = ImageUsage()
        return ImageBatch(
            model=self.model,
            slots=tuple(ImageSlot(index=index, png=png) for index, (png, _) in enumerate(rendered)),
            usage=usage,
            spend_micro_usd=image_spend(model=self.model, usage=usage),
        )

    async def generate(self, *, prompt: str, size: str, quality: str, user_hash: str) -> bytes:
        job = ImageJob(operation="generate", prompt=prompt, size=size, quality=quality, user_hash=user_hash)
        return (await self.render(job)).delivered[0]

    async def aclose(self) -> None:
        return None
