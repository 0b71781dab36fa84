"""Syslog messages for audit events: RFC 5424 formatting and RFC 6587 octet-counting framing.

Layer: pure codec (sans-IO). No sockets, no clock reads: the caller passes the event (which
carries its own time) and the host name. The socket side is :mod:`bastion.export.syslog_output`.

One event becomes::

    <PRI>1 TIMESTAMP HOSTNAME bastion - MSGID [bastion@32473 code=".." id=".." ...] {json}

* PRI = facility * 8 + severity; failures are ``warning`` (4), successes ``informational`` (6).
* MSGID is the event type (RFC 5424 caps it at 32 printable ASCII characters).
* The structured-data element carries the fields a SIEM filters on without parsing MSG; values
  are escaped per RFC 5424 section 6.3.3 (``"``, ``\\`` and ``]`` get a backslash).
* MSG is the event as JSON with non-ASCII escaped, so it is plain ASCII and needs no BOM.

Over TCP and TLS each message is framed as ``LEN SP MSG`` (RFC 6587 section 3.4.1), which
survives newlines inside a message, unlike LF-delimited framing.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Final

from bastion.errors import RemoteProtocolError
from bastion.types.audit import AuditEvent

__all__ = [
    "APP_NAME",
    "FACILITIES",
    "SD_ID",
    "escape_sd_value",
    "format_message",
    "frame",
    "severity_of",
    "split_frames",
]

APP_NAME: Final = "bastion"
SD_ID: Final = "bastion@32473"
"""SD-ID of our element. 32473 is the private enterprise number RFC 5612 reserves for examples
and documentation; a vendor-registered number would replace it."""

FACILITIES: Final[dict[str, int]] = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "authpriv": 10,
    "audit": 13,
    **{f"local{n}": 16 + n for n in range(8)},
}
SEVERITY_WARNING: Final = 4
SEVERITY_INFO: Final = 6
_MAX_HOSTNAME: Final = 255
_MAX_MSGID: Final = 32
_MAX_FRAME_DIGITS: Final = 10
_SD_FIELDS: Final = ("code", "id", "outcome", "user", "login", "target", "session_id", "cluster")


def severity_of(event: AuditEvent) -> int:
    """``warning`` for failed actions, ``informational`` for successful ones."""
    return SEVERITY_INFO if event.outcome == "success" else SEVERITY_WARNING


def _printable_ascii(text: str, limit: int) -> str:
    """RFC 5424 header fields are PRINTUSASCII (33..126); anything else becomes ``_``."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return cleaned or "-"


def escape_sd_value(value: str) -> str:
    """Escape a PARAM-VALUE: ``"``, ``\\`` and ``]`` get a backslash (RFC 5424 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _timestamp(event: AuditEvent) -> str:
    moment = event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_message(
    event: AuditEvent, hostname: str, facility: int = FACILITIES["authpriv"]
) -> bytes:
    """One RFC 5424 message (without framing) for ``event``.

    Args:
        event: the audit event; its own time is the message timestamp.
        hostname: the HOSTNAME field (sanitised to printable ASCII, ``-`` when empty).
        facility: numeric facility, 0..23 (see :data:`FACILITIES`).

    Raises:
        ValueError: the facility is out of range.
    """
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility must be 0..23, got {facility}")
    pri = facility * 8 + severity_of(event)
    params = [(name, str(getattr(event, name))) for name in _SD_FIELDS if getattr(event, name)]
    if event.index is not None:
        params.append(("index", str(event.index)))
    sd = "[" + SD_ID + "".join(f' {k}="{escape_sd_value(v)}"' for k, v in params) + "]"
    header = " ".join(
        (
            f"<{pri}>1",
            _timestamp(event),
            _printable_ascii(hostname, _MAX_HOSTNAME),
            APP_NAME,
            "-",
            _printable_ascii(event.type, _MAX_MSGID),
        )
    )
    body = json.dumps(event.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)
    return f"{header} {sd} {body}".encode()


def frame(message: bytes) -> bytes:
    """Octet-counting framing (RFC 6587 3.4.1): ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split octet-counted frames off the front of ``buffer``.

    Returns:
        The complete messages, and the bytes of an incomplete trailing frame (to prepend to the
        next read).

    Raises:
        RemoteProtocolError: the buffer does not start with ``DIGITS SP``.
    """
    messages: list[bytes] = []
    pos = 0
    while pos < len(buffer):
        space = buffer.find(b" ", pos, pos + _MAX_FRAME_DIGITS + 1)
        if space == -1:
            if len(buffer) - pos > _MAX_FRAME_DIGITS or not buffer[pos:].isdigit():
                raise RemoteProtocolError("syslog frame: expected an octet count")
            break
        digits = buffer[pos:space]
        if not digits.isdigit() or digits.startswith(b"0"):
            raise RemoteProtocolError("syslog frame: invalid octet count")
        end = space + 1 + int(digits)
        if end > len(buffer):
            break
        messages.append(buffer[space + 1 : end])
        pos = end
    return messages, buffer[pos:]
