"""Browser sessions of the login pages: an opaque cookie token -> who signed in, until when.

Layer: web (storage). The backend holds only the SHA-256 of the token, with the session's
expiry as TTL, so a stolen database row cannot be replayed as a cookie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from bastion.backend.base import Backend, Item
from bastion.clock import Clock
from bastion.errors import CompareFailed, NotFound
from bastion.services.credentials import hash_secret, new_secret
from bastion.types.identity import Identity

__all__ = ["SESSION_COOKIE", "WebSession", "WebSessions", "current_session"]

SESSION_COOKIE = "bastion_session"
PREFIX = "web/sessions/"


def current_session(request: web.Request) -> WebSession | None:
    """The browser session of this request, as admitted by the authentication gate (the API
    middleware resolves the cookie once and refuses locked, deleted and reset users' sessions;
    :mod:`bastion.auth.gate`). Handlers never read the cookie themselves."""
    session = request.get("web_session")
    return session if isinstance(session, WebSession) else None


@dataclass(frozen=True, slots=True)
class WebSession:
    identity: Identity
    """Who signed in: the identity of the certificate the sign-in issued (its epoch, roles and
    MFA device are what the gate checks on every request)."""
    method: str
    mfa_device: str = ""
    """Set once the user verified with a security key in this session (step-up)."""
    mfa_at: datetime | None = None
    """When that second factor was last proven (sign-in or step-up); None once consumed."""

    @property
    def user(self) -> str:
        return self.identity.user

    @property
    def roles(self) -> list[str]:
        return list(self.identity.roles)

    @property
    def expires(self) -> datetime:
        return self.identity.expires


class WebSessions:
    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock

    async def create(self, identity: Identity, method: str, mfa_device: str = "") -> str:
        """Returns the cookie token (shown once, stored as a hash).

        The session lasts until ``identity.expires``. ``mfa_device`` names the second factor
        proven at sign-in, if any (a fresh proof).
        """
        token = new_secret(32)
        expires = identity.expires
        record = {
            "identity": identity.encode().decode(),
            "expires": expires.isoformat(),
            "method": method,
        }
        if mfa_device:
            record |= {"mfa_device": mfa_device, "mfa_at": self._clock.now().isoformat()}
        await self._backend.create(
            Item(
                key=PREFIX + hash_secret(token), value=json.dumps(record).encode(), expires=expires
            )
        )
        return token

    async def get(self, token: str) -> WebSession | None:
        if not token or len(token) > 128:
            return None
        try:
            item = await self._backend.get(PREFIX + hash_secret(token))
        except NotFound:
            return None
        data = json.loads(item.value)
        expires = datetime.fromisoformat(data["expires"])
        if expires <= self._clock.now() or "identity" not in data:
            return None  # expired, or stored by an older release: sign in again
        try:
            identity = Identity.decode(data["identity"])
        except ValueError:
            return None
        return WebSession(
            identity,
            data["method"],
            str(data.get("mfa_device", "")),
            datetime.fromisoformat(data["mfa_at"]) if data.get("mfa_at") else None,
        )

    async def mark_mfa(self, token: str, device: str) -> None:
        """Record a WebAuthn step-up in the session ``token`` (which must exist)."""
        item = await self._backend.get(PREFIX + hash_secret(token))
        data = json.loads(item.value)
        data["mfa_device"] = device
        data["mfa_at"] = self._clock.now().isoformat()
        await self._backend.put(
            Item(key=item.key, value=json.dumps(data).encode(), expires=item.expires)
        )

    async def consume_fresh_mfa(self, token: str, max_age: timedelta) -> bool:
        """Use up the session's second-factor proof if it is younger than ``max_age``.

        A device change in the browser needs a proof made moments ago, good for one change, so a
        stolen session cookie alone cannot register the thief's key.
        """
        try:
            item = await self._backend.get(PREFIX + hash_secret(token))
        except NotFound:
            return False
        data = json.loads(item.value)
        at = data.get("mfa_at")
        if not at or self._clock.now() - datetime.fromisoformat(at) > max_age:
            return False
        data["mfa_at"] = None
        try:
            await self._backend.compare_and_swap(
                item, Item(key=item.key, value=json.dumps(data).encode(), expires=item.expires)
            )
        except CompareFailed:
            return False  # used concurrently by another request
        return True

    async def delete(self, token: str) -> None:
        try:
            await self._backend.delete(PREFIX + hash_secret(token))
        except NotFound:
            pass
