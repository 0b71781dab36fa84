from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import BadParameter
from bastion.export.syslog_output import SyslogOutput, tls_client_context


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match="facility"):
        SyslogOutput("127.0.0.1", 1, facility="nope")
    with pytest.raises(BadParameter, match="TLS files"):
        tls_client_context(str(tmp_path / "missing.pem"))
