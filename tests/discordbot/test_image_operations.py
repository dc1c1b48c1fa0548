"""The OpenAI backend's operations (generate, edit, variation; several images; streamed previews; usage and
spend) through the real `AsyncOpenAI` client against the fake OpenAI over real sockets, and the fake's refusals
of what the service refuses (called straight through the SDK, past our own checks)."""

import asyncio
import base64
import io

import openai
import pytest
from PIL import Image

from discordbot.errors import GenerationError, ImageInputError
from discordbot.images import ImageJob, InputImage, Preview
from discordbot.images.openai_backend import OpenAIBackend
from tests.discordbot.fake_openai import IMAGE_TOKENS_IN, IMAGE_TOKENS_OUT, TEXT_TOKENS, FakeOpenAI
from tests.discordbot.image_inputs import markup, markup_bytes, picture, picture_bytes

FLARE = "gpt-image-2.5-flare"
PRICES = {FLARE: {"input_text": 5, "input_image": 8, "output_image": 30, "output_text": 10}}


def job(**changes) -> ImageJob:
    options = {"operation": "generate", "prompt": "a fox", "size": "1024x1024", "quality": "low", "user_hash": "h" * 64}
    return ImageJob(**(options | changes))


def run(fake: FakeOpenAI, scenario, *, model: str = FLARE, retries: int = 0, timeout: float = 10):
    """Start the fake, make an OpenAIBackend pointed at it, run `scenario(backend)`, stop both."""

    async def main():
        await fake.start()
        backend = OpenAIBackend(
            api_key="sk-test", base_url=fake.base_url, model=model, timeout=timeout, max_retries=retries
        )
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()
            await fake.stop()

    return asyncio.run(main())


def render(fake: FakeOpenAI, image_job: ImageJob, *, model: str = FLARE, previews: list | None = None):
    async def show(preview: Preview) -> None:
        previews.append(preview)

    return run(
        fake, lambda backend: backend.render(image_job, on_preview=show if previews is not None else None), model=model
    )


@pytest.fixture(autouse=True)
def _prices(settings):
    settings.IMAGE_SPEND_PRICES = PRICES


def test_generate_several_images_in_one_request_with_usage_and_spend():
    fake = FakeOpenAI()

    batch = render(fake, job(count=3))

    [request] = fake.requests
    assert request.endpoint == "generations" and request.body["n"] == 3 and "stream" not in request.body
    assert batch.delivered == [fake.output_png(0), fake.output_png(1), fake.output_png(2)]
    assert len(set(batch.delivered)) == 3 and batch.failed == []
    assert batch.usage.input_text == TEXT_TOKENS and batch.usage.input_image == 0
    assert batch.usage.output_image == 3 * IMAGE_TOKENS_OUT
    assert batch.spend_micro_usd == TEXT_TOKENS * 5 + 3 * IMAGE_TOKENS_OUT * 30  # 9,050 micro-dollars


def test_edit_sends_every_picture_and_the_markup_as_multipart():
    fake = FakeOpenAI()
    first, second, overlay = picture("cat.png"), picture("hat.jpg", fmt="JPEG", color=(10, 10, 200)), markup()

    batch = render(fake, job(operation="edit", prompt="put the hat on the cat", images=(first, second), markup=overlay))

    [request] = fake.requests
    assert request.endpoint == "edits" and request.status == 200
    assert [(u.filename, u.content_type, u.data) for u in request.images] == [
        ("cat.png", "image/png", first.data),
        ("hat.jpg", "image/jpeg", second.data),
    ]
    assert request.markup.data == overlay.data and request.mask is None
    assert request.body == {
        "prompt": "put the hat on the cat",
        "model": FLARE,
        "size": "1024x1024",
        "quality": "low",
        "n": "1",
        "output_format": "png",
        "safety_identifier": "h" * 64,
    }
    assert request.file_params == ["image", "markup"]
    assert batch.delivered == [fake.png]
    assert batch.usage.input_image == 3 * IMAGE_TOKENS_IN  # two pictures and the markup
    assert batch.spend_micro_usd == TEXT_TOKENS * 5 + 3 * IMAGE_TOKENS_IN * 8 + IMAGE_TOKENS_OUT * 30


def test_edit_with_a_mask_on_a_model_without_markup():
    fake = FakeOpenAI()
    mask = markup("mask.png")

    batch = render(fake, job(operation="edit", images=(picture(),), mask=mask, count=2), model="gpt-image-2")

    [request] = fake.requests
    assert request.mask.data == mask.data and request.markup is None and request.body["n"] == "2"
    assert len(batch.delivered) == 2
    assert batch.spend_micro_usd is None  # gpt-image-2 has no row in the price table: unknown, not free


def test_variation_is_an_edit_of_the_one_earlier_image():
    fake = FakeOpenAI()
    earlier = picture("result.png", size=(32, 32))

    batch = render(fake, job(operation="variation", images=(earlier,)))

    [request] = fake.requests
    assert request.endpoint == "edits" and [u.data for u in request.images] == [earlier.data]
    assert request.body["prompt"] == "a fox" and batch.delivered == [fake.png]


@pytest.mark.parametrize("operation", ["generate", "edit"])
def test_previews_stream_one_request_per_image_then_the_finals(operation):
    fake = FakeOpenAI()
    previews: list[Preview] = []
    images = (picture(),) if operation == "edit" else ()

    batch = render(fake, job(operation=operation, images=images, count=2, partial_images=2), previews=previews)

    assert len(fake.requests) == 2  # the service streams only with n=1
    for request in fake.requests:
        assert request.status == 200
        assert request.body["n"] in (1, "1") and request.body["stream"] in (True, "true")
        assert request.body["partial_images"] in (2, "2")
    assert sorted((p.image_index, p.partial_index) for p in previews) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {p.png for p in previews} == {FakeOpenAI.partial_png(0), FakeOpenAI.partial_png(1)}
    assert batch.delivered == [fake.png, fake.png]
    assert batch.usage.output_image == 2 * IMAGE_TOKENS_OUT
    assert batch.usage.input_image == (2 * IMAGE_TOKENS_IN if operation == "edit" else 0)


def test_without_a_preview_callback_nothing_is_streamed():
    fake = FakeOpenAI()
    batch = render(fake, job(count=2, partial_images=3))
    [request] = fake.requests
    assert "stream" not in request.body and request.body["n"] == 2 and len(batch.delivered) == 2


def test_one_failed_image_of_four_leaves_three_delivered_and_one_to_refund():
    fake = FakeOpenAI()
    fake.script.extend(["ok", "error", "ok", "ok"])
    previews: list[Preview] = []

    batch = render(fake, job(count=4, partial_images=1), previews=previews)

    assert len(batch.delivered) == 3
    [failed] = batch.failed
    assert failed.error.reason == "api_error" and failed.png is None
    assert batch.usage.output_image == 3 * IMAGE_TOKENS_OUT  # only what was made is counted


@pytest.mark.parametrize(("mode", "reason"), [("fewer", "not_returned"), ("not_png_last", "bad_response")])
def test_a_short_or_broken_answer_fails_only_the_missing_image(mode, reason):
    fake = FakeOpenAI(mode=mode)

    batch = render(fake, job(count=4))

    assert len(batch.delivered) == 3 and [slot.index for slot in batch.failed] == [3]
    assert batch.failed[0].error.reason == reason


@pytest.mark.parametrize(("mode", "reason"), [("stream_error", "api_error"), ("stream_cut", "bad_response")])
def test_a_stream_that_breaks_off_is_a_failed_image(mode, reason):
    fake = FakeOpenAI(mode=mode)
    previews: list[Preview] = []

    with pytest.raises(GenerationError) as caught:
        render(fake, job(partial_images=3), previews=previews)

    assert caught.value.reason == reason
    assert len(previews) == 1  # the partial image before the break was shown


def test_moderation_of_a_streamed_request_is_the_member_facing_block():
    fake = FakeOpenAI(mode="moderation")
    with pytest.raises(GenerationError) as caught:
        render(fake, job(count=2, partial_images=1), previews=[])
    assert caught.value.reason == "moderation_blocked" and len(fake.requests) == 2


def test_a_failing_preview_callback_does_not_cost_the_image():
    fake = FakeOpenAI()

    async def broken(preview: Preview) -> None:
        raise RuntimeError("discord hiccup")

    batch = run(fake, lambda backend: backend.render(job(partial_images=2), on_preview=broken))
    assert batch.delivered == [fake.png]


@pytest.mark.parametrize(
    ("changes", "model", "reason"),
    [
        ({"count": 11}, FLARE, "invalid_options"),
        ({"count": 0}, FLARE, "invalid_options"),
        ({"partial_images": 4}, FLARE, "invalid_options"),
        ({"quality": "xhigh"}, "gpt-image-2", "invalid_options"),
        ({"size": "1000x1000"}, FLARE, "invalid_options"),  # not multiples of 16
        ({"size": "1536x864"}, "gpt-image-1.5", "invalid_options"),  # free sizes are GPT Image 2/2.5 only
        ({"operation": "edit"}, FLARE, "bad_input"),  # no picture
        ({"images": (picture(),)}, FLARE, "bad_input"),  # a generation takes none
        ({"operation": "edit", "images": (picture(),) * 17}, FLARE, "too_many_images"),
        ({"operation": "edit", "images": (picture(),), "markup": markup()}, "gpt-image-2", "markup_unsupported"),
        ({"operation": "edit", "images": (picture(),), "markup": markup(), "mask": markup()}, FLARE, "bad_input"),
        ({"operation": "edit", "images": (picture(),), "markup": markup(size=(32, 32))}, FLARE, "bad_input"),
        ({"operation": "edit", "images": (picture(),), "markup": picture()}, FLARE, "bad_input"),  # opaque
        ({"operation": "variation", "images": (picture(), picture())}, FLARE, "bad_input"),
        ({}, "dall-e-3", "bad_model"),
    ],
)
def test_what_the_model_cannot_take_is_refused_before_any_request(changes, model, reason):
    fake = FakeOpenAI()

    with pytest.raises(GenerationError) as caught:
        render(fake, job(**changes), model=model)

    assert caught.value.reason == reason
    assert fake.requests == []  # nothing reached the service, so nothing was charged


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (picture_bytes()[:60], "unreadable"),  # a PNG cut short
        (b"GIF89a" + bytes(64), "bad_format"),
        (picture_bytes(size=(300, 300)), "too_many_pixels"),
    ],
)
def test_input_pictures_are_decoded_in_full_before_use(data, reason):
    with pytest.raises(ImageInputError) as caught:
        InputImage.from_bytes(data, max_pixels=200 * 200)
    assert caught.value.reason == reason


def test_input_picture_size_is_taken_after_exif_orientation():
    image = Image.new("RGB", (40, 20), (1, 2, 3))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated a quarter turn: the service sees 20x40
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    taken = InputImage.from_bytes(out.getvalue())
    assert (taken.format, taken.width, taken.height) == ("jpeg", 20, 40)


# --- the fake refuses what the service refuses (called through the SDK, past our checks) --------------------

PNG = ("a.png", picture_bytes(), "image/png")


def sdk_call(fake: FakeOpenAI, call):
    async def scenario(backend: OpenAIBackend):
        return await call(backend.client.images)

    return run(fake, scenario)


@pytest.mark.parametrize(
    ("call", "status", "param"),
    [
        (lambda images: images.generate(model=FLARE, prompt="x", extra_body={"colour": "red"}), 400, "colour"),
        (
            lambda images: images.edit(model=FLARE, prompt="x", image=PNG, extra_body={"moderation": "low"}),
            400,
            "moderation",
        ),  # a generate-only parameter on an edit
        (lambda images: images.generate(model=FLARE, prompt="x", n=11), 400, "n"),
        (lambda images: images.generate(model=FLARE, prompt="x", n=0), 400, "n"),
        (lambda images: images.edit(model=FLARE, prompt="x", image=PNG, n=11), 400, "n"),
        (lambda images: images.generate(model=FLARE, prompt="x", n=2, stream=True, partial_images=1), 400, "stream"),
        (lambda images: images.generate(model=FLARE, prompt="x", stream=True, partial_images=4), 400, "partial_images"),
        (lambda images: images.generate(model="gpt-image-2", prompt="x", quality="xhigh"), 400, "quality"),
        (lambda images: images.generate(model=FLARE, prompt="x", quality="ultra"), 400, "quality"),
        (lambda images: images.generate(model=FLARE, prompt="x", quality="hd"), 400, "quality"),
        (lambda images: images.generate(model=FLARE, prompt="x", response_format="b64_json"), 400, "response_format"),
        (lambda images: images.generate(model=FLARE, prompt="x", size="1000x1000"), 400, "size"),
        (lambda images: images.generate(model=FLARE, prompt="x", output_format="gif"), 400, "output_format"),
        (lambda images: images.edit(model=FLARE, prompt="x", image=[PNG] * 17), 400, "image"),
        (
            lambda images: images.edit(model=FLARE, prompt="x", image=("a.gif", b"GIF89a....", "image/gif")),
            400,
            "image",
        ),
        (
            lambda images: images.edit(
                model=FLARE,
                prompt="x",
                image=PNG,
                markup=("m.png", markup_bytes(), "image/png"),
                mask=("k.png", markup_bytes(), "image/png"),
            ),
            400,
            "markup",
        ),
        (
            lambda images: images.edit(
                model="gpt-image-2", prompt="x", image=PNG, markup=("m.png", markup_bytes(), "image/png")
            ),
            400,
            "markup",
        ),
        (
            lambda images: images.edit(
                model=FLARE, prompt="x", image=PNG, markup=("m.png", markup_bytes(size=(8, 8)), "image/png")
            ),
            400,
            "markup",
        ),
        (lambda images: images.edit(model=FLARE, prompt="x", image=PNG, markup=PNG), 400, "markup"),  # opaque
        (
            lambda images: images.edit(
                model=FLARE, prompt="x", image=PNG, mask=("k.jpg", picture_bytes(fmt="JPEG"), "image/jpeg")
            ),
            400,
            "mask",
        ),
        (
            lambda images: images.edit(model="gpt-image-2", prompt="x", image=PNG, input_fidelity="high"),
            400,
            "input_fidelity",
        ),
        (lambda images: images.generate(model="dall-e-3", prompt="x"), 404, None),
    ],
)
def test_the_fake_refuses_what_the_service_refuses(call, status, param):
    fake = FakeOpenAI()

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_call(fake, call)

    assert caught.value.status_code == status
    assert caught.value.body["param"] == param if status == 400 else caught.value.code == "model_not_found"
    assert caught.value.body["type"] == "invalid_request_error"
    [request] = fake.requests
    assert request.status == status and request.refusal


def test_the_fake_accepts_a_full_legitimate_edit_and_answers_in_the_sdk_shape():
    fake = FakeOpenAI()

    response = sdk_call(
        fake,
        lambda images: images.edit(
            model=FLARE,
            prompt="x",
            image=[PNG, PNG],
            markup=("m.png", markup_bytes(), "image/png"),
            n=2,
            quality="xhigh",
            size="1536x864",
            output_format="png",
            safety_identifier="s",
        ),
    )

    assert [base64.b64decode(item.b64_json) for item in response.data] == [fake.output_png(0), fake.output_png(1)]
    assert response.usage.input_tokens_details.image_tokens == 3 * IMAGE_TOKENS_IN
    assert response.usage.output_tokens == 2 * IMAGE_TOKENS_OUT
