"""Reading members' pictures from Discord's CDN (a local fake) with bounded size, pixels and time: what is refused
is refused plainly, before any credit is reserved, and costs nothing."""

import asyncio
from dataclasses import dataclass

import pytest

from discordbot.attachments import attachment_read, attachments_read
from discordbot.errors import ImageInputError
from tests.discordbot.fake_cdn import FakeCDN
from tests.discordbot.image_inputs import picture_bytes


@dataclass
class Attachment:
    """The four fields of discord.Attachment the reader uses."""

    url: str
    filename: str
    size: int
    content_type: str | None = "image/png"


BOUNDS = {"max_bytes": 200_000, "max_pixels": 500 * 500, "timeout": 3.0, "hosts": ["127.0.0.1"]}


def read(setup, **bounds):
    """Start the fake CDN, let `setup(cdn)` add files and return the attachments, read them, stop the CDN."""

    async def scenario():
        cdn = FakeCDN()
        await cdn.start()
        try:
            attachments = setup(cdn)
            return await attachments_read(attachments=attachments, **(BOUNDS | bounds)), cdn
        finally:
            await cdn.stop()

    return asyncio.run(scenario())


def served(cdn: FakeCDN, path: str, data: bytes, content_type: str = "image/png", size: int | None = None):
    return Attachment(
        cdn.add(path, data, content_type), path.rsplit("/", 1)[-1], len(data) if size is None else size, content_type
    )


def refused(setup, **bounds) -> ImageInputError:
    with pytest.raises(ImageInputError) as caught:
        read(setup, **bounds)
    return caught.value


def test_png_jpeg_and_webp_are_read_in_order_with_their_sizes():
    png, jpeg, webp = picture_bytes(size=(64, 48)), picture_bytes(fmt="JPEG", size=(30, 40)), picture_bytes(fmt="WEBP")

    images, cdn = read(
        lambda cdn: [
            served(cdn, "a/one.png", png),
            served(cdn, "a/two.jpg", jpeg, "image/jpeg"),
            served(cdn, "nolength/three.webp", webp, "image/webp"),
        ]
    )

    assert [(i.filename, i.format, i.width, i.height) for i in images] == [
        ("one.png", "png", 64, 48),
        ("two.jpg", "jpeg", 30, 40),
        ("three.webp", "webp", 64, 48),
    ]
    assert [i.data for i in images] == [png, jpeg, webp]


def test_a_declared_size_over_the_limit_is_refused_without_downloading():
    error = refused(lambda cdn: [served(cdn, "big.png", picture_bytes(), size=300_000)])
    assert error.reason == "too_big" and "big.png" in error.message and "MB" in error.message


def test_a_file_bigger_than_discord_said_is_cut_off_at_the_limit():
    big = picture_bytes(size=(600, 600), mode="RGB", color=(1, 2, 3)) + bytes(250_000)
    error = refused(lambda cdn: [served(cdn, "nolength/liar.png", big, size=1_000)])
    assert error.reason == "too_big"


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        (b"GIF89a" + bytes(100), "image/gif", "bad_format"),  # refused on Discord's content type, unread
        (b"GIF89a" + bytes(100), "image/png", "bad_format"),  # a GIF calling itself PNG: refused on its bytes
        (b"%PDF-1.7", None, "bad_format"),
        (picture_bytes()[:50], "image/png", "unreadable"),  # cut short
        (picture_bytes(size=(600, 600)), "image/png", "too_many_pixels"),  # 360,000 > 250,000
    ],
)
def test_what_is_not_a_usable_picture_is_refused(data, content_type, reason):
    error = refused(lambda cdn: [served(cdn, "x/file.png", data, content_type)])
    assert error.reason == reason and error.message.startswith("file.png: ")


def test_a_missing_file_is_refused():
    error = refused(lambda cdn: [Attachment(cdn.url("gone.png"), "gone.png", 10)])
    assert error.reason == "unreadable"


def test_a_redirect_is_not_followed():
    error = refused(lambda cdn: [Attachment(cdn.url("redirect/x.png"), "x.png", 10)])
    assert error.reason == "unreadable"


def test_a_host_that_is_not_discords_cdn_is_never_fetched():
    holder = {}

    def setup(cdn):
        holder["cdn"] = cdn
        return [Attachment(f"http://localhost:{cdn.port}/a.png", "a.png", 10)]

    error = refused(setup)
    assert error.reason == "foreign_url" and holder["cdn"].requests == []


def test_a_slow_cdn_is_given_up_on_within_the_time_limit():
    async def scenario():
        cdn = FakeCDN()
        await cdn.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            attachment = served(cdn, "slow/x.png", picture_bytes())
            with pytest.raises(ImageInputError) as caught:
                await attachment_read(attachment=attachment, **(BOUNDS | {"timeout": 0.5}))
            return caught.value, loop.time() - started
        finally:
            await cdn.stop()

    error, took = asyncio.run(scenario())
    assert error.reason == "slow" and "too long" in error.message
    assert took < 10  # bounded by the timeout, not by the CDN (which would stall 30 s)


def test_one_bad_picture_refuses_the_whole_request():
    error = refused(lambda cdn: [served(cdn, "ok.png", picture_bytes()), served(cdn, "bad.png", b"nope")])
    assert error.reason == "bad_format" and error.message.startswith("bad.png")


def test_bounds_default_to_the_settings(settings):
    settings.DISCORD_CDN_HOSTS = ["cdn.discordapp.com"]

    async def scenario():
        with pytest.raises(ImageInputError) as caught:
            await attachments_read(attachments=[Attachment("https://evil.example/a.png", "a.png", 10)])
        return caught.value

    assert asyncio.run(scenario()).reason == "foreign_url"
