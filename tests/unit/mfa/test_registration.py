from datetime import UTC, datetime

import pytest

from bastion.errors import AccessDenied
from bastion.mfa import policy
from bastion.mfa.registration import Ceremony, creation_options, verified_device
from bastion.mfa.softkey import SOFTWARE_AAGUID, SoftwareAuthenticator
from bastion.types.access import AuthPreferenceSpec
from bastion.types.mfa import MFADevice

RP = policy.RelyingParty("example.test", ("https://example.test",), "preferred")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def options(passwordless=False, existing=()):
    return creation_options(
        rp=RP,
        cluster="c",
        user="alice",
        user_handle="aGFuZGxl",
        challenge=b"c" * 32,
        passwordless=passwordless,
        attestation="none",
        existing=list(existing),
    )


def test_creation_options():
    key = MFADevice(
        id="1", user="alice", name="k", type="webauthn", added=NOW, credential_id="Y3JlZA"
    )
    totp = MFADevice(id="2", user="alice", name="o", type="totp", added=NOW)
    data = options(existing=[key, totp])
    assert data["rp"] == {"id": "example.test", "name": "Bastion c"}
    assert [c["id"] for c in data["excludeCredentials"]] == ["Y3JlZA"]
    assert data["extensions"] == {"credProps": True}
    assert data["authenticatorSelection"]["residentKey"] == "discouraged"
    strict = options(passwordless=True)["authenticatorSelection"]
    assert strict["residentKey"] == "required" and strict["userVerification"] == "required"


def verify(response, spec, uv="preferred", passwordless=False):
    return verified_device(
        response=response,
        ceremony=Ceremony(options()["challenge"], uv, passwordless=passwordless),
        rp=RP,
        spec=spec,
        user="alice",
        name="k",
        device_id="id1",
        now=NOW,
    )


def test_verified_device_and_software_policy():
    response = SoftwareAuthenticator().create(options(), "https://example.test")
    with pytest.raises(AccessDenied, match="software authenticators are not allowed"):
        verify(response, AuthPreferenceSpec())
    device = verify(response, AuthPreferenceSpec(allow_software_authenticator=True))
    assert (device.aaguid, device.software) == (str(SOFTWARE_AAGUID), True)
    # a second factor: no discoverable credential asked for, and never a passwordless device
    assert (device.resident, device.passwordless, device.passwordless_allowed) == (
        False,
        False,
        False,
    )
    assert device.credential_id == response["id"]


def test_passwordless_registration_records_a_passkey():
    strict = options(passwordless=True)
    response = SoftwareAuthenticator().create(strict, "https://example.test")
    spec = AuthPreferenceSpec(allow_software_authenticator=True)
    device = verify(response, spec, uv="required", passwordless=True)
    assert (device.resident, device.passwordless, device.passwordless_allowed) == (True,) * 3
    assert device.summary()["passkey"] is True


def test_passwordless_registration_refused_when_the_key_made_no_passkey():
    response = SoftwareAuthenticator().create(options(passwordless=True), "https://example.test")
    response["clientExtensionResults"] = {"credProps": {"rk": False}}
    with pytest.raises(AccessDenied, match="did not make a passkey"):
        verify(
            response,
            AuthPreferenceSpec(allow_software_authenticator=True),
            uv="required",
            passwordless=True,
        )


def test_a_discoverable_second_factor_is_still_a_second_factor():
    # an authenticator may make a discoverable credential although it was discouraged
    response = SoftwareAuthenticator().create(options(passwordless=True), "https://example.test")
    device = verify(response, AuthPreferenceSpec(allow_software_authenticator=True))
    assert device.resident and not device.passwordless_allowed
    assert device.summary()["passkey"] is False and device.summary()["discoverable"] is True


@pytest.mark.parametrize(
    ("resident", "user_verified", "allowed"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_devices_stored_before_the_purpose_was_recorded(resident, user_verified, allowed):
    stored = MFADevice.model_validate(
        {
            "id": "1",
            "user": "alice",
            "name": "old",
            "type": "webauthn",
            "added": NOW.isoformat(),
            "resident": resident,
            "user_verified": user_verified,
        }
    )
    assert stored.passwordless is None
    assert stored.passwordless_allowed is allowed
    totp = MFADevice(id="2", user="alice", name="o", type="totp", added=NOW, resident=True)
    assert totp.passwordless_allowed is False


def test_unreported_resident_key_is_a_passkey_only_when_required():
    response = SoftwareAuthenticator().create(options(), "https://example.test")
    response.pop("clientExtensionResults")
    spec = AuthPreferenceSpec(allow_software_authenticator=True)
    assert verify(response, spec).resident is False
    assert verify(response, spec, uv="required").resident is False
    assert verify(response, spec, uv="required", passwordless=True).resident is True


def test_wrong_origin_is_refused():
    response = SoftwareAuthenticator().create(options(), "https://evil.test")
    with pytest.raises(AccessDenied, match="registration refused: wrong origin"):
        verify(response, AuthPreferenceSpec(allow_software_authenticator=True))
