"""Canonical JSON of an audit event: the exact bytes stored and hashed as the Merkle leaf.

Layer: audit (pure). The encoding follows RFC 8785 (JCS) in spirit: object keys sorted, no
insignificant whitespace, UTF-8 without ``\\u`` escapes for non-ASCII text, times in UTC ISO 8601
as pydantic renders them (``2026-11-24T23:15:49.123456Z``). Event fields hold strings, integers,
booleans, lists and objects; floats (which JCS formats differently from Python) are not used by
any event type. Anyone can recompute a leaf from an exported event with :func:`encode`.

The audit log's write path builds most events without a pydantic round trip
(:func:`trusted_event`, :func:`event_doc`): when every attribute already has its exact type and
every ``fields`` value is plain JSON (str, int, bool, None, finite float, lists and str-keyed
objects of those) the document is put together directly; its bytes are the same as
:func:`encode`'s (tests/unit/audit/test_canonical.py compares them). Anything else takes the
validated path.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bastion.errors import BadParameter
from bastion.types.audit import AuditEvent

__all__ = [
    "decode",
    "encode",
    "encode_obj",
    "event_doc",
    "is_plain",
    "iso_time",
    "PlainTemplate",
    "plain_bytes",
    "plain_parts",
    "trusted_event",
    "with_index",
]

_STRINGS = tuple(
    k for k, f in AuditEvent.model_fields.items() if k not in ("time", "fields", "index")
)
"""Attributes that hold a string (``outcome``: one of two)."""
_object_setattr = object.__setattr__
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""What ``json.dumps(obj, sort_keys=True, ...)`` uses, made once (dumps builds one per call)."""
_SCALARS = frozenset({str, int, bool, type(None)})


def encode_obj(obj: Any) -> bytes:
    """Canonical JSON bytes of a JSON-compatible value."""
    return _ENCODER.encode(obj).encode()


def encode(event: AuditEvent) -> bytes:
    """The canonical bytes of ``event`` (the leaf data of the Merkle tree)."""
    return encode_obj(event.model_dump(mode="json"))


def decode(data: bytes) -> AuditEvent:
    """Parse stored event bytes.

    Raises:
        BadParameter: not a valid audit event.
    """
    try:
        return AuditEvent.model_validate_json(data)
    except ValidationError as exc:
        raise BadParameter(f"not a valid audit event: {exc.errors()[0]['msg']}") from None


def is_plain(value: object) -> bool:
    """Whether ``value`` is plain JSON whose canonical encoding needs no pydantic rendering:
    str, int, bool, None, a finite float, or lists / tuples / str-keyed dicts of those."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or (type(item) not in _SCALARS and not is_plain(item)):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(v) in _SCALARS or is_plain(v) for v in value)  # type: ignore[attr-defined]
    return False


def iso_time(when: datetime) -> str | None:
    """``when`` as pydantic renders it in JSON (``...Z``), for UTC times; None otherwise."""
    if when.tzinfo is not UTC:
        return None
    return when.isoformat()[:-6] + "Z"


def trusted_event(values: dict[str, Any]) -> AuditEvent:
    """An :class:`AuditEvent` from ``values`` that are known to be valid (every attribute of
    its exact type, see :func:`event_doc`), without validation: what ``AuditEvent(**values)``
    returns, at a tenth of the cost. Missing attributes take their defaults."""
    full: dict[str, Any] = {
        "type": "",
        "code": "",
        "time": None,
        "cluster": "",
        "user": "",
        "login": "",
        "target": "",
        "remote_addr": "",
        "session_id": "",
        "device_id": "",
        "outcome": "success",
        "reason": "",
        "fields": None,
        "id": "",
        "index": None,
    }
    full.update(values)
    if full["fields"] is None:
        full["fields"] = {}
    event = object.__new__(AuditEvent)
    _object_setattr(event, "__dict__", full)
    _object_setattr(event, "__pydantic_fields_set__", set(values))
    _object_setattr(event, "__pydantic_extra__", None)
    _object_setattr(event, "__pydantic_private__", None)
    return event


def with_index(event: AuditEvent, index: int) -> AuditEvent:
    """``event.model_copy(update={"index": index})`` without pydantic's copy machinery."""
    values = dict(event.__dict__)
    values["index"] = index
    copy = object.__new__(AuditEvent)
    _object_setattr(copy, "__dict__", values)
    _object_setattr(copy, "__pydantic_fields_set__", event.__pydantic_fields_set__ | {"index"})
    _object_setattr(copy, "__pydantic_extra__", None)
    _object_setattr(copy, "__pydantic_private__", None)
    return copy


_KEYS = (
    "cluster",
    "code",
    "device_id",
    "fields",
    "id",
    "index",
    "login",
    "outcome",
    "reason",
    "remote_addr",
    "session_id",
    "target",
    "time",
    "type",
    "user",
)
"""The attributes in canonical (sorted) order, as :func:`plain_bytes` writes them."""
if _KEYS != tuple(sorted(AuditEvent.model_fields)):  # pragma: no cover - a new attribute
    raise RuntimeError("AuditEvent changed: update canonical._KEYS and plain_bytes")
_q = json.encoder.encode_basestring
"""The string encoder ``_ENCODER`` uses (``ensure_ascii=False``): the same bytes."""
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_PLAIN_ENCODE = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, _ENCODER.default, _q, None, ":", ",", True, False, True)
)
"""What ``_ENCODER.encode`` builds on every call (the C encoder, sort_keys, same separators),
made once and without the circular-reference markers: only for values :func:`is_plain`
walked already (plain data has no cycles)."""


def _encode_plain(value: Any) -> str:
    if _PLAIN_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_PLAIN_ENCODE(value, 0))


def plain_bytes(event: AuditEvent) -> bytes | None:
    """``encode(event)`` for the events :func:`event_doc` accepts, written directly (no
    document dict, no sort of the known attributes): the write path's encoder. None for any
    other event (then use :func:`encode`). tests/unit/audit/test_canonical.py compares the
    bytes with :func:`encode`'s."""
    v = event.__dict__
    time = iso_time(v["time"])
    fields = v["fields"]
    index = v["index"]
    if time is None or not is_plain(fields):
        return None
    if index is None:
        position = "null"
    elif type(index) is int:
        position = str(index)
    else:
        return None
    for key in _STRINGS:
        if type(v[key]) is not str:
            return None
    return (
        f'{{"cluster":{_q(v["cluster"])},"code":{_q(v["code"])},'
        f'"device_id":{_q(v["device_id"])},"fields":{_encode_plain(fields)},'
        f'"id":{_q(v["id"])},"index":{position},"login":{_q(v["login"])},'
        f'"outcome":{_q(v["outcome"])},"reason":{_q(v["reason"])},'
        f'"remote_addr":{_q(v["remote_addr"])},"session_id":{_q(v["session_id"])},'
        f'"target":{_q(v["target"])},"time":{_q(time)},"type":{_q(v["type"])},'
        f'"user":{_q(v["user"])}}}'
    ).encode()


def plain_parts(
    cluster: str,
    code: str,
    event_type: str,
    outcome: str,
    time: str,
    event_id: str,
    top: dict[str, str],
    fields: dict[str, Any],
) -> tuple[str, str] | None:
    """The canonical JSON of a plain event built without an :class:`AuditEvent`, split around
    its index: ``(head + str(index) + tail).encode()`` is :func:`plain_bytes` of the event
    :func:`trusted_event` makes of these values at that index (``time``: its :func:`iso_time`;
    ``top``: the other string attributes, absent ones empty). The bulk write path stores
    that: no event object, and a retry at another index only joins the parts again. None
    when ``fields`` is not plain (then :func:`plain_bytes` declines too). Every argument but
    ``fields`` must be an exact ``str`` (the caller checks; ``outcome`` one of the two)."""
    if not is_plain(fields):
        return None
    before, after = _tail_parts(event_type, outcome, top)
    return (
        f'{_head_part(cluster, code, top)}{_encode_plain(fields)},"id":{_q(event_id)},"index":',
        f"{before}{_q(time)}{after}",
    )


def _head_part(cluster: str, code: str, top: dict[str, str]) -> str:
    """A plain event's canonical JSON up to its ``fields`` value."""
    device = _q(top.get("device_id", ""))
    return f'{{"cluster":{_q(cluster)},"code":{_q(code)},"device_id":{device},"fields":'


def _tail_parts(event_type: str, outcome: str, top: dict[str, str]) -> tuple[str, str]:
    """A plain event's canonical JSON after its index, split around its ``time`` value."""
    get = top.get
    return (
        f',"login":{_q(get("login", ""))},"outcome":{_q(outcome)},'
        f'"reason":{_q(get("reason", ""))},"remote_addr":{_q(get("remote_addr", ""))},'
        f'"session_id":{_q(get("session_id", ""))},"target":{_q(get("target", ""))},"time":'
    ), f',"type":{_q(event_type)},"user":{_q(get("user", ""))}}}'


class PlainTemplate:
    """:func:`plain_parts` for many events that share their type, outcome, top-level strings
    and most ``fields`` (the statements of one database session): what they share is encoded
    once, each event encodes only its own fields. ``tail(time)`` is shared by the events of one
    clock reading, ``head(event_id, own)`` is each one's: ``(head, tail)`` is ``plain_parts``
    of the same values with ``fields = {**shared, **own}`` (tests/unit/audit/test_canonical.py
    holds them to it). Raises ValueError when ``shared`` is not plain."""

    __slots__ = ("_head", "_layouts", "_reserved", "_shared", "_tail_after", "_tail_before")

    def __init__(
        self,
        cluster: str,
        code: str,
        event_type: str,
        outcome: str,
        top: dict[str, str],
        shared: dict[str, Any],
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        if not is_plain(shared):
            raise ValueError("shared fields are not plain JSON")
        self._shared = {k: f"{_q(k)}:{_encode_plain(v)}" for k, v in shared.items()}
        self._head = _head_part(cluster, code, top)
        self._tail_before, self._tail_after = _tail_parts(event_type, outcome, top)
        self._reserved = reserved
        """Keys an event may not have among its own fields (its top-level attributes: the
        caller builds such an event itself)."""
        self._layouts: dict[tuple[str, ...], tuple[str, tuple[int, ...] | None] | None] = {}
        """:meth:`_layout` per tuple of own keys (in the caller's order)."""

    def tail(self, time: str) -> str:
        return f"{self._tail_before}{_q(time)}{self._tail_after}"

    def head(self, event_id: str, own: dict[str, Any]) -> str | None:
        """None when ``own`` is not plain, has a key that is not a string or is reserved."""
        keys = tuple(own)
        try:
            layout = self._layouts[keys]
        except KeyError:
            layout = self._layouts[keys] = self._layout(keys)
        if layout is None:
            return None
        fmt, order = layout
        values = []
        for value in own.values():
            kind = type(value)
            if kind is str:
                values.append(_q(value))
            elif kind is list and all(type(v) is str for v in value):  # a statement's parameters
                values.append(f"[{','.join(map(_q, value))}]")
            elif is_plain(value):
                values.append(_encode_plain(value))
            else:
                return None
        fields = fmt % (tuple(values) if order is None else tuple(values[i] for i in order))
        return f'{self._head}{fields},"id":{_q(event_id)},"index":'

    def _layout(self, own: tuple[str, ...]) -> tuple[str, tuple[int, ...] | None] | None:
        """The sorted fields as a %-format, the shared ones encoded (``%`` escaped), ``%s``
        for own ones (an own key replaces a shared one, as in ``{**shared, **own}``); and the
        order of the own values in it (None: the caller's order). None for keys that are
        not strings or are reserved."""
        if not all(type(k) is str and k not in self._reserved for k in own):
            return None
        slots = {k: v.replace("%", "%%") for k, v in self._shared.items()}
        slots.update((k, f"{_q(k).replace('%', '%%')}:%s") for k in own)
        keys = sorted(slots)
        order = tuple(sorted(range(len(own)), key=lambda i: own[i]))
        fmt = "{" + ",".join(slots[k] for k in keys) + "}"
        return fmt, None if order == tuple(range(len(own))) else order


def event_doc(event: AuditEvent) -> dict[str, Any] | None:
    """The JSON document :func:`encode` would encode for ``event``, put together directly, or
    None when ``event`` holds anything but exact strings and plain ``fields`` (then use
    :func:`encode`). ``encode_obj(event_doc(e)) == encode(e)``."""
    values = event.__dict__
    time = iso_time(values["time"])
    if time is None or not is_plain(values["fields"]):
        return None
    for key in _STRINGS:
        if type(values[key]) is not str:
            return None
    index = values["index"]
    if index is not None and type(index) is not int:
        return None
    doc = dict(values)
    doc["time"] = time
    return doc
