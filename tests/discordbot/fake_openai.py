"""A fake OpenAI images endpoint on 127.0.0.1, reached by the real `AsyncOpenAI` client (built on httpx2, which
respx cannot intercept) through `base_url`.

`POST /v1/images/generations` answers according to a mode: `ok` (a base64 PNG, as GPT image models always
send), `moderation` (400, code moderation_blocked, type image_generation_user_error), `rate_limit` (429 with a
tiny retry-after so the client's own retries are quick), `error` (500) or `slow` (sleeps `slow_seconds`, then ok).
Scripted modes are used first, one per request, then `mode`. Every request is recorded with its start and end,
so tests can check the concurrency the bot allowed.
"""

import asyncio
import base64
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image


def tiny_png(color: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


@dataclass
class ImageRequest:
    body: dict[str, Any]
    started: float
    ended: float | None = None
    status: int | None = None

    @property
    def user(self) -> str | None:
        return self.body.get("safety_identifier")


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

    async def start(self, port: int = 0) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/images/generations", self._generate)
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

    async def _generate(self, request: web.Request) -> web.Response:
        record = ImageRequest(body=await request.json(), started=time.monotonic())
        with self._lock:
            self.requests.append(record)
            mode = self.script.popleft() if self.script else self.mode
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            response = await self._answer(mode)
            record.status = response.status
            return response
        finally:
            record.ended = time.monotonic()
            with self._lock:
                self.active -= 1

    async def _answer(self, mode: str) -> web.Response:
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
        elif self.delay:
            await asyncio.sleep(self.delay)
        body = {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(self.png).decode()}],
            "output_format": "png",
            "usage": {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110},
        }
        return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    def _error(
        self, status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.Response(
            body=json.dumps(body).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
