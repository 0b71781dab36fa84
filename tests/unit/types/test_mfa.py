from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bastion.types.mfa import MFADevice


def test_device_summary_has_no_key_material():
    device = MFADevice(
        id="1",
        user="a",
        name="yubi",
        type="webauthn",
        added=datetime(2026, 1, 1, tzinfo=UTC),
        public_key="secret-ish",
        credential_id="cred",
    )
    summary = device.summary()
    assert summary["name"] == "yubi" and "public_key" not in summary
    assert "credential_id" not in summary


@pytest.mark.parametrize("name", ["", "a/b", "x" * 65, "tab\there"])
def test_bad_device_names(name):
    with pytest.raises(ValidationError):
        MFADevice(id="1", user="a", name=name, type="totp", added=datetime(2026, 1, 1, tzinfo=UTC))
