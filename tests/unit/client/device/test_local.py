from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.client.device.local import (
    PROFILE_ENV,
    DeviceState,
    collect_profile,
    load_state,
    save_state,
)
from bastion.errors import NotFound


def test_state_round_trip(tmp_path: Path) -> None:
    state = DeviceState("c", "d1", "SN", "cred", "tpm", "dW5pcXVl", "swtpm:port=1")
    save_state(tmp_path, state)
    assert load_state(tmp_path, "c") == state
    with pytest.raises(NotFound):
        load_state(tmp_path, "other")


def test_profile_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, json.dumps({"os_version": "99", "bogus": "x"}))
    profile = collect_profile()
    assert profile["os_version"] == "99" and "bogus" not in profile
