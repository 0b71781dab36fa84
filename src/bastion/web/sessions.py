"""Browser sessions of the login pages: an opaque cookie token -> who signed in, until when.

Layer: web (storage). The backend holds only the SHA-256 of the token, with the session's
expiry as TTL, so a stolen database row cannot be replayed as a cookie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.auth.credentials import hash_secret, new_secret
from bastion.backend.base import Backend, Item
from bastion.clock import Clock
from bastion.errors import CompareFailed, NotFound

__all__ = ["SESSION_COOKIE", "WebSession", "WebSessions"]

SESSION_COOKIE = "bastion_session"
PREFIX = "web/sessions/"


@dataclass(frozen=True, slots=True)
class WebSession:
    user: str
    roles: list[str]
    expires: datetime
    method: str
    mfa_device: str = ""
    """Set once the user verified with a security key in this session (step-up)."""
    mfa_at: datetime | None = None
    """When that second factor was last proven (sign-in or step-up); None once consumed."""


class WebSessions:
    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock

    async def create(
        self, user: str, roles: list[str], expires: datetime, method: str, mfa_device: str = ""
    ) -> str:
        """Returns the cookie token (shown once, stored as a hash).

        ``mfa_device`` names the second factor proven at sign-in, if any (a fresh proof).
        """
        token = new_secret(32)
        record = {"user": user, "roles": roles, "expires": expires.isoformat(), "method": method}
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
        if expires <= self._clock.now():
            return None
        return WebSession(
            data["user"],
            list(data["roles"]),
            expires,
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
