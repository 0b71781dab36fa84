from datetime import timedelta

import pyotp
import pytest

from bastion.audit.log import AuditLog
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import AccessDenied
from bastion.mfa.store import ChallengeStore, DeviceStore
from bastion.mfa.totp import TOTPFactor
from bastion.services.credentials import CredentialStore


def factor():
    clock = FakeClock()
    backend = MemoryBackend(clock)
    return clock, TOTPFactor(
        DeviceStore(backend),
        ChallengeStore(backend),
        CredentialStore(backend),
        clock,
        AuditLog(backend, clock, "c"),
        "c",
    )


async def test_enrol_then_codes_are_single_use():
    clock, totp = factor()
    enrolment = await totp.begin("alice")
    assert "issuer=Bastion%20c" in enrolment.uri
    code = pyotp.TOTP(enrolment.secret).at(clock.now())
    device = await totp.finish("alice", "phone", enrolment.enrolment, code)
    assert device.type == "totp" and device.name == "phone"
    assert not await totp.check("alice", code)  # the enrolment used this step
    clock.advance(timedelta(seconds=30))
    fresh = pyotp.TOTP(enrolment.secret).at(clock.now())
    assert await totp.check("alice", fresh)
    assert not await totp.check("alice", fresh)
    assert not await totp.check("bob", fresh)


async def test_enrolment_is_per_user_single_use_and_expires():
    clock, totp = factor()
    enrolment = await totp.begin("alice")
    code = pyotp.TOTP(enrolment.secret).at(clock.now())
    with pytest.raises(AccessDenied, match="another user"):
        await totp.finish("bob", "phone", enrolment.enrolment, code)
    with pytest.raises(AccessDenied, match="unknown or expired"):
        await totp.finish("alice", "phone", enrolment.enrolment, code)
    enrolment = await totp.begin("alice")
    clock.advance(timedelta(minutes=11))
    with pytest.raises(AccessDenied, match="unknown or expired"):
        await totp.finish("alice", "phone", enrolment.enrolment, "000000")
