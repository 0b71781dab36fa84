from __future__ import annotations

import pytest

from bastion.auth.device_attest import authn_message, parse_ak, unb64
from bastion.errors import BadParameter


def test_malformed_inputs_are_one_line_errors() -> None:
    with pytest.raises(BadParameter):
        unb64("***", "x")
    with pytest.raises(BadParameter):
        parse_ak("AAAA")


def test_authn_message_binds_challenge_and_profile() -> None:
    a = authn_message("c", "id1", b"n", {"os_version": "1"})
    assert a != authn_message("c", "id2", b"n", {"os_version": "1"})
    assert a != authn_message("c", "id1", b"n", {"os_version": "2"})
