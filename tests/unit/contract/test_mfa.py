"""MFA endpoints: device changes carry proofs; session challenges default sensibly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.mfa import AddBegin, AddFinish, SessionChallenge, SessionTarget


def test_device_bodies() -> None:
    assert AddBegin().type == "webauthn"
    with pytest.raises(ValidationError):
        AddBegin.model_validate({"type": "sms"})
    finish = AddFinish.model_validate({"name": "key", "proof": {"otp": "123456"}})
    assert finish.proof.otp == "123456" and finish.proof.webauthn is None


def test_session_targets_are_bounded() -> None:
    with pytest.raises(ValidationError):
        SessionTarget(node="", login="root")
    answer = SessionChallenge.model_validate({"mfa_required": False, "node": "n", "login": "l"})
    assert answer.port_forwarding and answer.challenge is None
