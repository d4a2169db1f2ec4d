"""The least any aiohttp gateway does, as a bench/compare.py target ("aiohttp"): one aiohttp server request
in, one ClientSession request out to the same path and body, and the upstream's body copied to the client
read by read. No parsing, no validation, no routing, no limits, no logging, no metrics, no timeouts.

It is not a gateway: it shows how much of a gateway's cost is aiohttp's own (the server's request and
response, the client's request and response, the loop), the part no work in the gateway can remove while
it is built on aiohttp, as the design card has it. Like the gateway it runs on uvloop when installed,
with a 4,096-deep accept queue and no connection limit upstream; unlike it, it keeps Python's default
garbage-collector settings.

    python bench/aiohttp_proxy.py --port 9001 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
FORWARDED = ("Content-Type", "Authorization", "x-api-key", "anthropic-version", "x-goog-api-key")


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
    async with request.app[SESSION].post(request.app[UPSTREAM] + request.path_qs, data=body,
                                         headers=headers) as upstream:
        response = web.StreamResponse(status=upstream.status, headers={
            "Content-Type": upstream.headers.get("Content-Type", "application/octet-stream")})
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(port: int, upstream: str) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_post("/{tail:.*}", forward)
    app.router.add_get("/healthz", health)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app[SESSION] = session
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.port, args.upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
