"""On-disk profiles of bsh (``~/.bsh``, or ``$BSH_HOME``): one directory per cluster.

::

    ~/.bsh/current                       name of the active profile
    ~/.bsh/known_clusters.json           CA pins verified at login, per proxy address (kept
                                         by logout, so a later login needs no --ca-pin)
    ~/.bsh/profiles/<cluster>/profile.json   proxy address, user, cluster, expiry
                               key            private key (OpenSSH format, 0600; never leaves)
                               key.pub        public key
                               key-cert.pub   SSH user certificate
                               tls.key        the same private key as PKCS#8 PEM (for TLS)
                               key.tpm        instead of ``key`` and ``tls.key``: the TPM blob
                                              of the TPM-held key of both certificates (bsh
                                              login --key-store=tpm; bsh signs TLS handshakes
                                              with it through bastion.client.device.tpm_tls)
                               tls.crt        X.509 user certificate
                               ca.pem         host TLS CA (verifies auth and proxy)
                               known_hosts    @cert-authority lines of the host SSH CA
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.errors import BadParameter, NotFound

# Reading a profile (bsh status, the ProxyCommand) imports json, pathlib and datetime only:
# writing (bastion.files: tempfile, random) and removing (shutil) load on use.
if TYPE_CHECKING:  # cryptography loads only to save a profile: bsh status stays light
    from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["KNOWN_CLUSTERS", "Profile", "ProfileStore", "new_client_key", "resource_key"]

KNOWN_CLUSTERS = "known_clusters.json"


def new_client_key() -> ed25519.Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate()


def resource_key(profile_dir: Path) -> tuple[bytes, bytes]:
    """The key to ask a resource certificate (a database's, an app's) for: (PKCS#8 PEM of a
    fresh software P-256 key, its SubjectPublicKeyInfo PEM); in a ``--key-store=tpm`` profile
    no key file (``b""``) and the public key of the profile's TPM-held key."""
    from bastion.client.tls import profile_key_is_tpm

    if profile_key_is_tpm(profile_dir):
        from bastion.client.device.tpm_key import public_pem

        return b"", public_pem(profile_dir).encode()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_pem, pub


@dataclass(slots=True)
class Profile:
    name: str
    proxy: str
    user: str
    cluster: str
    expires: str = ""
    roles: list[str] | None = None
    logins: list[str] | None = None
    key_store: str = ""
    """``tpm``: the key of both certificates (SSH and X.509) is held in the device's TPM (``bsh
    login --key-store=tpm``, reused by later logins); empty: a software key."""
    dir: str = ""

    @property
    def path(self) -> Path:
        return Path(self.dir)

    def expired(self) -> bool:
        if not self.expires:
            return True
        return datetime.fromisoformat(self.expires) <= datetime.now(UTC)


class ProfileStore:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or Path(os.environ.get("BSH_HOME") or Path.home() / ".bsh")

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise BadParameter(f"invalid profile name {name!r}")
        return self.home / "profiles" / name

    def save(
        self,
        profile: Profile,
        key: ed25519.Ed25519PrivateKey,
        certs: dict[str, object],
        ssh_public: str = "",
    ) -> Profile:
        """Write the profile, ``key`` and ``certs``. ``ssh_public``: the certificates' key is
        TPM-held (its blob already in ``key.tpm``; both the SSH and the X.509 certificate are
        for it): ``key.pub`` is that key and neither ``key`` nor ``tls.key`` is written (``key``
        is unused); without it a ``key.tpm`` left from an earlier login is removed."""
        from cryptography.hazmat.primitives import serialization

        from bastion.files import write_private_file

        d = self._dir(profile.name)
        profile.dir = str(d)
        if ssh_public:
            (d / "key").unlink(missing_ok=True)
            (d / "tls.key").unlink(missing_ok=True)
        else:
            (d / "key.tpm").unlink(missing_ok=True)
            write_private_file(
                d / "key",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                ),
            )
            write_private_file(
                d / "tls.key",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        pub = ssh_public or (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        write_private_file(d / "key.pub", pub + "\n")
        if certs.get("ssh_cert"):  # absent when the user has no logins
            write_private_file(d / "key-cert.pub", str(certs["ssh_cert"]) + "\n")
        else:
            (d / "key-cert.pub").unlink(missing_ok=True)
        write_private_file(d / "tls.crt", str(certs["tls_cert"]))
        write_private_file(d / "ca.pem", str(certs["tls_host_ca"]))
        host_ca = certs.get("ssh_host_ca") or []
        assert isinstance(host_ca, list)
        lines = [f"@cert-authority *.{profile.cluster},{profile.cluster} {k}" for k in host_ca]
        write_private_file(d / "known_hosts", "\n".join(lines) + "\n")
        write_private_file(
            d / "profile.json",
            json.dumps({k: v for k, v in asdict(profile).items() if k != "dir"}, indent=2),
        )
        write_private_file(self.home / "current", profile.name)
        return profile

    def load(self, name: str | None = None) -> Profile:
        name = name or self.current_name()
        d = self._dir(name)
        try:
            data = json.loads((d / "profile.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"no profile {name!r}: run bsh login --proxy=HOST:PORT") from None
        return Profile(**data, dir=str(d))

    def current_name(self) -> str:
        try:
            return (self.home / "current").read_text().strip()
        except FileNotFoundError:
            raise NotFound("not logged in: run bsh login --proxy=HOST:PORT --user=NAME") from None

    def names(self) -> list[str]:
        root = self.home / "profiles"
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []

    def trusted_pins(self, proxy: str) -> set[str]:
        """The CA pins a verified login to ``proxy`` recorded (empty: unknown address).

        A home written before pins were recorded (no :data:`KNOWN_CLUSTERS` file) trusts the
        ``ca.pem`` of its profiles for that address, as those versions did.
        """
        known = self._known_clusters()
        if known is not None:
            entry = known.get(proxy)
            pins = entry.get("ca_pins") if isinstance(entry, dict) else None
            return {str(p) for p in pins} if isinstance(pins, list) else set()
        from bastion.client.api import spki_pin_of_pem

        trusted: set[str] = set()
        for name in self.names():
            try:
                profile = self.load(name)
                if profile.proxy == proxy:
                    trusted |= set(spki_pin_of_pem((profile.path / "ca.pem").read_text()))
            except (NotFound, OSError, ValueError, TypeError):
                continue  # a broken profile trusts nothing
        return trusted

    def remember_cluster(self, proxy: str, cluster: str, pins: list[str] | None) -> None:
        """Record the CA pins of ``proxy`` after a verified login (``pins``), or only start the
        record (None: an ``--insecure`` login, whose CA is remembered for nothing)."""
        from bastion.files import write_private_file

        known = self._known_clusters() or {}
        if pins is not None:
            known[proxy] = {"cluster": cluster, "ca_pins": sorted(set(pins))}
        write_private_file(self.home / KNOWN_CLUSTERS, json.dumps(known, indent=2) + "\n")

    def _known_clusters(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.home / KNOWN_CLUSTERS).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: trust nothing, and let the next verified login rewrite it
        return data if isinstance(data, dict) else {}

    def remove(self, name: str) -> None:
        import shutil

        shutil.rmtree(self._dir(name), ignore_errors=True)
        try:
            if self.current_name() == name:
                (self.home / "current").unlink()
        except NotFound:
            pass
