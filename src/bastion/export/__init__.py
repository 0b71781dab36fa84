"""Export of the audit log to SIEMs.

::

    AuditLog.read_from(i, n) ─▶ Forwarder ─▶ Output.send(batch) ─ack─▶ FileCursor.save(next)
                                (forwarder.py)  file_output    JSON lines, rotated, fsync
                                                syslog_output  RFC 5424 over TCP/TLS (rfc5424.py)
                                                http_output    Splunk HEC / Elasticsearch _bulk

Formatting is pure (``rfc5424``, ``formats``); the outputs are the IO edge; the forwarder only
orders read -> send -> persist cursor, which is what makes delivery at-least-once without gaps.
``config`` is the ``audit_export:`` file section and ``build`` wires it up (import it from
``bastion.export.build``; it needs the config package, which imports ``config``).
"""

from bastion.config.export import AuditExportConfig
from bastion.export.cursor import FileCursor
from bastion.export.file_output import FileOutput
from bastion.export.forwarder import EventSource, Forwarder, ForwarderStatus, Output
from bastion.export.http_output import HttpOutput
from bastion.export.syslog_output import SyslogOutput

__all__ = [
    "AuditExportConfig",
    "EventSource",
    "FileCursor",
    "FileOutput",
    "Forwarder",
    "ForwarderStatus",
    "HttpOutput",
    "Output",
    "SyslogOutput",
]
