"""The software authenticator, checked by the real ``webauthn`` library acting as the RP."""

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from bastion.errors import BadParameter, NotFound
from bastion.mfa.softkey import SOFTWARE_AAGUID, Attestation, SoftwareAuthenticator

RP = "example.test"
ORIGIN = "https://example.test:3080"


def reg_options(**kw):
    opts = generate_registration_options(
        rp_id=RP, rp_name="Bastion", user_name="alice", user_id=b"handle-alice", **kw
    )
    return opts.challenge, json.loads(options_to_json(opts))


def auth_options(**kw):
    opts = generate_authentication_options(rp_id=RP, **kw)
    return opts.challenge, json.loads(options_to_json(opts))


def register(key, **kw):
    challenge, options = reg_options(**kw)
    response = key.create(options, ORIGIN)
    verified = verify_registration_response(
        credential=response, expected_challenge=challenge, expected_rp_id=RP, expected_origin=ORIGIN
    )
    return response, verified


@pytest.mark.parametrize(
    ("alg", "cose"),
    [("ES256", COSEAlgorithmIdentifier.ECDSA_SHA_256), ("EdDSA", COSEAlgorithmIdentifier.EDDSA)],
)
def test_register_and_assert_verified_by_webauthn_library(tmp_path, alg, cose):
    key = SoftwareAuthenticator(tmp_path / "creds.json", algorithm=alg)
    _, reg = register(key)
    assert reg.aaguid == str(SOFTWARE_AAGUID)
    assert reg.user_verified is True
    assert reg.sign_count == 0
    assert reg.fmt == "none"
    for expected_count in (1, 2):
        challenge, options = auth_options(
            allow_credentials=[PublicKeyCredentialDescriptor(id=reg.credential_id)]
        )
        response = key.get(options, ORIGIN)
        result = verify_authentication_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            credential_public_key=reg.credential_public_key,
            credential_current_sign_count=expected_count - 1,
            require_user_verification=True,
        )
        assert result.new_sign_count == expected_count
    assert key.credentials[0].alg == cose


def test_file_is_private_and_reloaded_with_counter(tmp_path):
    path = tmp_path / "creds.json"
    key = SoftwareAuthenticator(path)
    _, reg = register(key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _, options = auth_options(
        allow_credentials=[PublicKeyCredentialDescriptor(id=reg.credential_id)]
    )
    key.get(options, ORIGIN)
    again = SoftwareAuthenticator(path)
    assert again.credentials[0].sign_count == 1
    assert "PRIVATE KEY" in path.read_text()


def test_resident_credential_answers_without_allow_list_and_returns_user_handle():
    key = SoftwareAuthenticator()
    register(
        key,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED
        ),
    )
    _, options = auth_options(user_verification=UserVerificationRequirement.REQUIRED)
    response = key.get(options, ORIGIN)
    assert base64url_to_bytes(response["response"]["userHandle"]) == b"handle-alice"


def test_non_resident_credential_is_not_discoverable():
    key = SoftwareAuthenticator()
    register(
        key,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED
        ),
    )
    _, options = auth_options()
    with pytest.raises(NotFound, match="discoverable"):
        key.get(options, ORIGIN)


def test_without_user_verification_the_flag_is_clear_and_rp_requiring_it_refuses():
    key = SoftwareAuthenticator(user_verification=False)
    _, reg = register(key)
    assert reg.user_verified is False
    challenge, options = auth_options(
        allow_credentials=[PublicKeyCredentialDescriptor(id=reg.credential_id)]
    )
    response = key.get(options, ORIGIN)
    with pytest.raises(InvalidAuthenticationResponse, match="User verification"):
        verify_authentication_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            credential_public_key=reg.credential_public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    # and it says so instead of pretending when the RP asks for UV up front
    _, required = auth_options(user_verification=UserVerificationRequirement.REQUIRED)
    with pytest.raises(BadParameter, match="user verification"):
        key.get(required, ORIGIN)


def test_excluded_credential_is_refused():
    key = SoftwareAuthenticator()
    _, reg = register(key)
    with pytest.raises(BadParameter, match="already registered"):
        register(key, exclude_credentials=[PublicKeyCredentialDescriptor(id=reg.credential_id)])


def test_wrong_origin_is_caught_by_rp():
    key = SoftwareAuthenticator()
    challenge, options = reg_options()
    response = key.create(options, "https://evil.test")
    with pytest.raises(InvalidRegistrationResponse, match="origin"):
        verify_registration_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
        )


def _ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def attestation_signed_by(ca_key, ca_cert) -> Attestation:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion Test"),
                    x509.NameAttribute(
                        NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"
                    ),
                    x509.NameAttribute(NameOID.COMMON_NAME, "test key"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return Attestation(key=key, chain=(leaf,))


def test_packed_attestation_chains_to_the_test_ca_only():
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = _ca("Org Attestation CA")
    _, other_cert = _ca("Other CA")
    key = SoftwareAuthenticator(attestation=attestation_signed_by(ca_key, ca_cert))
    challenge, options = reg_options(attestation=AttestationConveyancePreference.DIRECT)
    response = key.create(options, ORIGIN)
    pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    verified = verify_registration_response(
        credential=response,
        expected_challenge=challenge,
        expected_rp_id=RP,
        expected_origin=ORIGIN,
        pem_root_certs_bytes_by_fmt={"packed": [pem]},
    )
    assert verified.fmt == "packed"
    with pytest.raises(InvalidRegistrationResponse, match="chain"):
        verify_registration_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            pem_root_certs_bytes_by_fmt={
                "packed": [other_cert.public_bytes(serialization.Encoding.PEM)]
            },
        )


def test_malformed_options_are_bad_parameters():
    key = SoftwareAuthenticator()
    with pytest.raises(BadParameter, match="challenge"):
        key.get({"rpId": RP, "challenge": 5}, ORIGIN)
    with pytest.raises(BadParameter, match="algorithm"):
        key.create(
            {
                "rp": {"id": RP, "name": "x"},
                "user": {"id": "aGFuZGxl", "name": "a"},
                "challenge": "Y2hhbGxlbmdl",
                "pubKeyCredParams": [{"type": "public-key", "alg": -257}],
            },
            ORIGIN,
        )


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text("{not json")
    with pytest.raises(BadParameter, match="cannot read the software authenticator"):
        SoftwareAuthenticator(path)
