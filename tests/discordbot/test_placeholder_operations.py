"""The placeholder backend does every operation keyless, so `make run` demos /edit, variations, count and
previews: an edit visibly derives from its pictures, several images differ, previews arrive before the final."""

import asyncio
import io

import pytest
from PIL import Image

from discordbot.errors import GenerationError
from discordbot.images import PNG_MAGIC, ImageJob, Preview
from discordbot.images.placeholder import PlaceholderBackend
from tests.discordbot.image_inputs import markup, picture


def job(**changes) -> ImageJob:
    options = {"operation": "generate", "prompt": "a fox", "size": "1024x1024", "quality": "low", "user_hash": "h"}
    return ImageJob(**(options | changes))


def render(image_job: ImageJob, *, previews: list | None = None, delay: float = 0.0):
    async def show(preview: Preview) -> None:
        previews.append((asyncio.get_running_loop().time(), preview))

    backend = PlaceholderBackend(delay=delay)
    return asyncio.run(backend.render(image_job, on_preview=show if previews is not None else None))


def pixel(png: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    return Image.open(io.BytesIO(png)).convert("RGB").getpixel(xy)


def test_an_edit_is_made_from_its_picture():
    red, blue = picture(color=(220, 0, 0)), picture(color=(0, 0, 220))

    from_red = render(job(operation="edit", images=(red,))).delivered[0]
    from_blue = render(job(operation="edit", images=(blue,))).delivered[0]

    corner_red, corner_blue = pixel(from_red, (250, 250)), pixel(from_blue, (250, 250))  # away from the text
    assert corner_red[0] > corner_red[2] and corner_blue[2] > corner_blue[0]  # the input's colour shows through


def test_an_edit_of_two_pictures_blends_them_and_lays_the_markup_over():
    red, blue = picture(color=(220, 0, 0)), picture(color=(0, 0, 220))

    plain = render(job(operation="edit", images=(red, blue))).delivered[0]
    marked = render(job(operation="edit", images=(red, blue), markup=markup())).delivered[0]

    r, _, b = pixel(plain, (250, 250))
    assert abs(r - b) < 40  # an even mix of red and blue, under the same tint
    assert plain != marked  # the markup's stroke is drawn on


def test_several_images_differ_and_previews_come_before_with_the_delay_spread():
    previews: list[tuple[float, Preview]] = []

    batch = render(job(count=3, partial_images=2), previews=previews, delay=0.3)

    assert len(batch.delivered) == 3 and len(set(batch.delivered)) == 3 and batch.failed == []
    assert all(png.startswith(PNG_MAGIC) for png in batch.delivered)
    assert sorted((p.image_index, p.partial_index) for _, p in previews) == [(i, s) for i in range(3) for s in range(2)]
    first_step = [t for t, p in previews if p.partial_index == 0]
    second_step = [t for t, p in previews if p.partial_index == 1]
    assert max(first_step) < min(second_step)  # the previews of one step arrive before the next step's
    coarse, finer = (Image.open(io.BytesIO(p.png)) for p in (previews[0][1], previews[-1][1]))
    assert len(coarse.getcolors(1 << 16)) < len(finer.getcolors(1 << 16))  # each preview is sharper


def test_a_variation_is_made_from_the_earlier_image_and_costs_nothing_to_run():
    earlier = picture(color=(0, 200, 0), size=(256, 256))

    batch = render(job(operation="variation", images=(earlier,)))

    g = pixel(batch.delivered[0], (250, 250))
    assert g[1] > g[0] and g[1] > g[2]
    assert batch.usage.total == 0 and batch.spend_micro_usd is None


def test_the_placeholder_refuses_what_any_backend_refuses():
    with pytest.raises(GenerationError):
        render(job(operation="edit"))
    with pytest.raises(GenerationError):
        render(job(count=11))


def test_the_one_image_shorthand_still_works():
    png = asyncio.run(PlaceholderBackend().generate(prompt="x", size="1536x1024", quality="high", user_hash="h"))
    assert Image.open(io.BytesIO(png)).size == (384, 256)


@pytest.mark.parametrize("method", ["check", "render", "generate", "aclose"])
def test_both_backends_have_the_protocols_signatures(method):
    import inspect

    from discordbot.images import ImageBackend
    from discordbot.images.openai_backend import OpenAIBackend

    expected = inspect.signature(getattr(ImageBackend, method))
    for backend in (OpenAIBackend, PlaceholderBackend):
        actual = inspect.signature(getattr(backend, method))
        assert list(actual.parameters) == list(expected.parameters), (backend, method)
        assert inspect.iscoroutinefunction(getattr(backend, method)) == inspect.iscoroutinefunction(
            getattr(ImageBackend, method)
        )
