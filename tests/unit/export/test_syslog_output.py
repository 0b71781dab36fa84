from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import BadParameter
from bastion.export.syslog_output import SyslogOutput, tls_client_context
from bastion.testing_export import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match="facility"):
        SyslogOutput("127.0.0.1", 1, facility="nope")
    with pytest.raises(BadParameter, match="TLS files"):
        tls_client_context(str(tmp_path / "missing.pem"))
