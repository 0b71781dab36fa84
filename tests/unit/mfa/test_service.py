"""MFAService as relying party, answered by the software authenticator: every refusal case."""

import shutil
from datetime import timedelta

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization

from bastion.errors import AccessDenied, AlreadyExists, BadParameter, NotFound
from bastion.mfa.service import SecondFactorOnly
from bastion.mfa.softkey import SOFTWARE_AAGUID, SoftwareAuthenticator
from bastion.testing import make_auth

from .test_softkey import _ca, attestation_signed_by

ORIGIN = "https://127.0.0.1:3025"  # make_auth's public_url: the default origin and RP id


async def cluster(**spec):
    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    for name, value in spec.items():
        if name.startswith("webauthn_"):
            setattr(pref.spec.webauthn, name.removeprefix("webauthn_"), value)
        else:
            setattr(pref.spec, name, value)
    await fx.auth.prefs.update(pref)
    return fx


async def enrol(fx, key, user="alice", name="key1", passwordless=False):
    options = await fx.auth.mfa.begin_registration(user, passwordless=passwordless)
    return await fx.auth.mfa.finish_registration(user, name, key.create(options, ORIGIN))


async def assertion(fx, key, user="alice", scope="login"):
    options = await fx.auth.mfa.begin_challenge(user, scope)
    return key.get(options, ORIGIN)


async def events(fx, event_type):
    from bastion.audit.log import AuditQuery

    return await fx.auth.audit.search(AuditQuery(types=(event_type,)))


async def test_register_then_verify():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key)
    assert device.software and device.aaguid == str(SOFTWARE_AAGUID)
    assert not device.resident and device.passwordless is False  # a second factor
    verified = await fx.auth.mfa.verify_challenge("alice", "login", await assertion(fx, key))
    assert (verified.user, verified.device_id, verified.device_name) == ("alice", device.id, "key1")
    stored = await fx.auth.mfa.devices.get("alice", device.id)
    assert stored.sign_count == 1 and stored.last_used == fx.clock.now()
    [added] = await events(fx, "mfa.add")
    assert added.fields["aaguid"] == str(SOFTWARE_AAGUID) and added.fields["software"] is True


async def test_software_authenticator_refused_unless_allowed():
    fx = await make_auth()
    options = await fx.auth.mfa.begin_registration("alice")
    response = SoftwareAuthenticator().create(options, ORIGIN)
    with pytest.raises(AccessDenied, match="software authenticators are not allowed"):
        await fx.auth.mfa.finish_registration("alice", "k", response)
    [failed] = await events(fx, "mfa.add")
    assert failed.outcome == "failure" and "software" in failed.reason


async def test_wrong_origin():
    fx = await cluster()
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    options = await fx.auth.mfa.begin_challenge("alice", "login")
    with pytest.raises(AccessDenied, match="wrong origin"):
        await fx.auth.mfa.verify_challenge("alice", "login", key.get(options, "https://evil.test"))


async def test_wrong_rp_id():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key)
    options = await fx.auth.mfa.begin_challenge("alice", "login")
    # a client that lets evil.test ask for our credential: rpId is what the key signs
    key.credentials[0].rp_id = "evil.test"
    options["rpId"] = "evil.test"
    response = key.get(options, ORIGIN)
    with pytest.raises(AccessDenied, match="relying party id"):
        await fx.auth.mfa.verify_challenge("alice", "login", response)
    assert (await fx.auth.mfa.devices.get("alice", device.id)).sign_count == 0


async def test_replayed_assertion_is_refused():
    fx = await cluster()
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    response = await assertion(fx, key)
    await fx.auth.mfa.verify_challenge("alice", "login", response)
    with pytest.raises(AccessDenied, match="already used"):
        await fx.auth.mfa.verify_challenge("alice", "login", response)


async def test_counter_regression_marks_device_cloned(tmp_path):
    fx = await cluster()
    path = tmp_path / "key.json"
    key = SoftwareAuthenticator(path)
    device = await enrol(fx, key)
    shutil.copy(path, tmp_path / "clone.json")  # an attacker copies the key
    for _ in range(2):
        await fx.auth.mfa.verify_challenge("alice", "login", await assertion(fx, key))
    clone = SoftwareAuthenticator(tmp_path / "clone.json")
    with pytest.raises(AccessDenied, match="counter regression"):
        await fx.auth.mfa.verify_challenge("alice", "login", await assertion(fx, clone))
    assert (await fx.auth.mfa.devices.get("alice", device.id)).cloned
    [cloned] = await events(fx, "mfa.cloned")
    assert cloned.user == "alice" and "from 2 to 1" in cloned.reason
    # the genuine key is refused from now on too (which one is the original is unknown)
    with pytest.raises(NotFound, match="no WebAuthn device"):
        await fx.auth.mfa.begin_challenge("alice", "login")


async def test_cloned_device_refused_even_with_old_options():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key)
    options = await fx.auth.mfa.begin_challenge("alice", "login")
    stored = await fx.auth.mfa.devices.get("alice", device.id)
    stored.cloned = True
    await fx.auth.mfa.devices.put(stored)
    with pytest.raises(AccessDenied, match="marked as cloned"):
        await fx.auth.mfa.verify_challenge("alice", "login", key.get(options, ORIGIN))


async def test_scope_mismatch():
    fx = await cluster()
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    response = await assertion(fx, key, scope="session:node1:root")
    with pytest.raises(AccessDenied, match="scope mismatch"):
        await fx.auth.mfa.verify_challenge("alice", "session:node1:admin", response)


async def test_user_verification_required_but_absent():
    fx = await cluster(webauthn_user_verification="required")
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    options = await fx.auth.mfa.begin_challenge("alice", "login")
    assert options["userVerification"] == "required"
    options["userVerification"] = "discouraged"  # a client that skips the PIN
    key.user_verification = False
    with pytest.raises(AccessDenied, match="user verification"):
        await fx.auth.mfa.verify_challenge("alice", "login", key.get(options, ORIGIN))


async def test_unknown_credential_and_other_users_key():
    fx = await cluster()
    alice, bob = SoftwareAuthenticator(), SoftwareAuthenticator()
    alice_device = await enrol(fx, alice, "alice")
    await enrol(fx, bob, "bob")
    stranger = SoftwareAuthenticator()
    await enrol(await cluster(), stranger, "alice")  # registered with another cluster only
    options = await fx.auth.mfa.begin_challenge("alice", "login")
    options["allowCredentials"] = []
    stranger.credentials[0].resident = True
    with pytest.raises(AccessDenied, match="unknown credential"):
        await fx.auth.mfa.verify_challenge("alice", "login", stranger.get(options, ORIGIN))
    options = await fx.auth.mfa.begin_challenge("bob", "login")
    options["allowCredentials"] = [{"type": "public-key", "id": alice_device.credential_id}]
    with pytest.raises(AccessDenied, match="not registered for this user"):
        await fx.auth.mfa.verify_challenge("bob", "login", alice.get(options, ORIGIN))


async def test_challenge_for_another_user_and_expiry():
    fx = await cluster()
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    response = await assertion(fx, key)
    with pytest.raises(AccessDenied, match="another user"):
        await fx.auth.mfa.verify_challenge("bob", "login", response)
    response = await assertion(fx, key)
    fx.clock.advance(timedelta(minutes=3))
    with pytest.raises(AccessDenied, match="expired"):
        await fx.auth.mfa.verify_challenge("alice", "login", response)


async def test_malformed_response():
    fx = await cluster()
    for bad in ({}, {"response": {"clientDataJSON": "!!"}}, "text"):
        with pytest.raises(AccessDenied, match="malformed"):
            await fx.auth.mfa.verify_challenge("alice", "login", bad)


async def test_passwordless_with_a_passkey():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key, passwordless=True)
    options = await fx.auth.mfa.begin_challenge(None, "login")
    assert options["userVerification"] == "required" and not options.get("allowCredentials")
    verified = await fx.auth.mfa.verify_challenge(None, "login", key.get(options, ORIGIN))
    assert (verified.user, verified.device_id) == ("alice", device.id)
    # a passwordless challenge is not a second factor for a named user, and vice versa
    options = await fx.auth.mfa.begin_challenge(None, "login")
    with pytest.raises(AccessDenied, match="another user"):
        await fx.auth.mfa.verify_challenge("alice", "login", key.get(options, ORIGIN))


async def test_passwordless_needs_the_user_handle_and_can_be_disabled():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key, passwordless=True)
    stored = await fx.auth.mfa.devices.get("alice", device.id)
    stored.resident = False  # e.g. a browser that did not report credProps
    await fx.auth.mfa.devices.put(stored)
    options = await fx.auth.mfa.begin_challenge(None, "login")
    response = key.get(options, ORIGIN)
    stripped = {**response, "response": {**response["response"], "userHandle": None}}
    with pytest.raises(AccessDenied, match="user handle"):
        await fx.auth.mfa.verify_challenge(None, "login", stripped)
    options = await fx.auth.mfa.begin_challenge(None, "login")
    await fx.auth.mfa.verify_challenge(None, "login", key.get(options, ORIGIN))
    assert (await fx.auth.mfa.devices.get("alice", device.id)).resident  # learnt
    options = await fx.auth.mfa.begin_challenge(None, "login")
    response = key.get(options, ORIGIN)
    other = await fx.auth.mfa.devices.user_handle("bob")
    forged = {**response, "response": {**response["response"], "userHandle": other}}
    with pytest.raises(AccessDenied, match="does not match"):
        await fx.auth.mfa.verify_challenge(None, "login", forged)
    fx2 = await cluster(allow_passwordless=False)
    with pytest.raises(AccessDenied, match="disabled"):
        await fx2.auth.mfa.begin_challenge(None, "login")


async def test_second_factor_key_never_answers_a_passwordless_challenge():
    fx = await cluster()
    key = SoftwareAuthenticator()
    options = await fx.auth.mfa.begin_registration("alice")
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    # the strongest case: the authenticator made a discoverable credential anyway
    options["authenticatorSelection"]["residentKey"] = "required"
    device = await fx.auth.mfa.finish_registration("alice", "key1", key.create(options, ORIGIN))
    assert device.resident and device.passwordless is False
    [added] = await events(fx, "mfa.add")
    assert added.fields["passkey"] is False and added.fields["discoverable"] is True
    options = await fx.auth.mfa.begin_challenge(None, "login")
    with pytest.raises(SecondFactorOnly, match="registered as a second factor") as refused:
        await fx.auth.mfa.verify_challenge(None, "login", key.get(options, ORIGIN))
    assert (refused.value.user, refused.value.device_id) == ("alice", device.id)
    stored = await fx.auth.mfa.devices.get("alice", device.id)
    assert stored.sign_count == 0 and stored.last_used is None  # the refused use left no mark
    # still a good second factor
    verified = await fx.auth.mfa.verify_challenge("alice", "login", await assertion(fx, key))
    assert verified.device_id == device.id


async def test_a_device_stored_before_the_purpose_was_recorded():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key, passwordless=True)
    stored = await fx.auth.mfa.devices.get("alice", device.id)
    stored.passwordless = None  # as stored by an older version
    await fx.auth.mfa.devices.put(stored)
    # resident and user-verified at registration: what a passwordless registration made
    options = await fx.auth.mfa.begin_challenge(None, "login")
    await fx.auth.mfa.verify_challenge(None, "login", key.get(options, ORIGIN))
    stored = await fx.auth.mfa.devices.get("alice", device.id)
    stored.user_verified = False  # not what a passwordless registration made: a second factor
    await fx.auth.mfa.devices.put(stored)
    options = await fx.auth.mfa.begin_challenge(None, "login")
    with pytest.raises(SecondFactorOnly):
        await fx.auth.mfa.verify_challenge(None, "login", key.get(options, ORIGIN))


async def test_webauthn_disabled_by_second_factor():
    fx = await cluster(second_factor="otp")
    with pytest.raises(BadParameter, match="not enabled"):
        await fx.auth.mfa.begin_registration("alice")
    with pytest.raises(BadParameter, match="not enabled"):
        await fx.auth.mfa.begin_challenge("alice", "login")


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_direct_attestation_with_roots_and_aaguids():
    ca_key, ca_cert = _ca("Org Attestation CA")
    other_key, other_cert = _ca("Other CA")
    fx = await cluster(webauthn_attestation="direct", webauthn_attestation_roots=[_pem(ca_cert)])
    good = SoftwareAuthenticator(attestation=attestation_signed_by(ca_key, ca_cert))
    device = await enrol(fx, good, name="org-key")
    assert device.attestation_format == "packed"
    outsider = SoftwareAuthenticator(attestation=attestation_signed_by(other_key, other_cert))
    with pytest.raises(AccessDenied, match="registration refused"):
        await enrol(fx, outsider, name="outsider")
    with pytest.raises(AccessDenied, match="requires attestation"):
        await enrol(fx, SoftwareAuthenticator(), name="none")
    fx2 = await cluster(
        webauthn_attestation="direct",
        webauthn_attestation_roots=[_pem(ca_cert)],
        webauthn_allowed_aaguids=["11111111-2222-3333-4444-555555555555"],
    )
    with pytest.raises(AccessDenied, match="not in allowed_aaguids"):
        await enrol(fx2, SoftwareAuthenticator(attestation=attestation_signed_by(ca_key, ca_cert)))


async def test_device_names_and_duplicates():
    fx = await cluster()
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    with pytest.raises(AlreadyExists, match="already have"):
        await enrol(fx, SoftwareAuthenticator())
    with pytest.raises(BadParameter, match="device name"):
        await fx.auth.mfa.finish_registration("alice", "a/b", {})


async def test_remove_last_device_refused_when_second_factor_required():
    fx = await cluster()
    key = SoftwareAuthenticator()
    await enrol(fx, key)
    with pytest.raises(AccessDenied, match="last"):
        await fx.auth.mfa.remove_device("alice", "key1", "alice")
    await enrol(fx, SoftwareAuthenticator(), name="key2")
    await fx.auth.mfa.remove_device("alice", "key1", "alice")
    assert [d.name for d in await fx.auth.mfa.list_devices("alice")] == ["key2"]
    removed = [e for e in await events(fx, "mfa.remove") if e.outcome == "success"]
    assert removed[0].fields["device_name"] == "key1"
    optional = await cluster(second_factor="optional")
    await enrol(optional, SoftwareAuthenticator())
    await optional.auth.mfa.remove_device("alice", "key1", "alice")
    with pytest.raises(NotFound):
        await optional.auth.mfa.remove_device("alice", "key1", "alice")


async def test_totp_enrolment():
    fx = await cluster()
    enrolment = await fx.auth.mfa.begin_totp("alice")
    with pytest.raises(AccessDenied, match="wrong"):
        await fx.auth.mfa.finish_totp("alice", "phone", enrolment.enrolment, "000000")
    enrolment = await fx.auth.mfa.begin_totp("alice")
    code = pyotp.TOTP(enrolment.secret).at(fx.clock.now())
    device = await fx.auth.mfa.finish_totp("alice", "phone", enrolment.enrolment, code)
    assert device.type == "totp"
    assert (await fx.auth.credentials.get("alice")).totp_secret == enrolment.secret
    with pytest.raises(AlreadyExists):
        await fx.auth.mfa.begin_totp("alice")
    await enrol(fx, SoftwareAuthenticator())
    await fx.auth.mfa.remove_device("alice", "phone", "alice")
    assert (await fx.auth.credentials.get("alice")).totp_secret == ""


async def test_forget_user_removes_devices_and_handle():
    fx = await cluster()
    key = SoftwareAuthenticator()
    device = await enrol(fx, key)
    await fx.auth.mfa.forget_user("alice")
    assert await fx.auth.mfa.list_devices("alice") == []
    with pytest.raises(NotFound):
        await fx.auth.mfa.devices.by_credential(device.credential_id)
