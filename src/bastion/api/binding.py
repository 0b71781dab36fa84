"""Serve a declared :class:`~bastion.contract.base.Endpoint`: parse, call, serialise.

A handler is ``async def handler(call: Call[BodyModel]) -> ReplyModel``: the body is already
validated (a bad field is one ``BadParameter`` line naming it), the query is validated into
``call.query`` when the endpoint declares one, and the reply is serialised from its model.
The gate middleware of :mod:`bastion.api.app` has already admitted the caller by the
endpoint's audience (it reads the audience from the contract too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bastion.auth.guarded import GuardedAuth
from bastion.contract.base import Body, Empty, Endpoint, parse_query
from bastion.errors import BadParameter
from bastion.types.codec import validation_problems
from bastion.web.body import read_json

__all__ = ["Call", "bind", "bound_endpoints"]

B = TypeVar("B", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
Q = TypeVar("Q", bound=Body)

_BOUND: web.AppKey[dict[tuple[str, str], Endpoint[Any, Any]]] = web.AppKey("bound_endpoints")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class Call(Generic[B]):
    """One request to a bound endpoint."""

    def __init__(
        self, request: web.Request, endpoint: Endpoint[B, Any], body: B, query: Body | None
    ):
        self.request = request
        self.endpoint = endpoint
        self.body = body
        self._query = query

    @property
    def guard(self) -> GuardedAuth:
        """The caller's guarded view of auth (every non-public, non-web audience)."""
        guard: GuardedAuth = self.request["guard"]
        return guard

    @property
    def remote(self) -> str:
        return self.request.remote or ""

    @property
    def peer_key_sha256(self) -> str:
        """SHA-256 (hex) of the SubjectPublicKeyInfo of the client certificate the caller
        presented: its TLS handshake proved it holds that key ("" without one)."""
        import hashlib

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        transport = self.request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            return ""
        key = x509.load_der_x509_certificate(der).public_key()
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(spki).hexdigest()

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, model: type[Q]) -> Q:
        """The validated query (the endpoint must declare ``query=model``)."""
        if not isinstance(self._query, model):
            raise TypeError(f"{self.endpoint!r} declares no query of type {model.__name__}")
        return self._query


Handler = Callable[[Call[B]], Awaitable[R | web.StreamResponse]]


def _invalid(endpoint: Endpoint[Any, Any], where: str, exc: ValidationError) -> BadParameter:
    return BadParameter(f"{where}: {validation_problems(exc)}")


async def _body(request: web.Request, endpoint: Endpoint[B, Any]) -> B:
    if endpoint.method not in _WITH_BODY or endpoint.raw_body:
        return endpoint.body.model_validate({})
    if endpoint.body is Empty and not await request.read():
        return endpoint.body.model_validate({})
    data = await read_json(request)
    try:
        return endpoint.body.model_validate(data)
    except ValidationError as exc:
        raise _invalid(endpoint, "request body", exc) from None


def bind(app: web.Application, endpoint: Endpoint[B, R], handler: Handler[B, R]) -> None:
    """Add ``endpoint``'s route to ``app``, served by ``handler``."""

    async def serve(request: web.Request) -> web.StreamResponse:
        body = await _body(request, endpoint)
        query: Body | None = None
        if endpoint.query is not None:
            try:
                query = parse_query(endpoint.query, dict(request.query))
            except ValidationError as exc:
                raise _invalid(endpoint, "query", exc) from None
        result = await handler(Call(request, endpoint, body, query))
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(
            result.model_dump(mode="json", by_alias=True), status=endpoint.status
        )

    app.router.add_route(endpoint.method, endpoint.path, serve)
    if _BOUND not in app:
        app[_BOUND] = {}
    app[_BOUND][endpoint.key] = endpoint


def bound_endpoints(app: web.Application) -> dict[tuple[str, str], Endpoint[Any, Any]]:
    """The endpoints bound to ``app`` by (method, path template)."""
    return app.get(_BOUND, {})
