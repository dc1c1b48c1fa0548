"""The shapes every image backend shares: a job, the input pictures, previews, and the batch that comes back;
the models' limits (from the installed openai SDK's parameter docs, `openai/types/image_edit_params.py` and
`image_generate_params.py`) and the check of a job against them, done before any call so nothing is charged.
"""

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from discordbot.errors import GenerationError, ImageInputError
from discordbot.spend import ImageUsage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OPERATIONS = ("generate", "edit", "variation")
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
MB = 1024 * 1024

# GPT Image 2.5 (and its dated snapshots): takes `markup`, and the extra qualities xhigh and max.
GPT_IMAGE_25 = frozenset(
    {
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.5-flare",
        "gpt-image-2.5-flare-2026-09-08",
    }
)
# Models that take any WIDTHxHEIGHT (multiples of 16, aspect 1:3 to 3:1, at most 3840x2160).
FREE_SIZE_MODELS = GPT_IMAGE_25 | {"gpt-image-2", "gpt-image-2-2026-04-21"}
# Shut down: the service refuses them, so we refuse them before reserving anything.
RETIRED_MODELS = frozenset({"dall-e-2", "dall-e-3", "gpt-image-1"})


def _sniff(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class InputImage:
    """A picture given to an edit: bytes known to decode as PNG, JPEG or WebP, with its size after orientation."""

    data: bytes = field(repr=False)
    format: str  # png | jpeg | webp
    width: int
    height: int
    filename: str = "image.png"
    has_transparency: bool = False  # some pixel is not fully opaque (what a markup or mask needs)

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"

    @property
    def upload(self) -> tuple[str, bytes, str]:
        """As the openai SDK takes a file: (filename, bytes, content type)."""
        return (self.filename, self.data, self.content_type)

    @classmethod
    def from_bytes(cls, data: bytes, *, filename: str = "", max_pixels: int = 4096 * 4096) -> "InputImage":
        """Decode `data` fully (a truncated file is refused here, not at the service). CPU work: call it in a
        thread for large pictures. Raises ImageInputError with a plain message."""
        kind = _sniff(data)
        if kind is None:
            raise ImageInputError("Only PNG, JPEG or WebP pictures can be used.", reason="bad_format")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageInputError(
                        f"That picture is {width}×{height}; pictures may have at most {max_pixels:,} pixels.",
                        reason="too_many_pixels",
                    )
                image.load()
                # EXIF orientations 5-8 turn the picture a quarter: the service sees it the other way round.
                if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    width, height = height, width
                transparent = False
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    transparent = image.convert("RGBA").getchannel("A").getextrema()[0] < 255
        except ImageInputError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise ImageInputError("That picture could not be read (it may be damaged).", reason="unreadable") from None
        name = filename or f"image.{kind}"
        return cls(data=data, format=kind, width=width, height=height, filename=name, has_transparency=transparent)


@dataclass(frozen=True)
class ImageJob:
    """What to make. `images` are the pictures to edit (edit: 1-16; variation: the one earlier result)."""

    operation: str
    prompt: str
    size: str
    quality: str
    user_hash: str
    count: int = 1
    images: tuple[InputImage, ...] = ()
    markup: InputImage | None = None  # GPT Image 2.5 only; a transparent PNG over the first image
    mask: InputImage | None = None  # PNG; its transparent areas are where the first image is edited
    partial_images: int = 0  # previews per image (0-3), when the caller passes on_preview
    moderation: str = ""  # "auto" or "low" (a server's setting), for generations; "": the service's default


@dataclass(frozen=True)
class Preview:
    """A partial image while image `image_index` (0-based, of job.count) is being made."""

    image_index: int
    partial_index: int
    png: bytes = field(repr=False)


PreviewCallback = Callable[[Preview], Awaitable[None]]


@dataclass(frozen=True)
class ImageSlot:
    """One requested image: its PNG, or the error it met (never both)."""

    index: int
    png: bytes | None = field(default=None, repr=False)
    error: GenerationError | None = None


@dataclass(frozen=True)
class ImageBatch:
    model: str
    slots: tuple[ImageSlot, ...]
    usage: ImageUsage
    spend_micro_usd: int | None  # None: the model has no row in IMAGE_SPEND_PRICES

    @property
    def delivered(self) -> list[bytes]:
        return [slot.png for slot in self.slots if slot.png is not None]

    @property
    def failed(self) -> list[ImageSlot]:
        return [slot for slot in self.slots if slot.png is None]


@dataclass(frozen=True)
class ModelLimits:
    qualities: frozenset[str]
    markup: bool
    free_sizes: bool
    max_count: int = 10
    max_input_images: int = 16
    max_input_bytes: int = 50 * MB
    max_mask_bytes: int = 4 * MB
    max_partial_images: int = 3
    max_prompt_chars: int = 32000


def model_limits(model: str) -> ModelLimits:
    if model in RETIRED_MODELS:
        raise GenerationError(f"The image model {model} has been shut down; set IMAGE_MODEL.", reason="bad_model")
    qualities = {"low", "medium", "high", "auto"}
    if model in GPT_IMAGE_25 or model == "placeholder":
        qualities |= {"xhigh", "max"}
    return ModelLimits(
        qualities=frozenset(qualities),
        markup=model in GPT_IMAGE_25 or model == "placeholder",
        free_sizes=model in FREE_SIZE_MODELS or model == "placeholder",
    )


def size_check(size: str, *, free_sizes: bool) -> tuple[int, int]:
    """The (width, height) of a size the model takes; raises GenerationError otherwise."""
    if size in STANDARD_SIZES or (free_sizes and _free_size_ok(size)):
        width, height = size.split("x")
        return int(width), int(height)
    raise GenerationError(f"{size} is not a size this image model makes.", reason="invalid_options")


def _free_size_ok(size: str) -> bool:
    width_text, _, height_text = size.partition("x")
    if not (width_text.isdigit() and height_text.isdigit()):
        return False
    width, height = int(width_text), int(height_text)
    return (
        width > 0
        and height > 0
        and width % 16 == 0
        and height % 16 == 0
        and max(width, height) <= 3 * min(width, height)
        and max(width, height) <= 3840
        and width * height <= 3840 * 2160
    )


def job_check(job: ImageJob, limits: ModelLimits) -> None:
    """Everything the service would refuse about `job`, refused here first (nothing is charged)."""
    if job.operation not in OPERATIONS:
        raise GenerationError(f"{job.operation!r} is not an image operation.", reason="invalid_options")
    if not job.prompt.strip():
        raise GenerationError("The prompt is empty.", reason="invalid_options")
    if len(job.prompt) > limits.max_prompt_chars:
        raise GenerationError(f"The prompt is longer than {limits.max_prompt_chars} characters.", "invalid_options")
    if not 1 <= job.count <= limits.max_count:
        raise GenerationError(f"Ask for 1 to {limits.max_count} images.", reason="invalid_options")
    if not 0 <= job.partial_images <= limits.max_partial_images:
        raise GenerationError("Previews must be 0 to 3 per image.", reason="invalid_options")
    if job.quality not in limits.qualities:
        raise GenerationError(f"{job.quality} is not a quality this image model offers.", reason="invalid_options")
    size_check(job.size, free_sizes=limits.free_sizes)
    if job.operation == "generate":
        if job.images or job.markup or job.mask:
            raise ImageInputError("A new image takes no pictures; use an edit.", reason="bad_input")
        return
    if job.operation == "variation" and (len(job.images) != 1 or job.markup or job.mask):
        raise ImageInputError("A variation starts from exactly one earlier image.", reason="bad_input")
    if not job.images:
        raise ImageInputError("Attach at least one picture to edit.", reason="bad_input")
    if len(job.images) > limits.max_input_images:
        raise ImageInputError(f"At most {limits.max_input_images} pictures can be edited at once.", "too_many_images")
    for image in job.images:
        if image.format not in ("png", "jpeg", "webp"):
            raise ImageInputError("Only PNG, JPEG or WebP pictures can be used.", reason="bad_format")
        if len(image.data) > limits.max_input_bytes:
            raise ImageInputError(f"{image.filename} is larger than this image model takes.", reason="too_big")
    first = job.images[0]
    if job.markup is not None and job.mask is not None:
        raise ImageInputError("Use a markup or a mask, not both.", reason="bad_input")
    if job.markup is not None:
        if not limits.markup:
            raise ImageInputError("This image model does not take a markup picture.", reason="markup_unsupported")
        _overlay_check(job.markup, first, "markup")
    if job.mask is not None:
        if len(job.mask.data) > limits.max_mask_bytes:
            raise ImageInputError("The mask must be smaller than 4 MB.", reason="too_big")
        _overlay_check(job.mask, first, "mask")


def _overlay_check(overlay: InputImage, first: InputImage, name: str) -> None:
    if overlay.format != "png":
        raise ImageInputError(f"The {name} must be a PNG.", reason="bad_format")
    if (overlay.width, overlay.height) != (first.width, first.height):
        raise ImageInputError(
            f"The {name} must be the size of the first picture ({first.width}×{first.height}),"
            f" not {overlay.width}×{overlay.height}.",
            reason="bad_input",
        )
    if not overlay.has_transparency:
        raise ImageInputError(f"The {name} must have transparent areas.", reason="bad_input")
