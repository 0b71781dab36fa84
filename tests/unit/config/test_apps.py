import pytest
from pydantic import ValidationError

from bastion.config.apps import AppServiceConfig, app_cert_names, app_domain


def test_apps_become_resources_bound_to_the_agent():
    cfg = AppServiceConfig.model_validate(
        {"apps": [{"name": "grafana", "uri": "http://10.0.0.5:3000", "labels": {"env": "dev"}},
                  {"name": "redis", "uri": "tcp://10.0.0.6:6379"}]}
    )  # fmt: skip
    app = cfg.apps[0].resource("host-1")
    assert app.metadata.labels == {"env": "dev"} and app.spec.host_id == "host-1"


@pytest.mark.parametrize(
    "apps",
    [
        [{"name": "Bad_Name", "uri": "http://a:1"}],
        [{"name": "a", "uri": "ftp://a:1"}],
        [{"name": "a", "uri": "tcp://a"}],
        [{"name": "a", "uri": "http://a:1"}, {"name": "a", "uri": "http://b:1"}],
    ],
)
def test_bad_apps_are_refused(apps):
    with pytest.raises(ValidationError):
        AppServiceConfig.model_validate({"apps": apps})


def test_the_app_domain_and_certificate_names():
    assert app_domain(["proxy.example.com:443"], "0.0.0.0:3080") == "proxy.example.com"
    assert app_domain([], "127.0.0.1:3080") == "apps.localhost"
    assert app_domain([], "localhost:3080") == "apps.localhost"
    assert app_cert_names("apps.localhost", ["web"]) == [
        "apps.localhost", "*.apps.localhost", "web.apps.localhost"
    ]  # fmt: skip
    assert app_cert_names("intranet", []) == ["intranet"]
