"""A software FIDO2/WebAuthn authenticator (plus the browser's client-data part) for tests and
headless machines.

Layer: client edge, no network. It takes the JSON options a relying party produced (the
``webauthn`` library's ``options_to_json`` form, optionally wrapped as ``{"publicKey": ...}``) and
returns what a browser's ``PublicKeyCredential.toJSON()`` gives: ``id``, ``rawId``, ``type`` and
``response`` with base64url ``clientDataJSON`` plus ``attestationObject`` (create) or
``authenticatorData``, ``signature`` and ``userHandle`` (get).

What it implements of WebAuthn level 2 / CTAP2:

* ES256 (P-256) and Ed25519 credentials (COSE algorithms -7 and -8), in the RP's order of
  preference unless one is forced;
* the UP (user present) and UV (user verified) flags; UV is claimed only when the authenticator
  was built with ``user_verification=True`` (a headless machine "verifies" its user by owning the
  credential file, so the default is True; tests turn it off to exercise the RP's policy);
* resident (discoverable) credentials with the user handle, for passwordless login;
* a per-credential signature counter, persisted after every assertion;
* ``none`` attestation, or ``packed`` attestation with an x5c chain when an attestation key and
  certificate are configured (tests use a throw-away attestation CA).

Every registration carries :data:`SOFTWARE_AAGUID`, so a cluster can tell software credentials
apart and refuse them unless ``allow_software_authenticator`` is set. That flag is honest-client
information: a malicious client can claim any AAGUID with ``none`` attestation. Clusters that must
be sure use ``attestation: direct`` with their own attestation roots.

What it does *not* do: check that the RP id belongs to the origin. That is the client's job
(a browser, or :mod:`bastion.client.mfa`), and tests use this class to forge responses with a wrong
origin or RP id to check that the relying party refuses them.

Credentials live in a JSON file written with mode 0600 (private keys are PKCS#8 PEM inside):
anyone who can read it can use the credentials, exactly like a key file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from bastion.errors import BadParameter, NotFound
from bastion.files import write_private_file

__all__ = [
    "SOFTWARE_AAGUID",
    "Attestation",
    "SoftwareAuthenticator",
    "StoredCredential",
]

SOFTWARE_AAGUID = uuid.UUID("b7a5710e-5e1f-4b0a-9c1d-b457100f7e5a")
"""AAGUID of Bastion's software authenticator ("bastion software"); never used by hardware."""

ES256 = -7
EDDSA = -8
SUPPORTED_ALGS = (ES256, EDDSA)
Algorithm = Literal["ES256", "EdDSA"]
_ALG_IDS: dict[str, int] = {"ES256": ES256, "EdDSA": EDDSA}

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40


@dataclass(frozen=True, slots=True)
class Attestation:
    """A packed-attestation signer: the key and its certificate chain (leaf first)."""

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]


@dataclass(slots=True)
class StoredCredential:
    id: str
    """base64url credential id."""
    rp_id: str
    user_handle: str
    """base64url user handle given by the RP at registration."""
    user_name: str
    alg: int
    private_key: str
    """PKCS#8 PEM."""
    sign_count: int = 0
    resident: bool = False
    created: str = ""


def _options(options: dict[str, Any]) -> dict[str, Any]:
    inner = options.get("publicKey", options)
    if not isinstance(inner, dict):
        raise BadParameter("WebAuthn options must be a JSON object")
    return inner


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadParameter(f"WebAuthn options: {what} must be a base64url string")
    try:
        return base64url_to_bytes(value)
    except ValueError:
        raise BadParameter(f"WebAuthn options: {what} is not valid base64url") from None


def _client_data(kind: str, challenge: bytes, origin: str) -> bytes:
    return json.dumps(
        {
            "type": kind,
            "challenge": bytes_to_base64url(challenge),
            "origin": origin,
            "crossOrigin": False,
        },
        separators=(",", ":"),
    ).encode()


def _cose_key(private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cbor2.dumps({1: 1, 3: EDDSA, -1: 6, -2: raw})
    numbers = private.public_key().public_numbers()
    return cbor2.dumps(
        {
            1: 2,
            3: ES256,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


def _sign(private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, data: bytes) -> bytes:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(data)
    return private.sign(data, ec.ECDSA(hashes.SHA256()))


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise BadParameter("software authenticator file holds an unsupported key type")
    return key


class SoftwareAuthenticator:
    """See the module docstring. Not thread-safe; one process uses one file at a time."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        user_verification: bool = True,
        algorithm: Algorithm | None = None,
        attestation: Attestation | None = None,
        aaguid: uuid.UUID = SOFTWARE_AAGUID,
    ) -> None:
        """
        Args:
            path: the credential file (created 0600 on first registration); None keeps the
                credentials in memory only.
            user_verification: whether this authenticator sets the UV flag.
            algorithm: force ES256 or EdDSA; None follows the RP's ``pubKeyCredParams`` order.
            attestation: sign ``packed`` attestations with this key when the RP asks for
                ``direct`` attestation; None always answers ``none``.
            aaguid: the AAGUID to report (tests only; keep the default otherwise).
        """
        self.path = path
        self.user_verification = user_verification
        self.algorithm = algorithm
        self.attestation = attestation
        self.aaguid = aaguid
        self._credentials: list[StoredCredential] = self._load()

    # ---- storage -------------------------------------------------------------------------------

    def _load(self) -> list[StoredCredential]:
        if self.path is None or not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [StoredCredential(**c) for c in data["credentials"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadParameter(
                f"cannot read the software authenticator file {self.path}: {exc}"
            ) from None

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"version": 1, "credentials": [asdict(c) for c in self._credentials]}
        write_private_file(self.path, json.dumps(data, indent=2))
        os.chmod(self.path, 0o600)

    @property
    def credentials(self) -> tuple[StoredCredential, ...]:
        return tuple(self._credentials)

    # ---- registration --------------------------------------------------------------------------

    def create(self, options: dict[str, Any], origin: str) -> dict[str, Any]:
        """``navigator.credentials.create()``: make a credential for the RP in ``options``.

        Raises:
            BadParameter: malformed options, no supported algorithm, UV required but this
                authenticator cannot verify users, or one of ``excludeCredentials`` is ours.
        """
        opts = _options(options)
        rp = opts.get("rp") or {}
        user = opts.get("user") or {}
        if not isinstance(rp, dict) or not isinstance(user, dict):
            raise BadParameter("WebAuthn options: rp and user must be objects")
        rp_id = str(rp.get("id") or urlsplit(origin).hostname or "")
        challenge = _b64(opts.get("challenge"), "challenge")
        selection = opts.get("authenticatorSelection") or {}
        self._check_uv(str(selection.get("userVerification", "preferred")))
        resident = bool(selection.get("requireResidentKey")) or selection.get("residentKey") in (
            "required",
            "preferred",
        )
        client_data = _client_data("webauthn.create", challenge, origin)
        cred_id, auth_data, fmt, stmt = self.make_credential(
            rp_id=rp_id,
            client_data_hash=hashlib.sha256(client_data).digest(),
            user_handle=_b64(user.get("id"), "user.id"),
            user_name=str(user.get("name", "")),
            algorithms=[
                p.get("alg") for p in opts.get("pubKeyCredParams") or [] if isinstance(p, dict)
            ],
            exclude=[
                _b64(c.get("id"), "excludeCredentials.id")
                for c in opts.get("excludeCredentials") or []
                if isinstance(c, dict)
            ],
            resident=resident,
            attestation=str(opts.get("attestation") or "none"),
        )
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": stmt, "authData": auth_data})
        return {
            "id": bytes_to_base64url(cred_id),
            "rawId": bytes_to_base64url(cred_id),
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {"credProps": {"rk": resident}},
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation_object),
                "transports": ["internal"],
            },
        }

    def make_credential(
        self,
        *,
        rp_id: str,
        client_data_hash: bytes,
        user_handle: bytes,
        user_name: str,
        algorithms: list[Any],
        exclude: list[bytes],
        resident: bool,
        attestation: str,
    ) -> tuple[bytes, bytes, str, dict[str, Any]]:
        """The authenticator half of registration (CTAP2 ``authenticatorMakeCredential``).

        Returns:
            (credential id, authenticator data, attestation format, attestation statement).
        """
        ours = {c.id for c in self._credentials if c.rp_id == rp_id}
        if any(bytes_to_base64url(e) in ours for e in exclude):
            raise BadParameter("this software authenticator is already registered for this account")
        alg = self._pick_alg(algorithms)
        private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if alg == ES256
            else ed25519.Ed25519PrivateKey.generate()
        )
        cred_id = secrets.token_bytes(32)
        attested = (
            self.aaguid.bytes + struct.pack(">H", len(cred_id)) + cred_id + _cose_key(private)
        )
        auth_data = self._auth_data(rp_id, 0, attested)
        fmt, stmt = self._attest(attestation, auth_data, client_data_hash)
        self._credentials.append(
            StoredCredential(
                id=bytes_to_base64url(cred_id),
                rp_id=rp_id,
                user_handle=bytes_to_base64url(user_handle),
                user_name=user_name,
                alg=alg,
                private_key=private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
                resident=resident,
                created=datetime.now(UTC).isoformat(),
            )
        )
        self._save()
        return cred_id, auth_data, fmt, stmt

    def _check_uv(self, requirement: str) -> None:
        if requirement == "required" and not self.user_verification:
            raise BadParameter(
                "the relying party requires user verification and this software "
                "authenticator was configured without it"
            )

    def _pick_alg(self, algorithms: list[Any]) -> int:
        offered = algorithms or [ES256]
        wanted = [_ALG_IDS[self.algorithm]] if self.algorithm else offered
        for alg in wanted:
            if alg in SUPPORTED_ALGS and alg in offered:
                return int(alg)
        raise BadParameter(
            "no common signature algorithm: the relying party offers "
            f"{offered}, this authenticator supports ES256 (-7) and EdDSA (-8)"
        )

    def _auth_data(self, rp_id: str, sign_count: int, attested: bytes = b"") -> bytes:
        flags = FLAG_UP | (FLAG_UV if self.user_verification else 0) | (FLAG_AT if attested else 0)
        return (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", sign_count)
            + attested
        )

    def _attest(
        self, conveyance: str, auth_data: bytes, client_data_hash: bytes
    ) -> tuple[str, dict[str, Any]]:
        if conveyance not in ("direct", "enterprise") or self.attestation is None:
            return "none", {}
        signed = auth_data + client_data_hash
        sig = self.attestation.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        x5c = [c.public_bytes(serialization.Encoding.DER) for c in self.attestation.chain]
        return "packed", {"alg": ES256, "sig": sig, "x5c": x5c}

    # ---- assertion -----------------------------------------------------------------------------

    def get_assertion(
        self, *, rp_id: str, client_data_hash: bytes, allow: list[bytes]
    ) -> tuple[StoredCredential, bytes, bytes]:
        """The authenticator half of an assertion (CTAP2 ``authenticatorGetAssertion``).

        Returns:
            (the credential used, authenticator data, signature).

        Raises:
            NotFound: no credential of this authenticator fits.
        """
        allowed = {bytes_to_base64url(a) for a in allow}
        if allowed:
            matches = [c for c in self._credentials if c.rp_id == rp_id and c.id in allowed]
        else:
            matches = [c for c in reversed(self._credentials) if c.rp_id == rp_id and c.resident]
        if not matches:
            kind = "registered" if allowed else "discoverable (passkey)"
            raise NotFound(
                f"the software authenticator has no {kind} credential for {rp_id!r}"
                + ("" if self.path is None else f" in {self.path}")
            )
        cred = matches[0]
        cred.sign_count += 1
        auth_data = self._auth_data(rp_id, cred.sign_count)
        signature = _sign(_load_key(cred.private_key), auth_data + client_data_hash)
        self._save()
        return cred, auth_data, signature

    def get(self, options: dict[str, Any], origin: str) -> dict[str, Any]:
        """``navigator.credentials.get()``: sign the RP's challenge with a matching credential.

        With ``allowCredentials`` the first listed credential we hold is used; without it (the
        passwordless case) the newest resident credential for the RP id.

        Raises:
            NotFound: no credential of this authenticator fits the request.
            BadParameter: malformed options, or UV required but unavailable.
        """
        opts = _options(options)
        rp_id = str(opts.get("rpId") or urlsplit(origin).hostname or "")
        challenge = _b64(opts.get("challenge"), "challenge")
        self._check_uv(str(opts.get("userVerification", "preferred")))
        allowed = [
            _b64(c.get("id"), "allowCredentials.id")
            for c in opts.get("allowCredentials") or []
            if isinstance(c, dict)
        ]
        client_data = _client_data("webauthn.get", challenge, origin)
        cred, auth_data, signature = self.get_assertion(
            rp_id=rp_id, client_data_hash=hashlib.sha256(client_data).digest(), allow=allowed
        )
        return {
            "id": cred.id,
            "rawId": cred.id,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": cred.user_handle if cred.resident else None,
            },
        }
