"""What a machine keeps about its enrollment (``$BSH_HOME/devices/<cluster>.json``, 0600), the
software key of a software-attested device, and the profile a device reports.

Layer: client. The state names the device and how to reach its key: for a TPM, the random
``unique`` value the attestation key is derived from (useless on another TPM); for a software
key, the PEM private key file next to it.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion import __version__
from bastion.errors import NotFound
from bastion.files import write_private_file

PROFILE_ENV = "BSH_DEVICE_PROFILE"
"""JSON object overriding profile fields (``{"os_version": "12"}``)."""

__all__ = [
    "PROFILE_ENV",
    "DeviceState",
    "collect_profile",
    "load_state",
    "save_state",
    "software_key",
]


@dataclass(frozen=True, slots=True)
class DeviceState:
    cluster: str
    device_id: str
    asset_tag: str
    credential_id: str
    attestation: str
    ak_unique: str = ""
    """base64 of the AK's derivation value (``tpm``)."""
    tcti: str = ""
    """The TCTI used at enrollment (``BSH_TPM_TCTI`` overrides it)."""


def _path(home: Path, cluster: str) -> Path:
    return home / "devices" / f"{cluster}.json"


def save_state(home: Path, state: DeviceState) -> Path:
    path = _path(home, state.cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, json.dumps(asdict(state), indent=2) + "\n")
    return path


def load_state(home: Path, cluster: str) -> DeviceState:
    """Raises: NotFound when this machine is not enrolled in ``cluster``."""
    path = _path(home, cluster)
    try:
        data = json.loads(path.read_text())
        return DeviceState(**data)
    except FileNotFoundError:
        raise NotFound(
            f"this machine is not enrolled in {cluster}: run bsh device enroll --token=..."
        ) from None
    except (ValueError, TypeError):
        raise NotFound(f"{path} is corrupt: enroll this machine again") from None


def software_key(home: Path, cluster: str, create: bool) -> ec.EllipticCurvePrivateKey:
    """The software device key (ECDSA P-256) for ``cluster``; created when asked."""
    path = home / "devices" / f"{cluster}.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    if not create:
        raise NotFound(f"the software device key {path} is missing: enroll again")
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, pem)
    return key


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            out[key] = value.strip().strip('"')
    except OSError:
        pass
    return out


def collect_profile() -> dict[str, str]:
    """OS name and version, kernel, model, serial, hostname and bsh version of this machine."""
    system = platform.system()
    release = _os_release()
    if system == "Darwin":
        name, version = "macOS", platform.mac_ver()[0]
    elif system == "Windows":
        name, version = "Windows", platform.version()
    else:
        name, version = release.get("NAME", system), release.get("VERSION_ID", "")
    model = serial = ""
    for attr, target in (("product_name", "model"), ("product_serial", "serial")):
        try:
            value = Path(f"/sys/class/dmi/id/{attr}").read_text().strip()
        except OSError:
            value = ""
        if target == "model":
            model = value
        else:
            serial = value
    profile = {
        "os_name": name,
        "os_version": version,
        "kernel": platform.release(),
        "model": model[:128],
        "serial": serial[:128],
        "hostname": socket.gethostname(),
        "bsh_version": __version__,
    }
    override = os.environ.get(PROFILE_ENV, "")
    if override:  # tests and fleet tooling: report these values instead
        try:
            extra = json.loads(override)
        except ValueError:
            extra = {}
        if isinstance(extra, dict):
            profile.update({k: str(v) for k, v in extra.items() if k in profile})
    return profile


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
