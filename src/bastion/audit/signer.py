"""The checkpoint signing key: an Ed25519 key kept with the CA keys, sealed under the KEK.

Layer: audit (thin IO over the backend). One record, ``audit/signer``, holds the key name (the
log's origin), the public key and the private key sealed with AES-256-GCM under the auth
service's key-encryption key, exactly as :mod:`bastion.ca.keys` seals CA keys (the AAD binds the
ciphertext to this purpose, cluster and key id). It is created once, by whichever auth server
gets there first (conditional create), and never rotated silently.

Someone who can write the backend but does not hold the KEK cannot swap in their own key:
:func:`load_signer` unseals the private key and checks it matches the public key, and verifiers
can pin the verifier key (``bctl audit key``) and compare the external witness copy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.note import NoteVerifier, parse_verifier_key, sign_note, verifier_key
from bastion.backend.base import Backend, Item
from bastion.ca.keys import seal_private_key, unseal_private_key
from bastion.clock import Clock
from bastion.errors import AlreadyExists, BadParameter, NotFound

__all__ = ["SIGNER_KEY", "CheckpointSigner", "load_or_create_signer", "load_verifier", "origin_of"]

SIGNER_KEY = "audit/signer"


def origin_of(cluster: str) -> str:
    """The log's origin line and key name: ``<cluster>/audit`` (no spaces or '+')."""
    return re.sub(r"[\s+]", "-", cluster or "bastion") + "/audit"


def _aad(name: str, vkey: str) -> str:
    return f"bastion-audit-checkpoint:{name}:{vkey.split('+')[1]}"


@dataclass(frozen=True, slots=True)
class CheckpointSigner:
    name: str
    key: Ed25519PrivateKey

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.name, self.key.public_key())

    def verifier(self) -> NoteVerifier:
        return parse_verifier_key(self.verifier_key)

    def sign(self, text: str) -> str:
        return sign_note(text, self.name, self.key)


async def _read(backend: Backend) -> dict[str, str]:
    item = await backend.get(SIGNER_KEY)
    try:
        record = json.loads(item.value)
        return {k: str(record[k]) for k in ("name", "verifier_key", "private_key_encrypted")}
    except (ValueError, KeyError, TypeError):
        raise BadParameter(f"the checkpoint key record {SIGNER_KEY} is corrupt") from None


async def load_or_create_signer(
    backend: Backend, kek: bytes, cluster: str, clock: Clock
) -> CheckpointSigner:
    """The cluster's checkpoint signer, created on first use.

    Raises:
        BadParameter: the stored record is corrupt, does not unseal under this KEK, or its
            private key does not match its public key (the record was replaced).
    """
    try:
        return await load_signer(backend, kek)
    except NotFound:
        pass
    name = origin_of(cluster)
    key = Ed25519PrivateKey.generate()
    vkey = verifier_key(name, key.public_key())
    record = {
        "name": name,
        "verifier_key": vkey,
        "private_key_encrypted": seal_private_key(key, kek, _aad(name, vkey)),
        "created": clock.now().isoformat(),
    }
    try:
        await backend.create(Item(SIGNER_KEY, json.dumps(record).encode()))
    except AlreadyExists:
        pass  # another auth server created it first: use theirs
    return await load_signer(backend, kek)


async def load_signer(backend: Backend, kek: bytes) -> CheckpointSigner:
    """Load and check the stored signer.

    Raises:
        NotFound: no signer yet.
        BadParameter: see :func:`load_or_create_signer`.
    """
    record = await _read(backend)
    key = unseal_private_key(
        record["private_key_encrypted"], kek, _aad(record["name"], record["verifier_key"])
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise BadParameter("the checkpoint key is not an Ed25519 key")
    signer = CheckpointSigner(record["name"], key)
    if signer.verifier_key != record["verifier_key"]:
        raise BadParameter(
            "the checkpoint key record was altered: its private key does not match its public key"
        )
    return signer


async def load_verifier(backend: Backend, kek: bytes | None) -> NoteVerifier:
    """The verifier for stored checkpoints; with the KEK, the record is checked end to end.

    Raises:
        NotFound: no signer (no checkpoint was ever made).
        BadParameter: the record is corrupt or was altered.
    """
    if kek is not None:
        return (await load_signer(backend, kek)).verifier()
    return parse_verifier_key((await _read(backend))["verifier_key"])
