"""The OpenAPI 3.1 description of the auth API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from bastion import __version__
from bastion.api.admin_mfa import is_admin_change
from bastion.api.mfa_header import ADMIN_MFA_HEADER

__all__ = ["OPENAPI"]

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "challenge": {
                    "type": "object",
                    "description": "code mfa_required: WebAuthn request options to answer",
                },
                "scope": {"type": "string", "description": "code mfa_required: what it binds"},
            },
            "required": ["code", "message"],
        }
    },
}
_OBJ = {"type": "object"}
_MFA_HEADER = {
    "name": ADMIN_MFA_HEADER,
    "in": "header",
    "required": False,
    "description": "MFA for admin actions: base64url of the WebAuthn assertion answering the "
    "challenge of a 401 mfa_required reply to this same request (docs/session-mfa.md)",
    "schema": {"type": "string"},
}

# (method, path, summary, public, request schema or None)
_ROUTES: list[tuple[str, str, str, bool, dict[str, Any] | None]] = [
    ("get", "/v1/ping", "Cluster name, version, host CA (for pinning), second factor", True, None),
    (
        "post",
        "/v1/login",
        "Password (+TOTP) login: returns SSH and X.509 certificates for the client's public key",
        True,
        {
            "type": "object",
            "required": ["user", "password", "public_key"],
            "properties": {
                "user": {"type": "string"},
                "password": {"type": "string"},
                "otp": {"type": "string"},
                "public_key": {"type": "string"},
                "ttl": {"type": "string", "example": "8h"},
            },
        },
    ),
    (
        "post",
        "/v1/invites/start",
        "Look up an invite; returns the TOTP secret to enroll",
        True,
        {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
    ),
    (
        "post",
        "/v1/invites/complete",
        "Set password (+TOTP) with an invite; returns certificates",
        True,
        {
            "type": "object",
            "required": ["token", "password", "public_key"],
            "properties": {
                "token": {"type": "string"},
                "password": {"type": "string"},
                "otp": {"type": "string"},
                "public_key": {"type": "string"},
            },
        },
    ),
    (
        "post",
        "/v1/join",
        "Exchange a join token for a host identity",
        True,
        {
            "type": "object",
            "required": ["token", "host_name", "public_key"],
            "properties": {
                "token": {"type": "string"},
                "host_name": {"type": "string"},
                "role": {"type": "string"},
                "public_key": {"type": "string"},
                "dns_names": {"type": "array", "items": {"type": "string"}},
                "ip_addresses": {"type": "array", "items": {"type": "string"}},
            },
        },
    ),
    (
        "post",
        "/v1/sso/requests",
        "Start an SSO login (bsh login --auth=NAME): returns the request id, the browser path "
        "on the proxy and the short request code",
        True,
        {
            "type": "object",
            "required": ["connector", "public_key", "secret"],
            "properties": {
                "connector": {"type": "string"},
                "public_key": {"type": "string"},
                "ttl": {"type": "string", "example": "8h"},
                "secret": {"type": "string", "description": "one-time secret, 32+ characters"},
                "client_redirect": {
                    "type": "string",
                    "description": "http://127.0.0.1:PORT/... (empty: headless)",
                },
            },
        },
    ),
    (
        "post",
        "/v1/sso/requests/{id}/result",
        "The certificates of a finished SSO login, once (long-poll up to wait seconds); "
        '{"status": ...} while pending',
        True,
        {
            "type": "object",
            "required": ["secret"],
            "properties": {
                "secret": {"type": "string"},
                "code": {"type": "string", "description": "from the browser (not headless)"},
                "wait": {"type": "number", "maximum": 55},
            },
        },
    ),
    ("get", "/v1/whoami", "The caller's identity", False, None),
    (
        "post",
        "/v1/users",
        "Create a user and return a one-time invite",
        False,
        {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "roles": {"type": "array", "items": {"type": "string"}},
                "logins": {"type": "array", "items": {"type": "string"}},
            },
        },
    ),
    ("patch", "/v1/users/{name}", "Change a user's roles, logins or traits", False, _OBJ),
    (
        "post",
        "/v1/users/{name}/reset",
        "Forget credentials, unlock, return a new invite",
        False,
        None,
    ),
    (
        "post",
        "/v1/tokens",
        "Create a join token (returned once)",
        False,
        {
            "type": "object",
            "required": ["roles"],
            "properties": {
                "roles": {"type": "array", "items": {"type": "string"}},
                "ttl": {"type": "string"},
                "labels": _OBJ,
            },
        },
    ),
    (
        "get",
        "/v1/ca/export",
        "Trust material: ?type=user|host|tls-user|tls-host|db|jwt",
        False,
        None,
    ),
    (
        "get",
        "/v1/ca/krl",
        "OpenSSH KRL of the current locks (base64) + SSHSIG signature; needs lock read",
        False,
        None,
    ),
    (
        "post",
        "/v1/ca/rotate",
        "Move a CA to the next rotation phase",
        False,
        {
            "type": "object",
            "required": ["type", "phase"],
            "properties": {
                "type": {"type": "string"},
                "phase": {"enum": ["init", "update", "standby", "rollback"]},
            },
        },
    ),
    ("post", "/v1/ca/sign-host", "Host certificate for an agentless OpenSSH server", False, _OBJ),
    ("get", "/v1/events", "Search audit events: ?type=&user=&since=&until=&limit=", False, None),
    (
        "post",
        "/v1/audit/checkpoint",
        "Sign an audit log checkpoint now; returns the latest note and the verifier key",
        False,
        None,
    ),
    (
        "get",
        "/v1/audit/proof",
        "RFC 9162 inclusion proof of one audit event: ?id=EVENT_ID or ?index=N",
        False,
        None,
    ),
    ("get", "/v1/resources/{kind}", "List resources of a kind (filtered per item)", False, None),
    ("post", "/v1/resources/{kind}", "Create a resource (?force=true overwrites)", False, _OBJ),
    ("get", "/v1/resources/{kind}/{name}", "Read one resource", False, None),
    ("put", "/v1/resources/{kind}/{name}", "Update; conditional on metadata.revision", False, _OBJ),
    ("delete", "/v1/resources/{kind}/{name}", "Delete a resource", False, None),
    (
        "post",
        "/v1/nodes/{name}/confirm",
        "Accept the host now serving a node name (the proxy refuses a changed host until then)",
        False,
        None,
    ),
    (
        "post",
        "/v1/nodes/heartbeat",
        "A node agent reports itself (name bound to its certificate)",
        False,
        _OBJ,
    ),
    (
        "post",
        "/v1/proxies/heartbeat",
        "A proxy in its own process advertises its public address (agents tunnel to each)",
        False,
        _OBJ,
    ),
    (
        "post",
        "/v1/nodes/pin",
        "A proxy pins a node name to its host at first sight; answers the pinned host id",
        False,
        _OBJ,
    ),
    (
        "post",
        "/v1/events/submit",
        "Agents and proxies submit session and access events",
        False,
        _OBJ,
    ),
    ("get", "/v1/recordings", "Session recordings the caller may see (metadata)", False, None),
    (
        "get",
        "/v1/access/check",
        "Explain a decision: ?user=&node=&login=[&at=&source_ip=&mfa=true] (read role+user)",
        False,
        None,
    ),
    ("get", "/v1/access/ls", "What a user can reach: ?user=[&at=] (read role+user)", False, None),
    (
        "get",
        "/v1/access/who",
        "Who can reach a node as a login: ?node=&login=[&at=] (read role+user)",
        False,
        None,
    ),
    (
        "get",
        "/v1/recordings/{session_id}",
        "One recording as asciicast v2 (?purpose=view|download; audited)",
        False,
        None,
    ),
    (
        "post",
        "/v1/recordings/{session_id}",
        "A node uploads a recording: raw asciicast body, X-Bastion-Recording metadata header",
        False,
        None,
    ),
    (
        "post",
        "/v1/certs/session/challenge",
        "Per-session MFA: does login@node need it? If so, a WebAuthn challenge for its scope",
        False,
        {
            "type": "object",
            "required": ["node", "login"],
            "properties": {"node": {"type": "string"}, "login": {"type": "string"}},
        },
    ),
    (
        "post",
        "/v1/certs/session",
        "Per-session MFA: the assertion for the challenge buys 1-minute certificates for "
        "that node and login only",
        False,
        {
            "type": "object",
            "required": ["node", "login", "public_key", "mfa_response"],
            "properties": {
                "node": {"type": "string"},
                "login": {"type": "string"},
                "public_key": {"type": "string"},
                "mfa_response": {"type": "object"},
            },
        },
    ),
    (
        "get",
        "/v1/watch",
        "Stream ?kinds=role,lock,... as NDJSON: snapshot, init, then changes",
        False,
        None,
    ),
    # MFA (docs/mfa.md): WebAuthn options and responses are the browser's JSON forms.
    (
        "post",
        "/v1/login/begin",
        "Check the password; returns {totp, webauthn: request options} for the second step",
        True,
        {
            "type": "object",
            "required": ["user", "password"],
            "properties": {"user": {"type": "string"}, "password": {"type": "string"}},
        },
    ),
    ("post", "/v1/login/passwordless/begin", "Request options for a passkey login", True, None),
    (
        "post",
        "/v1/login/passwordless",
        "Passkey login (user verification required): returns certificates",
        True,
        {
            "type": "object",
            "required": ["webauthn", "public_key"],
            "properties": {
                "webauthn": _OBJ,
                "public_key": {"type": "string"},
                "ttl": {"type": "string"},
            },
        },
    ),
    (
        "post",
        "/v1/invites/webauthn",
        "Registration options for the invited user's security key",
        True,
        {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
    ),
    ("get", "/v1/mfa/devices", "The caller's MFA devices", False, None),
    (
        "post",
        "/v1/mfa/devices/begin",
        "Start registering a device: {type: webauthn|totp, passwordless}",
        False,
        _OBJ,
    ),
    (
        "post",
        "/v1/mfa/devices/finish",
        "Finish registering: {type, name, webauthn | enrolment+code, proof}",
        False,
        _OBJ,
    ),
    (
        "post",
        "/v1/mfa/devices/{name}/remove",
        "Remove a device (confirmed by proof; never the last required one)",
        False,
        _OBJ,
    ),
    (
        "post",
        "/v1/mfa/challenge",
        "WebAuthn request options bound to {scope} for the caller",
        False,
        {"type": "object", "required": ["scope"], "properties": {"scope": {"type": "string"}}},
    ),
]


def _build() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, public, schema in _ROUTES:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": _OBJ}}},
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": _ERROR}},
                },
            },
        }
        if public:
            op["security"] = []
        params = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if is_admin_change(method, path):
            op.setdefault("parameters", []).append(_MFA_HEADER)
        if schema is not None:
            op["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bastion auth API", "version": __version__},
        "components": {"securitySchemes": {"mtls": {"type": "mutualTLS"}}},
        "security": [{"mtls": []}],
        "paths": paths,
    }


OPENAPI = _build()
