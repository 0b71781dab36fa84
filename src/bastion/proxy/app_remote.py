"""App access for a proxy in its own process: the app route's backend over auth's API.

Layer: ``proxy``. The all-in-one's app route calls :class:`bastion.auth.apps.AppAccess`
in process; a proxy that runs alone (``bastion start`` with ``auth_service`` off) asks auth
through its host identity instead (:mod:`bastion.contract.apps`, endpoints for proxies only):

* ``POST /v1/apps/sessions/lookup``: the browser's app session behind a cookie's token (kept
  :data:`SESSION_TTL` seconds here, as auth's own lookup cache does, so a logout or a lock
  reaches this proxy within about a second), or a launch code redeemed for a new one;
* ``POST /v1/apps/sessions/end``;
* ``POST /v1/apps/authorize``: RBAC (``app_labels``, per-session MFA) for an identity this
  proxy verified (a session's, or a user certificate's at the handshake) and the app's
  ``Bastion-Jwt-Assertion``: auth keeps the ``jwt`` CA's key, the proxy never holds it. The
  assertion comes with the admission (the route asks at most once per session and
  ``admission_ttl``) and is reused by :meth:`RemoteApps.assertion` for at most
  :data:`JWT_REUSE` seconds, so with the route's own reuse it is never older than
  ``JWT_REUSE + 30`` of its 60 seconds.

Apps registered by an app agent are reached through the agent's reverse tunnel to this proxy
(agents keep one to every proxy that heartbeats), as in the all-in-one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from bastion.contract.apps import (
    APP_AUTHORIZE,
    APP_SESSION,
    APP_SESSION_END,
    AppAuthorizeRequest,
    AppSessionFound,
    AppSessionRequest,
)
from bastion.contract.base import Body, Endpoint
from bastion.errors import AccessDenied, RemoteProtocolError
from bastion.types.apps import App
from bastion.types.codec import parse_resource
from bastion.types.identity import Identity

__all__ = ["JWT_REUSE", "SESSION_TTL", "RemoteApps", "Sender"]

SESSION_TTL = 1.0
JWT_REUSE = 5.0
_MAX_CACHED = 10_000

B = TypeVar("B", bound=Body)
R = TypeVar("R", bound=BaseModel)


class Sender(Protocol):
    """Auth's API as the proxy calls it (:class:`bastion.agent.remote.RemoteAuth`)."""

    async def send(self, endpoint: Endpoint[B, R], body: B | None = None) -> R: ...


@dataclass(frozen=True, slots=True)
class RemoteSession:
    identity: Identity
    expires: datetime
    id: str


def _session(found: AppSessionFound) -> RemoteSession:
    if found.identity is None or found.expires is None:
        raise RemoteProtocolError("auth answered an app session without its identity")
    return RemoteSession(Identity.model_validate(found.identity), found.expires, found.id)


class RemoteSessions:
    """App sessions kept by auth (:class:`bastion.services.app_sessions.AppSessions`)."""

    def __init__(self, remote: Sender) -> None:
        self._remote = remote
        self._cache: dict[tuple[str, str], tuple[RemoteSession | None, float]] = {}

    async def redeem(self, code: str, app: str) -> tuple[str, RemoteSession]:
        found = await self._remote.send(APP_SESSION, AppSessionRequest(app=app, code=code))
        if not found.found:
            raise AccessDenied("this sign-in link is not valid (any more): open the app again")
        return found.token, _session(found)

    async def get(self, token: str, app: str) -> RemoteSession | None:
        if not token or len(token) > 128:
            return None
        key = (token, app)
        tick = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and tick - hit[1] < SESSION_TTL:
            return hit[0]
        found = await self._remote.send(APP_SESSION, AppSessionRequest(app=app, token=token))
        session = _session(found) if found.found else None
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (session, tick)
        return session

    async def end(self, token: str) -> None:
        for key in [k for k in self._cache if k[0] == token]:
            del self._cache[key]
        await self._remote.send(APP_SESSION_END, AppSessionRequest(token=token))


class RemoteApps:
    """The app route's backend (:class:`bastion.proxy.app_route.AppBackend`) over the API."""

    def __init__(self, remote: Sender) -> None:
        self._remote = remote
        self.sessions = RemoteSessions(remote)
        self._jwt: dict[tuple[str, str, Any], tuple[str, float]] = {}

    async def authorize(self, identity: Identity, name: str) -> App:
        got = await self._remote.send(
            APP_AUTHORIZE,
            AppAuthorizeRequest(app=name, identity=identity.model_dump(mode="json")),
        )
        app = parse_resource(got.app)
        if not isinstance(app, App):
            raise RemoteProtocolError("auth answered an app authorization without the app")
        if len(self._jwt) > _MAX_CACHED:
            self._jwt.clear()
        self._jwt[(name, identity.user, identity.expires)] = (got.jwt, time.monotonic())
        return app

    async def assertion(self, identity: Identity, app: App) -> str:
        key = (app.metadata.name, identity.user, identity.expires)
        hit = self._jwt.get(key)
        if hit is None or time.monotonic() - hit[1] >= JWT_REUSE:
            await self.authorize(identity, app.metadata.name)
            hit = self._jwt[key]
        return hit[0]
