"""Tests for bastion.ca.rotation: the transition table, and what verifies in each phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.ca.authority import new_cert_authority, new_keypair, signing_key, trusted_public_keys
from bastion.ca.rotation import LEGAL_TRANSITIONS, next_phase
from bastion.ca.sshcert import parse_ssh_certificate, ssh_user_certificate, verify_ssh_certificate
from bastion.clock import FakeClock
from bastion.errors import AccessDenied, BadParameter
from bastion.types.authority import CAKeyPair, CertAuthority, RotationPhase
from bastion.types.identity import Identity

KEK = b"k" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def ca(clock: FakeClock) -> CertAuthority:
    return new_cert_authority("ssh_user", "example", "ed25519", KEK, clock)


def fresh_key(clock: FakeClock) -> CAKeyPair:
    return new_keypair("ssh_user", "example", "ed25519", KEK, clock.now())


def ids(keys: list[CAKeyPair]) -> list[str]:
    return [k.id for k in keys]


def issue(ca: CertAuthority, now: datetime) -> bytes:
    identity = Identity(
        cluster="example", user="alice", logins=("alice",), expires=now + timedelta(hours=1)
    )
    key = signing_key(ca, KEK)
    return ssh_user_certificate(key, key.public_key(), identity, serial=1, valid_after=now)


def verifies(blob: bytes, ca: CertAuthority, now: datetime) -> bool:
    try:
        verify_ssh_certificate(
            parse_ssh_certificate(blob), trusted_public_keys(ca), now, cert_type="user"
        )
    except AccessDenied:
        return False
    return True


def test_full_rotation(ca: CertAuthority, clock: FakeClock) -> None:
    old = ca.spec.active_keys[0]
    old_cert = issue(ca, clock.now())
    new = new_keypair("ssh_user", "example", "ed25519", KEK, clock.now())

    init = next_phase(ca, "init", new, clock.now())
    assert init.spec.rotation.phase == "init"
    assert init.spec.rotation.started == START
    assert ids(init.spec.active_keys) == [old.id]
    assert ids(init.spec.additional_trusted_keys) == [new.id]
    assert signing_key(init, KEK).public_key() == signing_key(ca, KEK).public_key()
    assert ca.spec.rotation.phase == "standby"  # the input is untouched

    clock.advance(60)
    update = next_phase(init, "update", None, clock.now())
    assert ids(update.spec.active_keys) == [new.id]
    assert ids(update.spec.additional_trusted_keys) == [old.id]
    new_cert = issue(update, clock.now())
    assert verifies(old_cert, update, clock.now())  # issued before the switch: still trusted
    assert verifies(new_cert, update, clock.now())

    clock.advance(60)
    done = next_phase(update, "standby", None, clock.now())
    assert done.spec.rotation.phase == "standby"
    assert done.spec.rotation.last_completed == clock.now()
    assert ids(done.spec.active_keys) == [new.id]
    assert done.spec.additional_trusted_keys == []
    assert not verifies(old_cert, done, clock.now())
    assert verifies(new_cert, done, clock.now())


@pytest.mark.parametrize("from_phase", ["init", "update"])
def test_rollback(ca: CertAuthority, clock: FakeClock, from_phase: RotationPhase) -> None:
    old = ca.spec.active_keys[0]
    rotated = next_phase(ca, "init", fresh_key(clock), clock.now())
    if from_phase == "update":
        rotated = next_phase(rotated, "update", None, clock.now())
    back = next_phase(rotated, "rollback", None, clock.now())
    assert back.spec.rotation.phase == "standby"
    assert ids(back.spec.active_keys) == [old.id]
    assert back.spec.additional_trusted_keys == []
    assert signing_key(back, KEK).public_key() == signing_key(ca, KEK).public_key()
    # a new rotation can start again
    assert next_phase(back, "init", fresh_key(clock), clock.now()).spec.rotation.phase == "init"


def _in_phase(ca: CertAuthority, phase: RotationPhase, clock: FakeClock) -> CertAuthority:
    if phase == "standby":
        return ca
    current = next_phase(ca, "init", fresh_key(clock), clock.now())
    if phase == "update":
        current = next_phase(current, "update", None, clock.now())
    return current


@pytest.mark.parametrize("phase", ["standby", "init", "update"])
@pytest.mark.parametrize("target", ["standby", "init", "update", "rollback"])
def test_illegal_transitions_name_the_legal_ones(
    ca: CertAuthority, clock: FakeClock, phase: RotationPhase, target: RotationPhase
) -> None:
    current = _in_phase(ca, phase, clock)
    legal = LEGAL_TRANSITIONS[phase]
    if target in legal:
        keypair = fresh_key(clock) if target == "init" else None
        assert next_phase(current, target, keypair, clock.now()) is not current
        return
    with pytest.raises(BadParameter) as info:
        next_phase(current, target, None, clock.now())
    assert f"from {phase!r} to {target!r}" in str(info.value)
    for name in legal:
        assert repr(name) in str(info.value)


def test_init_key_pair_rules(ca: CertAuthority, clock: FakeClock) -> None:
    with pytest.raises(BadParameter, match="needs the new key pair"):
        next_phase(ca, "init", None, clock.now())
    with pytest.raises(BadParameter, match="already trusted"):
        next_phase(ca, "init", ca.spec.active_keys[0], clock.now())
    stripped = fresh_key(clock).model_copy(update={"private_key_encrypted": ""})
    with pytest.raises(BadParameter, match="could never sign"):
        next_phase(ca, "init", stripped, clock.now())
    init = next_phase(ca, "init", fresh_key(clock), clock.now())
    with pytest.raises(BadParameter, match="only accepted when moving to 'init'"):
        next_phase(init, "update", fresh_key(clock), clock.now())
