"""From an IdP's claims to Bastion roles and traits.

Layer: sso (pure). Knows connector mappings and claim values; no I/O, no clock.

A mapping rule matches when *any* value of its claim (attribute; ``org/team`` for GitHub)
matches the rule's value: a literal (``*`` globs) or an anchored ``^regex$``. Its roles may use
the captures (``$1``, ``${1}``, ``${name}``; ``$$`` is a dollar). Roles from every matching rule
are collected, in order, without duplicates. No role at all is an error that names the connector
and the values seen, so the operator can fix the mapping from the message alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import AccessDenied
from bastion.types.connectors import compile_value

__all__ = [
    "NoRoleMapped",
    "Rule",
    "SSOIdentity",
    "TokenSet",
    "claims_to_traits",
    "expand_roles",
    "map_roles",
    "normalize_claims",
    "require_roles",
]

RESERVED_CLAIMS = frozenset(
    {"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time", "jti"}
)
"""Token bookkeeping claims that never become traits."""
_REF = re.compile(r"\$(?:\$|\{(\w+)\}|(\d+))")
MAX_VALUES = 200
"""Claim values kept per claim (a user in thousands of groups must not blow up a certificate)."""


class NoRoleMapped(AccessDenied):
    """The user's claims match no mapping rule of the connector."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled mapping rule (see :class:`bastion.types.connectors.ClaimMapping`)."""

    claim: str
    value: str
    roles: tuple[str, ...]

    @property
    def pattern(self) -> re.Pattern[str]:
        return compile_value(self.value)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """An OIDC token endpoint's answer (the secrets are never logged)."""

    id_token: str
    access_token: str = ""
    refresh_token: str = ""
    expires_in: int | None = None
    """Seconds the access token lives (None: not said)."""


@dataclass(frozen=True, slots=True)
class SSOIdentity:
    """Who the IdP says the user is. Keyed by ``(connector, issuer, subject)``, never by email."""

    connector: str
    kind: str
    """``oidc``, ``saml`` or ``github``."""
    issuer: str
    subject: str
    """Stable id at the issuer: OIDC ``sub``, SAML NameID, GitHub numeric user id."""
    username: str
    """Display name part of the Bastion user (``connector:username``)."""
    claims: dict[str, list[str]] = field(default_factory=dict)
    tokens: TokenSet | None = None
    """OIDC: the token response, kept for periodic re-validation (:mod:`bastion.sso.revalidate`)."""

    @property
    def user(self) -> str:
        """The Bastion user name in certificates, locks and audit: ``connector:username``."""
        return f"{self.connector}:{self.username}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.connector, self.issuer, self.subject)


def normalize_claims(raw: Mapping[str, Any]) -> dict[str, list[str]]:
    """Claims as lists of strings: strings, numbers and booleans kept, lists flattened one level,
    objects and nulls dropped; at most :data:`MAX_VALUES` values per claim."""
    out: dict[str, list[str]] = {}
    for name, value in raw.items():
        items = value if isinstance(value, list | tuple) else [value]
        values = [_scalar(v) for v in items]
        kept = [v for v in values if v is not None][:MAX_VALUES]
        if kept:
            out[str(name)] = kept
    return out


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def expand_roles(template: str, match: re.Match[str]) -> str:
    """``template`` with ``$1`` / ``${1}`` / ``${name}`` replaced by ``match``'s groups."""

    def replace(ref: re.Match[str]) -> str:
        if ref.group(0) == "$$":
            return "$"
        name = ref.group(1) or ref.group(2)
        group = int(name) if name.isdigit() else name
        return match.group(group) or ""

    return _REF.sub(replace, template)


def map_roles(rules: Iterable[Rule], claims: Mapping[str, Sequence[str]]) -> list[str]:
    """Roles granted by ``rules`` for ``claims`` (possibly empty)."""
    roles: list[str] = []
    for rule in rules:
        pattern = rule.pattern
        for value in claims.get(rule.claim, ()):
            match = pattern.fullmatch(value)
            if match is None:
                continue
            for template in rule.roles:
                role = expand_roles(template, match).strip()
                if role and role not in roles:
                    roles.append(role)
    return roles


def require_roles(
    connector: str, rules: Sequence[Rule], claims: Mapping[str, Sequence[str]]
) -> list[str]:
    """:func:`map_roles`, or :class:`NoRoleMapped` naming the connector and the values seen."""
    roles = map_roles(rules, claims)
    if roles:
        return roles
    names = sorted({r.claim for r in rules})
    seen = "; ".join(f"{n}={list(claims.get(n, []))!r}" for n in names)
    raise NoRoleMapped(
        f'connector "{connector}": no role mapping matches your {"/".join(names)} '
        f"(seen: {seen}); ask an admin to extend the connector's role mapping"
    )


def claims_to_traits(identity: SSOIdentity) -> dict[str, list[str]]:
    """Traits for role templates (``{{external.groups}}``): every non-reserved claim, plus the
    SSO key (``sso_connector``, ``sso_issuer``, ``sso_subject``)."""
    traits = {k: list(v) for k, v in identity.claims.items() if k not in RESERVED_CLAIMS}
    traits["sso_connector"] = [identity.connector]
    traits["sso_issuer"] = [identity.issuer]
    traits["sso_subject"] = [identity.subject]
    return traits
