"""The ``app`` resource: an internal web application behind the identity-aware proxy.

Layer: ``types`` (pure pydantic). An app agent (or the all-in-one) registers apps; the proxy
serves each at ``NAME.PROXY_PUBLIC_ADDR`` (or :attr:`AppSpec.public_addr`) on its one port, and
RBAC matches ``app_labels`` against :meth:`App.all_labels`
(:meth:`bastion.rbac.checker.RoleSet.check_app_access`). See docs/app-access.md.
"""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.types.meta import Resource, StrictModel
from bastion.types.templates import parse_template

__all__ = ["App", "AppHeader", "AppRewrite", "AppSpec", "is_identity_header"]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "cookie",
    }
)


_REWRITABLE = frozenset(
    {
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
    }
)
"""Identity headers an app's rewrite may set from the user's traits (the client's own are
stripped first); the proxy's ``X-Forwarded-For/Proto/Host`` and ``Bastion-*`` never."""


def is_identity_header(name: str) -> bool:
    """Does a request header claim identity (stripped from every incoming request)?

    ``Bastion-*`` (our assertion among them), ``X-Forwarded-*``, ``Forwarded`` and
    ``X-Real-Ip``: only the proxy may set them.
    """
    low = name.lower()
    return (
        low.startswith(("bastion-", "x-forwarded-"))
        or low in ("forwarded", "x-real-ip")
        or low.startswith("x-bastion-")
    )


class AppHeader(StrictModel):
    name: str
    """A header added to every request forwarded to the app (not an identity header, not a
    hop-by-hop header)."""
    value: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"invalid header name {value!r}")
        low = value.lower()
        if (is_identity_header(value) and low not in _REWRITABLE) or low in _HOP_BY_HOP:
            raise ValueError(f"header {value!r} cannot be rewritten (the proxy sets it)")
        return value

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: str) -> str:
        if any(ord(c) < 0x20 and c != "\t" for c in value) or "\x7f" in value:
            raise ValueError("header values cannot contain control characters")
        if "{{" in value or "}}" in value:
            parse_template(value)  # ValueError: invalid template "...": why
        return value


class AppRewrite(StrictModel):
    headers: list[AppHeader] = Field(default_factory=list)
    """Headers added to each forwarded request; values may hold one trait template
    (``{{internal.logins}}``, as in roles), several trait values joined with ``,``."""


class AppSpec(StrictModel):
    uri: str
    """The internal address: ``http://host:port[/path]``, ``https://...`` or ``tcp://host:port``
    (reached with ``bsh proxy app NAME``)."""
    public_addr: str = ""
    """The host name users reach it by; empty: ``NAME.<proxy public address>``."""
    rewrite: AppRewrite = Field(default_factory=AppRewrite)
    insecure_skip_verify: bool = False
    """Do not verify the app's TLS certificate (``https://`` apps only; logged)."""
    host_id: str = ""
    """Host id of the app agent that registered it (empty: registered by the proxy's own
    configuration)."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "tcp"):
            raise ValueError(f"uri must be http://, https:// or tcp://, got {value!r}")
        if not parts.hostname or parts.username or parts.password:
            raise ValueError(f"uri must name a host (and no user info), got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError("uri must not carry a query or a fragment")
        try:
            parts.port  # noqa: B018 -- raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"uri has an invalid port: {exc}") from None
        if parts.scheme == "tcp" and (not parts.port or parts.path not in ("", "/")):
            raise ValueError(f"a tcp:// uri is tcp://host:port, got {value!r}")
        return value.rstrip("/")

    @field_validator("public_addr")
    @classmethod
    def _check_public_addr(cls, value: str) -> str:
        value = value.lower()
        if value and not all(_LABEL.match(p) for p in value.split(".")):
            raise ValueError(f"public_addr must be a DNS name, got {value!r}")
        return value


class App(Resource):
    KIND: ClassVar[str] = "app"
    kind: str = "app"
    spec: AppSpec

    @model_validator(mode="after")
    def _check_name(self) -> App:
        if not _LABEL.match(self.metadata.name):
            raise ValueError(
                f"app name {self.metadata.name!r} must be one DNS label "
                "(lowercase letters, digits and -): it becomes NAME.<proxy address>"
            )
        return self

    def all_labels(self) -> dict[str, str]:
        return dict(self.metadata.labels)

    def public_host(self, domain: str) -> str:
        """The host name the app is served at under the proxy's ``domain``."""
        return self.spec.public_addr or f"{self.metadata.name}.{domain.lower()}"
