from __future__ import annotations

from bastion.contract import ENDPOINTS
from bastion.contract import devices as d


def test_device_endpoints_are_listed_for_users() -> None:
    for endpoint in (d.DEVICES_ADD, d.DEVICE_ENROLL_BEGIN, d.DEVICE_AUTHN_FINISH):
        assert endpoint in ENDPOINTS and endpoint.audience == "user"
