import pytest
from pydantic import ValidationError

from bastion.contract.apps import APP_CERT, JWKS, LIST_APPS, AppCertRequest


def test_endpoints_and_audiences():
    assert (JWKS.path, JWKS.audience) == ("/.well-known/jwks.json", "public")
    assert LIST_APPS.audience == "user" and APP_CERT.audience == "user"


def test_cert_request_forbids_unknown_fields():
    with pytest.raises(ValidationError):
        AppCertRequest.model_validate({"app": "a", "public_key": "k", "extra": 1})
