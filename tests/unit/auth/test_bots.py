from datetime import timedelta

import pytest

from bastion.auth.bots import BotService
from bastion.errors import AccessDenied, AlreadyExists, BadParameter
from bastion.testing import make_auth, new_public_key


async def test_add_is_one_audited_change_and_names_are_checked() -> None:
    fx = await make_auth()
    bots = BotService(fx.auth)
    info, token = await bots.add_bot("ci", ["access"], ["deploy"], timedelta(hours=1), "admin")
    assert info.user == "bot-ci" and info.generation == 0 and token.resource.spec.single_use
    user = await fx.auth.users.get("bot-ci")
    assert user.spec.bot is not None and user.spec.traits == {"logins": ["deploy"]}
    with pytest.raises(AlreadyExists):
        await bots.add_bot("ci", ["access"], [], timedelta(hours=1), "admin")
    with pytest.raises(BadParameter):
        await bots.add_bot("Bad/Name", ["access"], [], timedelta(hours=1), "admin")
    with pytest.raises(BadParameter, match="unknown"):
        await bots.add_bot("x", ["nope"], [], timedelta(hours=1), "admin")


async def test_expired_token_and_removed_bot_refuse_joins() -> None:
    fx = await make_auth()
    bots = BotService(fx.auth)
    _, token = await bots.add_bot("ci", ["access"], [], timedelta(minutes=5), "admin")
    _, pub = new_public_key()
    fx.clock.advance(600)
    with pytest.raises(AccessDenied):
        await bots.join(
            token=token.token, id_token="", bot="", public_key=pub, ttl=timedelta(hours=1),
            remote_addr="ip",
        )  # fmt: skip
    with pytest.raises(AccessDenied, match="no oidc"):
        await bots.join(
            token="", id_token="a.b.c", bot="ci", public_key=pub, ttl=timedelta(hours=1),
            remote_addr="ip",
        )  # fmt: skip
