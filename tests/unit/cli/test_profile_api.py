"""The profile helpers of bsh db / bsh apps: label filters and the logged-in profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.cli.profile_api import check_label_filters, current_profile
from bastion.errors import BadParameter, BastionError


def test_label_filters_are_key_value() -> None:
    check_label_filters(("env=prod", "team=db"))
    with pytest.raises(BadParameter, match="invalid label filter 'prod'"):
        check_label_filters(("env=prod", "prod"))


def test_no_login_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSH_HOME", str(tmp_path))
    with pytest.raises(BastionError, match="bsh login"):
        current_profile()
