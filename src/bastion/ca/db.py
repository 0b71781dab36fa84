"""Certificates of the database CA (``db``): database servers and the database agent's clients.

Layer: ``ca`` (pure over ``cryptography``). The ``db`` CA is created with the others at
bootstrap (:mod:`bastion.ca.authority`) and rotates like them (``bctl auth rotate --type=db``).
It signs two kinds of leaf:

* the **server** certificate of a database (``bctl auth sign --format=db --host=...``): CN and
  DNS SANs the host names, IP SANs the addresses, serverAuth. The database agent verifies the
  database with the db CA bundle.
* the **client** certificate the database agent presents to the database: CN = the database
  user (PostgreSQL ``hostssl ... cert`` maps the CN to the user; MariaDB ``REQUIRE SUBJECT
  '/CN=alice/O=cluster'``), clientAuth, short-lived.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.ca.keys import PrivateKey, PublicKey
from bastion.ca.x509 import _hash_for, _leaf_builder, issue_host_certificate
from bastion.errors import BadParameter

__all__ = ["issue_db_client_certificate", "issue_db_server_certificate"]


def issue_db_server_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject_public_key: PublicKey,
    host: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A database server certificate (CN and first DNS SAN ``host``).

    Raises:
        BadParameter: empty host, invalid IP address, empty validity or past the CA's expiry.
    """
    return issue_host_certificate(
        ca_cert, ca_key, subject_public_key, host, dns_names, ip_addresses, not_before, not_after
    )


def issue_db_client_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject_public_key: PublicKey,
    db_user: str,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A client certificate for database user ``db_user`` (Subject ``CN=db_user, O=cluster``).

    Raises:
        BadParameter: an empty or over-long user name, empty validity, past the CA's expiry.
    """
    if not db_user or len(db_user) > 63 or "\x00" in db_user:
        raise BadParameter("a database user name has 1 to 63 characters and no NUL")
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, db_user),
            *([x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(org[0].value))] if org else []),
        ]
    )
    builder = _leaf_builder(
        ca_cert, ca_key, subject_public_key, subject, not_before, not_after, None
    ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))
