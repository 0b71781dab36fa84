from datetime import UTC, datetime

import pytest

from bastion.mfa import policy
from bastion.types.access import AuthPreferenceSpec, WebAuthnPreference
from bastion.types.mfa import MFADevice

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def dev(name, type_="webauthn", cloned=False):
    return MFADevice(id=name, user="a", name=name, type=type_, added=NOW, cloned=cloned)


@pytest.mark.parametrize(
    ("mode", "webauthn", "totp", "required"),
    [
        ("off", False, False, set()),
        ("otp", False, True, {"totp"}),
        ("webauthn", True, False, {"webauthn"}),
        ("on", True, True, {"totp", "webauthn"}),
        ("optional", True, True, set()),
    ],
)
def test_modes(mode, webauthn, totp, required):
    assert policy.webauthn_enabled(mode) is webauthn
    assert policy.totp_enabled(mode) is totp
    assert policy.required_kinds(mode) == required


def test_default_relying_party_from_public_addresses():
    rp_id, origins = policy.default_relying_party(["proxy.example.com:3080", "10.0.0.1:3025"])
    assert rp_id == "proxy.example.com"
    assert origins == ("https://proxy.example.com:3080", "https://10.0.0.1:3025")
    assert policy.default_relying_party([]) == ("localhost", ())
    rp = policy.relying_party(WebAuthnPreference(rp_id="example.com"), rp_id, origins)
    assert rp.rp_id == "example.com" and rp.origins == origins


def test_attestation_policy():
    none = WebAuthnPreference()
    assert policy.attestation_refusal(none, "none", False, "x") is None
    direct = WebAuthnPreference(attestation="direct")
    assert "requires attestation" in policy.attestation_refusal(direct, "none", False, "x")
    assert policy.attestation_refusal(direct, "packed", False, "x") is None
    aaguid = "11111111-2222-3333-4444-555555555555"
    # model_construct: the policy alone (the model refuses AAGUIDs without roots, see types).
    listed = WebAuthnPreference.model_construct(attestation="direct", allowed_aaguids=[aaguid])
    assert policy.attestation_refusal(listed, "packed", True, aaguid) is None
    assert "allowed_aaguids" in policy.attestation_refusal(listed, "packed", True, "other")


def test_removal_keeps_one_required_device():
    on = AuthPreferenceSpec(second_factor="on")
    key, phone = dev("key"), dev("phone", "totp")
    assert policy.removal_refusal([key, phone], key, on) is None
    assert "last" in policy.removal_refusal([key], key, on)
    assert policy.removal_refusal([key], key, AuthPreferenceSpec(second_factor="optional")) is None
    webauthn_only = AuthPreferenceSpec(second_factor="webauthn")
    assert "last webauthn" in policy.removal_refusal([key, phone], key, webauthn_only)
    assert "last" in policy.removal_refusal([key, dev("old", cloned=True)], key, on)
    assert policy.removal_refusal([dev("old", cloned=True)], dev("old", cloned=True), on) is None
