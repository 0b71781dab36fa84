"""Syslog output: RFC 5424 messages, octet-counted, over TCP or TLS.

Layer: IO edge (one client socket). Formatting and framing are pure (:mod:`.rfc5424`). A batch is
acknowledged when its frames are handed to the kernel (``drain``). Plain syslog has no
application-level acknowledgement, so on any socket error the connection is dropped and the
whole batch is sent again on a new one (at-least-once; the receiver may see duplicates, never a
gap from a batch we knew failed). TLS verifies the receiver's certificate against ``ca_file`` and
its name against ``server_name``; a client certificate is presented when configured.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.errors import BadParameter, ConnectionProblem
from bastion.export.rfc5424 import FACILITIES, format_message, frame
from bastion.types.audit import AuditEvent

__all__ = ["SyslogOutput", "tls_client_context"]


def tls_client_context(ca_file: str, cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A verifying TLS client context (TLS 1.2+), optionally with a client certificate.

    Raises:
        BadParameter: a file is missing or is not a valid certificate or key.
    """
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise BadParameter(f"audit_export syslog TLS files: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(slots=True)
class SyslogOutput:
    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_name: str = ""
    """Name checked against the receiver's certificate (default: ``host``)."""
    hostname: str = field(default_factory=socket.gethostname)
    """HOSTNAME field of every message."""
    facility: str = "authpriv"
    timeout: float = 10.0
    accept_wait: float = 0.3
    """Seconds to watch a new TLS connection for a refusal before sending (see _check_accepted)."""
    name: str = "syslog"
    _writer: asyncio.StreamWriter | None = None
    _reader: asyncio.StreamReader | None = None
    _facility_code: int = 0

    def __post_init__(self) -> None:
        if self.facility not in FACILITIES:
            known = ", ".join(FACILITIES)
            raise BadParameter(f"unknown syslog facility {self.facility!r} (one of {known})")
        self._facility_code = FACILITIES[self.facility]

    async def _connect(self) -> asyncio.StreamWriter:
        # A receiver that closed its side (restart, idle timeout) would silently swallow the
        # next write: reconnect first when we have seen its EOF.
        old = self._reader
        if self._writer is not None and not self._writer.is_closing():
            if old is not None and not old.at_eof():
                return self._writer
        await self.close()
        where = f"{self.host}:{self.port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=(self.server_name or self.host) if self.tls else None,
                ),
                self.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionProblem(f"syslog receiver {where}: {exc.verify_message}") from exc
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise ConnectionProblem(f"cannot reach syslog receiver {where}: {reason}") from exc
        self._reader, self._writer = reader, writer
        if self.tls is not None:
            await self._check_accepted(reader, where)
        return writer

    async def _check_accepted(self, reader: asyncio.StreamReader, where: str) -> None:
        """With TLS 1.3 the client finishes its handshake before the server has checked the
        client certificate; a refusal arrives as an alert just after. Without this wait, the
        first batch would be written into a connection the receiver is closing, "acknowledged"
        by drain() and lost. The receiver never sends data, so a quiet connection is accepted."""
        try:
            data = await asyncio.wait_for(reader.read(1), self.accept_wait)
        except TimeoutError:
            return
        except (OSError, ssl.SSLError) as exc:
            await self.close()
            raise ConnectionProblem(f"syslog receiver {where} refused us: {exc}") from exc
        await self.close()
        reason = "closed the connection" if not data else "sent unexpected data"
        raise ConnectionProblem(f"syslog receiver {where} {reason} after the TLS handshake")

    async def send(self, events: Sequence[AuditEvent]) -> None:
        data = b"".join(
            frame(format_message(e, self.hostname, self._facility_code)) for e in events
        )
        writer = await self._connect()
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise ConnectionProblem(
                f"syslog receiver {self.host}:{self.port}: {exc or 'write timed out'}"
            ) from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), self.timeout)
            except (OSError, TimeoutError):
                pass
