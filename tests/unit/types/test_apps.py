import pytest
from pydantic import ValidationError

from bastion.types.apps import App, AppHeader, AppSpec, is_identity_header
from bastion.types.meta import Metadata


def test_app_defaults_and_host():
    app = App(metadata=Metadata(name="grafana"), spec=AppSpec(uri="http://10.0.0.5:3000/"))
    assert app.spec.uri == "http://10.0.0.5:3000"
    assert app.spec.insecure_skip_verify is False
    assert app.public_host("Proxy.Example.com") == "grafana.proxy.example.com"


@pytest.mark.parametrize(
    "uri",
    [
        "tcp://x",
        "tcp://x:1/p",
        "ftp://x",
        "http://",
        "http://u:p@x/",
        "http://x/?q=1",
        "http://x:99999",
    ],
)
def test_bad_uris(uri):
    with pytest.raises(ValidationError):
        AppSpec(uri=uri)


@pytest.mark.parametrize("name", ["Grafana", "a.b", "-x", "x_y"])
def test_app_names_are_one_dns_label(name):
    with pytest.raises(ValidationError):
        App(metadata=Metadata(name=name), spec=AppSpec(uri="http://x"))


@pytest.mark.parametrize(
    "name", ["Bastion-Jwt-Assertion", "X-Forwarded-For", "X-Forwarded-Host", "Host", "Cookie"]
)
def test_rewrite_cannot_set_identity_or_hop_headers(name):
    with pytest.raises(ValidationError):
        AppHeader(name=name, value="x")


def test_rewrite_may_set_the_user_headers_from_trait_templates():
    header = AppHeader(name="X-Forwarded-User", value="{{internal.logins}}")
    assert header.value == "{{internal.logins}}"
    with pytest.raises(ValidationError, match="invalid template"):
        AppHeader(name="X-Team", value="{{internal.nope}}")
    with pytest.raises(ValidationError, match="invalid template"):
        AppHeader(name="X-Team", value="{{external.a}}-{{external.b}}")


def test_identity_headers():
    assert is_identity_header("bastion-jwt-assertion")
    assert is_identity_header("X-Forwarded-For") and is_identity_header("Forwarded")
    assert not is_identity_header("X-Request-Id")
