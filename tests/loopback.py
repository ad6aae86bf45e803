"""Real loopback HTTP servers that answer with a handler, for unit tests of the vLLM clients.

Each server stands for one named host (`"vllm-a:8000"`); the handler sees requests as
`httpx.Request`s addressed to that name, and answers with an `httpx.Response` (or a coroutine of
one). Raising `httpx.ConnectError` in a handler closes the connection before any response (a
reset), `httpx.ReadTimeout` never answers, and `httpx.RemoteProtocolError` cuts the body short.
A name listed as down gets the URL of a closed port, so its connections are really refused.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import httpx
from aiohttp import web

from backends.vllm_client import HTTPClients, VLLMClient, VLLMClientSettings
from tests.factories import free_port

__all__ = ["Handler", "Loopback", "loopback"]

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Loopback:
    """Named loopback servers, and clients to them; everything closes when the block ends."""

    def __init__(self) -> None:
        self._runners: list[web.BaseRunner] = []
        self._clients: list[HTTPClients] = []
        self.names: dict[str, str] = {}
        self.retried: list[str] = []

    async def serve(self, handler: Handler, *names: str, down: Sequence[str] = ()) -> list[str]:
        """The base URLs of `names` (those in `down` refuse connections), in order."""
        urls = []
        for name in names:
            if name in down:
                url = f"http://127.0.0.1:{free_port()}"
            else:
                url = await self._start(handler, name)
            self.names[url] = name
            urls.append(url)
        return urls

    def client(self, **settings: float | int | str | None) -> VLLMClient:
        """A pooled client as the app opens one, with these `VLLMClientSettings` and no backoff
        unless given; `retried` lists the reasons of its retries."""
        clients = HTTPClients(
            VLLMClientSettings.model_validate({"retry_backoff_s": 0, **settings}),
            on_retry=self.retried.append,
        )
        self._clients.append(clients)
        return clients.open()

    def name(self, url: str) -> str:
        """The name a URL stands for."""
        return self.names[url]

    async def _start(self, handler: Handler, name: str) -> str:
        async def answer(request: web.BaseRequest) -> web.StreamResponse:
            seen = httpx.Request(
                request.method,
                f"http://{name}{request.path_qs}",
                headers=list(request.headers.items()),
                content=await request.read(),
            )
            try:
                result = handler(seen)
                response = await result if inspect.isawaitable(result) else result
            except httpx.ConnectError:
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            except httpx.ReadTimeout:
                await asyncio.sleep(3600)
                raise
            except httpx.RemoteProtocolError:
                cut = web.StreamResponse(headers={"Content-Length": "1000"})
                await cut.prepare(request)
                await cut.write(b'{"choices": [')
                assert request.transport is not None
                request.transport.close()
                return cut
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            return web.Response(status=response.status_code, body=response.content, headers=headers)

        # Handlers that never answer are cancelled at once when the test ends.
        runner = web.ServerRunner(web.Server(answer), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        for clients in self._clients:
            await clients.aclose()
        for runner in self._runners:
            await runner.cleanup()


@asynccontextmanager
async def loopback() -> AsyncIterator[Loopback]:
    """Servers and clients for one test."""
    servers = Loopback()
    try:
        yield servers
    finally:
        await servers.aclose()
