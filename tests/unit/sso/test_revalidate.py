"""Periodic OIDC re-validation: a user the IdP no longer knows, or whose groups lost a role, is
cut off (a lock on the login's epoch, committed with the grant's deletion)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bastion.auth.revocation import new_epoch
from bastion.backend.base import Item
from bastion.clock import FakeClock
from bastion.errors import NotFound
from bastion.locks.matcher import LockTargets
from bastion.sso.http import IdPRefused
from bastion.sso.mapping import SSOIdentity, TokenSet
from bastion.sso.revalidate import PREFIX, Grant, Revalidator, grant_op, login_epoch
from bastion.testing import AuthFixture, make_auth
from bastion.types.connectors import OIDCConnector

ISSUER = "https://idp.example.com"


def _advance(fx: AuthFixture, delta: timedelta) -> None:
    assert isinstance(fx.clock, FakeClock)
    fx.clock.advance(delta)


class FakeIdP:
    """Discovery, token (refresh) and userinfo endpoints of a provider, in memory."""

    def __init__(self) -> None:
        self.users: dict[str, list[str]] = {"alice": ["dev"]}
        self.tokens = {"at-1": "alice"}
        self.refresh = {"rt-1": "alice"}
        self.down = False

    async def get_json(self, url: str, headers: dict[str, str] | None = None) -> Any:
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks",
                    "userinfo_endpoint": f"{ISSUER}/me"}  # fmt: skip
        user = self.tokens.get((headers or {}).get("Authorization", "").removeprefix("Bearer "))
        if user is None or user not in self.users:
            raise IdPRefused("HTTP 401", 401, "invalid_token")
        return {"sub": user, "groups": self.users[user]}

    async def post_form(self, url: str, form: dict[str, str], **_: Any) -> Any:
        user = self.refresh.pop(form["refresh_token"], None)
        if user is None or user not in self.users:
            raise IdPRefused("HTTP 400", 400, "invalid_grant")
        self.tokens["at-2"], self.refresh["rt-2"] = user, user
        return {"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 3600}


async def _world(interval: str = "1m") -> AuthFixture:
    fx = await make_auth()
    connector = OIDCConnector.model_validate({"metadata": {"name": "okta"}, "spec": {
        "issuer_url": ISSUER, "client_id": "x", "revalidate_interval": interval,
        "claims_to_roles": [{"claim": "groups", "value": "dev", "roles": ["access"]}],
    }})  # fmt: skip
    await fx.auth.create_resource(connector, "admin", force=False)
    return fx


async def _login(fx: AuthFixture, refresh: str = "") -> Grant:
    connector = await fx.auth.store("oidc").get("okta")
    tokens = TokenSet("id", "at-1", refresh, 3600)
    epoch = login_epoch(connector, tokens)
    assert epoch
    identity = SSOIdentity("okta", "oidc", ISSUER, "alice", "alice", {}, tokens)
    now = fx.clock.now()
    op = grant_op(identity, epoch, ["access"], now + timedelta(hours=8), now)
    assert op is not None
    await fx.auth.audit.commit_change("sso.login", [op], user="okta:alice")
    return Grant.model_validate_json(op.item.value)


async def _cut(fx: AuthFixture, grant: Grant) -> bool:
    targets = LockTargets(user=grant.user, user_epoch=grant.epoch)
    return not (await fx.auth.lock_decision(targets)).allowed


async def _tick(fx: AuthFixture, reval: Revalidator) -> list[str]:
    _advance(fx, timedelta(minutes=1, seconds=1))
    return [v.state for _, v in await reval.step()]


async def test_userinfo_check_cuts_a_removed_user() -> None:
    fx, idp = await _world(), FakeIdP()
    grant = await _login(fx)
    reval = Revalidator(fx.auth, http=idp)  # type: ignore[arg-type]
    assert await reval.step() == []  # first seen: checked after one interval
    assert await _tick(fx, reval) == ["ok"]
    del idp.users["alice"]
    assert await _tick(fx, reval) == ["gone"]
    assert await _cut(fx, grant)
    assert not await _cut(fx, grant.model_copy(update={"epoch": new_epoch()}))  # a new login
    assert await fx.backend.get_range(PREFIX) == []
    events = [e for e in await fx.auth.audit.read_from(0, 1000) if e.type == "sso.revalidate"]
    assert events[-1].fields["verdict"] == "gone" and events[-1].fields["changes"]


async def test_a_group_change_that_drops_a_role_cuts_the_login() -> None:
    fx, idp = await _world(), FakeIdP()
    grant = await _login(fx, refresh="rt-1")
    reval = Revalidator(fx.auth, http=idp)  # type: ignore[arg-type]
    await reval.step()
    assert await _tick(fx, reval) == ["refreshed"]  # the rotated refresh token is stored
    stored = Grant.model_validate_json((await fx.backend.get(grant.key)).value)
    assert stored.refresh_token == "rt-2"
    idp.users["alice"] = ["sales"]
    assert await _tick(fx, reval) == ["changed"]
    assert await _cut(fx, grant)


async def test_userinfo_without_the_mapped_claim_does_not_judge_groups() -> None:
    fx, idp = await _world(), FakeIdP()
    grant = await _login(fx)
    real = idp.get_json

    async def no_groups(url: str, headers: dict[str, str] | None = None) -> Any:
        doc = await real(url, headers)
        return {k: v for k, v in doc.items() if k != "groups"}

    idp.get_json = no_groups  # type: ignore[method-assign]
    reval = Revalidator(fx.auth, http=idp)  # type: ignore[arg-type]
    await reval.step()
    assert await _tick(fx, reval) == ["ok"]
    assert not await _cut(fx, grant)


async def test_a_refused_refresh_token_is_a_removed_user() -> None:
    fx, idp = await _world(), FakeIdP()
    grant = await _login(fx, refresh="rt-1")
    idp.refresh.clear()
    reval = Revalidator(fx.auth, http=idp)  # type: ignore[arg-type]
    await reval.step()
    assert await _tick(fx, reval) == ["gone"]
    assert await _cut(fx, grant)


async def test_expired_access_without_refresh_stops_checking_and_off_means_off() -> None:
    fx, idp = await _world(), FakeIdP()
    await _login(fx)
    reval = Revalidator(fx.auth, http=idp)  # type: ignore[arg-type]
    await reval.step()
    _advance(fx, timedelta(hours=2))
    assert [v.state for _, v in await reval.step()] == ["unchecked"]
    assert await fx.backend.get_range(PREFIX) == []  # nothing left to check
    connector = await fx.auth.store("oidc").get("okta")
    off = connector.spec.model_copy(update={"revalidate_interval": timedelta(0)})
    assert login_epoch(connector.model_copy(update={"spec": off}), TokenSet("i", "a")) == ""
    assert login_epoch(connector, None) == ""


async def test_an_unreachable_provider_is_retried_later() -> None:
    fx, idp = await _world(), FakeIdP()
    grant = await _login(fx)

    async def down(*_: Any, **__: Any) -> Any:
        from bastion.errors import ConnectionProblem

        raise ConnectionProblem("unreachable")

    idp.get_json = down  # type: ignore[method-assign]
    reval = Revalidator(fx.auth, http=idp)  # type: ignore[arg-type]
    await reval.step()
    assert await _tick(fx, reval) == []
    assert not await _cut(fx, grant)
    try:
        await fx.backend.get(grant.key)
    except NotFound:
        raise AssertionError("the grant stays for the next try") from None
    assert isinstance(await fx.backend.get(grant.key), Item)
