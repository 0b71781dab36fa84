"""The rig itself runs in tests/integration/test_app_access.py and bench/app.py."""

from bastion.testing.app_rig import DOMAIN, PASSWORD


def test_constants():
    assert DOMAIN == "proxy.test" and len(PASSWORD) >= 12
