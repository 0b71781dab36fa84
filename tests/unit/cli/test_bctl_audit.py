"""bctl audit: the client-side inclusion proof check and the certificate rows."""

from __future__ import annotations

import copy

import pytest

from bastion.audit.checkpointer import Checkpointer
from bastion.audit.log import AuditLog
from bastion.audit.signer import load_or_create_signer
from bastion.backend.memory import MemoryBackend
from bastion.cli.bctl_audit import _cert_row, _check_proof, mfa_column
from bastion.clock import FakeClock
from bastion.errors import BadParameter


async def proof_result() -> tuple[dict, str]:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    log = AuditLog(backend, clock, "c1")
    signer = await load_or_create_signer(backend, bytes(32), "c1", clock)
    for i in range(9):
        await log.emit("user.login", user=f"u{i}")
    result = await Checkpointer(log, signer, clock).inclusion(index=4)
    return {**result, "verifier_key": signer.verifier_key}, signer.verifier_key


async def test_a_valid_proof_passes_and_any_lie_fails():
    result, vkey = await proof_result()
    _check_proof(copy.deepcopy(result), vkey)
    changed = copy.deepcopy(result)
    changed["event"]["user"] = "mallory"
    with pytest.raises(BadParameter, match="hash"):
        _check_proof(changed, vkey)
    moved = copy.deepcopy(result)
    moved["index"] = 5
    with pytest.raises(BadParameter, match="NOT verify"):
        _check_proof(moved, vkey)
    other, other_key = await proof_result()  # another log's key
    with pytest.raises(BadParameter, match="no signature"):
        _check_proof(copy.deepcopy(result), other_key)
    assert other


def test_cert_row():
    event = {
        "time": "2026-11-24T10:00:00Z",
        "user": "alice",
        "device_id": "d1",
        "fields": {
            "cert_type": "user",
            "serial": "42",
            "principals": ["alice"],
            "roles": ["access"],
            "expires": "2026-11-24T22:00:00+00:00",
            "mfa_verified": True,
        },
    }
    row = _cert_row(event)
    assert row["serial"] == "42" and row["principals"] == ["alice"] and row["mfa_verified"]
    assert row["device_id"] == "d1" and row["valid_before"].startswith("2026-11-24T22")


def test_cert_row_kind_falls_back_to_the_cert_type():
    bot = _cert_row({"fields": {"cert_type": "user", "identity_kind": "bot", "serial": 1}})
    old = _cert_row({"fields": {"cert_type": "host"}})
    assert (bot["cert_type"], bot["identity_kind"], bot["serial"]) == ("user", "bot", "1")
    assert old["identity_kind"] == "host" and old["principals"] == []


def test_mfa_column_tells_login_and_session_certificates_apart():
    login = _cert_row({"fields": {"cert_type": "user", "mfa_device": "dev-1", "serial": 1}})
    session = _cert_row(
        {"fields": {"mfa_verified": True, "mfa_device": "dev-1", "mfa_scope": "session:n:root"}}
    )
    plain = _cert_row({"fields": {"cert_type": "host", "public_key_sha256": "ab"}})
    assert (mfa_column(login), mfa_column(session), mfa_column(plain)) == ("login", "session", "-")
    assert login["mfa_device"] == "dev-1" and session["mfa_scope"] == "session:n:root"
    assert plain["public_key_sha256"] == "ab"
