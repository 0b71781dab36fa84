import pytest

from bastion.types.bots import bot_name_of, bot_user, check_bot_name


def test_bot_users_are_prefixed_and_names_checked() -> None:
    assert bot_user("ci") == "bot-ci" and bot_name_of("bot-ci") == "ci"
    assert check_bot_name("ci.deploy-1") == "ci.deploy-1"
    for bad in ("", "CI", "-x", "a/b", "x" * 64):
        with pytest.raises(ValueError):
            check_bot_name(bad)
