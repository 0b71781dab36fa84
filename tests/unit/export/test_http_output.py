from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.export.http_output import HttpOutput, auth_headers


def test_auth_header_rules() -> None:
    assert auth_headers("splunk_hec", token="abc") == {"Authorization": "Splunk abc"}
    with pytest.raises(BadParameter, match="token"):
        auth_headers("splunk_hec")
    with pytest.raises(BadParameter, match="not both"):
        auth_headers("elasticsearch", username="u", api_key="k")
    with pytest.raises(BadParameter, match="http"):
        HttpOutput("ftp://x", "elasticsearch")


def test_token_not_in_repr() -> None:
    out = HttpOutput("http://x/_bulk", "elasticsearch", headers={"Authorization": "Splunk s3cret"})
    assert "s3cret" not in repr(out)
