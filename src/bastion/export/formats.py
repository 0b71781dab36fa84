"""Bodies for the JSON-lines file, Splunk HEC and Elasticsearch ``_bulk`` outputs.

Layer: pure codec (sans-IO): events in, bytes out; response bodies in, a verdict out. The HTTP
and file IO is in :mod:`bastion.export.http_output` and :mod:`bastion.export.file_output`.

* JSON lines: one compact JSON object per line, keys sorted, ``\\n``-terminated.
* Splunk HEC (``/services/collector/event``): ``{"time","host","source","sourcetype","event"}``
  objects concatenated (HEC's batch format); ``time`` is epoch seconds with microseconds.
* Elasticsearch ``_bulk``: an ``index`` action line (``_id`` = the event id, so re-delivering a
  batch overwrites the same documents instead of duplicating them) and the document line, NDJSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from bastion.errors import RemoteProtocolError
from bastion.types.audit import AuditEvent

__all__ = [
    "BulkVerdict",
    "bulk_body",
    "check_bulk_response",
    "check_hec_response",
    "event_document",
    "hec_body",
    "json_line",
    "json_lines",
]


def event_document(event: AuditEvent) -> dict[str, Any]:
    """The event as a JSON-ready mapping (the same shape in every output)."""
    return event.model_dump(mode="json")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def json_line(event: AuditEvent) -> bytes:
    """One JSON line, ``\\n``-terminated (JSON escapes newlines inside strings)."""
    return (_dumps(event_document(event)) + "\n").encode()


def json_lines(events: Sequence[AuditEvent]) -> bytes:
    return b"".join(json_line(e) for e in events)


def _epoch(event: AuditEvent) -> float:
    moment = event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)
    return round(moment.timestamp(), 6)


def hec_body(
    events: Sequence[AuditEvent], *, host: str, source: str, sourcetype: str, index: str = ""
) -> bytes:
    """Splunk HTTP Event Collector batch body: JSON event objects concatenated."""
    parts = []
    for event in events:
        obj: dict[str, Any] = {
            "time": _epoch(event),
            "host": host,
            "source": source,
            "sourcetype": sourcetype,
            "event": event_document(event),
        }
        if index:
            obj["index"] = index
        parts.append(_dumps(obj))
    return "\n".join(parts).encode()


def check_hec_response(status: int, body: bytes) -> None:
    """Accept a HEC reply only when it is 200 with ``{"code": 0}``.

    Raises:
        RemoteProtocolError: the collector refused the batch; the message carries its text.
    """
    try:
        reply = json.loads(body) if body else {}
    except ValueError:
        reply = {}
    if not isinstance(reply, dict):
        reply = {}
    code = reply.get("code")
    if status == 200 and code == 0:
        return
    text = reply.get("text") or body[:200].decode(errors="replace") or "no body"
    raise RemoteProtocolError(f"HEC refused the batch: HTTP {status}, code {code}: {text}")


def bulk_body(events: Sequence[AuditEvent], index: str) -> bytes:
    """Elasticsearch ``_bulk`` NDJSON: ``{"index":{"_index":..,"_id":..}}`` + document per event.

    Raises:
        ValueError: an event has no id (ids make re-delivery idempotent; the log assigns them).
    """
    lines = []
    for event in events:
        if not event.id:
            raise ValueError(f"audit event of type {event.type!r} has no id")
        lines.append(_dumps({"index": {"_index": index, "_id": event.id}}))
        lines.append(_dumps(event_document(event)))
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True, slots=True)
class BulkVerdict:
    """What a ``_bulk`` reply says about the batch."""

    failed: tuple[tuple[str, int, str], ...] = ()
    """(document id, item status, error reason) of every item not stored."""

    @property
    def ok(self) -> bool:
        return not self.failed


def check_bulk_response(status: int, body: bytes, expected: int) -> BulkVerdict:
    """Read a ``_bulk`` reply: HTTP status, then every item's own status.

    Elasticsearch answers 200 even when items fail; ``errors: true`` and a per-item ``status``
    (and ``error``) say which. A batch counts as delivered only when all ``expected`` items have
    a 2xx status.

    Raises:
        RemoteProtocolError: non-2xx HTTP status, or a body that is not a bulk reply.
    """
    if not 200 <= status < 300:
        raise RemoteProtocolError(
            f"_bulk refused the batch: HTTP {status}: {body[:200].decode(errors='replace')}"
        )
    try:
        reply = json.loads(body)
    except ValueError:
        raise RemoteProtocolError("_bulk reply is not JSON") from None
    items = reply.get("items") if isinstance(reply, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else "no"
        raise RemoteProtocolError(f"_bulk reply has {got} items for {expected} documents")
    failed = []
    for item in items:
        result: object = next(iter(item.values()), {}) if isinstance(item, dict) else {}
        if not isinstance(result, dict):
            result = {}
        item_status = result.get("status", 0)
        item_status = item_status if isinstance(item_status, int) else 0
        if not 200 <= item_status < 300:
            error = result.get("error")
            reason = error.get("reason") or error.get("type") if isinstance(error, dict) else error
            failed.append((str(result.get("_id", "")), item_status, str(reason or "unknown")))
    return BulkVerdict(failed=tuple(failed))
