"""Bot naming: a bot ``NAME`` is backed by the user ``bot-NAME`` (issue 18, docs/machine-id.md).

Layer: types (pure). The prefix keeps bots out of people's namespace: ``bctl users add bot-x``
is refused, and a lock ``bot=NAME`` (``bctl lock --bot=NAME``) names the bot, not its user.
"""

from __future__ import annotations

import re

__all__ = ["BOT_USER_PREFIX", "bot_name_of", "bot_user", "check_bot_name"]

BOT_USER_PREFIX = "bot-"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def check_bot_name(name: str) -> str:
    """Raises: ValueError for a name that is not ``[a-z0-9][a-z0-9._-]*`` (at most 63)."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"bot name {name[:80]!r}: use lowercase letters, digits, '.', '_' and '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


def bot_user(name: str) -> str:
    """The user behind bot ``name``."""
    return BOT_USER_PREFIX + name


def bot_name_of(user: str) -> str:
    """The bot a bot user stands for (``bot-ci`` -> ``ci``)."""
    return user.removeprefix(BOT_USER_PREFIX)
