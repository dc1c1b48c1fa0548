"""Pictures members attach to a command, read from Discord's CDN with bounded size, pixels and time.

Everything is checked before any credit is reserved, so a picture that cannot be used costs nothing: the URL must
be on one of DISCORD_CDN_HOSTS (the URL comes from Discord's interaction payload, but we never fetch elsewhere,
and never follow a redirect); Discord's declared size and content type are checked before downloading; the
download stops at IMAGE_INPUT_MAX_BYTES and at ATTACHMENT_READ_TIMEOUT_SECONDS for all pictures together; the
bytes must be a PNG, JPEG or WebP that decodes completely and has at most IMAGE_INPUT_MAX_PIXELS pixels.
Each refusal is an `ImageInputError` with a plain message naming the picture.

Usage (from a cog): `images = await attachments_read(attachments=[option_1, option_2])` with discord.py's
`discord.Attachment` objects (anything with `url`, `filename`, `size` and `content_type`).
"""

import asyncio
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings

from discordbot.errors import ImageInputError
from discordbot.images.base import InputImage

ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/webp")
CHUNK = 64 * 1024


class AttachmentLike(Protocol):
    url: str
    filename: str
    size: int
    content_type: str | None


def _name(filename: str) -> str:
    """The file name as the member sees it, kept short (it is their own text, shown back to them)."""
    name = " ".join(filename.split()) or "picture"
    return name if len(name) <= 60 else name[:57] + "..."


def _refuse(filename: str, message: str, reason: str) -> ImageInputError:
    return ImageInputError(f"{_name(filename)}: {message}", reason=reason)


def _precheck(attachment: AttachmentLike, *, max_bytes: int, hosts: Sequence[str]) -> None:
    parts = urlsplit(attachment.url)
    if parts.scheme not in ("https", "http") or (parts.hostname or "") not in hosts:
        raise _refuse(attachment.filename, "that is not a Discord attachment.", "foreign_url")
    if attachment.size is not None and attachment.size > max_bytes:
        raise _refuse(attachment.filename, f"pictures may be at most {max_bytes // (1024 * 1024)} MB.", "too_big")
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type not in ACCEPTED_TYPES:
        raise _refuse(attachment.filename, "only PNG, JPEG or WebP pictures can be used.", "bad_format")


async def _download(session: aiohttp.ClientSession, attachment: AttachmentLike, *, max_bytes: int) -> bytes:
    too_big = _refuse(attachment.filename, f"pictures may be at most {max_bytes // (1024 * 1024)} MB.", "too_big")
    try:
        async with session.get(attachment.url, allow_redirects=False) as response:
            if response.status != 200:
                raise _refuse(attachment.filename, "it could not be downloaded from Discord.", "unreadable")
            if response.content_length is not None and response.content_length > max_bytes:
                raise too_big
            data = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                data += chunk
                if len(data) > max_bytes:  # a server that lied about (or left out) the length
                    raise too_big
            return bytes(data)
    except TimeoutError:
        raise  # aiohttp's read timeouts are ClientErrors too; the caller says "too slow", not "unreadable"
    except aiohttp.ClientError:
        raise _refuse(attachment.filename, "it could not be downloaded from Discord.", "unreadable") from None


async def _read(session: aiohttp.ClientSession, attachment: AttachmentLike, *, max_bytes: int, max_pixels: int):
    data = await _download(session, attachment, max_bytes=max_bytes)
    try:
        # Decoding is CPU work: in a thread, so the bot's event loop keeps answering.
        return await asyncio.to_thread(InputImage.from_bytes, data, filename=attachment.filename, max_pixels=max_pixels)
    except ImageInputError as exc:
        raise _refuse(attachment.filename, exc.message[0].lower() + exc.message[1:], exc.reason) from None


async def attachments_read(
    *,
    attachments: Sequence[AttachmentLike],
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    timeout: float | None = None,
    hosts: Sequence[str] | None = None,
) -> list[InputImage]:
    """The attachments as checked pictures, in order; raises ImageInputError for the first that cannot be used.

    Bounds default to the settings. All pictures are checked for host, size and type before any is downloaded,
    then downloaded together within one overall time limit.
    """
    max_bytes = settings.IMAGE_INPUT_MAX_BYTES if max_bytes is None else max_bytes
    max_pixels = settings.IMAGE_INPUT_MAX_PIXELS if max_pixels is None else max_pixels
    timeout = settings.ATTACHMENT_READ_TIMEOUT_SECONDS if timeout is None else timeout
    hosts = settings.DISCORD_CDN_HOSTS if hosts is None else hosts
    for attachment in attachments:
        _precheck(attachment, max_bytes=max_bytes, hosts=hosts)
    if not attachments:
        return []
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with asyncio.timeout(timeout), aiohttp.ClientSession(timeout=client_timeout) as session:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(_read(session, item, max_bytes=max_bytes, max_pixels=max_pixels))
                    for item in attachments
                ]
    except* (ImageInputError, TimeoutError) as errors:
        refusals = [exc for exc in errors.exceptions if isinstance(exc, ImageInputError)]
        if refusals:
            raise refusals[0] from None
        raise ImageInputError("Discord took too long to send the pictures. Please try again.", reason="slow") from None
    return [task.result() for task in tasks]


async def attachment_read(*, attachment: AttachmentLike, **bounds) -> InputImage:
    """One attachment (see attachments_read)."""
    [image] = await attachments_read(attachments=[attachment], **bounds)
    return image
