"""What agents and proxies in other processes call: heartbeats, node pins, audit events, and
the watch stream of resources they keep a view of.

``GET /v1/watch?kinds=role,lock`` streams newline-delimited JSON: first the current state
(``put`` lines), then ``{"type": "init"}``, then every change, with a ``ping`` line every 15 s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply, ResourceDoc

__all__ = [
    "HEARTBEAT_NODE",
    "HEARTBEAT_PROXY",
    "PIN_NODE",
    "SUBMIT_EVENTS",
    "WATCH",
    "WatchLine",
]


class Pin(Body):
    name: str = Field(min_length=1, max_length=256)
    host_id: str = Field(min_length=1, max_length=256)


class Pinned(Reply):
    name: str
    host_id: str
    """The host the name is pinned to (the caller's, or an earlier one)."""


class EventBatch(Body):
    events: list[dict[str, Any]] = Field(max_length=10_000)


class EventResult(Reply):
    status: Literal["stored", "duplicate", "rejected"]
    event_id: str = ""
    reason: str = ""


class Submitted(Reply):
    accepted: int
    results: list[EventResult]


class WatchQuery(Body):
    kinds: list[str] = []


class WatchLine(Reply):
    """One line of the watch stream."""

    type: Literal["put", "delete", "init", "ping"]
    kind: str = ""
    name: str = ""
    resource: dict[str, Any] | None = None


HEARTBEAT_NODE = Endpoint(
    "POST",
    "/v1/nodes/heartbeat",
    "host",
    "Announce or refresh this agent's node",
    body=ResourceDoc,
    response=ResourceDoc,
)
HEARTBEAT_PROXY = Endpoint(
    "POST",
    "/v1/proxies/heartbeat",
    "host",
    "Announce or refresh a proxy in its own process (agents keep a tunnel to each)",
    body=ResourceDoc,
    response=ResourceDoc,
)
PIN_NODE = Endpoint(
    "POST",
    "/v1/nodes/pin",
    "host",
    "Pin a node name to its host at first sight (a proxy in its own process)",
    body=Pin,
    response=Pinned,
)
SUBMIT_EVENTS = Endpoint(
    "POST",
    "/v1/events/submit",
    "host",
    "Store audit events from an agent's durable spool (one result per event)",
    body=EventBatch,
    response=Submitted,
)
WATCH = Endpoint(
    "GET",
    "/v1/watch",
    "any",
    "Stream the current state and every change of some kinds (NDJSON of WatchLine)",
    body=Empty,
    response=WatchLine,
    query=WatchQuery,
    stream="application/x-ndjson",
)
