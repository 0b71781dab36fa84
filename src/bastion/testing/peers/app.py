"""A real internal web app for the app-access tests and bench (run as its own process).

Layer: ``testing`` (nothing in ``src`` imports it). ``python -m bastion.testing.peers.app
--port P --jwks URL --ca FILE --log FILE`` serves on 127.0.0.1:

* ``GET /whoami``: verifies ``Bastion-Jwt-Assertion`` against the JWKS fetched from ``--jwks``
  (like a real app: signature, audience = ``--audience``, expiry) and answers the claims, the
  ``X-Forwarded-*``/``Bastion-*`` headers it received, the path and the cookies (401 when the
  assertion is missing or invalid);
* ``POST /upload``: reads the body as a stream, answers its size and SHA-256;
* ``GET /stream?n=N``: N chunks of 64 KiB, streamed;
* ``GET /ws``: WebSocket echo;
* ``GET /hello``: 13 bytes (the bench);
* anything else: 404 ``no such page``.

Every request is appended to ``--log`` (method, raw path) before anything else: the proof
that an unauthenticated request never reached the app.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bastion.ca.jwt import verify_app_jwt
from bastion.errors import AccessDenied

__all__ = ["build", "main"]


def build(jwks_url: str, ca_file: str, audience: str, log_file: str) -> web.Application:
    cache: dict[str, Any] = {}
    log = Path(log_file) if log_file else None

    async def key_set() -> dict[str, Any]:
        if "keys" not in cache:
            context = ssl.create_default_context(cafile=ca_file) if ca_file else None
            async with (
                aiohttp.ClientSession() as http,
                http.get(jwks_url, ssl=context or True) as got,
            ):
                cache["keys"] = await got.json()
        return dict(cache["keys"])

    @web.middleware
    async def access_log(request: web.Request, handler: Any) -> web.StreamResponse:
        if log is not None:
            with log.open("a") as out:
                out.write(f"{request.method} {request.raw_path}\n")
        response: web.StreamResponse = await handler(request)
        return response

    async def whoami(request: web.Request) -> web.Response:
        token = request.headers.get("Bastion-Jwt-Assertion", "")
        try:
            claims = verify_app_jwt(token, await key_set(), audience, int(time.time()))
        except AccessDenied as exc:
            return web.json_response({"error": exc.message}, status=401)
        seen = {
            k: v
            for k, v in request.headers.items()
            if k.lower().startswith(("x-forwarded-", "bastion-", "x-user", "x-app"))
        }
        return web.json_response(
            {
                "claims": claims,
                "headers": seen,
                "path": request.raw_path,
                "cookies": dict(request.cookies),
            }
        )

    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def stream(request: web.Request) -> web.StreamResponse:
        n = min(int(request.query.get("n", "4")), 4096)
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(n):
            await response.write(bytes([65 + i % 26]) * 65536)
        await response.write_eof()
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello, world\n")

    async def other(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such page\n")

    app = web.Application(middlewares=[access_log])
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/upload", upload)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", ws)
    app.router.add_get("/hello", hello)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", default="")
    parser.add_argument("--ca", default="")
    parser.add_argument("--audience", default="")
    parser.add_argument("--log", default="")
    args = parser.parse_args(argv)
    app = build(args.jwks, args.ca, args.audience, args.log)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(json.dumps({"ready": args.port}), flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
