"""The YAML configuration file of ``bastion start``: every knob, its default and what it does.

``bastion configure`` prints :func:`sample_config`; ``load_config`` turns a file into a validated
:class:`FileConfig` or raises BadParameter naming the file, the field and the problem.
"""

from __future__ import annotations

import ipaddress
import socket
from datetime import timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from bastion.config.apps import AppServiceConfig
from bastion.config.export import AuditExportConfig
from bastion.config.notifications import NotificationsConfig
from bastion.config.risk import RiskConfig
from bastion.errors import BadParameter
from bastion.protocols.addr import parse_addr
from bastion.types.codec import _format_error
from bastion.types.duration import Duration
from bastion.types.meta import NAME_PATTERN, StrictModel

__all__ = [
    "AuthServiceConfig",
    "DatabaseConfig",
    "DbServiceConfig",
    "FileConfig",
    "RecordingStorageConfig",
    "StorageConfig",
    "load_config",
    "sample_config",
]


class StorageConfig(StrictModel):
    type: Literal["sqlite", "postgres"] = "sqlite"
    path: str = ""
    """SQLite file; default ``<data_dir>/backend.sqlite``."""
    dsn: str = ""
    """PostgreSQL connection string, e.g. ``postgresql://bastion@db.example.com/bastion``."""
    writer: Literal["process", "thread"] = "process"
    """SQLite only: where the writer's connection runs. ``process``: a child process of the
    daemon, so audit and resource writes never hold the GIL the event loop needs (docs/
    architecture.md); ``thread``: a worker thread (one process, ~25 MB less memory)."""


class RateLimitConfig(StrictModel):
    average: float = 5.0
    """Requests per second per source IP on the unauthenticated endpoints (login, invite, join)."""
    burst: int = 20


class AuditLogConfig(StrictModel):
    checkpoint_interval: float = Field(default=10.0, gt=0)
    """Seconds between signed checkpoints of the audit log (only signed when it grew)."""
    witness: str = ""
    """Where every checkpoint is also written: a file path (atomically replaced, never
    rolled back) or an http(s):// URL (POSTed; GET returns the latest). Empty: none."""


class RecordingStorageConfig(StrictModel):
    """Where auth keeps session recordings (docs/recordings.md)."""

    type: Literal["local", "s3"] = "local"
    path: str = ""
    """``local``: the directory; default ``<data_dir>/recordings``."""
    bucket: str = ""
    """``s3``: the bucket (it must exist)."""
    prefix: str = "recordings/"
    """``s3``: key prefix of every object."""
    endpoint_url: str = ""
    """``s3``: an S3-compatible endpoint (MinIO, Ceph, ...); empty means AWS."""
    region: str = ""
    access_key_id: str = ""
    """``s3``: empty means the standard AWS sources (``AWS_ACCESS_KEY_ID``, profiles, roles)."""
    secret_access_key: str = ""
    max_bytes: int = Field(default=1 << 30, ge=1024)
    """Largest recording auth accepts from a node."""


class AuthServiceConfig(StrictModel):
    enabled: bool = True
    listen_addr: str = "127.0.0.1:3025"
    public_addr: list[str] = Field(default_factory=list)
    """Names clients use to reach auth; added to its TLS certificate."""
    key_algorithm: Literal["ed25519", "ecdsa-p256", "rsa-3072"] = "ed25519"
    kek_file: str = ""
    """Key-encryption key for CA private keys at rest; default ``<data_dir>/keys/kek``. With a
    shared PostgreSQL backend every auth server needs the same file."""
    second_factor: Literal["off", "otp", "webauthn", "on", "optional"] | None = None
    """Overrides the stored cluster auth preference at start when set."""

    @field_validator("second_factor", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        from bastion.types.access import second_factor_from_yaml

        return second_factor_from_yaml(value)

    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    max_request_bytes: int = 1 << 20
    audit: AuditLogConfig = Field(default_factory=AuditLogConfig)
    """The verifiable audit log: checkpoint interval and external witness."""
    recordings: RecordingStorageConfig = Field(default_factory=RecordingStorageConfig)
    """Session recording storage: a local directory (default) or S3-compatible storage."""
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    """Where access request notices go: signed webhooks, Slack, email
    (docs/access-requests.md)."""
    trusted_proxy_sources: list[str] = Field(default_factory=list)
    """CIDRs of proxies (or load balancers) allowed to send a PROXY protocol header on the auth
    port, so auth sees the real client address of the web and API traffic they pass through."""

    @field_validator("listen_addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        parse_addr(value, 3025)
        return value

    @field_validator("trusted_proxy_sources")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return _check_cidrs(value)


class ProxyServiceConfig(StrictModel):
    enabled: bool = True
    listen_addr: str = "127.0.0.1:3080"
    """The one public port: web/API, SSH for clients, reverse tunnels for agents."""
    public_addr: list[str] = Field(default_factory=list)
    """Names users and agents use to reach the proxy (added to its certificate)."""
    trusted_proxy_sources: list[str] = Field(default_factory=list)
    """CIDRs of load balancers allowed to send PROXY protocol v1/v2 headers."""
    handshake_timeout: Duration = timedelta(seconds=10)
    max_unauthenticated_per_ip: int = Field(default=64, ge=1)
    tunnel_admission_rate: float = Field(default=50.0, gt=0)
    """New agent tunnels accepted per second (all agents together); more wait and retry."""
    tunnel_admission_burst: int = Field(default=100, ge=1)
    auth_server: str = ""
    """A proxy in its own process (``auth_service`` disabled): the auth server(s) to join and to
    talk to, ``host:port`` (comma-separated for several); the web and API route is passed
    through to them with TLS intact and a PROXY protocol header."""
    join_token: str = ""
    """A ``proxy`` join token (``bctl tokens add --type=proxy``), used once; the host identity is
    then kept in ``<data_dir>/proxy``."""
    ca_pin: str = ""
    """sha256:... pin of the cluster's host CA, checked before the join token is sent."""
    app_audit_requests: Literal["all", "writes", "none"] = "all"
    """``app.request`` audit events: every request, only non-GET/HEAD ones, or none
    (``app.session.*`` events are kept either way; docs/app-access.md)."""
    app_audit_request_sample: float = Field(default=1.0, gt=0, le=1)
    """With ``app_audit_requests: all``: the fraction of GET/HEAD requests logged (at random);
    writes and WebSocket upgrades are always logged. Below 1, ``app.session.start`` says
    ``request_sample`` and each sampled read event ``sample_rate``."""
    mysql_listen_addr: str = ""
    """A dedicated port for MySQL/MariaDB clients with their database certificate (MySQL's
    server speaks first, so it cannot share ``listen_addr``); empty: off (``bsh proxy db``)."""
    mysql_server_version: str = ""
    """The server version the dedicated MySQL port greets with (it greets before it knows the
    database). A MariaDB version (``5.5.5-10.11.6-MariaDB``) also offers MariaDB's bulk
    execution: set it only when every MySQL database behind the proxy is MariaDB. Empty: a
    generic greeting, no MariaDB-only capability."""

    @field_validator("listen_addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        parse_addr(value, 3080)
        return value

    @field_validator("mysql_listen_addr")
    @classmethod
    def _mysql_addr(cls, value: str) -> str:
        if value:
            parse_addr(value, 3036)
        return value

    @field_validator("auth_server")
    @classmethod
    def _auth_addrs(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                parse_addr(part.strip(), 3025)
        return value

    @field_validator("trusted_proxy_sources")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return _check_cidrs(value)

    def auth_servers(self) -> list[tuple[str, int]]:
        """The ``auth_server`` addresses, parsed."""
        return [parse_addr(a.strip(), 3025) for a in self.auth_server.split(",") if a.strip()]


def _check_cidrs(value: list[str]) -> list[str]:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"invalid network {cidr!r}: expected e.g. 10.0.0.0/8") from None
    return value


class CommandLabelConfig(StrictModel):
    name: str
    command: list[str] = Field(min_length=1)
    period: Duration = timedelta(minutes=1)


class SSHServiceConfig(StrictModel):
    enabled: bool = True
    node_name: str = ""
    """Default: this host's name."""
    labels: dict[str, str] = Field(default_factory=dict)
    commands: list[CommandLabelConfig] = Field(default_factory=list)
    """Dynamic labels: the first line of a command's output, refreshed every period."""
    listen_addr: str = ""
    """Also accept SSH directly (e.g. 0.0.0.0:3022); default: reverse tunnel only."""
    shell: str = ""
    """Shell for every session (absolute path); default: each login's shell from passwd."""
    proxy_server: str = ""
    """Proxy to join and tunnel to (remote nodes); empty = the proxy of this process."""
    join_token: str = ""
    ca_pin: str = ""
    """sha256:... pin of the cluster's host CA, checked before the join token is sent."""
    event_spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    """A joined node's on-disk audit event spool: undelivered bytes kept while auth is down
    (above 90% new sessions are refused; see docs/audit.md)."""

    @field_validator("listen_addr", "proxy_server")
    @classmethod
    def _addr(cls, value: str) -> str:
        if value:
            parse_addr(value, 3022)
        return value

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if value and not NAME_PATTERN.match(value):
            raise ValueError(
                f"invalid node name {value!r}: use letters, digits and ._@+- (at most 253 "
                "characters)"
            )
        return value

    @field_validator("shell")
    @classmethod
    def _shell(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"shell {value!r} must be an absolute path, e.g. /bin/bash")
        return value


class DatabaseTLSConfig(StrictModel):
    mode: Literal["verify-full", "verify-ca", "insecure-plaintext"] = "verify-full"
    """verify-full: TLS, server certificate and name verified; verify-ca: chain only;
    insecure-plaintext: no TLS (warned about on every connection; tests only)."""
    ca_file: str = ""
    """CA bundle of the database's server certificate (default: the cluster's db CA)."""
    server_name: str = ""
    """Name to verify in the server certificate (default: the host of uri)."""


class DatabaseConfig(StrictModel):
    name: str
    protocol: Literal["postgres", "mysql"] = "postgres"
    uri: str
    """host:port of the database as this agent reaches it."""
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    tls: DatabaseTLSConfig = Field(default_factory=DatabaseTLSConfig)
    admin_user: str = ""
    """The account that creates/disables users for ``create_db_user`` (certificate login)."""
    admin_database: str = ""
    """PostgreSQL database of the admin connection (default ``postgres``)."""
    commands: list[CommandLabelConfig] = Field(default_factory=list)
    """Dynamic labels: the first line of a command's output (run by this agent, no shell),
    refreshed every period, as ``ssh_service.commands``."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"invalid database name {value!r}: use letters, digits and ._@+-")
        return value

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"uri must be host:port, got {value!r}")
        return value


class DbServiceConfig(StrictModel):
    """The database agent (``bastion start --roles=db``; see docs/database-access.md)."""

    enabled: bool = False
    databases: list[DatabaseConfig] = Field(default_factory=list)
    agent_name: str = ""
    """Default: this host's name."""
    proxy_server: str = ""
    """Proxy to join and tunnel to (an agent on another host); empty = this process's proxy."""
    join_token: str = ""
    """A ``db`` join token (bctl tokens add --type=db)."""
    ca_pin: str = ""
    warm_connections: bool = True
    """PostgreSQL: keep one spare TLS connection per recently used (database, db user), so a
    new session only sends its startup (docs/database-access.md#warm-connections)."""

    @field_validator("proxy_server")
    @classmethod
    def _addr(cls, value: str) -> str:
        if value:
            parse_addr(value, 3080)
        return value

    @field_validator("databases")
    @classmethod
    def _unique(cls, value: list[DatabaseConfig]) -> list[DatabaseConfig]:
        names = [d.name for d in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"database names must be unique: {', '.join(dup)}")
        return value


class HostCertsConfig(StrictModel):
    """Host certificates of the agents of this process that joined with a token (a node, a
    proxy in its own process, a database agent): their lifetime and when they renew themselves
    (docs/machine-id.md)."""

    ttl: Duration = timedelta(days=30)
    """Lifetime asked for at the join and at each renewal (1 minute to 30 days)."""
    renew_at: float = Field(default=1 / 3, gt=0, lt=1)
    """Renew when this fraction of the lifetime is left."""
    jitter: float = Field(default=0.1, ge=0, lt=1)
    """Renew up to this fraction of the wait earlier (agents do not all renew at once)."""


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class FileConfig(StrictModel):
    version: Literal["v1"] = "v1"
    cluster_name: str = ""
    """Default: this host's name."""
    data_dir: str = "./bastion-data"
    storage: StorageConfig = Field(default_factory=StorageConfig)
    auth_service: AuthServiceConfig = Field(default_factory=AuthServiceConfig)
    proxy_service: ProxyServiceConfig = Field(default_factory=ProxyServiceConfig)
    ssh_service: SSHServiceConfig = Field(default_factory=SSHServiceConfig)
    db_service: DbServiceConfig = Field(default_factory=DbServiceConfig)
    """The database agent; off unless enabled (docs/database-access.md)."""
    app_service: AppServiceConfig = Field(default_factory=AppServiceConfig)
    """The app agent and its apps; off unless enabled (docs/app-access.md)."""
    log: LogConfig = Field(default_factory=LogConfig)
    host_certs: HostCertsConfig = Field(default_factory=HostCertsConfig)
    """Lifetime and self-renewal of the joined agents' host certificates."""
    audit_export: AuditExportConfig | None = None
    """Forward the audit log to SIEMs (JSON-lines file, syslog, Splunk HEC, Elasticsearch);
    the auth service runs the forwarders. See docs/export.md."""
    risk: RiskConfig = Field(default_factory=RiskConfig)
    """Risk signals: static rules over the audit stream, run by the auth service; see
    docs/risk.md."""

    def resolved_cluster_name(self) -> str:
        return self.cluster_name or socket.gethostname() or "bastion"

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def proxy_advertised_addr(self, port: int) -> str:
        """``host:port`` this proxy advertises to agents (bound to ``port``): its first public
        address, else its listen address (a wildcard listen host becomes the host name)."""
        if self.proxy_service.public_addr:
            host, port = parse_addr(self.proxy_service.public_addr[0], port)
        else:
            host, _ = parse_addr(self.proxy_service.listen_addr, 3080)
            if host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def auth_public_names(self) -> tuple[list[str], list[str]]:
        """DNS names and IPs for the auth TLS certificate."""
        names = {"localhost", socket.gethostname()}
        ips = {"127.0.0.1", "::1"}
        host, _ = parse_addr(self.auth_service.listen_addr, 3025)
        for entry in [host, *self.auth_service.public_addr]:
            h = parse_addr(entry, 3025)[0]
            try:
                ipaddress.ip_address(h)
                if h not in ("0.0.0.0", "::"):
                    ips.add(h)
            except ValueError:
                names.add(h)
        return sorted(names), sorted(ips)


def load_config(path: str | Path | None, **overrides: str) -> FileConfig:
    """Load and validate a config file (or the defaults when ``path`` is None).

    Raises:
        BadParameter: unreadable file, malformed YAML or an invalid field.
    """
    data: object = {}
    source = str(path) if path else "defaults"
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise BadParameter(f"cannot read config {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise BadParameter(f"config {path}: invalid YAML{where}: {exc}") from None
        if not isinstance(data, dict):
            raise BadParameter(f"config {path}: expected a mapping at the top level")
    assert isinstance(data, dict)
    data = {**data, **{k: v for k, v in overrides.items() if v}}
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_format_error(e) for e in exc.errors())
        raise BadParameter(f"config {source}: {problems}") from None


def sample_config() -> str:
    """A commented sample configuration (what ``bastion configure`` prints)."""
    return """\
# Bastion configuration. Every key is optional; the values shown are the defaults.
version: v1
# Name of this cluster; appears in certificates. Default: the host name.
cluster_name: ""
# Where keys, the embedded database and the local admin identity live.
data_dir: ./bastion-data

storage:
  # sqlite (embedded, one auth server) or postgres (several auth servers share state).
  type: sqlite
  # path: ./bastion-data/backend.sqlite
  # dsn: postgresql://bastion@127.0.0.1/bastion

auth_service:
  enabled: true
  # mTLS JSON API for bctl, bsh and agents.
  listen_addr: 127.0.0.1:3025
  # Extra host names or IPs clients use to reach auth (added to its certificate).
  public_addr: []
  # CA key algorithm for newly created CAs: ed25519, ecdsa-p256 or rsa-3072.
  key_algorithm: ed25519
  # Key-encryption key for CA private keys at rest (default <data_dir>/keys/kek).
  # kek_file: /etc/bastion/kek
  # Override the cluster's second factor at start: off | otp | webauthn | on | optional.
  # second_factor: "on"   (quoted: YAML reads a bare on as true)
  rate_limit:
    # Requests per second per source IP on login, invite and join endpoints.
    average: 5
    burst: 20
  # Largest accepted request body.
  max_request_bytes: 1048576
  # The tamper-evident audit log: signed checkpoints and their external witness copy.
  audit:
    checkpoint_interval: 10
    # A file path (e.g. on another machine's mount) or an http(s):// URL; empty: none.
    witness: ""
  # Session recordings: local directory (default <data_dir>/recordings) or S3-compatible.
  recordings:
    type: local
    # path: /var/lib/bastion/recordings
    # type: s3
    # bucket: bastion-recordings
    # prefix: recordings/
    # endpoint_url: https://minio.example.com:9000
    # region: us-east-1
    # (credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or access_key_id /
    #  secret_access_key here)
  # Proxies in their own processes allowed to send a PROXY protocol header (CIDRs).
  trusted_proxy_sources: []

proxy_service:
  enabled: true
  # The one public port: web and API, SSH for users, reverse tunnels for agents.
  listen_addr: 127.0.0.1:3080
  # Names users and agents use to reach the proxy (added to its certificate).
  public_addr: []
  # Load balancers allowed to send PROXY protocol headers (CIDRs).
  trusted_proxy_sources: []
  # Deadline for protocol detection plus the TLS handshake.
  handshake_timeout: 10s
  # Concurrent not-yet-authenticated connections per source IP.
  max_unauthenticated_per_ip: 64
  # A proxy in its own process (auth_service.enabled: false): auth server(s) to talk to,
  # a proxy join token (used once) and the CA pin that bastion start printed.
  auth_server: ""
  join_token: ""
  ca_pin: ""

ssh_service:
  enabled: true
  # Node name in the cluster (default: the host name).
  node_name: ""
  # Static labels that roles select on.
  labels: {}
  # Dynamic labels: the first line of a command's output, refreshed every period.
  commands: []
  #  - name: kernel
  #    command: [uname, -r]
  #    period: 1m
  # Also accept SSH directly, e.g. 0.0.0.0:3022 (default: reverse tunnel only).
  listen_addr: ""
  # Shell for every session (default: each login's shell from /etc/passwd).
  shell: ""
  # A node on another host: the proxy to join through, a join token and the CA pin.
  proxy_server: ""
  join_token: ""
  ca_pin: ""
  # Audit events wait on disk while auth is unreachable; above 90% of this, new sessions are
  # refused (nothing is dropped). Only for a node on another host.
  event_spool_max_bytes: 268435456

db_service:
  # The database agent (docs/database-access.md): off unless enabled or --roles=db.
  enabled: false
  databases: []
  #  - name: orders
  #    protocol: postgres
  #    uri: db.internal:5432
  #    labels: {env: prod}
  #    tls: {mode: verify-full, ca_file: "", server_name: ""}
  # An agent on another host: the proxy, a db join token (bctl tokens add --type=db), the pin.
  proxy_server: ""
  join_token: ""
  ca_pin: ""

log:
  level: info   # debug | info | warning | error
  format: text  # text | json

# Forward the audit log to SIEMs, at least once, in order (docs/export.md). Off when absent.
# audit_export:
#   outputs:
#     - type: file
#       path: /var/log/bastion/audit.jsonl
#     - type: syslog
#       addr: siem.example.com:6514
#       tls: true
#       ca_file: /etc/bastion/siem-ca.pem
"""
