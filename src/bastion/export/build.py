"""Turn the ``audit_export:`` section into running forwarders.

Layer: wiring. Used by the daemon (:mod:`bastion.process`, when the section is present) and by
``bctl audit export``. Everything that can be wrong in the section (a missing CA file, an unknown
facility) raises BadParameter here, before anything is sent.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import structlog

from bastion.config.export import (
    AuditExportConfig,
    ElasticsearchOutputConfig,
    FileOutputConfig,
    OutputConfig,
    SplunkHecOutputConfig,
    SyslogOutputConfig,
)
from bastion.errors import BadParameter
from bastion.export.cursor import FileCursor
from bastion.export.file_output import FileOutput
from bastion.export.forwarder import EventSource, Forwarder, Output
from bastion.export.http_output import HttpOutput, auth_headers
from bastion.export.syslog_output import SyslogOutput, tls_client_context
from bastion.protocols.addr import parse_addr

__all__ = ["build_forwarders", "build_output", "cursor_path", "output_name", "run_forwarders"]

log = structlog.get_logger("bastion.export")


def output_name(config: OutputConfig) -> str:
    return config.name or config.type


def _http_tls(ca_file: str) -> ssl.SSLContext | None:
    if not ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BadParameter(f"audit_export: cannot load CA file {ca_file}: {exc}") from None


def build_output(config: OutputConfig) -> Output:
    """The output an ``outputs`` entry describes.

    Raises:
        BadParameter: a file it names cannot be loaded, or a value is invalid.
    """
    name = output_name(config)
    hostname = socket.gethostname()
    if isinstance(config, FileOutputConfig):
        return FileOutput(
            Path(config.path).expanduser(), max_bytes=config.max_bytes, keep=config.keep, name=name
        )
    if isinstance(config, SyslogOutputConfig):
        host, port = parse_addr(config.addr, 6514 if config.tls else 514)
        tls = tls_client_context(config.ca_file, config.cert_file, config.key_file)
        return SyslogOutput(
            host,
            port,
            tls=tls if config.tls else None,
            server_name=config.server_name,
            hostname=config.hostname or hostname,
            facility=config.facility,
            name=name,
        )
    if isinstance(config, SplunkHecOutputConfig):
        return HttpOutput(
            config.url,
            "splunk_hec",
            headers=auth_headers("splunk_hec", token=config.token),
            tls=_http_tls(config.ca_file),
            index=config.index,
            host=hostname,
            source=config.source,
            sourcetype=config.sourcetype,
            timeout=config.timeout.total_seconds(),
            name=name,
        )
    assert isinstance(config, ElasticsearchOutputConfig)
    return HttpOutput(
        config.url,
        "elasticsearch",
        headers=auth_headers(
            "elasticsearch",
            username=config.username,
            password=config.password,
            api_key=config.api_key,
        ),
        tls=_http_tls(config.ca_file),
        index=config.index,
        host=hostname,
        timeout=config.timeout.total_seconds(),
        name=name,
    )


def cursor_path(config: OutputConfig, data_dir: Path) -> Path:
    """An output's cursor: ``cursor_file`` or ``<data_dir>/audit-export/<name>.cursor``."""
    default = data_dir / "audit-export" / f"{output_name(config)}.cursor"
    return Path(config.cursor_file or default).expanduser()


def build_forwarders(
    config: AuditExportConfig, source: EventSource, data_dir: Path
) -> list[Forwarder]:
    """One forwarder per output, each with its own cursor file."""
    forwarders = []
    for entry in config.outputs:
        forwarders.append(
            Forwarder(
                source=source,
                output=build_output(entry),
                cursor=FileCursor(cursor_path(entry, data_dir)),
                batch_size=entry.batch_size,
                poll_interval=config.poll_interval.total_seconds(),
                backoff_cap=max(config.retry_max.total_seconds(), 0.001),
            )
        )
    return forwarders


async def run_forwarders(forwarders: list[Forwarder]) -> None:
    """Run every forwarder until cancelled."""
    async with asyncio.TaskGroup() as group:
        for forwarder in forwarders:
            group.create_task(forwarder.run(), name=f"audit-export-{forwarder.output.name}")
