from __future__ import annotations

import inspect
from pathlib import Path

import pytest

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


def test_login_keys_the_shared_key_material_of_every_certificate_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``login_keys``: nothing when not enrolled (software), the device proof when enrolled;
    ``--key-store=tpm`` needs a TPM-enrolled machine (a software one is refused in one line).
    ``fields`` are the request body's ``DeviceBound`` fields."""
    from bastion.client.device.local import DeviceState, save_state, software_key
    from bastion.contract.mfa import SessionIssue
    from bastion.errors import BadParameter

    home, pdir = tmp_path, tmp_path / "profiles" / "c.local"
    none = ceremony.login_keys(home, pdir, "c.local", "dc1.x.y", "software")
    assert none == ceremony.LoginKeys() and none.fields() == {}
    with pytest.raises(BadParameter, match="bsh device enroll"):
        ceremony.login_keys(home, pdir, "c.local", "dc1.x.y", "tpm")
    software_key(home, "c.local", create=True)
    state = DeviceState(
        cluster="c.local", device_id="d1", asset_tag="SN", credential_id="k",
        attestation="software", ak_unique="", tcti="",
    )  # fmt: skip
    save_state(home, state)
    monkeypatch.setenv("BSH_DEVICE_PROFILE", "{}")
    keys = ceremony.login_keys(home, pdir, "c.local", "dc1.x.y", "software")
    assert keys.device is not None and keys.blob is None and not keys.ssh_public_key
    body = SessionIssue.model_validate(
        {"node": "n", "login": "root", "public_key": "k", "mfa_response": {}, **keys.fields()}
    )
    assert body.device is not None and body.device.device_id == "d1"
    with pytest.raises(BadParameter, match="enrolled with its TPM"):  # a software device
        ceremony.login_keys(home, pdir, "c.local", "dc1.x.y", "tpm")


async def test_request_keys_asks_no_challenge_when_not_enrolled(tmp_path: Path) -> None:
    """A renewal or per-session certificate of a machine that is not enrolled costs no round
    trip (the client is never used)."""
    from bastion.errors import BadParameter

    pdir = tmp_path / "profiles" / "c.local"
    keys = await ceremony.request_keys(None, tmp_path, pdir, "c.local", "software")  # type: ignore[arg-type]
    assert keys == ceremony.LoginKeys()
    with pytest.raises(BadParameter, match="bsh device enroll"):
        await ceremony.request_keys(None, tmp_path, pdir, "c.local", "tpm")  # type: ignore[arg-type]
