"""A small stand-in for Discord's CDN on 127.0.0.1: serves files by path, and misbehaves on request.

`files[path] = bytes` serves them with a content type and length; paths under `/slow/` stall until the test ends
(or `slow_seconds`), `/nolength/` streams without Content-Length, `/redirect/` answers 302 to another host, and
anything else is 404. Every request path is recorded.
"""

import asyncio

from aiohttp import web


class FakeCDN:
    def __init__(self, *, slow_seconds: float = 30.0) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.slow_seconds = slow_seconds
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        self.files["/" + path.lstrip("/")] = (data, content_type)
        return self.url(path)

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping.set()
        await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(path)
        if path.startswith("/redirect/"):
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        if path not in self.files:
            return web.Response(status=404, text="Not Found")
        data, content_type = self.files[path]
        content_type = content_type or "application/octet-stream"
        if path.startswith("/slow/"):
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            await response.write(data[:10])
            try:
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
            except TimeoutError:
                pass
            return response
        if path.startswith("/nolength/"):
            response = web.StreamResponse(headers={"Content-Type": content_type})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(data), 4096):
                await response.write(data[start : start + 4096])
            await response.write_eof()
            return response
        return web.Response(body=data, headers={"Content-Type": content_type})
