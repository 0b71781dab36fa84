from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.types.access import AuthPreferenceSpec
from bastion.types.devices import DeviceSpec, DeviceTrustPreference


def test_asset_tag_and_versions_are_checked() -> None:
    assert DeviceSpec(asset_tag="C02XK1", os_type="macos").enroll_status == "not_enrolled"
    with pytest.raises(ValidationError):
        DeviceSpec(asset_tag="bad tag", os_type="linux")
    with pytest.raises(ValidationError):
        DeviceTrustPreference(min_os_version={"linux": "six"})
    assert DeviceTrustPreference.model_validate({"mode": False}).mode == "off"
    assert AuthPreferenceSpec().device_trust.mode == "off"
