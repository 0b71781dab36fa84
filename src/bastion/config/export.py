"""The ``audit_export:`` section of the configuration file.

Layer: ``config`` (pydantic; no IO). :mod:`bastion.export.build` turns a validated output entry
into a live output and forwarder. Each entry of ``outputs`` is an independent forwarder with its
own cursor, so a slow or unreachable SIEM never holds back another.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bastion.protocols.addr import parse_addr
from bastion.types.duration import Duration
from bastion.types.meta import StrictModel

__all__ = [
    "AuditExportConfig",
    "ElasticsearchOutputConfig",
    "FileOutputConfig",
    "OutputConfig",
    "SplunkHecOutputConfig",
    "SyslogOutputConfig",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class _OutputBase(StrictModel):
    name: str = ""
    """Names the output in logs and its cursor file; default: the type. Unique."""
    batch_size: int = Field(default=500, ge=1, le=10000)
    """Events per write/request."""
    cursor_file: str = ""
    """Where the next index to deliver is kept.

    Default: ``<data_dir>/audit-export/<name>.cursor``."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value and not _NAME.match(value):
            raise ValueError(f"invalid output name {value!r}: letters, digits, '.', '_', '-'")
        return value


class FileOutputConfig(_OutputBase):
    type: Literal["file"]
    path: str
    """JSON-lines file, e.g. ``/var/log/bastion/audit.jsonl``."""
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    """Rotate before the file would grow past this size."""
    keep: int = Field(default=10, ge=0)
    """Rotated files kept (``audit.jsonl.1`` is the newest)."""


class SyslogOutputConfig(_OutputBase):
    type: Literal["syslog"]
    addr: str
    """Receiver ``host:port`` (TCP; 514 by default, 6514 with TLS)."""
    tls: bool = False
    ca_file: str = ""
    """CA bundle that signed the receiver's certificate (default: the system store)."""
    cert_file: str = ""
    """Client certificate for receivers that require mutual TLS."""
    key_file: str = ""
    server_name: str = ""
    """Name to verify in the receiver's certificate (default: the host of ``addr``)."""
    facility: str = "authpriv"
    hostname: str = ""
    """HOSTNAME field of the messages (default: this host's name)."""

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        parse_addr(value, 514)
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> SyslogOutputConfig:
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError("ca_file/cert_file/key_file need tls: true")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class _HttpBase(_OutputBase):
    url: str
    ca_file: str = ""
    """CA bundle for an https receiver with a private CA (default: the system store)."""
    timeout: Duration = timedelta(seconds=30)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value


class SplunkHecOutputConfig(_HttpBase):
    type: Literal["splunk_hec"]
    token: str = Field(min_length=1, repr=False)
    """HEC token, sent as ``Authorization: Splunk <token>``."""
    index: str = ""
    source: str = "bastion"
    sourcetype: str = "bastion:audit"


class ElasticsearchOutputConfig(_HttpBase):
    type: Literal["elasticsearch"]
    index: str = "bastion-audit"
    username: str = ""
    password: str = Field(default="", repr=False)
    api_key: str = Field(default="", repr=False)
    """Base64 ``id:api_key`` as Elasticsearch prints it; sent as ``Authorization: ApiKey``."""

    @model_validator(mode="after")
    def _check_auth(self) -> ElasticsearchOutputConfig:
        if self.api_key and (self.username or self.password):
            raise ValueError("set either username/password or api_key, not both")
        return self


OutputConfig = Annotated[
    FileOutputConfig | SyslogOutputConfig | SplunkHecOutputConfig | ElasticsearchOutputConfig,
    Field(discriminator="type"),
]


class AuditExportConfig(StrictModel):
    outputs: list[OutputConfig] = Field(min_length=1)
    poll_interval: Duration = timedelta(seconds=1)
    """How often to look for new events once everything is delivered."""
    retry_max: Duration = timedelta(seconds=60)
    """Longest wait between two delivery attempts while a receiver is down."""

    @model_validator(mode="after")
    def _unique_names(self) -> AuditExportConfig:
        seen: set[str] = set()
        for output in self.outputs:
            name = output.name or output.type
            if name in seen:
                raise ValueError(f"two outputs are named {name!r}; give each a unique name")
            seen.add(name)
        return self
