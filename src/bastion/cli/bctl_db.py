"""``bctl auth sign --format=db``: a database server's certificate from the cluster's db CA.

Layer: client edge. The key is generated here and never leaves this machine; auth signs its
public half (``POST /v1/db/server-certs``, needs ``cert_authority:update``). Writes ``OUT.crt``,
``OUT.key`` (0600) and ``OUT.cas`` (the db CA bundle: the database verifies the database agent's
client certificates with it) and prints the PostgreSQL settings.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.cli.identity import ClientIdentity
from bastion.contract.db import DB_SERVER_CERT, DbServerCertRequest
from bastion.files import write_private_file

__all__ = ["sign_db_server"]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def sign_db_server(ident: ClientIdentity, host: str, extra: str, out: str, ttl: str) -> None:
    """Sign and write a database server certificate for ``host`` (+ comma-separated names)."""
    names = [n.strip() for n in [host, *extra.split(",")] if n.strip()]
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = DbServerCertRequest.model_validate(
        {
            "host": host,
            "public_key": pub.decode(),
            "dns_names": [n for n in names if not _is_ip(n)],
            "ip_addresses": [n for n in names if _is_ip(n)],
            "ttl": ttl,
        }
    )
    reply = ident.send(DB_SERVER_CERT, body)
    crt, key_path, cas = Path(f"{out}.crt"), Path(f"{out}.key"), Path(f"{out}.cas")
    write_private_file(key_path, key_pem)
    write_private_file(crt, reply.cert)
    write_private_file(cas, reply.ca)
    click.echo(
        f"wrote {crt}, {key_path} and {cas} (db CA), valid until {reply.expires}\n"
        "PostgreSQL (postgresql.conf; files owned by postgres, the key 0600):\n"
        f"  ssl = on\n  ssl_cert_file = '{crt.resolve()}'\n"
        f"  ssl_key_file = '{key_path.resolve()}'\n"
        f"  ssl_ca_file = '{cas.resolve()}'\n"
        "pg_hba.conf:\n  hostssl all all <agent address>/32 cert clientcert=verify-full"
    )
