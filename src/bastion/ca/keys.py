"""CA key material: generation, public-key encodings, ids, pins and encryption at rest.

Layer: pure helpers over ``cryptography`` (the only file IO is :func:`load_or_create_kek`). This
module knows nothing about certificates or CA resources; :mod:`bastion.ca.authority` builds those.

Private keys are stored as PKCS#8 DER sealed with AES-256-GCM under a key-encryption key (KEK).
The additional authenticated data (AAD) names the CA and key id, so a ciphertext copied from one
CA record to another fails to decrypt instead of silently signing for the wrong purpose
(ARCHITECTURE.md section 6, principle 4).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.errors import BadParameter
from bastion.types.authority import KeyAlgorithm

__all__ = [
    "KEK_SIZE",
    "PrivateKey",
    "PublicKey",
    "algorithm_of",
    "generate_private_key",
    "key_id",
    "load_or_create_kek",
    "load_public_key",
    "private_key_from_pem",
    "private_key_to_pem",
    "public_key_to_openssh",
    "public_key_to_pem",
    "seal_private_key",
    "spki_pin",
    "unseal_private_key",
]

PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The private key types a Bastion CA (or a certificate subject) may use."""
PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
"""The public key types a Bastion CA (or a certificate subject) may use."""

KEK_SIZE = 32
"""Bytes in a key-encryption key (AES-256)."""
_SEAL_PREFIX = "bastion-aesgcm-v1:"
_NONCE_SIZE = 12
_RSA_BITS = 3072


def generate_private_key(algorithm: KeyAlgorithm = "ed25519") -> PrivateKey:
    """Generate a fresh private key.

    Args:
        algorithm: ``"ed25519"`` (default), ``"ecdsa-p256"`` or ``"rsa-3072"``.

    Returns:
        The new private key.

    Raises:
        BadParameter: unknown algorithm.
    """
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    raise BadParameter(f"unknown key algorithm {algorithm!r}: use ed25519, ecdsa-p256 or rsa-3072")


def algorithm_of(key: PrivateKey | PublicKey) -> KeyAlgorithm:
    """Name the algorithm of a key.

    Args:
        key: a private or public key.

    Returns:
        The :data:`KeyAlgorithm` name.

    Raises:
        BadParameter: a key type or size Bastion does not use (e.g. P-384, RSA-2048).
    """
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256"
        raise BadParameter(f"unsupported elliptic curve {key.curve.name}: use P-256")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size == _RSA_BITS:
            return "rsa-3072"
        raise BadParameter(f"unsupported RSA key size {key.key_size}: use 3072 bits")
    raise BadParameter(f"unsupported key type {type(key).__name__}")


def _spki_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_to_openssh(public_key: PublicKey, comment: str = "") -> str:
    """Encode a public key as one OpenSSH line (``ssh-ed25519 AAAA... comment``).

    Args:
        public_key: the key.
        comment: optional trailing comment (no newlines).

    Returns:
        The line, without a trailing newline.
    """
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    comment = comment.replace("\n", " ").strip()
    return f"{line} {comment}" if comment else line


def public_key_to_pem(public_key: PublicKey) -> str:
    """Encode a public key as PEM SubjectPublicKeyInfo.

    Args:
        public_key: the key.

    Returns:
        ``-----BEGIN PUBLIC KEY-----`` text.
    """
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(text: str | bytes) -> PublicKey:
    """Load a public key from an OpenSSH line or PEM SubjectPublicKeyInfo.

    Args:
        text: the encoded key.

    Returns:
        The public key.

    Raises:
        BadParameter: not a key, or a type Bastion does not use.
    """
    raw = text.encode() if isinstance(text, str) else text
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
        else:
            key = serialization.load_ssh_public_key(raw.strip())
    except (ValueError, TypeError) as exc:
        raise BadParameter(f"cannot read public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise BadParameter(f"unsupported public key type {type(key).__name__}")
    algorithm_of(key)
    return key


def private_key_to_pem(key: PrivateKey) -> str:
    """Encode a private key as unencrypted PKCS#8 PEM (for tests and local client files).

    Args:
        key: the private key.

    Returns:
        ``-----BEGIN PRIVATE KEY-----`` text.
    """
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def private_key_from_pem(text: str | bytes) -> PrivateKey:
    """Load an unencrypted PKCS#8/PEM private key.

    Args:
        text: PEM text.

    Returns:
        The private key.

    Raises:
        BadParameter: not a private key, encrypted, or of a type Bastion does not use.
    """
    raw = text.encode() if isinstance(text, str) else text
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise BadParameter(f"cannot read private key: {exc}") from exc
    return _check_private(key)


def _check_private(key: object) -> PrivateKey:
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise BadParameter(f"unsupported private key type {type(key).__name__}")
    algorithm_of(key)
    return key


def key_id(public_key: PublicKey) -> str:
    """Stable id of a key: the first 16 hex digits of SHA-256 over its SPKI DER.

    Args:
        public_key: the key.

    Returns:
        16 lowercase hex digits.
    """
    return hashlib.sha256(_spki_der(public_key)).hexdigest()[:16]


def spki_pin(public_key: PublicKey) -> str:
    """The SPKI pin used by ``bsh --ca-pin``: ``sha256:<hex of SHA-256 over SPKI DER>``.

    Args:
        public_key: the CA public key.

    Returns:
        The pin string.
    """
    return "sha256:" + hashlib.sha256(_spki_der(public_key)).hexdigest()


def _check_kek(kek: bytes) -> None:
    if len(kek) != KEK_SIZE:
        raise BadParameter(f"key-encryption key must be {KEK_SIZE} bytes, got {len(kek)}")


def seal_private_key(key: PrivateKey, kek: bytes, aad: str) -> str:
    """Encrypt a private key for storage with AES-256-GCM.

    Args:
        key: the private key.
        kek: 32-byte key-encryption key.
        aad: context the ciphertext is bound to (CA type and key id); the same string is
            needed to decrypt.

    Returns:
        ``bastion-aesgcm-v1:<base64(nonce || ciphertext || tag)>``.

    Raises:
        BadParameter: the KEK is not 32 bytes.
    """
    _check_kek(kek)
    plaintext = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(_NONCE_SIZE)
    sealed = AESGCM(kek).encrypt(nonce, plaintext, aad.encode())
    return _SEAL_PREFIX + base64.b64encode(nonce + sealed).decode()


def unseal_private_key(text: str, kek: bytes, aad: str) -> PrivateKey:
    """Decrypt a private key sealed by :func:`seal_private_key`.

    Args:
        text: the sealed text.
        kek: the 32-byte key-encryption key it was sealed with.
        aad: the context string it was sealed with.

    Returns:
        The private key.

    Raises:
        BadParameter: malformed text, or wrong KEK / wrong AAD (the two cannot be told apart).
    """
    _check_kek(kek)
    if not text.startswith(_SEAL_PREFIX):
        raise BadParameter("cannot decrypt CA key: unknown encryption format")
    try:
        raw = base64.b64decode(text[len(_SEAL_PREFIX) :], validate=True)
    except ValueError as exc:
        raise BadParameter("cannot decrypt CA key: malformed ciphertext") from exc
    if len(raw) < _NONCE_SIZE + 16:
        raise BadParameter("cannot decrypt CA key: ciphertext too short")
    try:
        der = AESGCM(kek).decrypt(raw[:_NONCE_SIZE], raw[_NONCE_SIZE:], aad.encode())
    except InvalidTag as exc:
        raise BadParameter(
            "cannot decrypt CA key: wrong key-encryption key (or the key record was moved)"
        ) from exc
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise BadParameter(f"cannot decrypt CA key: not a private key: {exc}") from exc
    return _check_private(key)


def load_or_create_kek(path: str | os.PathLike[str]) -> bytes:
    """Read the key-encryption key, creating it (32 random bytes, mode 0600) if absent.

    Creation is atomic: the key is written to a private temporary file in the same directory
    and hard-linked into place, so two processes racing end up with the same key and no reader
    ever sees a partial file.

    Args:
        path: file holding the raw 32 bytes.

    Returns:
        The KEK.

    Raises:
        BadParameter: the existing file has the wrong size or is readable by others.
    """
    target = Path(path)
    if not target.exists():
        _create_kek(target)
    st = target.stat()
    if st.st_mode & 0o077:
        raise BadParameter(
            f"key-encryption key {target} is accessible by other users: run chmod 600 {target}"
        )
    kek = target.read_bytes()
    if len(kek) != KEK_SIZE:
        raise BadParameter(
            f"key-encryption key {target} must hold {KEK_SIZE} bytes, found {len(kek)}"
        )
    return kek


def _create_kek(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(KEK_SIZE))
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if the target exists: the first writer wins, losers read its key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
