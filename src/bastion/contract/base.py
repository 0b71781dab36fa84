"""How an API endpoint is declared: once, with its request and response models.

Layer: contract (pure pydantic, just above ``types``). From one :class:`Endpoint` come the
server route (:func:`bastion.api.binding.bind`), the route's audience for the authentication
gate, the OpenAPI document (:mod:`bastion.api.openapi`) and the typed client call
(:meth:`bastion.client.api.AuthClient.send`). Nothing here does IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import quote

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    RootModel,
    WithJsonSchema,
)

from bastion.errors import BadParameter
from bastion.types.codec import parse_resource, resource_to_dict
from bastion.types.meta import Resource

__all__ = [
    "AnyResource",
    "Audience",
    "Body",
    "Empty",
    "Endpoint",
    "Method",
    "OpenReply",
    "Reply",
    "ResourceDoc",
]

Audience = Literal["public", "web", "user", "host", "any", "ssh", "scim"]
"""Who a route is for. ``public``: no identity (logins, joins, discovery); ``web``: browser
pages (the session cookie, when present, passes the gate); ``user``: people and bots;
``host``: agents and proxies; ``any``: both, with writes confined per identity in GuardedAuth;
``ssh``: per-session MFA certificates, accepted only on the proxy's SSH route; ``scim``: no
certificate, an SSO connector's SCIM bearer token (checked in the API middleware)."""

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

_PARAM = re.compile(r"\{([a-z_]+)\}")


class Body(BaseModel):
    """A request body or query: unknown fields are an error (a typo is never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Reply(BaseModel):
    """A response body: unknown fields are kept out of the model but do not fail an older
    client talking to a newer server."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class OpenReply(Reply):
    """A reply whose declared fields are the stable core of a larger document (an audit
    proof, an explanation, WebAuthn options): the other fields are kept, not dropped."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Empty(Body):
    """No body (or an empty JSON object)."""


def _to_resource(value: object) -> Resource:
    return value if isinstance(value, Resource) else parse_resource(value)


AnyResource = Annotated[
    Resource,
    BeforeValidator(_to_resource),
    PlainSerializer(resource_to_dict),
    WithJsonSchema(
        {
            "type": "object",
            "description": "a resource: kind, version, metadata, spec (docs/resources.md)",
            "required": ["kind", "metadata"],
        }
    ),
]
"""Any resource on the wire: validated into its typed model by its ``kind``."""


class ResourceDoc(RootModel[AnyResource]):
    """One resource document, in a request or a reply (validated into its model by ``kind``)."""


B = TypeVar("B", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True, eq=False)
class Endpoint(Generic[B, R]):
    """One API endpoint.

    ``body`` is the JSON request body of POST/PUT/PATCH (``Empty`` for none); ``query`` the
    query-string model of any method; ``response`` the JSON reply, or the reply's metadata
    when ``stream`` is set (the handler then writes bytes itself: NDJSON watch, recordings).
    ``raw_body``: the request body is bytes the handler reads itself (recording upload).
    """

    method: Method
    path: str
    audience: Audience
    summary: str
    body: type[B]
    response: type[R]
    query: type[Body] | None = None
    status: int = 200
    stream: str = ""
    """Content type of a streamed (non-JSON) reply; empty for JSON."""
    raw_body: bool = False
    tags: tuple[str, ...] = field(default=())

    @property
    def params(self) -> tuple[str, ...]:
        """The path's parameters, in order (``/v1/users/{name}`` → ``("name",)``)."""
        return tuple(_PARAM.findall(self.path))

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    def url(self, **params: str) -> str:
        """The path with its parameters filled in, each percent-encoded as one segment.

        Raises:
            BadParameter: a parameter is missing, unknown or empty.
        """
        if set(params) != set(self.params):
            raise BadParameter(
                f"{self.method} {self.path}: expected path parameters {list(self.params)}, "
                f"got {sorted(params)}"
            )
        for name, value in params.items():
            if not value:
                raise BadParameter(f"{self.method} {self.path}: {name} must not be empty")
        return _PARAM.sub(lambda m: quote(params[m.group(1)], safe=""), self.path)

    def __repr__(self) -> str:
        return f"Endpoint({self.method} {self.path})"


def query_dict(model: BaseModel | None) -> dict[str, str] | None:
    """A query model as query-string pairs (unset and None values left out; lists joined by
    commas; booleans as ``true``/``false``)."""
    if model is None:
        return None
    out: dict[str, str] = {}
    for name, value in model.model_dump(exclude_none=True, exclude_defaults=True).items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


def parse_query(model: type[Body], pairs: dict[str, Any]) -> Body:
    """Validate query-string pairs into ``model``; list fields take comma-separated values."""
    data: dict[str, Any] = {}
    for name, value in pairs.items():
        info = model.model_fields.get(name)
        if info is not None and _is_list(info.annotation):
            data[name] = [v for v in str(value).split(",") if v]
        else:
            data[name] = value
    return model.model_validate(data)


def _is_list(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    return origin in (list, tuple) or annotation in (list, tuple)
