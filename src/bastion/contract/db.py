"""Database access: user database certificates, database server and agent client certificates.

Layer: contract (pure pydantic). Served by :mod:`bastion.api.db`; the work is in
:mod:`bastion.auth.db_certs`.
"""

from __future__ import annotations

from datetime import timedelta

from bastion.contract.base import Body, Endpoint, Reply
from bastion.contract.core import Duration, Name, Text

__all__ = [
    "DB_AGENT_CERT",
    "DB_SERVER_CERT",
    "DB_USER_CERT",
    "DbAgentCertRequest",
    "DbCert",
    "DbServerCertRequest",
    "DbUserCertRequest",
]


class DbUserCertRequest(Body):
    db_service: Name
    """The database resource's name (``bsh db login NAME``)."""
    db_user: str = ""
    db_name: str = ""
    public_key: Text
    ttl: Duration = timedelta(hours=12)
    """Capped by the caller's own certificate."""


class DbServerCertRequest(Body):
    host: Name
    public_key: Text
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    ttl: Duration = timedelta(days=365)


class DbAgentCertRequest(Body):
    db_user: str
    public_key: Text


class DbCert(Reply):
    cert: str
    """PEM certificate."""
    ca: str
    """PEM bundle to verify the other end: the host TLS CA (user certificates, to verify the
    proxy) or the db CA (server and agent certificates)."""
    expires: str


DB_USER_CERT = Endpoint(
    "POST",
    "/v1/db/certs",
    "user",
    "A certificate routed to one database (db user and db name) for psql through the proxy",
    body=DbUserCertRequest,
    response=DbCert,
)
DB_SERVER_CERT = Endpoint(
    "POST",
    "/v1/db/server-certs",
    "user",
    "Sign a database server's certificate with the db CA (bctl auth sign --format=db)",
    body=DbServerCertRequest,
    response=DbCert,
)
DB_AGENT_CERT = Endpoint(
    "POST",
    "/v1/db/agent-certs",
    "host",
    "A short client certificate for a database user, for the database agent (db role)",
    body=DbAgentCertRequest,
    response=DbCert,
)
