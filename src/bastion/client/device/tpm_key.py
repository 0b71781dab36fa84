"""Hardware-held user keys (``bsh login --key-store=tpm``): an ECDSA P-256 signing key that
lives in the device's TPM, certified by its attestation key, the key of both the SSH and the
X.509 certificate: it signs SSH authentications (here, :mod:`.tpm_ssh`, the agent) and TLS
handshakes (:mod:`.tpm_tls`).

Layer: client. The key is created under the TPM's storage root key (SRK: the TCG-style ECC
P-256 storage primary of the owner hierarchy, re-derived from the TPM's owner seed at each use)
with ``fixedTPM``, ``fixedParent`` and ``sensitiveDataOrigin``: its private part exists in the
clear only inside that TPM. bsh keeps only the TPM's *blob* (``key.tpm``: TPM2B_PUBLIC and the
TPM2B_PRIVATE wrapped by the SRK), which no other TPM can load and no program can read a key
from. At login the device's AK certifies the key with TPM2_Certify over SHA-256 of the login's
device challenge (:func:`bastion.auth.key_attest.certified_key_sha256` checks it).

The pure parts (blob format, SSH wire encodings) are tested in tests/unit; the TPM parts with a
real swtpm in tests/integration/test_hardware_keys.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.client.device.tpm import TPM
from bastion.errors import BadParameter

if TYPE_CHECKING:
    from bastion.client.ssh_agent import AgentCore

__all__ = [
    "KEY_FILE",
    "SSH_ECDSA",
    "TPMKey",
    "TPMKeyBlob",
    "create_key",
    "load_blob",
    "profile_agent_core",
    "public_pem",
    "qualifying_data",
    "save_blob",
    "ssh_ecdsa_signature",
    "ssh_public_line",
    "start_profile_agent",
    "tls_public_line",
    "tpm_for",
]

KEY_FILE = "key.tpm"
"""The blob's file name in a profile directory."""
SSH_ECDSA = "ecdsa-sha2-nistp256"
_BLOB_FORMAT = "bsh-tpm-key/1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def qualifying_data(challenge: str) -> bytes:
    """The TPM2_Certify ``qualifyingData`` for a login's device ``challenge`` (what auth
    expects: a TPM2B_DATA holds at most 64 bytes, a challenge token is longer)."""
    return hashlib.sha256(challenge.encode()).digest()


@dataclass(frozen=True, slots=True)
class TPMKeyBlob:
    """What bsh stores of a TPM-held key: useless without the TPM that wrapped it."""

    public: bytes
    """Marshalled TPM2B_PUBLIC."""
    private: bytes
    """Marshalled TPM2B_PRIVATE (encrypted and integrity-protected by the TPM's SRK)."""
    tcti: str = ""
    """The TPM it was created in (``BSH_TPM_TCTI`` overrides it)."""

    def dumps(self) -> str:
        return (
            json.dumps(
                {
                    "format": _BLOB_FORMAT,
                    "public": _b64(self.public),
                    "private": _b64(self.private),
                    "tcti": self.tcti,
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def loads(cls, text: str) -> TPMKeyBlob:
        """Raises: BadParameter (one line) when ``text`` is not a bsh TPM key blob."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != _BLOB_FORMAT:
                raise ValueError("format")
            public = base64.b64decode(str(data["public"]), validate=True)
            private = base64.b64decode(str(data["private"]), validate=True)
            tcti = str(data.get("tcti") or "")
        except (ValueError, KeyError, TypeError):
            raise BadParameter(
                f"not a bsh TPM key blob ({_BLOB_FORMAT}): run bsh login --key-store=tpm again"
            ) from None
        if not public or not private:
            raise BadParameter("the TPM key blob is empty: run bsh login --key-store=tpm again")
        return cls(public=public, private=private, tcti=tcti)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key's public half (from its TPM2B_PUBLIC)."""
        from tpm2_pytss.types import TPM2B_PUBLIC

        try:
            public, _ = TPM2B_PUBLIC.unmarshal(self.public)
            key = serialization.load_pem_public_key(bytes(public.to_pem()))
        except Exception:
            raise BadParameter("the TPM key blob holds no usable ECC public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise BadParameter("the TPM key blob is not an ECDSA P-256 key")
        return key


def save_blob(folder: Path, blob: TPMKeyBlob) -> Path:
    from bastion.files import write_private_file

    path = folder / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, blob.dumps())
    return path


def load_blob(folder: Path) -> TPMKeyBlob | None:
    """The blob in ``folder`` (None: there is none)."""
    try:
        text = (folder / KEY_FILE).read_text()
    except FileNotFoundError:
        return None
    return TPMKeyBlob.loads(text)


def ssh_public_line(key: ec.EllipticCurvePublicKey, comment: str = "") -> str:
    line = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return f"{line} {comment}".rstrip()


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(value: int) -> bytes:
    if value == 0:
        return _string(b"")
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")  # a leading 0 when the top bit
    return _string(raw)


def ssh_ecdsa_signature(r: int, s: int) -> bytes:
    """The SSH signature blob (RFC 5656 §3.1.2) of an ECDSA P-256 signature ``(r, s)``."""
    return _string(SSH_ECDSA.encode()) + _string(_mpint(r) + _mpint(s))


# ---- the TPM -------------------------------------------------------------------------------


def _attrs(*, storage: bool) -> object:
    from tpm2_pytss.constants import TPMA_OBJECT

    base = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    if storage:
        return base | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.NODA
    return base | TPMA_OBJECT.SIGN_ENCRYPT


def _srk(esapi: object) -> object:
    from tpm2_pytss import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE
    from tpm2_pytss.constants import ESYS_TR

    template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=_attrs(storage=True))
    handle, _, _, _, _ = esapi.create_primary(  # type: ignore[attr-defined]
        TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER
    )
    return handle


def create_key(tpm: TPM) -> TPMKeyBlob:
    """A new non-exportable ECDSA P-256 signing key in ``tpm``; returns its blob."""
    from tpm2_pytss import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE
    from tpm2_pytss.constants import TPM2_ALG

    template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=_attrs(storage=False))
    template.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    with tpm._esapi() as esapi:
        srk = _srk(esapi)
        try:
            private, public, _, _, _ = esapi.create(srk, TPM2B_SENSITIVE_CREATE(), template)  # type: ignore[attr-defined]
        finally:
            esapi.flush_context(srk)  # type: ignore[attr-defined]
    return TPMKeyBlob(
        public=bytes(public.marshal()), private=bytes(private.marshal()), tcti=tpm.tcti
    )


class TPMKey:
    """A TPM-held key in use: each operation opens the TPM, re-derives the SRK, loads the
    blob, and flushes everything again (the TPM keeps no state of ours between calls)."""

    def __init__(self, tpm: TPM, blob: TPMKeyBlob) -> None:
        self.tpm = tpm
        self.blob = blob
        self.public_key = blob.public_key()

    def _load(self, esapi: object) -> tuple[object, object]:
        from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC

        srk = _srk(esapi)
        try:
            public, _ = TPM2B_PUBLIC.unmarshal(self.blob.public)
            private, _ = TPM2B_PRIVATE.unmarshal(self.blob.private)
            handle = esapi.load(srk, private, public)  # type: ignore[attr-defined]
        except Exception as exc:
            esapi.flush_context(srk)  # type: ignore[attr-defined]
            raise BadParameter(
                f"this TPM cannot load the key in {KEY_FILE} (created by another TPM?): {exc}; "
                "run bsh login --key-store=tpm on this machine"
            ) from None
        return srk, handle

    def sign_digest(self, digest: bytes) -> tuple[int, int]:
        """ECDSA signature ``(r, s)`` of a SHA-256 ``digest`` by the TPM."""
        from tpm2_pytss import TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK
        from tpm2_pytss.constants import TPM2_ALG, TPM2_RH, TPM2_ST

        scheme = TPMT_SIG_SCHEME(
            scheme=TPM2_ALG.ECDSA, details={"any": {"hashAlg": TPM2_ALG.SHA256}}
        )
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        with self.tpm._esapi() as esapi:
            srk, key = self._load(esapi)
            try:
                signature = esapi.sign(key, digest, scheme, ticket)  # type: ignore[attr-defined]
            finally:
                esapi.flush_context(key)  # type: ignore[attr-defined]
                esapi.flush_context(srk)  # type: ignore[attr-defined]
        ecdsa = signature.signature.ecdsa
        return int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(
            bytes(ecdsa.signatureS), "big"
        )

    def ssh_sign(self, data: bytes) -> bytes:
        """The SSH signature blob of ``data`` (``ecdsa-sha2-nistp256``: SHA-256)."""
        return ssh_ecdsa_signature(*self.sign_digest(hashlib.sha256(data).digest()))

    def certify(self, ak_unique: bytes, qualifying: bytes) -> tuple[str, str, str]:
        """TPM2_Certify of this key by the device's AK (derived from ``ak_unique``, see
        :class:`~bastion.client.device.tpm.TPM`) over ``qualifying``: (key_public, attest,
        signature), base64, as ``KeyCertification`` sends them."""
        from tpm2_pytss import TPM2B_DATA, TPMT_SIG_SCHEME
        from tpm2_pytss.constants import TPM2_ALG

        with self.tpm._esapi() as esapi:
            ak, _ = self.tpm._ak(esapi, ak_unique)
            try:
                srk, key = self._load(esapi)
                try:
                    attest, signature = esapi.certify(  # type: ignore[attr-defined]
                        key, ak, TPM2B_DATA(qualifying), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                    )
                finally:
                    esapi.flush_context(key)  # type: ignore[attr-defined]
                    esapi.flush_context(srk)  # type: ignore[attr-defined]
            finally:
                esapi.flush_context(ak)  # type: ignore[attr-defined]
        return _b64(self.blob.public), _b64(bytes(attest)), _b64(bytes(signature.marshal()))


# ---- the profile's agent -------------------------------------------------------------------


def _blob_of_line(line: str) -> bytes:
    fields = line.split()
    if len(fields) < 2:
        raise BadParameter("not an OpenSSH public key line")
    try:
        return base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise BadParameter("not an OpenSSH public key line") from None


def tls_public_line(folder: Path) -> str:
    """The OpenSSH line of the key of a ``--key-store=tpm`` profile's X.509 certificate: the
    TPM-held key (``key.tpm``), which signs TLS handshakes through
    :mod:`bastion.client.device.tpm_tls`; in a profile written before that, its software
    ``tls.key``. Per-session MFA certificates are issued for it, SSH and TLS alike.

    Raises:
        NotFound: neither file is there.
    """
    from bastion.errors import NotFound

    if (folder / "tls.key").exists():
        key = serialization.load_pem_private_key((folder / "tls.key").read_bytes(), None)
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
    blob = load_blob(folder)
    if blob is None:
        raise NotFound(f"no TPM-held key in {folder}: run bsh login --key-store=tpm")
    return ssh_public_line(blob.public_key())


def public_pem(folder: Path) -> str:
    """The PEM SubjectPublicKeyInfo of the TPM-held key in ``folder``: what ``bsh db login``
    and ``bsh apps login`` ask a certificate for in a ``--key-store=tpm`` profile.

    Raises:
        NotFound: there is no ``key.tpm``.
        BadParameter: it is unusable.
    """
    from bastion.errors import NotFound

    blob = load_blob(folder)
    if blob is None:
        raise NotFound(f"no TPM-held key in {folder}: run bsh login --key-store=tpm")
    return (
        blob.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def tpm_for(blob: TPMKeyBlob) -> TPM:
    """The TPM of ``blob``: ``BSH_TPM_TCTI`` when set, else the one it was created in."""
    import os

    from bastion.client.device.tpm import TCTI_ENV, tcti_from_env

    return TPM(os.environ.get(TCTI_ENV) or blob.tcti or tcti_from_env())


def profile_agent_core(folder: Path) -> AgentCore:
    """The agent of a ``--key-store=tpm`` profile: it offers the SSH certificate
    (``key-cert.pub``) and the key (``key.pub``), and signs with the TPM key.

    Raises:
        BadParameter / NotFound: no TPM key in ``folder``, or its files are unusable.
    """
    from bastion.client.ssh_agent import AgentCore, Identity
    from bastion.errors import NotFound

    blob = load_blob(folder)
    if blob is None:
        raise NotFound(f"no TPM-held key in {folder}: run bsh login --key-store=tpm")
    key = TPMKey(tpm_for(blob), blob)
    identities = []
    cert = folder / "key-cert.pub"
    if cert.exists():
        identities.append(Identity(_blob_of_line(cert.read_text()), "bsh TPM key certificate"))
    identities.append(Identity(_blob_of_line(ssh_public_line(key.public_key)), "bsh TPM key"))
    return AgentCore(identities, key.ssh_sign)


def start_profile_agent(folder: Path) -> str:
    """Serve the profile's agent from a child process for as long as this process (which then
    ``exec``s OpenSSH) lives; returns the socket path for ``IdentityAgent``."""
    import shutil
    import tempfile

    from bastion.client.ssh_agent import fork_agent

    profile_agent_core(folder)  # fails here, in the caller, when the key is unusable
    private = Path(tempfile.mkdtemp(prefix="bsh-agent-"))  # 0700: only we reach the socket
    path = private / "agent.sock"

    def core() -> AgentCore:
        return profile_agent_core(folder)

    fork_agent(path, core, cleanup=lambda: shutil.rmtree(private, ignore_errors=True))
    return str(path)
