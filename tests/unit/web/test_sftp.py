"""Web file transfer names: plain names in the home directory only."""

from __future__ import annotations

import pytest

from bastion.errors import BadParameter
from bastion.web.sftp import safe_name


def test_plain_names_pass() -> None:
    assert safe_name(" notes.txt ") == "notes.txt"
    assert safe_name(".bashrc") == ".bashrc"


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "x\x00", "é" * 200])
def test_paths_and_odd_names_are_refused(name: str) -> None:
    with pytest.raises(BadParameter):
        safe_name(name)
