"""A real software TPM (swtpm) per simulated machine, for device-trust tests and benches.

``swtpm socket --tpm2`` with a fresh state directory manufactures a new TPM (its own
endorsement seed, so its own EK) and listens on two loopback ports (commands and control);
``not-need-init,startup-clear`` makes it usable at once. No EK certificate is provisioned (the
device then sends its EK public key, which the tests trust directly).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bastion.testing.peers.ports import free_port

__all__ = ["SWTPM", "SwTPM", "start_swtpm"]

SWTPM = "swtpm"
START_TIMEOUT = 10.0


@dataclass
class SwTPM:
    proc: subprocess.Popen[bytes]
    port: int
    state: Path

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_swtpm(state: Path, attempts: int = 3) -> SwTPM:
    """Start swtpm with state in ``state`` (created); retried on a port taken meanwhile.

    Raises:
        FileNotFoundError: swtpm is not installed (``apt-get install swtpm``).
        RuntimeError: it did not start.
    """
    if shutil.which(SWTPM) is None:
        raise FileNotFoundError("swtpm is not installed (apt-get install swtpm swtpm-tools)")
    state.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(attempts):
        port = free_port()
        ctrl = port + 1  # the swtpm TCTI finds the control channel at port + 1
        log = state / "swtpm.log"
        proc = subprocess.Popen(
            [
                SWTPM, "socket", "--tpm2",
                "--tpmstate", f"dir={state}",
                "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                "--flags", "not-need-init,startup-clear",
                "--log", f"file={log}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _listening(port):
                return SwTPM(proc=proc, port=port, state=state)
            time.sleep(0.02)
        last = log.read_text(errors="replace") if log.exists() else ""
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError(f"swtpm did not start: {last[-500:]}")
