"""Access-control resources: users, roles, join tokens, locks and the cluster auth preference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bastion.types.conditions import check_condition
from bastion.types.devices import DeviceTrustMode, DeviceTrustPreference
from bastion.types.duration import Duration, format_duration
from bastion.types.meta import Resource, StrictModel
from bastion.types.requests import RequestConditions, ReviewConditions
from bastion.types.selectors import LabelSelector, validate_string_value
from bastion.types.sessions import JoinSessionsRule, SessionRequirePolicy

__all__ = [
    "ADMIN_KINDS",
    "MIN_SESSION_TTL",
    "VERBS",
    "AuthPreference",
    "AuthPreferenceSpec",
    "BotState",
    "Lock",
    "LockSpec",
    "LockTarget",
    "OIDCJoinSpec",
    "ProvisionToken",
    "ProvisionTokenSpec",
    "Role",
    "RoleConditions",
    "RoleOptions",
    "RoleSpec",
    "Rule",
    "User",
    "UserSpec",
    "UserStatus",
    "WebAuthnPreference",
    "second_factor_from_yaml",
]

VERBS = ("list", "read", "create", "update", "delete", "enroll")
"""Verbs of admin rules; ``*`` means all of them. ``enroll`` (kind ``device``): enroll one's
own inventory-known device without a token (docs/device-trust.md)."""

ADMIN_KINDS = (
    "user",
    "role",
    "token",
    "cert_authority",
    "node",
    "proxy",
    "db",
    "app",
    "cluster_auth_preference",
    "lock",
    "oidc",
    "saml",
    "github",
    "event",
    "session",
    "access_request",
    "device",
    "trusted_cluster",
    "remote_cluster",
    "risk_rule",
)
"""Resource kinds that admin rules can name; ``*`` means all of them."""


class UserStatus(StrictModel):
    locked_until: datetime | None = None
    """Set after too many failed logins; login is refused until then."""
    lock_reason: str = ""
    sign_up: str = ""
    """Computed when users are listed, never stored: ``pending`` while an invite is outstanding
    and no password is set yet, ``expired`` when the invite ran out unused (reset the user for a
    new one); empty once the user has signed up."""
    invite_expires: datetime | None = None
    """With ``sign_up: pending``: when the invite runs out (computed, never stored)."""


class UserSpec(StrictModel):
    roles: list[str] = Field(default_factory=list)
    traits: dict[str, list[str]] = Field(default_factory=dict)
    """``logins``, ``db_users``, ``db_names`` and any custom trait used by role templates."""
    status: UserStatus = Field(default_factory=UserStatus)
    created_by: str = ""
    created: datetime | None = None
    epoch: str = ""
    """Random, replaced by a reset, a deletion and re-creation, or a change that narrows the
    user's roles or traits. Certificates and web sessions carry the epoch they were issued in;
    the authentication gate refuses any other (``bastion.auth.gate``). Empty: a user stored
    before epochs existed (matches certificates without one)."""
    bot: BotState | None = None
    """Set on the user behind a bot (``bctl bots add``; docs/machine-id.md): its certificates
    are of kind ``bot`` and renewable; None for people."""


class BotState(StrictModel):
    """What auth keeps about a bot besides its user record (issue 18)."""

    generation: int = 0
    """The generation of the bot's newest certificate (0: never joined). A renewal presenting
    an older one is a copied identity: the bot is locked (``bot.generation_mismatch``)."""
    token: str = ""
    """The join token resource the bot joins with (``bctl bots add`` created it)."""


class User(Resource):
    KIND: ClassVar[str] = "user"
    kind: str = "user"
    spec: UserSpec = Field(default_factory=UserSpec)


class Rule(StrictModel):
    resources: list[str]
    verbs: list[str]

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind != "*" and kind not in ADMIN_KINDS:
                raise ValueError(
                    f"unknown resource kind {kind!r}: use one of {', '.join(ADMIN_KINDS)} or *"
                )
        return value

    @field_validator("verbs")
    @classmethod
    def _check_verbs(cls, value: list[str]) -> list[str]:
        for verb in value:
            if verb != "*" and verb not in VERBS:
                raise ValueError(f"unknown verb {verb!r}: use one of {', '.join(VERBS)} or *")
        return value


class RoleConditions(StrictModel):
    """One side (allow or deny) of a role."""

    logins: list[str] = Field(default_factory=list)
    node_labels: LabelSelector = Field(default_factory=dict)
    db_labels: LabelSelector = Field(default_factory=dict)
    app_labels: LabelSelector = Field(default_factory=dict)
    db_names: list[str] = Field(default_factory=list)
    db_users: list[str] = Field(default_factory=list)
    db_roles: list[str] = Field(default_factory=list)
    """Database roles granted to an auto-provisioned db user (``options.create_db_user``,
    docs/database-access.md); allow side only, templates allowed."""
    rules: list[Rule] = Field(default_factory=list)
    request: RequestConditions | None = None
    """Access requests the holder may make (docs/access-requests.md)."""
    review_requests: ReviewConditions | None = None
    """Access requests the holder may review (docs/access-requests.md)."""
    join_sessions: list[JoinSessionsRule] = Field(default_factory=list)
    """Live sessions the holder may join, and in which modes (docs/moderated-sessions.md)."""
    where: str = ""
    """A CEL condition over ``user``, ``resource``, ``device`` and ``request``
    (:mod:`bastion.types.conditions`): the side applies only while it holds. Empty: always."""

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: str) -> str:
        return check_condition(value) if value else value

    @field_validator("logins", "db_names", "db_users", "db_roles")
    @classmethod
    def _check_values(cls, value: list[str]) -> list[str]:
        for item in value:
            validate_string_value(item)
        return value


MIN_SESSION_TTL = timedelta(minutes=1)
"""The shortest certificate the issuer signs (a requested TTL below it is raised to it, never
above the roles' cap); a role's ``max_session_ttl`` may not be shorter."""


class RoleOptions(StrictModel):
    max_session_ttl: Duration = timedelta(hours=12)
    """The longest certificate a holder gets: min(requested, the shortest cap of their roles).
    At least :data:`MIN_SESSION_TTL`."""
    require_session_mfa: bool = False
    create_db_user: bool = False
    """Create (and disable after) the db user, named after the Bastion user, on a database the
    role allows (docs/database-access.md); any role that allows the database turns it on."""
    permit_pty: bool = True
    port_forwarding: bool = True
    forward_agent: bool = False
    record_session: bool = True
    """Record interactive sessions (output, as asciicast v2); on unless every role turns it off."""
    record_input: bool = False
    """Also record what the user types (may include secrets typed at prompts); any role turns it
    on."""
    lock_mode: Literal["best_effort", "strict"] = "best_effort"
    client_idle_timeout: Duration | None = None
    disconnect_expired_cert: bool = False
    pin_source_ip: bool = False
    device_trust_mode: DeviceTrustMode | None = None
    """Device trust for this role's holders (docs/device-trust.md); the strictest of the
    cluster's ``device_trust.mode`` and the roles' values wins. Unset: the cluster's."""
    require_hardware_key: bool = False
    """Certificates only for a key attested as TPM-resident (the device's enrolled TPM
    credential, or a key its AK certified); any role turns it on. Partial: see
    docs/device-trust.md (hardware-held user keys)."""
    require_session_join: list[SessionRequirePolicy] = Field(default_factory=list)
    """Who must join this role's holders' sessions before they run (moderated sessions,
    docs/moderated-sessions.md); every role's policies must be met."""


class RoleSpec(StrictModel):
    options: RoleOptions = Field(default_factory=RoleOptions)
    allow: RoleConditions = Field(default_factory=RoleConditions)
    deny: RoleConditions = Field(default_factory=RoleConditions)


class Role(Resource):
    KIND: ClassVar[str] = "role"
    kind: str = "role"
    spec: RoleSpec = Field(default_factory=RoleSpec)

    @model_validator(mode="after")
    def _check_max_session_ttl(self, info: ValidationInfo) -> Role:
        # A role written by a person (python mode: the API, bctl, config files, Role(...)) is
        # refused; a stored role is read back as it is (JSON mode: ResourceStore), so one saved
        # before this rule still loads, and the issuer honours its shorter cap.
        ttl = self.spec.options.max_session_ttl
        if ttl < MIN_SESSION_TTL and info.mode == "python":
            raise ValueError(
                f"role {self.metadata.name!r}: spec.options.max_session_ttl must be at least "
                f"{format_duration(MIN_SESSION_TTL)} (no certificate is shorter), got "
                f"{format_duration(ttl)}"
            )
        return self


JOIN_ROLES = ("node", "db", "app", "bot", "proxy", "trusted_cluster")
"""``trusted_cluster``: a leaf cluster establishing trust (docs/trusted-clusters.md); it never
joins as a host."""


class OIDCJoinSpec(StrictModel):
    """How auth checks a CI platform's OIDC token (docs/machine-id.md)."""

    issuer: str
    """``https://...``: the ``iss`` claim; keys come from ``ISSUER/.well-known/openid-
    configuration``'s ``jwks_uri`` (or :attr:`jwks_uri`)."""
    audience: str
    """The ``aud`` the token must carry (GitHub Actions: the ``audience`` of the request)."""
    jwks_uri: str = ""
    allow: list[dict[str, str]] = Field(default_factory=list)
    """Any one rule must match: every claim named in it must equal the value (``*`` at the end
    matches a prefix), e.g. ``{repository: org/repo, ref: refs/heads/main}``."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _https(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError(f"{value!r}: the issuer and its JWKS must be https:// URLs")
        return value.rstrip("/") if value else value

    @field_validator("allow")
    @classmethod
    def _rules(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if not value or any(not rule for rule in value):
            raise ValueError("allow: at least one rule, each naming at least one claim")
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a.lower() == "none" or a.startswith("HS")]
        if bad or not value:
            raise ValueError(f"algorithms: asymmetric ones only (RS256, ES256...), not {bad}")
        return value


class ProvisionTokenSpec(StrictModel):
    roles: list[str]
    """What the joining agent may become: node, db, app, bot, proxy."""
    secret_hash: str = ""
    """SHA-256 (hex) of the secret part of the token; the secret itself is never stored."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels given to the host that joins with this token."""
    single_use: bool = True
    created_by: str = ""
    bot_name: str = ""
    """With role ``bot``: the bot (``bctl bots add``) that joins with this token."""
    join_method: Literal["token", "oidc", "bound_keypair"] = "token"
    """``token``: the caller presents the secret; ``oidc``: the caller presents a JWT from
    ``oidc.issuer`` that passes the allow rules (no secret; not single use);
    ``bound_keypair``: the caller signs a challenge of auth with the private key of
    ``bound_public_key`` (no secret; not single use)."""
    oidc: OIDCJoinSpec | None = None
    bound_public_key: str = Field(default="", max_length=16384)
    """With join_method bound_keypair: the bot's OpenSSH public key, registered in advance."""

    @model_validator(mode="after")
    def _check_method(self) -> ProvisionTokenSpec:
        if self.join_method == "oidc":
            if self.oidc is None:
                raise ValueError("join_method oidc needs an oidc section (issuer, audience, allow)")
            if self.roles != ["bot"] or not self.bot_name:
                raise ValueError("join_method oidc is for bots: roles [bot] and bot_name")
        if self.join_method == "bound_keypair":
            if not self.bound_public_key:
                raise ValueError("join_method bound_keypair needs bound_public_key")
            if self.roles != ["bot"] or not self.bot_name:
                raise ValueError("join_method bound_keypair is for bots: roles [bot] and bot_name")
        return self

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"at least one role is required: {', '.join(JOIN_ROLES)}")
        for role in value:
            if role not in JOIN_ROLES:
                raise ValueError(f"unknown join role {role!r}: use {', '.join(JOIN_ROLES)}")
        return value


class ProvisionToken(Resource):
    KIND: ClassVar[str] = "token"
    kind: str = "token"
    spec: ProvisionTokenSpec


class LockTarget(StrictModel):
    user: str = ""
    role: str = ""
    login: str = ""
    node: str = ""
    device: str = ""
    mfa_device: str = ""
    access_request: str = ""
    bot: str = ""
    session: str = ""
    user_epoch: str = ""
    """Certificates of one user epoch (with ``user``): how a reset or deletion revokes the
    certificates issued before it everywhere locks are enforced (``UserSpec.epoch``)."""

    def is_empty(self) -> bool:
        return not any(self.model_dump().values())


class LockSpec(StrictModel):
    target: LockTarget
    message: str = ""
    created_by: str = ""
    created: datetime | None = None

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: LockTarget) -> LockTarget:
        if value.is_empty():
            raise ValueError("a lock needs at least one target (user, role, login, node, ...)")
        return value


class Lock(Resource):
    KIND: ClassVar[str] = "lock"
    kind: str = "lock"
    spec: LockSpec


def second_factor_from_yaml(value: object) -> object:
    """``True``/``False`` (a bare YAML ``on``/``off``) to ``"on"``/``"off"``; others unchanged."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


class WebAuthnPreference(StrictModel):
    """The WebAuthn relying party (docs/mfa.md)."""

    rp_id: str = ""
    """Relying party id (a domain). Empty: the host of the proxy's public address."""
    origins: list[str] = Field(default_factory=list)
    """Allowed origins (``https://host:port``). Empty: the proxy's and auth's public addresses."""
    user_verification: Literal["discouraged", "preferred", "required"] = "preferred"
    """``required``: every assertion must carry the UV flag (PIN or biometrics). Passwordless
    login always requires it."""
    attestation: Literal["none", "direct"] = "none"
    """``direct``: registrations must carry an attestation statement; with ``attestation_roots``
    it must chain to one of them, with ``allowed_aaguids`` the model must be listed."""
    allowed_aaguids: list[str] = Field(default_factory=list)
    attestation_roots: list[str] = Field(default_factory=list)
    """PEM certificates of the attestation CAs whose keys may register."""

    @field_validator("allowed_aaguids")
    @classmethod
    def _check_aaguids(cls, value: list[str]) -> list[str]:
        import uuid

        try:
            return [str(uuid.UUID(v)) for v in value]
        except ValueError:
            raise ValueError("allowed_aaguids: each entry must be a UUID") from None

    @field_validator("attestation_roots")
    @classmethod
    def _check_roots(cls, value: list[str]) -> list[str]:
        from cryptography import x509

        for pem in value:
            try:
                x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                raise ValueError(
                    "attestation_roots: each entry must be a PEM certificate"
                ) from None
        return value

    @field_validator("origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not origin.startswith("https://") or origin.rstrip("/") != origin:
                raise ValueError(f"origin {origin!r}: use https://HOST[:PORT] without a path")
        return value

    @model_validator(mode="after")
    def _aaguids_need_roots(self) -> WebAuthnPreference:
        # Without roots a self-signed ("packed" self) attestation can claim any AAGUID, so an
        # AAGUID allow list alone would look like a policy and enforce nothing.
        if self.allowed_aaguids and not self.attestation_roots:
            raise ValueError(
                "allowed_aaguids needs attestation_roots (the vendors' attestation CAs): "
                "without them any key can claim an allowed AAGUID"
            )
        if self.attestation_roots and self.attestation != "direct":
            raise ValueError("attestation_roots needs attestation: direct")
        return self


class AuthPreferenceSpec(StrictModel):
    type: Literal["local"] = "local"
    second_factor: Literal["off", "otp", "webauthn", "on", "optional"] = "on"
    """``on`` (the default): every local user needs a second factor, WebAuthn or TOTP;
    ``otp`` / ``webauthn``: only that kind; ``optional``: users who registered a device must use
    it; ``off``: passwords alone (insecure; ``bastion start`` warns)."""
    webauthn: WebAuthnPreference = Field(default_factory=WebAuthnPreference)
    allow_software_authenticator: bool = False
    """Accept registrations from Bastion's software authenticator (tests, headless machines)."""
    allow_passwordless: bool = True
    """Allow passkey login (``bsh login --auth=passwordless``) when WebAuthn is enabled."""

    @field_validator("second_factor", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """YAML 1.1 reads a bare ``on``/``off`` as a boolean: take it to mean the mode."""
        return second_factor_from_yaml(value)

    max_failed_logins: int = Field(default=5, ge=1)
    lockout_window: Duration = timedelta(minutes=30)
    lockout_duration: Duration = timedelta(minutes=30)
    invite_ttl: Duration = timedelta(hours=24)
    default_session_ttl: Duration = timedelta(hours=12)
    lock_mode: Literal["best_effort", "strict"] = "best_effort"
    """Cluster-wide lock mode; a role's ``lock_mode: strict`` tightens it per identity.
    ``strict`` refuses access (and ends it after 30 s) while the lock state is unknown."""
    require_session_mfa: bool = False
    """Every SSH session needs a fresh WebAuthn ceremony and a 1-minute certificate scoped to
    that node and login (as if every role had ``require_session_mfa``)."""
    time_zone: str = "UTC"
    """The cluster's IANA time zone: ``request.time`` in role conditions reads in it."""

    @field_validator("time_zone")
    @classmethod
    def _check_time_zone(cls, value: str) -> str:
        from bastion.clock import in_zone

        in_zone(datetime(2026, 1, 1, tzinfo=UTC), value)  # raises ValueError naming the zone
        return value

    device_trust: DeviceTrustPreference = Field(default_factory=DeviceTrustPreference)
    """Trusted devices: mode, software keys, posture rules (docs/device-trust.md)."""
    require_mfa_for_admin: bool | None = None
    """Changes to roles, users, connectors, tokens, CAs, locks and this preference need a WebAuthn
    assertion bound to the request. Unset (the default): required from every user who has a
    WebAuthn device; ``true``: required from everyone (no device: no admin changes);
    ``false``: off. The local admin identity of the auth host is exempt (docs/mfa.md)."""


class AuthPreference(Resource):
    KIND: ClassVar[str] = "cluster_auth_preference"
    NAME: ClassVar[str] = "cluster-auth-preference"
    kind: str = "cluster_auth_preference"
    spec: AuthPreferenceSpec = Field(default_factory=AuthPreferenceSpec)
