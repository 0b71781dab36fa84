"""CA rotation as a pure transition table.

Layer: pure (a CertAuthority in, a new CertAuthority out; the caller stores it with
compare-and-swap and decides when clients have caught up). The phases::

    standby ──init──▶ init ──update──▶ update ──standby──▶ standby
                       │                  │
                       └──rollback────────┴──▶ standby (old key signs, new key dropped)

* ``init``: the new key is generated and *trusted* (``additional_trusted_keys``) everywhere, but
  the old key still signs, so every party learns the new anchor before it is used.
* ``update``: the new key signs; the old key moves to ``additional_trusted_keys`` and stays
  trusted, so certificates issued before the switch keep working until they expire.
* ``standby``: the old key is dropped; rotation is complete.
* ``rollback`` (a target, from ``init`` or ``update``): the old key signs again and the new key
  is dropped; the CA returns to ``standby``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bastion.errors import BadParameter
from bastion.types.authority import CAKeyPair, CertAuthority, Rotation, RotationPhase

__all__ = ["LEGAL_TRANSITIONS", "next_phase"]

LEGAL_TRANSITIONS: Mapping[RotationPhase, tuple[RotationPhase, ...]] = {
    "standby": ("init",),
    "init": ("update", "rollback"),
    "update": ("standby", "rollback"),
    "rollback": ("init",),
}
"""Current phase -> targets :func:`next_phase` accepts. A stored ``rollback`` phase only comes
from older data; rolling back returns the CA to ``standby``."""


def _with(
    ca: CertAuthority,
    active: list[CAKeyPair],
    trusted: list[CAKeyPair],
    rotation: Rotation,
) -> CertAuthority:
    spec = ca.spec.model_copy(
        update={
            "active_keys": [k.model_copy() for k in active],
            "additional_trusted_keys": [k.model_copy() for k in trusted],
            "rotation": rotation,
        }
    )
    return ca.model_copy(update={"spec": spec}, deep=True)


def _start(ca: CertAuthority, new_keypair: CAKeyPair | None, now: datetime) -> CertAuthority:
    if new_keypair is None:
        raise BadParameter("starting a rotation (init) needs the new key pair")
    if any(k.id == new_keypair.id for k in ca.spec.trusted_keys()):
        raise BadParameter(f"key {new_keypair.id} is already trusted by this CA")
    if not new_keypair.private_key_encrypted:
        raise BadParameter("the new key pair has no private key: it could never sign")
    return _with(
        ca,
        ca.spec.active_keys,
        [new_keypair],
        Rotation(phase="init", started=now, last_completed=ca.spec.rotation.last_completed),
    )


def _rollback(ca: CertAuthority, phase: RotationPhase, now: datetime) -> CertAuthority:
    # in init the old key is still active; in update it waits in additional_trusted_keys
    old = ca.spec.active_keys if phase == "init" else ca.spec.additional_trusted_keys
    return _with(ca, old, [], Rotation(phase="standby", last_completed=now))


def next_phase(
    ca: CertAuthority,
    target_phase: RotationPhase,
    new_keypair: CAKeyPair | None,
    now: datetime,
) -> CertAuthority:
    """Move a CA one step through rotation.

    Args:
        ca: the current resource (not modified).
        target_phase: ``init``, ``update``, ``standby`` or ``rollback``.
        new_keypair: the freshly generated key pair when the target is ``init``; None otherwise.
        now: the current time (from a Clock), recorded as the start or completion time.

    Returns:
        A new CertAuthority in the target phase (``standby`` after a rollback).

    Raises:
        BadParameter: an illegal transition (the message lists the legal targets), a missing
            or unexpected new key pair, or a CA whose key lists do not fit its phase.
    """
    phase = ca.spec.rotation.phase
    legal = LEGAL_TRANSITIONS[phase]
    if target_phase not in legal:
        raise BadParameter(
            f"cannot rotate CA {ca.name} from {phase!r} to {target_phase!r}: "
            f"legal targets from {phase!r} are {', '.join(repr(t) for t in legal)}"
        )
    if target_phase != "init" and new_keypair is not None:
        raise BadParameter(
            f"a new key pair is only accepted when moving to 'init', not {target_phase!r}"
        )
    if target_phase == "init":
        return _start(ca, new_keypair, now)
    if len(ca.spec.active_keys) != 1 or len(ca.spec.additional_trusted_keys) != 1:
        raise BadParameter(
            f"CA {ca.name} in phase {phase!r} must have one active and one additional key"
        )
    if target_phase == "rollback":
        return _rollback(ca, phase, now)
    if target_phase == "update":
        return _with(
            ca,
            ca.spec.additional_trusted_keys,
            ca.spec.active_keys,
            ca.spec.rotation.model_copy(update={"phase": "update"}),
        )
    # update -> standby: drop the old key
    return _with(
        ca,
        ca.spec.active_keys,
        [],
        Rotation(phase="standby", last_completed=now),
    )
