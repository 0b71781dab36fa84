from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.types.codec import parse_resource
from bastion.types.connectors import REDACTED, keep_secrets, redact

OIDC = {
    "kind": "oidc",
    "metadata": {"name": "okta"},
    "spec": {
        "issuer_url": "https://idp.example.com",
        "client_id": "c",
        "client_secret": "very-secret",
        "claims_to_roles": [{"claim": "groups", "value": "^team-(.*)$", "roles": ["$1"]}],
    },
}


def with_spec(base: dict, **spec: object) -> dict:
    return {**base, "spec": {**base["spec"], **spec}}


def test_valid_connectors_parse() -> None:
    oidc = parse_resource(OIDC)
    assert oidc.spec.scopes[0] == "openid"
    github = parse_resource(
        {
            "kind": "github",
            "metadata": {"name": "gh"},
            "spec": {
                "client_id": "c",
                "teams_to_roles": [{"organization": "acme", "team": "*", "roles": ["access"]}],
            },
        }
    )
    assert github.spec.api_endpoint_url == "https://api.github.com"


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"issuer_url": "http://idp.example.com"}, "spec.issuer_url", "https"),
        ({"allowed_algorithms": ["HS256"]}, "spec.allowed_algorithms", "HMAC"),
        ({"allowed_algorithms": ["none"]}, "spec.allowed_algorithms", "none"),
        ({"claims_to_roles": []}, "spec.claims_to_roles", "at least one"),
        (
            {"claims_to_roles": [{"claim": "g", "value": "^(a$", "roles": ["r"]}]},
            "spec.claims_to_roles[0]",
            "regular expression",
        ),
        (
            {"claims_to_roles": [{"claim": "g", "value": "^a$", "roles": ["r-$1"]}]},
            "spec.claims_to_roles[0]",
            "does not capture",
        ),
        ({"bogus": 1}, "spec.bogus", "unknown field"),
    ],
)
def test_errors_name_the_field(spec: dict, field: str, words: str) -> None:
    with pytest.raises(BadParameter) as info:
        parse_resource(with_spec(OIDC, **spec))
    assert f'oidc "okta": {field}' in info.value.message
    assert words in info.value.message


def test_plain_http_is_allowed_on_loopback_only() -> None:
    parse_resource(with_spec(OIDC, issuer_url="http://127.0.0.1:8080"))


def test_saml_needs_metadata_xml() -> None:
    with pytest.raises(BadParameter, match="spec.entity_descriptor"):
        parse_resource(
            {
                "kind": "saml",
                "metadata": {"name": "s"},
                "spec": {
                    "entity_descriptor": "<html/>",
                    "service_provider_issuer": "bastion",
                    "attributes_to_roles": [{"name": "g", "value": "*", "roles": ["r"]}],
                },
            }
        )


def test_redact_hides_secrets_and_keep_secrets_restores_them() -> None:
    stored = parse_resource(OIDC)
    shown = redact(stored)
    assert shown.spec.client_secret == REDACTED
    assert stored.spec.client_secret == "very-secret"
    assert keep_secrets(shown, stored).spec.client_secret == "very-secret"
    changed = parse_resource(with_spec(OIDC, client_secret="new"))
    assert keep_secrets(changed, stored).spec.client_secret == "new"
    with pytest.raises(ValueError, match="placeholder"):
        keep_secrets(shown, None)
