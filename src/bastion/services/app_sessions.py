"""Per-app browser sessions: the cookie that lets a browser reach one app through the proxy.

Layer: ``services`` (a typed store over the backend; owns the ``app_sessions/`` prefix). The
flow (docs/app-access.md): a signed-in browser asks the login pages to launch app ``NAME``;
they issue a one-time **code** (60 s) bound to the web session; the browser brings it to
``https://NAME.<proxy>/x-bastion-auth``, which redeems it (once: the code record is deleted)
for a **session token** set as a host-only cookie of that app. The backend holds only SHA-256
hashes of codes and tokens.

A session names its app, the identity of the web session that launched it and that web
session's backend key: it ends when the web session does (logout) or at its own expiry (at
most the web session's, so at most the certificate's). Validity is re-read from the backend
at most every :attr:`AppSessions.cache_ttl` seconds per session (1 s), so a logout ends app
sessions within a second without a backend read per request.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.backend.base import Backend, Item
from bastion.clock import Clock
from bastion.errors import AccessDenied, CompareFailed, NotFound
from bastion.services.credentials import hash_secret, new_secret
from bastion.tasks import retrieve_exception
from bastion.types.identity import Identity

__all__ = ["CODE_TTL", "SESSION_TTL", "AppSession", "AppSessions"]

PREFIX = "app_sessions/"
CODE_TTL = timedelta(seconds=60)
SESSION_TTL = timedelta(hours=1)
"""Longest app session (also capped by the web session's expiry)."""
_MAX_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class AppSession:
    identity: Identity
    app: str
    bound_key: str
    """Backend key of the web session it was launched from (gone: this session ends)."""
    expires: datetime
    id: str
    """A non-secret id for audit (first 16 hex digits of the token's hash)."""


class AppSessions:
    def __init__(self, backend: Backend, clock: Clock, cache_ttl: float = 1.0) -> None:
        self._backend = backend
        self._clock = clock
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[AppSession, float]] = {}
        self._loading: dict[str, asyncio.Task[AppSession | None]] = {}
        """One backend read per session at a time: every connection of a browser (or of a
        load generator) finds the cache stale in the same instant."""

    async def new_code(self, identity: Identity, app: str, bound_key: str) -> str:
        """A one-time code for ``app``, redeemable within :data:`CODE_TTL`."""
        code = new_secret(24)
        record = {"identity": identity.encode().decode(), "app": app, "bound": bound_key}
        await self._backend.create(
            Item(
                key=f"{PREFIX}codes/{hash_secret(code)}",
                value=json.dumps(record).encode(),
                expires=self._clock.now() + CODE_TTL,
            )
        )
        return code

    async def redeem(
        self, code: str, app: str, ttl: timedelta = SESSION_TTL
    ) -> tuple[str, AppSession]:
        """Exchange a code for a session token of ``app`` (the code is used up).

        Raises:
            AccessDenied: unknown, used or expired code, or a code for another app.
        """
        invalid = AccessDenied("this sign-in link is invalid or expired; open the app again")
        if not code or len(code) > 128:
            raise invalid
        key = f"{PREFIX}codes/{hash_secret(code)}"
        try:
            item = await self._backend.get(key)
            await self._backend.delete(key, expected_revision=item.revision)
        except (NotFound, CompareFailed):  # unknown, or redeemed concurrently
            raise invalid from None
        data = json.loads(item.value)
        now = self._clock.now()
        if data.get("app") != app or (item.expires is not None and item.expires <= now):
            raise invalid
        identity = Identity.decode(data["identity"])
        expires = min(identity.expires, now + ttl)
        token = new_secret(32)
        digest = hash_secret(token)
        record = {
            "identity": data["identity"],
            "app": app,
            "bound": data["bound"],
            "expires": expires.isoformat(),
        }
        await self._backend.create(
            Item(
                key=f"{PREFIX}sessions/{digest}",
                value=json.dumps(record).encode(),
                expires=expires,
            )
        )
        return token, AppSession(identity, app, data["bound"], expires, digest[:16])

    async def get(self, token: str, app: str) -> AppSession | None:
        """The live session of ``token`` for ``app``; None when unknown, expired, for
        another app, or its web session has ended (the record is then deleted)."""
        if not token or len(token) > 128:
            return None
        digest = hash_secret(token)
        now = self._clock.now()
        tick = self._clock.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and tick - hit[1] < self.cache_ttl:
            session = hit[0]
            if session.app != app or session.expires <= now:
                return None
            return session
        task = self._loading.get(digest)
        if task is None:
            task = self._loading[digest] = asyncio.ensure_future(self._refresh(digest, tick))
            task.add_done_callback(retrieve_exception)
        loaded = await asyncio.shield(task)  # a waiter that goes away leaves it to the others
        if loaded is None or loaded.app != app or loaded.expires <= now:
            return None
        return loaded

    async def _refresh(self, digest: str, tick: float) -> AppSession | None:
        me = asyncio.current_task()
        try:
            loaded = await self._load(digest)
        finally:
            ended = self._loading.get(digest) is not me  # :meth:`end` ran meanwhile
            if not ended:
                del self._loading[digest]
        if ended or loaded is None:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) >= _MAX_CACHE:
            self._cache.clear()
        self._cache[digest] = (loaded, tick)
        return loaded

    async def _load(self, digest: str) -> AppSession | None:
        key = f"{PREFIX}sessions/{digest}"
        try:
            item = await self._backend.get(key)
        except NotFound:
            return None
        data = json.loads(item.value)
        try:
            await self._backend.get(data["bound"])
        except NotFound:
            await self._delete(key)
            return None
        try:
            identity = Identity.decode(data["identity"])
        except ValueError:
            return None
        return AppSession(
            identity,
            str(data["app"]),
            str(data["bound"]),
            datetime.fromisoformat(data["expires"]),
            digest[:16],
        )

    async def end(self, token: str) -> None:
        """End the session of ``token`` (app sign-out); unknown tokens are ignored."""
        digest = hash_secret(token)
        self._cache.pop(digest, None)
        self._loading.pop(digest, None)  # a read in flight must not cache it again
        await self._delete(f"{PREFIX}sessions/{digest}")

    async def _delete(self, key: str) -> None:
        try:
            await self._backend.delete(key)
        except NotFound:
            pass
