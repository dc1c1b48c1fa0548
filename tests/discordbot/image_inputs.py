"""Small pictures for the image tests: real PNG/JPEG/WebP bytes made with Pillow, as members would attach."""

import io

from PIL import Image

from discordbot.images import InputImage


def picture_bytes(
    *, size: tuple[int, int] = (64, 48), color: tuple[int, ...] = (200, 30, 30), fmt: str = "PNG", mode: str = "RGB"
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format=fmt)
    return out.getvalue()


def markup_bytes(*, size: tuple[int, int] = (64, 48)) -> bytes:
    """A transparent PNG with one opaque green stroke, the way a member marks where to change the picture."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    for x in range(size[0] // 4, size[0] // 2):
        image.putpixel((x, size[1] // 2), (0, 255, 0, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def picture(name: str = "photo.png", **options) -> InputImage:
    return InputImage.from_bytes(picture_bytes(**options), filename=name)


def markup(name: str = "markup.png", **options) -> InputImage:
    return InputImage.from_bytes(markup_bytes(**options), filename=name)
