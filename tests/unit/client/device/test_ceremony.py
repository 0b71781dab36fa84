from __future__ import annotations

import inspect

from bastion.client.device import ceremony


def test_ceremonies_are_coroutines() -> None:
    assert inspect.iscoroutinefunction(ceremony.enroll)
    assert inspect.iscoroutinefunction(ceremony.authenticate)
