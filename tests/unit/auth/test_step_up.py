"""Step-up MFA demanded by a risk rule: the next certificate needs a second factor, and a
certificate issued with one clears the demand (audited)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bastion.auth.step_up import StepUpRequired, idp_second_factor, step_up_key, step_up_put
from bastion.errors import NotFound
from bastion.testing import make_auth, new_public_key
from bastion.types.identity import Identity


async def test_the_flag_refuses_plain_issuance_and_mfa_clears_it() -> None:
    fx = await make_auth()
    now = fx.clock.now()
    _, public_key = new_public_key()
    plain = Identity(cluster=fx.auth.cluster, user="alice", roles=("access",),
                     expires=now + timedelta(hours=1))  # fmt: skip
    await fx.auth.issuer.issue_user(plain, public_key, "10.0.0.1")  # no flag: fine
    put = step_up_put("alice", "denied_burst", now, now + timedelta(hours=1))
    await fx.auth.audit.commit_change("risk.signal", [put], user="risk")
    with pytest.raises(StepUpRequired, match="second factor"):
        await fx.auth.issuer.issue_user(plain, public_key, "10.0.0.1")
    bot = plain.model_copy(update={"kind": "bot", "user": "bot-x"})
    await fx.auth.issuer.issue_user(bot, public_key, "10.0.0.1")  # only users are flagged
    with_mfa = plain.model_copy(update={"mfa_device": "key-1"})
    await fx.auth.issuer.issue_user(with_mfa, public_key, "10.0.0.1")
    with pytest.raises(NotFound):
        await fx.backend.get(step_up_key("alice"))
    cleared = [e for e in await fx.auth.audit.read_from(0, 1000) if e.type == "risk.step_up"]
    assert len(cleared) == 1 and cleared[0].user == "alice" and cleared[0].fields["changes"]
    await fx.auth.issuer.issue_user(plain, public_key, "10.0.0.1")


def test_only_an_idp_that_reports_mfa_counts_as_a_second_factor() -> None:
    assert idp_second_factor({"amr": ["pwd", "mfa"]})
    assert not idp_second_factor({"amr": ["pwd"]})
    assert not idp_second_factor({"groups": ["mfa"]})
    assert not idp_second_factor({})


async def test_an_sso_login_with_idp_mfa_clears_the_flag() -> None:
    fx = await make_auth()
    now = fx.clock.now()
    _, public_key = new_public_key()
    sso = Identity(cluster=fx.auth.cluster, user="okta:alice", roles=("access",),
                   expires=now + timedelta(hours=1))  # fmt: skip
    put = step_up_put("okta:alice", "new_source", now, now + timedelta(hours=1))
    await fx.auth.audit.commit_change("risk.signal", [put], user="risk")
    with pytest.raises(StepUpRequired, match="identity provider"):
        await fx.auth.issuer.issue_user(sso, public_key, "10.0.0.1")
    await fx.auth.issuer.issue_user(sso, public_key, "10.0.0.1", second_factor=True)
    with pytest.raises(NotFound):
        await fx.backend.get(step_up_key("okta:alice"))
