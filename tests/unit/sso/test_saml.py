"""The SAML SP against pysaml2's own IdP (real XML signatures through xmlsec1)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import AccessDenied
from bastion.sso.saml import SAMLProvider
from bastion.testing import require_binary
from bastion.testing.peers.saml import SAMLTestIdP
from bastion.types.connectors import SAMLConnector

SP = "https://bastion.test/saml"
BASE = "https://proxy.test:3080"
ACS = f"{BASE}/web/sso/corp/acs"
OTHER_SP = "https://other-sp.test"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> SAMLTestIdP:
    require_binary("xmlsec1")
    return SAMLTestIdP.create(
        tmp_path_factory.mktemp("idp"),
        sps=[(SP, ACS), (OTHER_SP, "https://other-sp.test/acs")],
    )


def provider(idp: SAMLTestIdP, **spec: object) -> SAMLProvider:
    connector = SAMLConnector.model_validate(
        {
            "metadata": {"name": "corp"},
            "spec": {
                "entity_descriptor": idp.metadata,
                "service_provider_issuer": SP,
                "attributes_to_roles": [{"name": "groups", "value": "dev", "roles": ["dev"]}],
                **spec,
            },
        }
    )
    return SAMLProvider(connector, BASE)


def login(idp: SAMLTestIdP, sp: SAMLProvider) -> tuple[str, str]:
    request_id, url = sp.authn_request("relay-1")
    got_id, acs, relay = idp.parse_request(url)
    assert (got_id, acs, relay) == (request_id, ACS, "relay-1")
    return request_id, url


def test_binding_names_are_pysaml2s() -> None:
    # saml.py spells them out so that importing it does not import pysaml2 (daemon start-up)
    import saml2

    from bastion.sso import saml

    assert saml.BINDING_HTTP_POST == saml2.BINDING_HTTP_POST
    assert saml.BINDING_HTTP_REDIRECT == saml2.BINDING_HTTP_REDIRECT


def test_signed_assertion_gives_an_identity(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, ACS, SP, "alice", {"groups": ["dev", "ops"]})
    identity = sp.identity(response, request_id, ACS)
    assert identity.subject == "alice" and identity.issuer == idp.entity_id
    assert identity.user == "corp:alice" and identity.claims["groups"] == ["dev", "ops"]


def test_username_attribute(idp: SAMLTestIdP) -> None:
    sp = provider(idp, username_attribute="uid")
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, ACS, SP, "id-77", {"uid": ["bob"]})
    identity = sp.identity(response, request_id, ACS)
    assert identity.user == "corp:bob" and identity.subject == "id-77"


def test_unsigned_assertion_is_refused(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, ACS, SP, sign_assertion=False)
    with pytest.raises(AccessDenied, match="Signature missing for assertion"):
        sp.identity(response, request_id, ACS)


def test_signed_response_around_unsigned_assertion_is_refused(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, ACS, SP, sign_assertion=False, sign_response=True)
    with pytest.raises(AccessDenied, match="Signature missing for assertion"):
        sp.identity(response, request_id, ACS)


def test_response_for_another_audience_is_refused(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, ACS, OTHER_SP)
    with pytest.raises(AccessDenied, match="SAML response refused.*AudienceRestrictions"):
        sp.identity(response, request_id, ACS)


def test_response_to_another_request_is_refused(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond("id-of-someone-else", ACS, SP)
    with pytest.raises(AccessDenied, match="SAML response refused.*Unsolicited"):
        sp.identity(response, request_id, ACS)


def test_response_for_another_destination_is_refused(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, "https://other-sp.test/acs", SP)
    with pytest.raises(AccessDenied, match="SAML response refused.*Destination"):
        sp.identity(response, request_id, ACS)


def test_expired_assertion_is_refused(idp: SAMLTestIdP) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = idp.respond(request_id, ACS, SP, lifetime_minutes=-10)
    with pytest.raises(AccessDenied, match="SAML response refused.*Condition not OK"):
        sp.identity(response, request_id, ACS)


def test_assertion_signed_by_another_idp_is_refused(idp: SAMLTestIdP, tmp_path: Path) -> None:
    impostor = SAMLTestIdP.create(tmp_path, sps=[(SP, ACS)], entity_id=idp.entity_id)
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    response = impostor.respond(request_id, ACS, SP)
    with pytest.raises(AccessDenied, match="SAML response refused.*Failed to verify signature"):
        sp.identity(response, request_id, ACS)


@pytest.mark.parametrize("junk", ["", "bm90IHhtbA==", "<xml/>"])
def test_junk_is_refused(idp: SAMLTestIdP, junk: str) -> None:
    sp = provider(idp)
    request_id, _ = login(idp, sp)
    with pytest.raises(AccessDenied):
        sp.identity(junk, request_id, ACS)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
    | st.text(max_size=200)
    | st.sampled_from(["<samlp:Response/>", "<?xml version='1.0'?><a>&lt;</a>"]).map(
        lambda x: base64.b64encode(x.encode()).decode()
    )
)
def test_only_access_denied_escapes_on_garbage(idp: SAMLTestIdP, junk: str) -> None:
    sp = provider(idp)
    with pytest.raises(AccessDenied):
        sp.identity(junk, "id-1", ACS)
