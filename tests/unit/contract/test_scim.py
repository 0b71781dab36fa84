from __future__ import annotations

from bastion.contract import ENDPOINTS
from bastion.contract import scim as s


def test_scim_endpoints_are_for_the_scim_audience_in_scim_json() -> None:
    scim = [e for e in ENDPOINTS if e.path.startswith("/scim/v2")]
    assert len(scim) == 13
    assert all(e.audience == "scim" and e.stream == s.SCIM_MEDIA_TYPE for e in scim)
    assert s.SCIM_TOKEN.audience == "user"
