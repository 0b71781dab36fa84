"""Pending SSO logins: one record per ``bsh login --auth=NAME``, kept in the backend with a TTL.

Layer: sso (storage). The record binds together what must match across the browser round trip:

* ``secret_hash``: SHA-256 of the one-time secret only bsh knows; the result (certificates) is
  handed out only against that secret, once.
* ``result_code_hash``: for a browser on the same machine, the proxy redirects to bsh's
  localhost callback with a one-time code; bsh needs it *and* the secret to fetch the result, so
  a login started by someone else (who holds the secret but not the victim's localhost) yields
  nothing.
* ``state_hash`` and ``binding_hash``: the OAuth ``state`` / SAML ``RelayState`` of this login,
  and the cookie set in the browser that started it (a callback from another browser is refused).
* ``nonce`` and ``code_verifier`` (OIDC/PKCE), ``saml_request_id`` (``InResponseTo``).

Several proxies share the backend, so any of them can finish a login another one started.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal

from bastion.backend.base import Backend, Item
from bastion.clock import Clock
from bastion.errors import AccessDenied, CompareFailed, NotFound

__all__ = ["REQUEST_TTL", "RequestStore", "SSORequest", "Status", "display_code"]

REQUEST_TTL = timedelta(minutes=10)
"""How long a login may take from ``bsh login`` to the result being fetched."""
PREFIX = "sso/requests/"

Status = Literal["pending", "started", "done", "failed"]


@dataclass(slots=True)
class SSORequest:
    id: str
    connector: str
    kind: str
    public_key: str
    ttl_seconds: int
    secret_hash: str
    client_redirect: str = ""
    """bsh's ``http://127.0.0.1:PORT/...`` callback; empty for ``--headless``."""
    remote_addr: str = ""
    status: Status = "pending"
    state_hash: str = ""
    binding_hash: str = ""
    nonce: str = ""
    code_verifier: str = ""
    redirect_uri: str = ""
    saml_request_id: str = ""
    result_code_hash: str = ""
    result: dict[str, Any] | None = None
    error: str = ""
    user: str = ""
    web: bool = False
    """Started from the login page for a browser session (not by bsh)."""
    key_binding: dict[str, Any] | None = None
    """bsh's device proof and TPM-held SSH key (:func:`bastion.auth.key_proof.binding_json`),
    verified when the IdP answers."""
    revision: int = field(default=0, compare=False)

    @property
    def headless(self) -> bool:
        return not self.client_redirect

    def to_json(self) -> bytes:
        data = asdict(self)
        data.pop("revision")
        return json.dumps(data).encode()

    @classmethod
    def from_item(cls, item: Item) -> SSORequest:
        data = json.loads(item.value)
        return cls(**data, revision=item.revision)


def display_code(request_id: str) -> str:
    """A short code derived from the request id, shown by ``bsh login --headless`` and on the
    confirmation page, so the user can check that the browser continues *their* login."""
    digest = base64.b32encode(hashlib.sha256(request_id.encode()).digest()).decode()
    return f"{digest[:4]}-{digest[4:8]}"


class RequestStore:
    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock

    async def create(self, request: SSORequest) -> SSORequest:
        item = await self._backend.create(
            Item(
                key=PREFIX + request.id,
                value=request.to_json(),
                expires=self._clock.now() + REQUEST_TTL,
            )
        )
        request.revision = item.revision
        return request

    async def get(self, request_id: str) -> SSORequest:
        """Raises: AccessDenied for an unknown or expired request (never NotFound details)."""
        if not request_id or len(request_id) > 128:
            raise AccessDenied("unknown or expired login request; run bsh login again")
        try:
            return SSORequest.from_item(await self._backend.get(PREFIX + request_id))
        except NotFound:
            raise AccessDenied("unknown or expired login request; run bsh login again") from None

    async def save(self, request: SSORequest) -> SSORequest:
        """Conditional update: a concurrent change (a replayed callback) loses.

        Raises:
            AccessDenied: the record changed since it was read.
        """
        current = await self._backend.get(PREFIX + request.id)
        try:
            item = await self._backend.update(
                Item(key=current.key, value=request.to_json(), expires=current.expires),
                expected_revision=request.revision,
            )
        except (CompareFailed, NotFound):
            raise AccessDenied("this login request was already used") from None
        request.revision = item.revision
        return request

    async def delete(self, request: SSORequest) -> None:
        """Single use: whoever deletes first wins.

        Raises:
            AccessDenied: already taken.
        """
        try:
            await self._backend.delete(PREFIX + request.id, expected_revision=request.revision)
        except (CompareFailed, NotFound):
            raise AccessDenied("the result of this login was already taken") from None
