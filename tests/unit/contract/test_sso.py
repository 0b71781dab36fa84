"""SSO endpoints: a result is either a status or the certificates."""

from __future__ import annotations

from bastion.contract.sso import SSOResult


def test_pending_and_done_results() -> None:
    assert SSOResult.model_validate({"status": "pending"}).status == "pending"
    done = SSOResult.model_validate({"user": "okta:a", "ssh_cert": "c", "roles": ["r"]})
    assert not done.status and done.roles == ["r"]
