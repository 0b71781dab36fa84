"""The ``db`` resource: a database that a database agent serves (PostgreSQL or MySQL/MariaDB).

Layer: ``types`` (pure pydantic). Declared in the agent's ``db_service`` configuration and
announced by it; RBAC matches ``db_labels`` against :meth:`Database.all_labels` (static and
dynamic labels) and the requested db user and db name against ``db_users`` / ``db_names``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bastion.types.inventory import CommandLabel, with_command_labels
from bastion.types.meta import Resource, StrictModel

__all__ = ["Database", "DatabaseSpec", "DatabaseTLS"]


class DatabaseTLS(StrictModel):
    mode: Literal["verify-full", "verify-ca", "insecure-plaintext"] = "verify-full"
    """How the agent reaches the database: TLS verifying the server certificate and its name
    (default), TLS verifying the chain only, or plaintext (warned about; tests only)."""
    ca_pem: str = ""
    """CA bundle that signed the database's server certificate (default: the cluster's db CA,
    ``bctl auth export --type=db``)."""
    server_name: str = ""
    """Name to verify in the server certificate (default: the host of ``uri``)."""


class DatabaseSpec(StrictModel):
    protocol: Literal["postgres", "mysql"] = "postgres"
    uri: str
    """``host:port`` of the database as the agent reaches it."""
    tls: DatabaseTLS = Field(default_factory=DatabaseTLS)
    host_id: str = ""
    """Host id of the agent serving it (the proxy dials that agent's reverse tunnel)."""
    mysql_server_version: str = ""
    """MySQL/MariaDB: the version the server's greeting gave, as the serving agent reports it
    after a session. ``bsh proxy db`` greets clients with it, and in front of MariaDB offers its
    bulk execution."""
    dynamic_labels: dict[str, CommandLabel] = Field(default_factory=dict)
    """Command labels the serving agent runs from its own configuration (never from this
    record) and reports with each heartbeat: ``result`` is the first line of the command's
    latest output."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"uri must be host:port, got {value!r}")
        return value


class Database(Resource):
    KIND: ClassVar[str] = "db"
    kind: str = "db"
    spec: DatabaseSpec

    def all_labels(self) -> dict[str, str]:
        """Static labels plus the latest results of dynamic labels (what RBAC matches)."""
        return with_command_labels(self.metadata.labels, self.spec.dynamic_labels)

    def address(self) -> tuple[str, int]:
        host, _, port = self.spec.uri.rpartition(":")
        return host.strip("[]"), int(port)
