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

from bastion.auth.server import AuthServer
from bastion.backend.base import EventType
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.types.codec import canonical_kind, parse_resource, resource_to_dict
from bastion.types.inventory import Node, ProxyServer
from bastion.web.body import read_json

__all__ = ["add_agent_routes"]

PING_SECONDS = 15.0
WATCHABLE = ("role", "lock", "node", "proxy", "user", "token", "cluster_auth_preference")


def add_agent_routes(app: web.Application, auth: AuthServer) -> None:
    async def heartbeat(request: web.Request) -> web.Response:
        node = parse_resource(await read_json(request))
        if not isinstance(node, Node):
            raise BadParameter("a heartbeat carries a node resource")
        stored = await request["guard"].heartbeat_node(node)
        return web.json_response(resource_to_dict(stored))

    async def heartbeat_proxy(request: web.Request) -> web.Response:
        proxy = parse_resource(await read_json(request))
        if not isinstance(proxy, ProxyServer):
            raise BadParameter("a proxy heartbeat carries a proxy resource")
        stored = await request["guard"].heartbeat_proxy(proxy)
        return web.json_response(resource_to_dict(stored))

    async def pin_node(request: web.Request) -> web.Response:
        body = await read_json(request)
        name, host_id = body.get("name"), body.get("host_id")
        if not isinstance(name, str) or not isinstance(host_id, str) or not name:
            raise BadParameter("expected {'name': NODE, 'host_id': HOST_ID}")
        pinned = await request["guard"].pin_node(name, host_id)
        return web.json_response({"name": name, "host_id": pinned})

    async def submit_events(request: web.Request) -> web.Response:
        body = await read_json(request)
        events = body.get("events")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise BadParameter("expected {'events': [ {...}, ... ]}")
        results = await request["guard"].submit_events(events)
        return web.json_response({"accepted": len(events), "results": results})

    async def watch(request: web.Request) -> web.StreamResponse:
        guard = request["guard"]
        kinds = [canonical_kind(k) for k in request.query.get("kinds", "").split(",") if k]
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
                resource = None
                if event.type is EventType.PUT:
                    try:
                        resource = await guard.get_resource(kind, name)
                    except (NotFound, AccessDenied):
                        pass  # deleted meanwhile, or not visible to this caller
                if resource is not None:
                    shown[kind].add(name)
                    line = {"type": "put", "kind": kind, "resource": resource_to_dict(resource)}
                    await send(line)
                elif name in shown[kind]:
                    shown[kind].discard(name)
                    await send({"type": "delete", "kind": kind, "name": name})
        finally:
            await watcher.close()

    app.router.add_post("/v1/nodes/heartbeat", heartbeat)
    app.router.add_post("/v1/proxies/heartbeat", heartbeat_proxy)
    app.router.add_post("/v1/nodes/pin", pin_node)
    app.router.add_post("/v1/events/submit", submit_events)
    app.router.add_get("/v1/watch", watch)
