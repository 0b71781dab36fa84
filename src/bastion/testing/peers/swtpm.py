"""A real software TPM (swtpm) per simulated machine, for device-trust tests and benches.

``swtpm socket --tpm2`` with a fresh state directory manufactures a new TPM (its own
endorsement seed, so its own EK) and listens on two loopback ports (commands and control);
``not-need-init,startup-clear`` makes it usable at once. No EK certificate is provisioned (the
device then sends its EK public key, which the tests trust directly), unless the state was first
manufactured by :func:`manufacture` (``swtpm_setup --create-ek-cert`` with a local CA of the
test's own: EK certificates like a vendor's, signed by ``swtpm_localca``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bastion.testing.peers.ports import free_port

__all__ = ["SWTPM", "SwTPM", "LocalEKCA", "manufacture", "start_swtpm"]

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


@dataclass(frozen=True)
class LocalEKCA:
    """A local "manufacturer" CA (``swtpm_localca``'s root and its signing CA) in ``folder``."""

    folder: Path

    @property
    def root(self) -> Path:
        return self.folder / "swtpm-localca-rootca-cert.pem"

    @property
    def issuer(self) -> Path:
        return self.folder / "issuercert.pem"


def manufacture(state: Path, ca_folder: Path, aia_url: str = "") -> LocalEKCA:
    """Manufacture a TPM in ``state`` (then :func:`start_swtpm` it) with EK certificates signed
    by a local CA in ``ca_folder`` (created at the first call, shared by later ones): an RSA 2048
    and an ECC P-384 EK, their certificates in NV (TCG indexes). About a second. ``aia_url``:
    the EK certificates name it as their issuer's URL (AIA caIssuers, :mod:`.ek_aia`).

    Raises:
        FileNotFoundError: swtpm_setup / swtpm_localca are not installed (package swtpm-tools).
        RuntimeError: swtpm_setup failed.
    """
    setup, localca = shutil.which("swtpm_setup"), shutil.which("swtpm_localca")
    if setup is None or localca is None:
        raise FileNotFoundError("swtpm_setup is not installed (apt-get install swtpm-tools)")
    state.mkdir(parents=True, exist_ok=True)
    ca_folder.mkdir(parents=True, exist_ok=True)
    conf = ca_folder / "localca.conf"
    conf.write_text(
        f"statedir = {ca_folder}\nsigningkey = {ca_folder}/signkey.pem\n"
        f"issuercert = {ca_folder}/issuercert.pem\ncertserial = {ca_folder}/certserial\n"
    )
    options = ca_folder / "localca.options"
    options.write_text("--platform-manufacturer Bastion\n--platform-version 2.1\n")
    if aia_url:  # swtpm_localca through ek_aia, which adds the AIA extension
        wrapper = ca_folder / "localca-aia.sh"
        wrapper.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m bastion.testing.peers.ek_aia '
            f'"{aia_url}" "{localca}" "$@"\n'
        )
        wrapper.chmod(0o755)
        localca = str(wrapper)
    setup_conf = state.parent / f"{state.name}-swtpm_setup.conf"
    setup_conf.write_text(
        f"create_certs_tool = {localca}\ncreate_certs_tool_config = {conf}\n"
        f"create_certs_tool_options = {options}\nactive_pcr_banks = sha256\n"
    )
    log = state.parent / f"{state.name}-swtpm_setup.log"
    done = subprocess.run(
        [setup, "--tpm2", "--tpmstate", str(state), "--create-ek-cert",
         "--config", str(setup_conf), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"swtpm_setup failed: {text[-500:]}")
    return LocalEKCA(ca_folder)


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
