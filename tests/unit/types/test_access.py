from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.types.access import LockSpec, LockTarget, Role, RoleOptions, Rule


def test_role_defaults_are_safe():
    opts = RoleOptions()
    assert opts.max_session_ttl == timedelta(hours=12)
    assert opts.forward_agent is False and opts.lock_mode == "best_effort"


def test_label_selector_normalises_to_lists():
    role = Role.model_validate(
        {"metadata": {"name": "r"}, "spec": {"allow": {"node_labels": {"env": "prod"}}}}
    )
    assert role.spec.allow.node_labels == {"env": ["prod"]}


def test_rule_verbs_checked():
    with pytest.raises(ValidationError, match="unknown verb 'destroy'"):
        Rule(resources=["role"], verbs=["destroy"])


def test_lock_target_required():
    with pytest.raises(ValidationError):
        LockSpec(target=LockTarget())
    assert LockSpec(target=LockTarget(user="alice")).target.user == "alice"


def test_second_factor_default_and_yaml_booleans():
    import yaml

    from bastion.types.access import AuthPreferenceSpec

    assert AuthPreferenceSpec().second_factor == "on"
    assert (
        AuthPreferenceSpec.model_validate(yaml.safe_load("second_factor: on")).second_factor == "on"
    )
    assert (
        AuthPreferenceSpec.model_validate(yaml.safe_load("second_factor: off")).second_factor
        == "off"
    )


def test_webauthn_preference_validation():
    import pytest
    from pydantic import ValidationError

    from bastion.types.access import WebAuthnPreference

    root = _self_signed_pem()
    assert WebAuthnPreference(
        attestation="direct",
        attestation_roots=[root],
        allowed_aaguids=["B7A5710E-5E1F-4B0A-9C1D-B457100F7E5A"],
    ).allowed_aaguids == ["b7a5710e-5e1f-4b0a-9c1d-b457100f7e5a"]
    # Without roots a self-attested key could claim any AAGUID: refused, saying what to add.
    with pytest.raises(ValidationError, match="allowed_aaguids needs attestation_roots"):
        WebAuthnPreference(
            attestation="direct", allowed_aaguids=["b7a5710e-5e1f-4b0a-9c1d-b457100f7e5a"]
        )
    with pytest.raises(ValidationError, match="needs attestation: direct"):
        WebAuthnPreference(attestation_roots=[root])
    with pytest.raises(ValidationError, match="UUID"):
        WebAuthnPreference(allowed_aaguids=["nope"])
    with pytest.raises(ValidationError, match="PEM"):
        WebAuthnPreference(attestation_roots=["not a cert"])
    with pytest.raises(ValidationError, match="https"):
        WebAuthnPreference(origins=["http://x"])


def _self_signed_pem() -> str:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import serialization

    from bastion.ca.keys import generate_private_key
    from bastion.ca.x509 import self_signed_ca

    key = generate_private_key("ecdsa-p256")
    cert = self_signed_ca(key, "attestation CA", "t", timedelta(days=1), now=datetime.now(UTC))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_role_with_a_cap_under_the_minimum_ttl_is_refused_when_written():
    import json

    import pytest

    from bastion.errors import BadParameter
    from bastion.types.access import MIN_SESSION_TTL, Role
    from bastion.types.codec import load_resources

    text = "kind: role\nmetadata: {name: brief}\nspec:\n  options: {max_session_ttl: 30s}\n"
    with pytest.raises(BadParameter) as refused:
        load_resources(text)
    message = refused.value.message
    assert "'brief'" in message and "spec.options.max_session_ttl" in message
    assert "at least 1m" in message and "got 30s" in message
    [ok] = load_resources(text.replace("30s", "1m"))
    assert isinstance(ok, Role) and ok.spec.options.max_session_ttl == MIN_SESSION_TTL
    # a role stored before the rule still loads (the issuer then honours its cap)
    stored = ok.model_dump(mode="json")
    stored["spec"]["options"]["max_session_ttl"] = "30s"
    legacy = Role.model_validate_json(json.dumps(stored))
    assert legacy.spec.options.max_session_ttl.total_seconds() == 30
