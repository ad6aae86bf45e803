"""An OTLP/HTTP trace sink for the gateway benchmark's `ttc_traced` system: it takes every export
(`POST /v1/traces`) and answers 200, so that what is measured is the gateway's cost of tracing
and exporting, not a collector's.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse

from aiohttp import web

__all__ = ["main"]


async def _traces(request: web.Request) -> web.Response:
    await request.read()
    # An empty ExportTraceServiceResponse: every span accepted.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", _traces)
    app.router.add_get("/health", _health)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
