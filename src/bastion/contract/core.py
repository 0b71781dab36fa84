"""Discovery, password logins, invites, joins, users, tokens, CAs, the audit log.

Times are ISO 8601 strings; durations are Go-style strings (``12h``, ``30m``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from bastion.contract.base import Body, Empty, Endpoint, Reply, ResourceDoc
from bastion.types.duration import format_duration, parse_duration

__all__ = [
    "AUDIT_CHECKPOINT",
    "AUDIT_PROOF",
    "CONFIRM_NODE",
    "CREATE_TOKEN",
    "CREATE_USER",
    "EXPORT_CA",
    "INVITE_COMPLETE",
    "INVITE_START",
    "JOIN",
    "KRL",
    "LOGIN",
    "OPENAPI",
    "PING",
    "RESET_USER",
    "ROTATE_CA",
    "SEARCH_EVENTS",
    "SIGN_HOST",
    "UPDATE_USER",
    "WHOAMI",
    "DeviceBound",
    "DeviceProof",
    "Duration",
    "HostCerts",
    "UserCerts",
]


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("a duration such as 12h, 30m or 90s")
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration),
    WithJsonSchema({"type": "string", "examples": ["12h", "30m"]}),
]
"""A duration on the wire: ``12h``, ``30m``, ``1h30m``."""

Text = Annotated[str, Field(max_length=4096)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


# ---- certificates -------------------------------------------------------------------------------


class UserCerts(Reply):
    """A user's SSH and X.509 certificates for the public key the client sent."""

    user: str
    ssh_cert: str
    tls_cert: str
    ssh_host_ca: list[str]
    """The SSH host CA's public keys (OpenSSH lines), for known_hosts."""
    tls_host_ca: str
    tls_user_ca: str
    expires: str
    roles: list[str]
    logins: list[str]
    cluster: str
    mfa_device: str = ""
    device_challenge: str = ""
    """A fresh device challenge: an enrolled machine answers it with
    ``/v1/device-authn/finish`` (one round trip, docs/device-trust.md)."""
    device_error: str = ""
    """The login's ``device`` proof was refused (the certificates carry no device): why."""


class HostCerts(Reply):
    host_id: str
    ssh_cert: str
    tls_cert: str
    ssh_user_ca: list[str]
    ssh_host_ca: list[str]
    tls_host_ca: str
    tls_user_ca: str
    expires: str


# ---- discovery ----------------------------------------------------------------------------------


class Ping(Reply):
    cluster: str
    version: str
    second_factor: str
    tls_host_ca: str
    """PEM of the TLS host CA's trusted certificates (clients pin its SPKI)."""
    server_time: str
    device_challenge: str = ""
    """A fresh device challenge for whoever logs in next: an enrolled machine signs it and
    sends the proof with its login request (``Login.device``; docs/device-trust.md)."""


class OpenAPIDocument(Reply):
    model_config = ConfigDict(extra="allow", frozen=True)
    openapi: str


PING = Endpoint(
    "GET",
    "/v1/ping",
    "public",
    "Cluster name, version, host CA (for pinning), second factor",
    body=Empty,
    response=Ping,
)
OPENAPI = Endpoint(
    "GET",
    "/openapi.json",
    "public",
    "This API's OpenAPI 3.1 description",
    body=Empty,
    response=OpenAPIDocument,
)


# ---- password login and invites -----------------------------------------------------------------


class KeyCertification(Body):
    """TPM2_Certify of a TPM-resident user key by the device's attestation key (base64 of
    the marshalled structures; :func:`bastion.auth.key_attest.certified_key_sha256`)."""

    key_public: Annotated[str, Field(min_length=1, max_length=8192)]
    """TPM2B_PUBLIC of the certified key."""
    attest: Annotated[str, Field(min_length=1, max_length=8192)]
    """TPMS_ATTEST the AK signed."""
    signature: Annotated[str, Field(min_length=1, max_length=8192)]
    """TPMT_SIGNATURE over ``attest``."""


class DeviceProof(Body):
    """This machine's device authentication, sent with the login request."""

    device_id: Annotated[str, Field(min_length=1, max_length=128)]
    challenge: Annotated[str, Field(min_length=1, max_length=512)]
    """The ping's ``device_challenge``."""
    signature: Annotated[str, Field(max_length=8192)]
    profile: dict[str, str] = Field(default_factory=dict)
    key_certification: KeyCertification | None = None
    """``bsh login --key-store=tpm``: the device's AK certified ``Login.ssh_public_key``
    (TPM2_Certify over SHA-256 of ``challenge``), so ``require_hardware_key`` holds."""


class DeviceBound(Body):
    """The login's key material and its certification, carried by every request that asks for
    a user's login, renewal or per-session certificates (``Login``, ``InviteComplete``,
    ``Passwordless``, ``SSORequest``, ``Renew``, ``SessionIssue``, access requests'
    ``Assume``): the device ceremony and, for a TPM-held SSH key, the AK's certification of it
    (docs/device-trust.md). Auth checks both in one place
    (:func:`bastion.auth.key_proof.issue_bound`)."""

    device: DeviceProof | None = None
    """An enrolled machine's answer to the ping's device challenge: the certificates carry
    the device (or ``device_error`` says why not; the login stands)."""
    ssh_public_key: str = Field(default="", max_length=8192)
    """The SSH certificate's key when it is not ``public_key`` (which then gets only the
    X.509 certificate): a TPM-held key (``--key-store=tpm``), certified by
    ``device.key_certification``."""


class Login(DeviceBound):
    user: Name
    password: Text
    otp: str = ""
    public_key: Text
    """The client's public key: an OpenSSH line or PEM."""
    ttl: Duration = timedelta(hours=12)
    webauthn: dict[str, Any] | None = None
    """The WebAuthn assertion answering ``/v1/login/begin``'s challenge."""


class InviteToken(Body):
    token: Text


class InviteInfo(Reply):
    user: str
    otp_required: bool
    otp_secret: str
    otp_uri: str
    second_factor: str
    webauthn_allowed: bool


class InviteComplete(DeviceBound):
    token: Text
    password: Text
    otp: str = ""
    public_key: Text
    ttl: Duration = timedelta(hours=12)
    webauthn: dict[str, Any] | None = None
    device_name: str = ""


LOGIN = Endpoint(
    "POST",
    "/v1/login",
    "public",
    "Password (+TOTP or WebAuthn) login: SSH and X.509 certificates for the client's public key",
    body=Login,
    response=UserCerts,
)
INVITE_START = Endpoint(
    "POST",
    "/v1/invites/start",
    "public",
    "Look up an invite; returns the TOTP secret to enroll",
    body=InviteToken,
    response=InviteInfo,
)
INVITE_COMPLETE = Endpoint(
    "POST",
    "/v1/invites/complete",
    "public",
    "Set the password (+TOTP or security key) with an invite; returns certificates",
    body=InviteComplete,
    response=UserCerts,
)


# ---- joining hosts -------------------------------------------------------------------------------


class Join(Body):
    token: Text
    host_name: Name
    role: str = "node"
    public_key: Text
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    ttl: Duration | None = None
    """Lifetime of the host certificates (1 minute to 30 days; default 30 days). Agents renew
    them before expiry (``POST /v1/certs/renew``)."""


JOIN = Endpoint(
    "POST",
    "/v1/join",
    "public",
    "Join a node or proxy with a single-use token: returns host certificates",
    body=Join,
    response=HostCerts,
)


# ---- who am I ------------------------------------------------------------------------------------


class WhoAmI(Reply):
    user: str
    kind: str
    roles: list[str]
    logins: list[str]
    expires: str
    cluster: str


WHOAMI = Endpoint(
    "GET", "/v1/whoami", "any", "The identity of your certificate", body=Empty, response=WhoAmI
)


# ---- users and tokens ----------------------------------------------------------------------------


class NewUser(Body):
    name: Name
    roles: list[str] = []
    logins: list[str] = []
    traits: dict[str, list[str]] = {}


class UserChange(Body):
    """Fields to change; an absent field stays as it is."""

    roles: list[str] | None = None
    logins: list[str] | None = None
    traits: dict[str, list[str]] | None = None


class Invite(Reply):
    user: str
    token: str
    url: str
    expires: str


class NewToken(Body):
    roles: list[str] = []
    ttl: Duration = timedelta(minutes=30)
    labels: dict[str, str] = {}


class Token(Reply):
    token: str
    """The secret: shown once."""
    name: str
    roles: list[str]
    expires: str | None


CREATE_USER = Endpoint(
    "POST",
    "/v1/users",
    "user",
    "Create a user; returns an invite link",
    body=NewUser,
    response=Invite,
    status=201,
)
UPDATE_USER = Endpoint(
    "PATCH",
    "/v1/users/{name}",
    "user",
    "Change a user's roles, logins or traits (narrowing revokes their certificates)",
    body=UserChange,
    response=ResourceDoc,
)
RESET_USER = Endpoint(
    "POST",
    "/v1/users/{name}/reset",
    "user",
    "Reset a user's password and devices; revokes their certificates; returns an invite",
    body=Empty,
    response=Invite,
)
CREATE_TOKEN = Endpoint(
    "POST",
    "/v1/tokens",
    "user",
    "Create a single-use join token",
    body=NewToken,
    response=Token,
    status=201,
)


# ---- certificate authorities ---------------------------------------------------------------------


class ExportQuery(Body):
    type: str = "user"
    format: str = ""


class Exported(Reply):
    export: str


class PublishedKRL(Reply):
    krl: str
    """Base64 of the OpenSSH key revocation list."""
    signature: str
    version: int
    generated: str
    key_ids: list[str]
    serials: list[str]
    unenforced_locks: list[str]


class Rotate(Body):
    type: Name
    phase: Name


class SignHost(Body):
    host: Name
    public_key: Text
    principals: list[str] = []
    ttl: Duration = timedelta(hours=720)


EXPORT_CA = Endpoint(
    "GET",
    "/v1/ca/export",
    "user",
    "Export a CA's public keys: type user|host|tls_user|tls_host, "
    "format authorized_keys|known_hosts|pem",
    body=Empty,
    response=Exported,
    query=ExportQuery,
)
KRL = Endpoint(
    "GET",
    "/v1/ca/krl",
    "any",
    "The signed OpenSSH key revocation list that nodes enforce",
    body=Empty,
    response=PublishedKRL,
)
ROTATE_CA = Endpoint(
    "POST",
    "/v1/ca/rotate",
    "user",
    "Advance a CA rotation: init, update_clients, update_servers, standby, or rollback",
    body=Rotate,
    response=ResourceDoc,
)
SIGN_HOST = Endpoint(
    "POST",
    "/v1/ca/sign-host",
    "user",
    "Sign an OpenSSH host certificate for a host without an agent",
    body=SignHost,
    response=HostCerts,
)


# ---- nodes ---------------------------------------------------------------------------------------


class NodeConfirmed(Reply):
    node: str
    previous_host_id: str
    host_id: str


CONFIRM_NODE = Endpoint(
    "POST",
    "/v1/nodes/{name}/confirm",
    "user",
    "Accept a node name's new host (after a reinstall); the old pin is replaced",
    body=Empty,
    response=NodeConfirmed,
)


# ---- the audit log -------------------------------------------------------------------------------


class EventQuery(Body):
    type: list[str] = []
    user: str = ""
    since: str = ""
    until: str = ""
    outcome: str = ""
    limit: int = Field(default=1000, ge=1, le=100_000)


class Events(Reply):
    events: list[dict[str, Any]]


class Checkpoint(Reply):
    checkpoint: str
    """The signed checkpoint note (C2SP signed-note format)."""
    verifier_key: str


class ProofQuery(Body):
    id: str = ""
    index: int | None = Field(default=None, ge=0)


class Proof(Reply):
    """An inclusion proof of one event in the signed log; the exact fields are in
    docs/audit.md (index, id, type, tree_size, root, proof, checkpoint, leaf...)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    index: int
    id: str
    tree_size: int
    root: str
    proof: list[str]
    verifier_key: str


SEARCH_EVENTS = Endpoint(
    "GET",
    "/v1/events",
    "user",
    "Search the audit log (newest last)",
    body=Empty,
    response=Events,
    query=EventQuery,
)
AUDIT_CHECKPOINT = Endpoint(
    "POST",
    "/v1/audit/checkpoint",
    "user",
    "Sign a checkpoint of the audit log now",
    body=Empty,
    response=Checkpoint,
)
AUDIT_PROOF = Endpoint(
    "GET",
    "/v1/audit/proof",
    "user",
    "Prove that one event is in the signed audit log",
    body=Empty,
    response=Proof,
    query=ProofQuery,
)
