"""The home page's sample gallery: adding an image, checked the way a browser will need it.

Images live in the database (see `SampleImage`), so the admin and `manage.py seedgallery` add them through
`sample_image_add`, which refuses anything that is not a real, reasonably small PNG, JPEG, WebP or GIF picture.
"""

import hashlib
import io

from django.core.exceptions import ValidationError
from PIL import Image, UnidentifiedImageError

from storefront.models import SampleImage

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def sample_image_inspect(*, data: bytes) -> tuple[str, int, int]:
    """(content type, width, height) of an acceptable picture; ValidationError (admin-safe message) otherwise."""
    if not data:
        raise ValidationError("The file is empty.")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValidationError(f"The image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB; please resize it.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # reads the whole file: a truncated or forged one fails here
            kind, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValidationError("That file is not an image we can show (use PNG, JPEG, WebP or GIF).") from exc
    if kind not in CONTENT_TYPES:
        raise ValidationError(f"{kind} images are not supported; use PNG, JPEG, WebP or GIF.")
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise ValidationError(f"The image must be at most {MAX_IMAGE_SIDE} pixels on each side.")
    return CONTENT_TYPES[kind], width, height


def sample_image_add(
    *, data: bytes, prompt: str, size: str = "", quality: str = "", sort_order: int = 0, active: bool = True
) -> SampleImage:
    """Add a picture to the gallery. ValidationError (nothing written) when it is not an acceptable image."""
    prompt = prompt.strip()
    if not prompt:
        raise ValidationError("Give the prompt that made the image (it is also its description for screen readers).")
    content_type, width, height = sample_image_inspect(data=data)
    return SampleImage.objects.create(
        prompt=prompt[:300],
        size=size,
        quality=quality,
        image=data,
        content_type=content_type,
        width=width,
        height=height,
        digest=hashlib.sha256(data).hexdigest(),
        sort_order=sort_order,
        active=active,
    )
