"""HTTP outputs: Splunk HTTP Event Collector and Elasticsearch ``_bulk``.

Layer: IO edge (one aiohttp client session). Bodies and reply checks are pure
(:mod:`.formats`). A batch is acknowledged only by a positive reply: HEC's ``{"code": 0}``, or a
``_bulk`` reply in which every item has a 2xx status (Elasticsearch answers 200 even when some
documents were rejected). Anything else raises, and the forwarder sends the same batch again;
``_bulk`` uses the event id as ``_id``, so a re-sent batch overwrites instead of duplicating.
Credentials go in headers and are never logged.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from bastion.errors import BadParameter, ConnectionProblem, RemoteProtocolError
from bastion.export.formats import bulk_body, check_bulk_response, check_hec_response, hec_body
from bastion.types.audit import AuditEvent

__all__ = ["HttpOutput", "auth_headers"]

Kind = Literal["splunk_hec", "elasticsearch"]


def auth_headers(
    kind: Kind, *, token: str = "", username: str = "", password: str = "", api_key: str = ""
) -> dict[str, str]:
    """The Authorization header for the receiver kind (none when no credential is set).

    Raises:
        BadParameter: HEC without a token, or both basic auth and an API key for Elasticsearch.
    """
    if kind == "splunk_hec":
        if not token:
            raise BadParameter("audit_export http: splunk_hec needs a token")
        return {"Authorization": f"Splunk {token}"}
    if api_key and (username or password):
        raise BadParameter("audit_export http: set either username/password or api_key, not both")
    if api_key:
        return {"Authorization": f"ApiKey {api_key}"}
    if username:
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


@dataclass(slots=True)
class HttpOutput:
    url: str
    """HEC: ``https://splunk:8088/services/collector/event``; Elasticsearch: ``https://es:9200/_bulk``."""
    kind: Kind
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    tls: ssl.SSLContext | None = None
    index: str = ""
    """Elasticsearch index (default ``bastion-audit``); HEC index (default: the token's)."""
    host: str = field(default_factory=socket.gethostname)
    source: str = "bastion"
    sourcetype: str = "bastion:audit"
    timeout: float = 30.0
    name: str = "http"
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise BadParameter(f"audit_export http url must be http(s)://..., got {self.url!r}")

    def _body(self, events: Sequence[AuditEvent]) -> tuple[bytes, str]:
        if self.kind == "splunk_hec":
            body = hec_body(
                events,
                host=self.host,
                source=self.source,
                sourcetype=self.sourcetype,
                index=self.index,
            )
            return body, "application/json"
        return bulk_body(events, self.index or "bastion-audit"), "application/x-ndjson"

    async def send(self, events: Sequence[AuditEvent]) -> None:
        body, content_type = self._body(events)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else True),
            )
        headers = {**self.headers, "Content-Type": content_type}
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                reply = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionProblem(
                f"{self.kind} receiver {self.url}: {exc or type(exc).__name__}"
            ) from exc
        if self.kind == "splunk_hec":
            check_hec_response(status, reply)
            return
        verdict = check_bulk_response(status, reply, len(events))
        if not verdict.ok:
            first_id, first_status, reason = verdict.failed[0]
            raise RemoteProtocolError(
                f"_bulk stored {len(events) - len(verdict.failed)} of {len(events)} events; "
                f"first rejected: {first_id} (status {first_status}: {reason})"
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
