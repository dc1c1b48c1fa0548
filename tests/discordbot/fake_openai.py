"""A fake OpenAI images API on 127.0.0.1, reached by the real `AsyncOpenAI` client (built on httpx2, which respx
cannot intercept) through `base_url`.

`POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart, as the SDK sends it: `image` for one
picture, `image[]` for several, `markup`, `mask`, text fields as strings) first check the request the way the
service does, and answer 400 in OpenAI's error shape for what it refuses:

- parameters the installed SDK's types do not have for that endpoint, and values outside their `Literal`s (read
  at import from `openai.types.image_generate_params` / `image_edit_params`, so an SDK upgrade moves the fake);
- the per-model rules those types document: `xhigh`/`max` quality and `markup` only on GPT Image 2.5, free
  `WIDTHxHEIGHT` sizes only on GPT Image 2/2.5 (multiples of 16, 1:3 to 3:1, at most 3840x2160), legacy
  parameters (`response_format`, `style`, `standard`/`hd`) refused for GPT image models, `input_fidelity` not on
  GPT Image 2.x, gif/svg output only on 2.6; retired models (dall-e-2/3, gpt-image-1) answer 404;
- `n` outside 1-10, `partial_images` outside 0-3, streaming with n > 1 ("Streaming is only supported with n=1",
  which the service answers), more than 16 pictures, pictures that are not PNG/JPEG/WebP or over 50 MB, markup
  together with mask, a markup or mask that is not a PNG of the first picture's size with transparent pixels.

Then it answers according to a mode: `ok` (base64 PNGs and `usage`), `moderation` (400, code moderation_blocked,
type image_generation_user_error), `rate_limit` (429 with a tiny retry-after so the client's own retries are
quick), `error` (500), `slow` (sleeps `slow_seconds`, then ok), `fewer` (one image fewer than asked),
`not_png_last` (the last image is not a PNG), `stream_error` (a partial image, then an error event),
`stream_cut` (a partial image, then the stream ends). Scripted modes are used first, one per request, then `mode`.
With `stream=true` it answers server-sent events exactly as the SDK parses them (`event:` line, `data:` JSON with
a `type` of `image_generation.partial_image` / `.completed`, or `image_edit.*`).

Every request is recorded (endpoint, parameters, pictures, markup, mask, start, end, status), so tests can assert
on what the service saw and on the concurrency the bot allowed. Usage is deterministic: 10 text tokens in, 65
image tokens per input picture (markup and mask included), 100 image tokens out per image.
"""

import asyncio
import base64
import io
import json
import threading
import time
import types
import typing
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from openai.types import image_edit_params, image_generate_params
from openai.types.image_model import ImageModel
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GPT_IMAGE_25 = {
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
}
GPT_IMAGE_2X = GPT_IMAGE_25 | {"gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
FREE_SIZES = GPT_IMAGE_25 | {"gpt-image-2", "gpt-image-2-2026-04-21"}
GPT_IMAGE_26 = {"gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
RETIRED = {"dall-e-2", "dall-e-3", "gpt-image-1"}
STANDARD_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}
TEXT_TOKENS, IMAGE_TOKENS_IN, IMAGE_TOKENS_OUT = 10, 65, 100
MAX_BODY = 16 * 55 * 1024 * 1024  # 16 pictures of up to 50 MB, and the form around them


def tiny_png(color: tuple[int, int, int] = (40, 120, 200), size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format="PNG")
    return out.getvalue()


def _param_types(typed_dict: type) -> dict[str, Any]:
    return typing.get_type_hints(typed_dict)


# What the installed SDK's types allow on each endpoint (the streaming variant adds `stream`).
ENDPOINT_PARAMS = {
    "generations": _param_types(image_generate_params.ImageGenerateParamsStreaming),
    "edits": _param_types(image_edit_params.ImageEditParamsStreaming),
}
FILE_PARAMS = {"image", "markup", "mask"}
KNOWN_MODELS = set(typing.get_args(ImageModel))


def _flatten(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [leaf for arg in typing.get_args(tp) for leaf in _flatten(arg)]
    return [tp]


def _literal_values(tp: Any) -> set[Any] | None:
    """The values a Literal-typed parameter takes, or None when it also takes any str (e.g. `size`, `model`)."""
    values: set[Any] = set()
    for leaf in _flatten(tp):
        if typing.get_origin(leaf) is typing.Literal:
            values |= set(typing.get_args(leaf))
        elif leaf is str:
            return None
    return values or None


class Refused(Exception):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass
class ImageRequest:
    body: dict[str, Any]
    started: float
    endpoint: str = "generations"
    images: list[Upload] = field(default_factory=list)
    markup: Upload | None = None
    mask: Upload | None = None
    ended: float | None = None
    status: int | None = None
    refusal: str | None = None  # the message of a 400/404 the fake answered
    file_params: list[str] = field(default_factory=list)  # multipart file fields sent (image, markup, mask)

    @property
    def user(self) -> str | None:
        return self.body.get("safety_identifier")


def _dimensions(upload: Upload, param: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(upload.data)) as image:
            image.load()
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except Exception:
        raise Refused(f"Invalid image file for '{param}'.", param=param, code="invalid_image") from None


def _transparent(upload: Upload) -> bool:
    with Image.open(io.BytesIO(upload.data)) as image:
        return image.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _kind(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class FakeOpenAI:
    def __init__(self, *, mode: str = "ok", delay: float = 0.0, slow_seconds: float = 30.0) -> None:
        self.mode = mode
        self.delay = delay
        self.slow_seconds = slow_seconds
        self.script: deque[str] = deque()
        self.requests: list[ImageRequest] = []
        self.png = tiny_png()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def output_png(self, index: int) -> bytes:
        """The index-th image of an answer: `self.png` first, then distinct colours, so tests can tell them apart."""
        return self.png if index == 0 else tiny_png((40 + 50 * index, 120, 200))

    @staticmethod
    def partial_png(index: int) -> bytes:
        return tiny_png((200, 60 * index, 40))

    async def start(self, port: int = 0) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # ends "slow" answers at once
        if self._runner is not None:
            await self._runner.cleanup()

    def max_overlap(self, *, user: str | None = None) -> int:
        """The most requests (of one safety identifier, if given) that were at the fake at the same time."""
        with self._lock:
            spans = [(r.started, r.ended or time.monotonic()) for r in self.requests if user in (None, r.user)]
        events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        peak = current = 0
        for _, step in events:
            current += step
            peak = max(peak, current)
        return peak

    # --- requests ------------------------------------------------------------------------------------------

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        record = ImageRequest(body=await request.json(), started=time.monotonic(), endpoint="generations")
        return await self._handle(request, record)

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        record = ImageRequest(body={}, started=time.monotonic(), endpoint="edits")
        form = await request.post()
        files: dict[str, list[Upload]] = {}
        for key, value in form.items():
            if isinstance(value, str):
                record.body[key] = value
            else:
                upload = Upload(value.filename, value.content_type, value.file.read())
                files.setdefault(key.removesuffix("[]"), []).append(upload)
        record.file_params = sorted(files)
        record.images = files.get("image", [])
        record.markup = (files.get("markup") or [None])[0]
        record.mask = (files.get("mask") or [None])[0]
        return await self._handle(request, record)

    async def _handle(self, request: web.Request, record: ImageRequest) -> web.StreamResponse:
        with self._lock:
            self.requests.append(record)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            try:
                params = self._check(record)
            except Refused as refused:
                record.refusal = refused.message
                response: web.StreamResponse = self._error(
                    refused.status, refused.message, "invalid_request_error", refused.code, param=refused.param
                )
            else:
                with self._lock:
                    mode = self.script.popleft() if self.script else self.mode
                response = await self._answer(request, record, params, mode)
            record.status = response.status
            return response
        finally:
            record.ended = time.monotonic()
            with self._lock:
                self.active -= 1

    def _check(self, record: ImageRequest) -> dict[str, Any]:
        """The request's parameters, typed; raises Refused for what the service refuses."""
        allowed = ENDPOINT_PARAMS[record.endpoint]
        multipart = record.endpoint == "edits"
        params: dict[str, Any] = {}
        for name in record.file_params:
            if name not in allowed or name not in FILE_PARAMS:
                raise Refused(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        for name, value in record.body.items():
            if name not in allowed or name in FILE_PARAMS:
                raise Refused(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
            leaves = _flatten(allowed[name])
            if name == "stream":
                # The SDK sends `stream` as JSON true/false, or in a form as "true"/"false".
                value = {"true": True, "false": False}.get(value, value) if multipart else value
                if value not in (True, False, None):
                    raise Refused(f"Invalid value for 'stream': {value!r}.", param=name, code="invalid_value")
                params[name] = value
                continue
            if multipart and isinstance(value, str) and int in leaves and value.lstrip("-").isdigit():
                value = int(value)  # a form carries numbers as text
            if value is None:
                params[name] = None
                continue
            if int in leaves and type(value) is not int and str not in leaves:
                raise Refused(f"Invalid type for '{name}': expected an integer.", param=name, code="invalid_type")
            values = _literal_values(allowed[name])
            if values is not None and value not in values:
                raise Refused(f"Invalid value for '{name}': {value!r}.", param=name, code="invalid_value")
            params[name] = value
        if not params.get("prompt"):
            raise Refused("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
        if len(params["prompt"]) > 32000:
            raise Refused("'prompt' is longer than 32000 characters.", param="prompt", code="string_above_max_length")
        model = params.get("model") or "gpt-image-2"
        if model in RETIRED or model not in KNOWN_MODELS:
            raise Refused(
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
                status=404,
            )
        for legacy in ("response_format", "style"):
            if params.get(legacy) is not None:
                raise Refused(f"'{legacy}' is not supported for {model}.", param=legacy, code="unsupported_parameter")
        quality = params.get("quality")
        if quality in ("standard", "hd") or (quality in ("xhigh", "max") and model not in GPT_IMAGE_25):
            raise Refused(
                f"Quality '{quality}' is not supported for {model}.", param="quality", code="unsupported_value"
            )
        self._check_size(params.get("size"), model)
        n = params.get("n", 1) if params.get("n") is not None else 1
        if n < 1:
            raise Refused(
                f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead.",
                param="n",
                code="integer_below_min_value",
            )
        if n > 10:
            raise Refused(
                f"Invalid 'n': integer above maximum value. Expected a value <= 10, but got {n} instead.",
                param="n",
                code="integer_above_max_value",
            )
        partial = params.get("partial_images")
        if partial is not None and not 0 <= partial <= 3:
            raise Refused("'partial_images' must be between 0 and 3.", param="partial_images", code="invalid_value")
        stream = params.get("stream") is True
        if stream and n > 1:
            raise Refused("Streaming is only supported with n=1.", param="stream")
        output_format = params.get("output_format") or "png"
        if output_format in ("gif", "svg") and model not in GPT_IMAGE_26:
            raise Refused(f"Output format '{output_format}' is not supported for {model}.", param="output_format")
        if output_format == "gif" and stream:
            raise Refused("GIF output does not support streaming.", param="stream")
        if output_format == "svg" and (stream or n != 1):
            raise Refused("SVG output requires n=1 and no streaming.", param="output_format")
        if params.get("frame_count") is not None and (output_format != "gif" or not 2 <= params["frame_count"] <= 16):
            raise Refused("'frame_count' takes 2-16 and needs output_format=gif.", param="frame_count")
        compression = params.get("output_compression")
        if compression is not None and (output_format not in ("webp", "jpeg") or not 0 <= compression <= 100):
            raise Refused("'output_compression' takes 0-100 with webp or jpeg output.", param="output_compression")
        fidelity = params.get("input_fidelity")
        if fidelity is not None and (model in GPT_IMAGE_2X or (model == "gpt-image-1-mini" and fidelity != "low")):
            raise Refused(f"'input_fidelity' {fidelity!r} is not supported for {model}.", param="input_fidelity")
        if record.endpoint == "edits":
            self._check_pictures(record, model)
        params["n"], params["stream"], params["model"] = n, stream, model
        return params

    @staticmethod
    def _check_size(size: str | None, model: str) -> None:
        if size is None or size in STANDARD_SIZES:
            return
        width, _, height = size.partition("x")
        ok = model in FREE_SIZES and width.isdigit() and height.isdigit()
        if ok:
            w, h = int(width), int(height)
            ok = w > 0 and h > 0 and w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3 * min(w, h)
            ok = ok and max(w, h) <= 3840 and w * h <= 3840 * 2160
        if not ok:
            raise Refused(f"Invalid size '{size}' for {model}.", param="size", code="invalid_value")

    @staticmethod
    def _check_pictures(record: ImageRequest, model: str) -> None:
        if not record.images:
            raise Refused("Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
        if len(record.images) > 16:
            raise Refused(f"Too many images: {len(record.images)}; at most 16.", param="image", code="too_many_images")
        for upload in record.images:
            if _kind(upload.data) is None:
                raise Refused(
                    f"Invalid image file '{upload.filename}': supported formats are png, webp and jpg.",
                    param="image",
                    code="invalid_image_format",
                )
            if len(upload.data) >= 50 * 1024 * 1024:
                raise Refused(f"Image '{upload.filename}' is 50MB or more.", param="image", code="image_too_large")
        first = _dimensions(record.images[0], "image")
        if record.markup is not None and record.mask is not None:
            raise Refused("'markup' cannot be combined with 'mask'.", param="markup", code="invalid_request")
        if record.markup is not None and model not in GPT_IMAGE_25:
            raise Refused(f"'markup' is not supported for {model}.", param="markup", code="unsupported_parameter")
        for name, overlay in (("markup", record.markup), ("mask", record.mask)):
            if overlay is None:
                continue
            if _kind(overlay.data) != "png":
                raise Refused(f"'{name}' must be a PNG file.", param=name, code="invalid_image_format")
            if name == "mask" and len(overlay.data) >= 4 * 1024 * 1024:
                raise Refused("'mask' must be less than 4MB.", param=name, code="image_too_large")
            if _dimensions(overlay, name) != first:
                raise Refused(f"'{name}' must have the same dimensions as the first image.", param=name)
            if not _transparent(overlay):
                raise Refused(f"'{name}' must contain transparent pixels.", param=name)

    # --- answers -------------------------------------------------------------------------------------------

    def _usage(self, record: ImageRequest, images_out: int) -> dict[str, Any]:
        pictures = len(record.images) + (record.markup is not None) + (record.mask is not None)
        input_image = IMAGE_TOKENS_IN * pictures
        output = IMAGE_TOKENS_OUT * images_out
        return {
            "input_tokens": TEXT_TOKENS + input_image,
            "input_tokens_details": {"text_tokens": TEXT_TOKENS, "image_tokens": input_image},
            "output_tokens": output,
            "total_tokens": TEXT_TOKENS + input_image + output,
        }

    async def _answer(
        self, request: web.Request, record: ImageRequest, params: dict[str, Any], mode: str
    ) -> web.StreamResponse:
        if mode == "moderation":
            return self._error(
                400,
                "Your request was rejected as a result of our safety system.",
                "image_generation_user_error",
                "moderation_blocked",
            )
        if mode == "rate_limit":
            return self._error(
                429, "Rate limit reached for images.", "requests", "rate_limit_exceeded", {"retry-after-ms": "10"}
            )
        if mode == "error":
            return self._error(500, "The server had an error.", "server_error", None, {"x-should-retry": "false"})
        if mode == "slow":
            try:
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
                return self._error(503, "Shutting down.", "server_error", None, {"x-should-retry": "false"})
            except TimeoutError:
                pass
        elif self.delay and not params["stream"]:
            await asyncio.sleep(self.delay)
        if params["stream"]:
            return await self._stream(request, record, params, mode)
        n = params["n"]
        returned = n - 1 if mode == "fewer" else n
        data = [{"b64_json": base64.b64encode(self.output_png(i)).decode()} for i in range(returned)]
        if mode == "not_png_last":
            data[-1] = {"b64_json": base64.b64encode(b"GIF89a not a png").decode()}
        usage = self._usage(record, returned)
        if record.endpoint == "generations" and not record.images:
            usage = {k: v for k, v in usage.items() if k != "input_tokens_details"} | {
                "input_tokens_details": {"text_tokens": TEXT_TOKENS, "image_tokens": 0}
            }
        body = {"created": int(time.time()), "data": data, "output_format": "png", "usage": usage}
        return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    async def _stream(
        self, request: web.Request, record: ImageRequest, params: dict[str, Any], mode: str
    ) -> web.StreamResponse:
        prefix = "image_generation" if record.endpoint == "generations" else "image_edit"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        partials = params.get("partial_images") or 0
        common = {
            "background": "auto",
            "created_at": int(time.time()),
            "output_format": "png",
            "quality": params.get("quality") or "auto",
            "size": params.get("size") or "1024x1024",
        }

        async def send(kind: str, payload: dict[str, Any]) -> None:
            await response.write(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())

        steps = partials if mode not in ("stream_error", "stream_cut") else 1
        for index in range(steps):
            if self.delay:
                await asyncio.sleep(self.delay / (partials + 1))
            kind = f"{prefix}.partial_image"
            b64 = base64.b64encode(self.partial_png(index)).decode()
            await send(kind, {"type": kind, "b64_json": b64, "partial_image_index": index, **common})
        if mode == "stream_error":
            error = {"message": "The image could not be finished.", "type": "server_error", "code": None}
            await send("error", {"type": "error", "error": error})
        elif mode != "stream_cut":
            if self.delay:
                await asyncio.sleep(self.delay / (partials + 1))
            kind = f"{prefix}.completed"
            b64 = base64.b64encode(self.output_png(0)).decode()
            await send(kind, {"type": kind, "b64_json": b64, "usage": self._usage(record, 1), **common})
        await response.write_eof()
        return response

    def _error(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None,
        headers: dict[str, str] | None = None,
        *,
        param: str | None = None,
    ) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return web.Response(
            body=json.dumps(body).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
