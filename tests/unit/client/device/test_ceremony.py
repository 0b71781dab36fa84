from __future__ import annotations

import inspect

from bastion.client.device import ceremony


def test_ceremonies_are_coroutines() -> None:
    assert inspect.iscoroutinefunction(ceremony.enroll)
    assert inspect.iscoroutinefunction(ceremony.authenticate)


def test_login_proof_with_a_software_key(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The proof sent with the login request: none when not enrolled or without a challenge;
    otherwise the challenge signed (software key here) with the fresh profile."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from bastion.auth.device_attest import authn_message
    from bastion.client.device.local import DeviceState, save_state, software_key

    assert ceremony.login_proof(tmp_path, "c.local", "dc1.x.y") is None  # not enrolled
    key = software_key(tmp_path, "c.local", create=True)
    state = DeviceState(
        cluster="c.local", device_id="d1", asset_tag="SN", credential_id="k",
        attestation="software", ak_unique="", tcti="",
    )  # fmt: skip
    save_state(tmp_path, state)
    assert ceremony.login_proof(tmp_path, "c.local", "") is None  # no challenge
    monkeypatch.setenv("BSH_DEVICE_PROFILE", '{"os_version": "9.9"}')
    proof = ceremony.login_proof(tmp_path, "c.local", "dc1.x.y")
    assert proof is not None and proof["device_id"] == "d1"
    profile = proof["profile"]
    assert isinstance(profile, dict) and profile["os_version"] == "9.9"
    message = authn_message("c.local", "dc1.x.y", b"", profile)
    signature = base64.b64decode(str(proof["signature"]))
    key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
