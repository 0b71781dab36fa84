from __future__ import annotations

from pathlib import Path

from bastion.testing.peers.swtpm import SwTPM


def test_tcti_names_the_port() -> None:
    tpm = SwTPM(proc=None, port=4321, state=Path("/x"))  # type: ignore[arg-type]
    assert tpm.tcti == "swtpm:host=127.0.0.1,port=4321"
