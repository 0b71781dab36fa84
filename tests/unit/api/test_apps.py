import pytest

from bastion.api.apps import _labels, public_addr
from bastion.errors import BadParameter
from bastion.types.apps import App, AppSpec
from bastion.types.meta import Metadata


def test_public_addr_follows_the_proxy_address():
    app = App(metadata=Metadata(name="grafana"), spec=AppSpec(uri="http://x:1"))
    assert public_addr(app, "proxy.example.com:3080") == "grafana.proxy.example.com:3080"
    assert public_addr(app, "proxy.example.com") == "grafana.proxy.example.com"


def test_label_filter():
    assert _labels("env=dev,team=a") == {"env": "dev", "team": "a"}
    with pytest.raises(BadParameter):
        _labels("env")
