"""Joining the cluster: exchange a join token for a host identity and keep it on disk.

The identity directory (every file 0600)::

    key, tls.key        the host's private key (OpenSSH and PKCS#8 PEM); generated here, never sent
    cert.pub, tls.crt   SSH host certificate and X.509 host certificate
    ca.pem              host TLS CA (verifies the proxy and auth)
    user_ca.pem         user TLS CA (a proxy verifies users' client certificates with it)
    user_ca.pub         SSH user CA keys (what the node trusts)
    identity.json       host id, node name, role, cluster, server address, expiry
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from bastion.agent.host_files import finish_pending
from bastion.client.api import AuthClient, fetch_cluster_ca
from bastion.client.profile import new_client_key
from bastion.client.tls import verified_context
from bastion.contract.core import JOIN, Join
from bastion.errors import NotFound
from bastion.files import write_private_file

__all__ = ["HostIdentity", "join_cluster", "load_host_identity"]


@dataclass(frozen=True, slots=True)
class HostIdentity:
    dir: Path
    host_id: str
    host_name: str
    role: str
    cluster: str
    server: str
    expires: str

    @property
    def tls_cert(self) -> Path:
        return self.dir / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.dir / "tls.key"

    def read(self, name: str) -> str:
        return (self.dir / name).read_text()


def load_host_identity(directory: Path) -> HostIdentity:
    """Raises NotFound when the directory holds no identity yet.

    A renewal interrupted after its commit point is completed first
    (:func:`~bastion.agent.host_files.finish_pending`)."""
    finish_pending(directory)
    try:
        info = json.loads((directory / "identity.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"no host identity in {directory}") from None
    return HostIdentity(
        dir=directory,
        host_id=info["host_id"],
        host_name=info["host_name"],
        role=info["role"],
        cluster=info["cluster"],
        server=info.get("server") or info.get("auth", ""),
        expires=info["expires"],
    )


async def join_cluster(
    server: str,
    token: str,
    ca_pin: str | None,
    insecure: bool,
    host_name: str,
    role: str,
    dest: Path,
    dns_names: list[str] | None = None,
    ip_addresses: list[str] | None = None,
    ttl: timedelta | None = None,
) -> HostIdentity:
    """Verify the cluster by its CA pin, then join with ``token`` and write the identity.

    ``dns_names`` and ``ip_addresses`` are added to the X.509 host certificate (a proxy's
    public names, which clients and agents verify). ``ttl``: the certificates' lifetime
    (default: auth's, 30 days).

    Raises:
        BadParameter: pin mismatch; AccessDenied: bad token; ConnectionProblem.
    """
    ping = await fetch_cluster_ca(server, ca_pin, insecure)
    key = new_client_key()
    public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    body = Join(
        token=token,
        host_name=host_name,
        role=role,
        public_key=public_key,
        dns_names=dns_names or [],
        ip_addresses=ip_addresses or [],
        ttl=ttl,
    )
    async with AuthClient(server, verified_context(ping["tls_host_ca"])) as client:
        certs = (await client.send(JOIN, body)).model_dump()
    write_private_file(
        dest / "key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    write_private_file(
        dest / "tls.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private_file(dest / "cert.pub", certs["ssh_cert"] + "\n")
    write_private_file(dest / "tls.crt", certs["tls_cert"])
    write_private_file(dest / "ca.pem", certs["tls_host_ca"])
    write_private_file(dest / "user_ca.pem", certs.get("tls_user_ca", ""))
    write_private_file(dest / "user_ca.pub", "".join(f"{k}\n" for k in certs["ssh_user_ca"]))
    info = {
        "host_id": certs["host_id"],
        "host_name": host_name,
        "role": role,
        "cluster": ping["cluster"],
        "server": server,
        "expires": certs["expires"],
    }
    write_private_file(dest / "identity.json", json.dumps(info, indent=2))
    return load_host_identity(dest)
