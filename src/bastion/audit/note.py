"""C2SP signed notes and tlog checkpoints (https://c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

Layer: audit (pure; ``cryptography`` Ed25519, no IO). A checkpoint is the note text::

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n[extension lines]

signed as a note: the text, a blank line, then one line per signature,
``— <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>`` (U+2014 em dash).
The signature covers the text including its final newline. The key id is
``SHA-256(key name || 0x0A || 0x01 || public key)[:4]`` (0x01 = the Ed25519 signature type), and
a verifier key is shared as ``<name>+<hex key id>+<base64(0x01 || public key)>``, the format of
golang.org/x/mod/sumdb/note, so Go tooling and witnesses can check our checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.errors import BadParameter

__all__ = [
    "Checkpoint",
    "NoteVerifier",
    "format_checkpoint",
    "key_id",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "sign_note",
    "verifier_key",
]

ED25519 = b"\x01"
DASH = "\u2014 "
MAX_NOTE = 1 << 20
MAX_SIGNATURES = 100


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    name: str
    key_id: bytes
    key: Ed25519PublicKey


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise BadParameter(f"invalid note key name {name!r}: no spaces or '+' allowed")


def key_id(name: str, key: Ed25519PublicKey) -> bytes:
    """The 4-byte key id of an Ed25519 note key (C2SP signed-note)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + _raw(key)).digest()[:4]


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """``<name>+<hex key id>+<base64(0x01 || key)>`` (the sumdb/note verifier key text)."""
    _check_name(name)
    encoded = base64.b64encode(ED25519 + _raw(key)).decode()
    return f"{name}+{key_id(name, key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> NoteVerifier:
    """Parse a verifier key.

    Raises:
        BadParameter: malformed, not Ed25519, or a key id that does not match the key.
    """
    parts = text.strip().split("+", 2)  # the base64 key may itself contain "+"
    if len(parts) != 3:
        raise BadParameter("a verifier key looks like NAME+KEYID+BASE64KEY")
    name, hex_id, b64 = parts
    _check_name(name)
    try:
        raw = base64.b64decode(b64, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise BadParameter("verifier key: bad hex key id or base64 key") from None
    if len(raw) != 33 or raw[:1] != ED25519:
        raise BadParameter("verifier key: only Ed25519 (type 0x01) keys are supported")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if not hmac.compare_digest(key_id(name, key), wanted):
        raise BadParameter("verifier key: the key id does not match the key")
    return NoteVerifier(name, wanted, key)


def format_checkpoint(cp: Checkpoint) -> str:
    """The checkpoint note text (ends in a newline)."""
    if not cp.origin or "\n" in cp.origin or cp.size < 0 or len(cp.root) != 32:
        raise BadParameter("checkpoint: origin must be one line, size >= 0, root 32 bytes")
    lines = [cp.origin, str(cp.size), base64.b64encode(cp.root).decode(), *cp.extensions]
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (the part the signatures cover).

    Raises:
        BadParameter: not a checkpoint.
    """
    if not text.endswith("\n"):
        raise BadParameter("checkpoint: the text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[0]:
        raise BadParameter("checkpoint: expected origin, tree size and root hash lines")
    origin, size_text, root_text, *ext = lines
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise BadParameter(f"checkpoint: bad tree size {size_text!r}")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise BadParameter("checkpoint: the root hash is not base64") from None
    if len(root) != 32 or any(not line for line in ext):
        raise BadParameter("checkpoint: bad root hash length or an empty extension line")
    return Checkpoint(origin, int(size_text), root, tuple(ext))


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (ending in a newline) as a one-signature note."""
    _check_name(name)
    if not text.endswith("\n") or "\n\n" in text:
        raise BadParameter("note text must end in a newline and hold no blank line")
    sig = key.sign(text.encode())
    blob = base64.b64encode(key_id(name, key.public_key()) + sig).decode()
    return f"{text}\n{DASH}{name} {blob}\n"


def open_note(note: str, verifier: NoteVerifier) -> str:
    """Verify ``note`` with ``verifier`` and return its text.

    Signatures from other keys are ignored (a witness may cosign); the verifier's own
    signature must be present and valid.

    Raises:
        BadParameter: malformed note, no signature by this key, or an invalid signature.
    """
    if len(note) > MAX_NOTE or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise BadParameter("note: too large or holds control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise BadParameter("note: expected text, a blank line and signature lines")
    text, sig_lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise BadParameter("note: too many signatures")
    for line in sig_lines:
        if not line.startswith(DASH):
            raise BadParameter(f"note: malformed signature line {line[:40]!r}")
        name, _, b64 = line[len(DASH) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise BadParameter("note: a signature is not base64") from None
        if len(blob) < 5:
            raise BadParameter("note: a signature is too short")
        if name != verifier.name or not hmac.compare_digest(blob[:4], verifier.key_id):
            continue
        try:
            verifier.key.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise BadParameter(f"note: the signature of {name} does not verify") from None
        return text
    raise BadParameter(f"note: no signature by {verifier.name} (key {verifier.key_id.hex()})")
