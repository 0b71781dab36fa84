"""Canonical JSON of an audit event: the exact bytes stored and hashed as the Merkle leaf.

Layer: audit (pure). The encoding follows RFC 8785 (JCS) in spirit: object keys sorted, no
insignificant whitespace, UTF-8 without ``\\u`` escapes for non-ASCII text, times in UTC ISO 8601
as pydantic renders them (``2026-11-24T23:15:49.123456Z``). Event fields hold strings, integers,
booleans, lists and objects; floats (which JCS formats differently from Python) are not used by
any event type. Anyone can recompute a leaf from an exported event with :func:`encode`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from bastion.errors import BadParameter
from bastion.types.audit import AuditEvent

__all__ = ["decode", "encode", "encode_obj"]


def encode_obj(obj: Any) -> bytes:
    """Canonical JSON bytes of a JSON-compatible value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(event: AuditEvent) -> bytes:
    """The canonical bytes of ``event`` (the leaf data of the Merkle tree)."""
    return encode_obj(event.model_dump(mode="json"))


def decode(data: bytes) -> AuditEvent:
    """Parse stored event bytes.

    Raises:
        BadParameter: not a valid audit event.
    """
    try:
        return AuditEvent.model_validate_json(data)
    except ValidationError as exc:
        raise BadParameter(f"not a valid audit event: {exc.errors()[0]['msg']}") from None
