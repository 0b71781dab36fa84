"""SSO connectors as resources: ``oidc``, ``saml`` and ``github`` (managed with ``bctl create -f``).

Layer: types (pure). Validation names the field (``oidc "okta": spec.claims_to_roles[0].value:
invalid regular expression ...``). Secrets (``client_secret``) are stored but never returned by
``get``: :func:`redact` replaces them with :data:`REDACTED`, and writing a connector back with
that marker keeps the stored secret (:func:`keep_secrets`), so ``bctl get`` → edit →
``bctl create -f --force`` round-trips.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.types.duration import Duration
from bastion.types.meta import Resource, StrictModel

__all__ = [
    "CONNECTOR_KINDS",
    "REDACTED",
    "AttributeMapping",
    "ClaimMapping",
    "GithubConnector",
    "GithubConnectorSpec",
    "OIDCConnector",
    "OIDCConnectorSpec",
    "SAMLConnector",
    "SAMLConnectorSpec",
    "TeamMapping",
    "compile_value",
    "keep_secrets",
    "redact",
]

REDACTED = "**redacted**"
"""What ``get`` shows instead of a secret; sending it back keeps the stored secret."""

SAFE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
"""ID token signature algorithms the OIDC connector may allow: asymmetric only. ``none`` and
``HS*`` are refused: an HMAC "verified" with a public key is a forgery anyone can make."""

_GROUP_REF = re.compile(r"\$(?:\{(\w+)\}|(\d+))")


def compile_value(value: str) -> re.Pattern[str]:
    """A mapping's ``value``: ``^regex$`` as written, otherwise a literal where ``*`` is a glob.

    Raises:
        ValueError: an invalid regular expression (the message says where).
    """
    if value.startswith("^") and value.endswith("$"):
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return re.compile("^" + ".*".join(re.escape(part) for part in value.split("*")) + "$")


def _check_roles(pattern: re.Pattern[str], roles: list[str]) -> list[str]:
    if not roles:
        raise ValueError("roles: at least one role is required")
    for role in roles:
        for match in _GROUP_REF.finditer(role):
            ref = match.group(1) or match.group(2)
            known = ref in pattern.groupindex if not ref.isdigit() else int(ref) <= pattern.groups
            if not known:
                raise ValueError(
                    f"roles: {role!r} refers to group ${ref}, which the value does not capture"
                )
    return roles


class ClaimMapping(StrictModel):
    """OIDC: users whose ``claim`` has a value matching ``value`` get ``roles``."""

    claim: str = Field(min_length=1)
    value: str = Field(min_length=1)
    """Literal (``*`` globs) or ``^regex$``; captures feed ``$1`` / ``${name}`` in roles."""
    roles: list[str]

    @model_validator(mode="after")
    def _check(self) -> ClaimMapping:
        _check_roles(compile_value(self.value), self.roles)
        return self


class AttributeMapping(StrictModel):
    """SAML: users whose attribute ``name`` has a value matching ``value`` get ``roles``."""

    name: str = Field(min_length=1)
    value: str = Field(min_length=1)
    roles: list[str]

    @model_validator(mode="after")
    def _check(self) -> AttributeMapping:
        _check_roles(compile_value(self.value), self.roles)
        return self


class TeamMapping(StrictModel):
    """GitHub: members of ``organization``/``team`` (slugs; ``*`` globs) get ``roles``."""

    organization: str = Field(min_length=1)
    team: str = Field(min_length=1)
    roles: list[str]

    @model_validator(mode="after")
    def _check(self) -> TeamMapping:
        pattern = compile_value(f"{self.organization}/{self.team}")
        _check_roles(pattern, self.roles)
        return self


def _check_url(value: str, what: str, allow_empty: bool = False) -> str:
    if not value and allow_empty:
        return value
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(
            f"{what} must be an https:// URL (plain http only on 127.0.0.1), got {value!r}"
        )
    if not parts.hostname:
        raise ValueError(f"{what} has no host: {value!r}")
    return value


class OIDCConnectorSpec(StrictModel):
    issuer_url: str
    """The provider's issuer; discovery reads ``<issuer_url>/.well-known/openid-configuration``."""
    client_id: str = Field(min_length=1)
    client_secret: str = ""
    """Stored; ``get`` shows it redacted."""
    redirect_url: str = ""
    """``https://PROXY/web/sso/NAME/callback``; empty: derived from the address the browser used."""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    username_claim: str = "sub"
    """The claim that names the user in certificates and audit (shown as ``NAME:value``)."""
    claims_to_roles: list[ClaimMapping]
    allowed_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    display: str = ""
    """Label of the login button."""
    revalidate_interval: Duration = timedelta(minutes=15)
    """Re-check a logged-in user at the provider (refresh token or userinfo) this often while
    their certificate lives; a user it no longer knows, or whose groups lost a role, is cut off
    (docs/scim.md). ``0s`` turns it off."""

    @field_validator("issuer_url")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _check_url(value, "issuer_url")

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str) -> str:
        return _check_url(value, "redirect_url", allow_empty=True)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        return value if "openid" in value else ["openid", *value]

    @field_validator("claims_to_roles")
    @classmethod
    def _mappings(cls, value: list[ClaimMapping]) -> list[ClaimMapping]:
        if not value:
            raise ValueError("at least one mapping is required (claim, value, roles)")
        return value

    @field_validator("allowed_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"at least one algorithm is required: {', '.join(SAFE_ALGORITHMS)}")
        for alg in value:
            if alg not in SAFE_ALGORITHMS:
                raise ValueError(
                    f"algorithm {alg!r} is not allowed (none and HMAC are refused): use "
                    f"{', '.join(SAFE_ALGORITHMS)}"
                )
        return value


class OIDCConnector(Resource):
    KIND: ClassVar[str] = "oidc"
    kind: str = "oidc"
    spec: OIDCConnectorSpec


class GithubConnectorSpec(StrictModel):
    client_id: str = Field(min_length=1)
    client_secret: str = ""
    redirect_url: str = ""
    endpoint_url: str = "https://github.com"
    """Where ``/login/oauth/authorize`` and ``/login/oauth/access_token`` live."""
    api_endpoint_url: str = "https://api.github.com"
    """Where ``/user`` and ``/user/teams`` live (GitHub Enterprise: ``https://HOST/api/v3``)."""
    teams_to_roles: list[TeamMapping]
    display: str = ""

    @field_validator("endpoint_url", "api_endpoint_url")
    @classmethod
    def _endpoints(cls, value: str) -> str:
        return _check_url(value, "endpoint_url").rstrip("/")

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str) -> str:
        return _check_url(value, "redirect_url", allow_empty=True)

    @field_validator("teams_to_roles")
    @classmethod
    def _mappings(cls, value: list[TeamMapping]) -> list[TeamMapping]:
        if not value:
            raise ValueError("at least one mapping is required (organization, team, roles)")
        return value


class GithubConnector(Resource):
    KIND: ClassVar[str] = "github"
    kind: str = "github"
    spec: GithubConnectorSpec


class SAMLConnectorSpec(StrictModel):
    entity_descriptor: str = ""
    """The IdP's metadata XML (its entity id, SSO URL and signing certificate)."""
    service_provider_issuer: str = Field(min_length=1)
    """Our SP entity id; assertions must name it as their audience."""
    acs: str = ""
    """Assertion consumer URL ``https://PROXY/web/sso/NAME/acs``; empty: derived like OIDC's."""
    username_attribute: str = ""
    """Attribute that names the user; empty: the NameID."""
    attributes_to_roles: list[AttributeMapping]
    display: str = ""

    @field_validator("entity_descriptor")
    @classmethod
    def _descriptor(cls, value: str) -> str:
        if "EntityDescriptor" not in value:
            raise ValueError("must be the IdP's SAML metadata XML (an EntityDescriptor)")
        return value

    @field_validator("acs")
    @classmethod
    def _acs(cls, value: str) -> str:
        return _check_url(value, "acs", allow_empty=True)

    @field_validator("attributes_to_roles")
    @classmethod
    def _mappings(cls, value: list[AttributeMapping]) -> list[AttributeMapping]:
        if not value:
            raise ValueError("at least one mapping is required (name, value, roles)")
        return value


class SAMLConnector(Resource):
    KIND: ClassVar[str] = "saml"
    kind: str = "saml"
    spec: SAMLConnectorSpec


CONNECTOR_KINDS: dict[str, type[Resource]] = {
    "oidc": OIDCConnector,
    "saml": SAMLConnector,
    "github": GithubConnector,
}
"""Connector kind -> resource class."""

_SECRET_FIELDS = ("client_secret",)


def redact(resource: Resource) -> Resource:
    """A copy without secrets (connectors); other resources are returned unchanged."""
    if resource.kind not in CONNECTOR_KINDS:
        return resource
    update: dict[str, Any] = {
        f: REDACTED for f in _SECRET_FIELDS if getattr(resource.spec, f, "") != ""
    }
    return resource.model_copy(update={"spec": resource.spec.model_copy(update=update)})


def keep_secrets(new: Resource, stored: Resource | None) -> Resource:
    """``new`` with every :data:`REDACTED` secret replaced by the stored one.

    Raises:
        ValueError: a redacted secret was sent for a connector that has none stored.
    """
    if new.kind not in CONNECTOR_KINDS:
        return new
    update: dict[str, Any] = {}
    for field in _SECRET_FIELDS:
        if getattr(new.spec, field, "") != REDACTED:
            continue
        if stored is None:
            raise ValueError(
                f"spec.{field}: {REDACTED!r} is the redacted placeholder; write the real secret"
            )
        update[field] = getattr(stored.spec, field)
    if not update:
        return new
    return new.model_copy(update={"spec": new.spec.model_copy(update=update)})
