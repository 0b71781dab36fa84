"""API routes for agents and proxies in other processes: heartbeats, events and watches.

``GET /v1/watch?kinds=role,lock`` streams newline-delimited JSON: first the current state
(``put`` lines), then ``{"type": "init"}``, then every change as it happens, with a ``ping`` line
every 15 s so both ends notice a dead connection. Consumers treat ``put`` as replace, so the
overlap between snapshot and live stream is harmless.

``POST /v1/proxies/heartbeat`` advertises a proxy in its own process (agents watch ``proxy`` to
keep a tunnel to each one); ``POST /v1/nodes/pin`` is how such a proxy pins a node name to its
host at first sight (:class:`~bastion.services.node_pins.NodePins`).

``POST /v1/events/submit`` takes ``{"events": [...]}`` and answers one result per event
(``stored``, ``duplicate`` or ``rejected`` with a reason, see
:meth:`bastion.auth.guarded.GuardedAuth.submit_events`): a bad event never fails the batch.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.server import AuthServer
from bastion.backend.base import EventType
from bastion.contract import agents as a
from bastion.contract.base import Empty, ResourceDoc
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.types.codec import canonical_kind, resource_to_dict
from bastion.types.inventory import Node, ProxyServer
from bastion.types.meta import Resource

__all__ = ["add_agent_routes"]

PING_SECONDS = 15.0
WATCHABLE = (
    *("role", "lock", "node", "proxy", "db", "user", "token", "cluster_auth_preference"),
    "remote_cluster",  # proxies in their own processes: leaves' public CAs (system_roles.py)
    "cert_authority",  # ... and this cluster's (private keys stripped by GuardedAuth)
)


def add_agent_routes(app: web.Application, auth: AuthServer) -> None:
    async def heartbeat(call: Call[ResourceDoc]) -> ResourceDoc:
        node = call.body.root
        if not isinstance(node, Node):
            raise BadParameter("a heartbeat carries a node resource")
        return ResourceDoc(await call.guard.heartbeat_node(node))

    async def heartbeat_proxy(call: Call[ResourceDoc]) -> ResourceDoc:
        proxy = call.body.root
        if not isinstance(proxy, ProxyServer):
            raise BadParameter("a proxy heartbeat carries a proxy resource")
        return ResourceDoc(await call.guard.heartbeat_proxy(proxy))

    async def pin_node(call: Call[a.Pin]) -> a.Pinned:
        pinned = await call.guard.pin_node(call.body.name, call.body.host_id)
        return a.Pinned(name=call.body.name, host_id=pinned)

    async def submit_events(call: Call[a.EventBatch]) -> a.Submitted:
        events = call.body.events
        results = await call.guard.submit_events(events)
        return a.Submitted.model_validate({"accepted": len(events), "results": results})

    async def watch(call: Call[Empty]) -> web.StreamResponse:
        request, guard = call.request, call.guard
        kinds = [canonical_kind(k) for k in call.query(a.WatchQuery).kinds]
        if not kinds or any(k not in WATCHABLE for k in kinds):
            raise BadParameter(f"kinds: choose from {', '.join(WATCHABLE)}")
        for kind in kinds:
            await guard.require(kind, "list")
        prefix_kind = {auth.store(kind).key(""): kind for kind in kinds}
        watcher = await auth.deps.backend.watch(tuple(prefix_kind))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def send(line: dict[str, Any]) -> None:
            await response.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

        # What this caller has been shown, per kind: a delete (or a change that hides an item
        # from it) is sent only for these, so the stream never names an invisible item.
        shown: dict[str, set[str]] = {kind: set() for kind in kinds}
        try:
            for kind in kinds:
                for resource in await guard.list_resources(kind):
                    shown[kind].add(resource.name)
                    await send(
                        {"type": "put", "kind": kind, "resource": resource_to_dict(resource)}
                    )
            await send({"type": "init"})
            events = aiter(watcher)
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), PING_SECONDS)
                except TimeoutError:
                    await send({"type": "ping"})
                    continue
                prefix = next(p for p in prefix_kind if event.item.key.startswith(p))
                kind, name = prefix_kind[prefix], event.item.key[len(prefix) :]
                current: Resource | None = None
                if event.type is EventType.PUT:
                    try:
                        current = await guard.get_resource(kind, name)
                    except (NotFound, AccessDenied):
                        pass  # deleted meanwhile, or not visible to this caller
                if current is not None:
                    shown[kind].add(name)
                    line = {"type": "put", "kind": kind, "resource": resource_to_dict(current)}
                    await send(line)
                elif name in shown[kind]:
                    shown[kind].discard(name)
                    await send({"type": "delete", "kind": kind, "name": name})
        finally:
            await watcher.close()

    bind(app, a.HEARTBEAT_NODE, heartbeat)
    bind(app, a.HEARTBEAT_PROXY, heartbeat_proxy)
    bind(app, a.PIN_NODE, pin_node)
    bind(app, a.SUBMIT_EVENTS, submit_events)
    bind(app, a.WATCH, watch)
