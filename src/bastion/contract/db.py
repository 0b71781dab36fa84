"""Database access: user database certificates, database server and agent client certificates.

Layer: contract (pure pydantic). Served by :mod:`bastion.api.db`; the work is in
:mod:`bastion.auth.db_certs`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bastion.contract.base import Body, Empty, Endpoint, Reply, ResourceDoc
from bastion.contract.core import Duration, Name, Text

__all__ = [
    "DB_AGENT_CERT",
    "DB_HEARTBEAT",
    "DB_LIST",
    "DB_SERVER_CERT",
    "DB_SESSION_CERT",
    "DB_SESSION_CHALLENGE",
    "DB_USER_CERT",
    "DbAgentCertRequest",
    "DbCert",
    "DbInfo",
    "DbList",
    "DbListQuery",
    "DbServerCertRequest",
    "DbSessionChallenge",
    "DbSessionIssue",
    "DbSessionTarget",
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


class DbSessionTarget(Body):
    """A database connection that may need per-session MFA (``bsh db login``)."""

    db_service: Name
    db_user: str
    db_name: str = ""


class DbSessionChallenge(Reply):
    mfa_required: bool
    scope: str = ""
    challenge: dict[str, Any] | None = None


class DbSessionIssue(DbSessionTarget):
    public_key: Text
    mfa_response: dict[str, Any]


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


class DbListQuery(Body):
    labels: str = ""
    """``k=v,k2=v2``: only databases with all these labels."""


class DbInfo(Reply):
    name: str
    protocol: str
    labels: dict[str, str]
    db_users: list[str]
    """The db users the caller's roles allow there (patterns as written, templates expanded)."""
    db_names: list[str]
    online: bool
    """An agent heartbeats it (an administrator's ``bctl create`` record has no agent)."""
    mysql_server_version: str = ""
    """MySQL/MariaDB: the version its server greets with, once its agent saw it (``bsh proxy
    db`` greets its clients as that server)."""


class DbList(Reply):
    items: list[DbInfo]


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
DB_HEARTBEAT = Endpoint(
    "POST",
    "/v1/db/heartbeat",
    "host",
    "A database agent announces or refreshes a database it serves (db role)",
    body=ResourceDoc,
    response=ResourceDoc,
)
DB_LIST = Endpoint(
    "GET",
    "/v1/db",
    "user",
    "The databases your roles select by db_labels (bsh db ls), with the db users and names",
    body=Empty,
    response=DbList,
    query=DbListQuery,
)
DB_SESSION_CHALLENGE = Endpoint(
    "POST",
    "/v1/db/session/challenge",
    "user",
    "Whether a connection to this database as this db user needs per-session MFA; the challenge",
    body=DbSessionTarget,
    response=DbSessionChallenge,
)
DB_SESSION_CERT = Endpoint(
    "POST",
    "/v1/db/session",
    "user",
    "A 1-minute certificate for one database and db user, for an MFA assertion",
    body=DbSessionIssue,
    response=DbCert,
)
