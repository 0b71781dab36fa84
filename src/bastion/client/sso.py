"""bsh's side of an SSO login: the localhost callback and the result fetch.

Layer: client (IO edge). The key pair is made by the caller; only the public key is sent.

1. A one-time ``secret`` (32 random bytes) is created; its hash goes to the proxy with the
   request, the secret itself never leaves bsh.
2. Unless headless, :class:`CallbackServer` listens on ``127.0.0.1`` (random port) at
   ``/callback/<random path token>``; the browser is opened (``webbrowser``, which honours
   ``$BROWSER``) at the proxy's ``/web/sso/NAME/start``.
3. After the IdP, the proxy sends the browser to that callback with the request id and a
   one-time code; bsh then fetches the certificates with secret + code. A local process that
   sees the callback URL gets neither the secret nor, without it, anything from the proxy.
4. Headless: bsh prints the URL (to open on any machine) and the request code, and long-polls
   the proxy with the secret until the login is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import webbrowser
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bastion.client.api import AuthClient
from bastion.contract.sso import SSO_REQUEST, SSO_RESULT, ResultQuery, SSORequest
from bastion.errors import AccessDenied, BastionError, ConnectionProblem
from bastion.services.credentials import secrets_equal

__all__ = ["CALLBACK_TIMEOUT", "CallbackServer", "sso_login"]

CALLBACK_TIMEOUT = 300.0
"""How long bsh waits for the browser (seconds)."""
POLL_WAIT = 25
DONE_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Bastion</title></head><body>"
    "<h1>Login successful</h1><p>Return to your terminal; you can close this window.</p>"
    "</body></html>"
)


class CallbackServer:
    """A one-shot HTTP server on 127.0.0.1 that waits for ``?request=ID&code=CODE``."""

    def __init__(self) -> None:
        self._token = secrets.token_urlsafe(24)
        self._result: asyncio.Future[tuple[str, str]] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self._result = asyncio.get_running_loop().create_future()
        app = web.Application(client_max_size=16 * 1024)
        app.router.add_get("/callback/{token}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/callback/{self._token}"
        return self.url

    async def _handle(self, request: web.Request) -> web.Response:
        if not secrets_equal(request.match_info["token"], self._token):
            raise web.HTTPNotFound()
        request_id = request.query.get("request", "")
        code = request.query.get("code", "")
        if not request_id or not code:
            raise web.HTTPBadRequest(text="missing request or code")
        assert self._result is not None
        if not self._result.done():
            self._result.set_result((request_id, code))
        return web.Response(
            text=DONE_PAGE,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    async def wait(self, seconds: float) -> tuple[str, str]:
        assert self._result is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), seconds)
        except TimeoutError:
            raise ConnectionProblem(
                f"no answer from the browser within {int(seconds)}s; finish the login in the "
                "browser, or use --headless"
            ) from None

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def sso_login(
    client: AuthClient,
    proxy: str,
    connector: str,
    public_key: str,
    ttl: str,
    *,
    headless: bool,
    say: Callable[[str], None],
    open_browser: Callable[[str], bool] = webbrowser.open,
    wait_seconds: float = CALLBACK_TIMEOUT,
    binding: dict[str, object] | None = None,
) -> dict[str, Any]:
    """Run one SSO login; returns the certificate document (as from ``/v1/login``).

    ``binding``: this machine's device proof over the ping's challenge and, with
    ``--key-store=tpm``, the TPM-held key (``LoginKeys.fields``); auth checks them when the
    IdP answers, so the challenge's 2 minutes bound the time in the browser."""
    secret = secrets.token_urlsafe(32)
    callback = CallbackServer()
    redirect = "" if headless else await callback.start()
    try:
        created = await client.send(
            SSO_REQUEST,
            SSORequest.model_validate(
                {
                    "connector": connector,
                    "public_key": public_key,
                    "ttl": ttl,
                    "secret": secret,
                    "client_redirect": redirect,
                    **(binding or {}),
                }
            ),
        )
        url = f"https://{proxy}{created.login_path}"
        request_id = created.request_id
        if headless:
            say(
                f"Open this URL in a browser on any machine and sign in:\n  {url}\n"
                f"Check that the page shows the code {created.code}. Waiting..."
            )
            return await _poll(client, request_id, secret, "", wait_seconds)
        say(f"If the browser does not open, visit:\n  {url}")
        loop = asyncio.get_running_loop()
        browser = loop.run_in_executor(None, open_browser, url)
        try:
            got_id, code = await _wait_browser(client, callback, request_id, secret, wait_seconds)
        finally:
            if browser.done():
                with contextlib.suppress(Exception):
                    browser.result()
        if not secrets_equal(got_id, request_id):
            raise AccessDenied("the browser finished a different login request; try again")
        return await _poll(client, request_id, secret, code, wait_seconds)
    finally:
        await callback.close()


async def _wait_browser(
    client: AuthClient, callback: CallbackServer, request_id: str, secret: str, seconds: float
) -> tuple[str, str]:
    """The browser's ``(request, code)`` at the callback; meanwhile a long-poll without the
    code learns when the login failed (the reason is raised here, not after a timeout)."""

    async def watch_for_failure() -> None:
        while True:
            await client.send(
                SSO_RESULT,
                ResultQuery(secret=secret, code="", wait=POLL_WAIT),
                path={"id": request_id},
            )

    try:
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(watch_for_failure())
            got = await callback.wait(seconds)
            watcher.cancel()
    except* BastionError as failure:
        raise failure.exceptions[0] from None
    return got


async def _poll(
    client: AuthClient, request_id: str, secret: str, code: str, wait_seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        data = await client.send(
            SSO_RESULT,
            ResultQuery(secret=secret, code=code, wait=POLL_WAIT),
            path={"id": request_id},
        )
        if not data.status:
            return data.model_dump(exclude={"status"})
        if loop.time() >= deadline:
            raise ConnectionProblem(f"the SSO login did not finish within {int(wait_seconds)}s")
