from __future__ import annotations

import pytest

from bastion.client.device.tpm import DEFAULT_TCTI, TCTI_ENV, tcti_from_env


def test_tcti_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TCTI_ENV, raising=False)
    assert tcti_from_env() == DEFAULT_TCTI
    monkeypatch.setenv(TCTI_ENV, "swtpm:port=5")
    assert tcti_from_env() == "swtpm:port=5"
