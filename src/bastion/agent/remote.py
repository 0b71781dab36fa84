"""An agent's link to auth when it runs in another process: heartbeats, events and the role
watch, all over the HTTPS API (through the proxy's port) with the host certificate.

* :class:`APIEmitter` queues events and delivers them in order with retry: an auth outage delays
  events but drops none (a bounded queue; an overflow is logged loudly).
* :func:`watch_forever` keeps a :class:`ResourceCache` current from ``GET /v1/watch``,
  reconnecting with backoff; the cache is marked unsynced while the stream is down.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bastion.agent.join import HostIdentity
from bastion.auth.api_recordings import META_HEADER, encode_meta_header
from bastion.cli.identity import verified_context
from bastion.client.api import AuthClient
from bastion.errors import BastionError, ConnectionProblem, error_from_code
from bastion.recording.store import RecordingMeta
from bastion.services.cache import ResourceCache
from bastion.types.audit import AuditEvent
from bastion.types.codec import resource_to_dict
from bastion.types.inventory import Node

__all__ = ["APIEmitter", "RemoteAuth", "watch_forever"]

log = structlog.get_logger("bastion.agent.remote")
MAX_QUEUED_EVENTS = 100_000


class RemoteAuth:
    def __init__(self, identity: HostIdentity, server: str) -> None:
        self.identity = identity
        self.server = server
        self.ssl: ssl.SSLContext = verified_context(
            identity.read("ca.pem"), identity.tls_cert, identity.tls_key
        )

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with AuthClient(self.server, self.ssl) as client:
            return await client.call(method, path, body)

    async def heartbeat(self, node: Node) -> None:
        await self.call("POST", "/v1/nodes/heartbeat", resource_to_dict(node))

    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        """Upload a spooled recording (an :class:`~bastion.recording.uploader.UploadTarget`).

        Raises:
            ConnectionProblem: auth unreachable or unavailable (retry).
            BastionError: refused (the server's error class).
        """
        url = f"https://{self.server}/v1/recordings/{meta.session_id}"
        headers = {
            META_HEADER: encode_meta_header(meta),
            "Content-Type": "application/x-asciicast",
        }
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                with path.open("rb") as body:
                    async with session.post(url, data=body, headers=headers, ssl=self.ssl) as resp:
                        try:
                            data = await resp.json(content_type=None)
                        except ValueError:
                            data = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionProblem(f"cannot reach auth at {self.server}: {exc}") from None
        if resp.status < 400:
            return
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raise error_from_code(str(err.get("code")), str(err.get("message")))
        raise ConnectionProblem(f"recording upload: HTTP {resp.status}")


class APIEmitter:
    """Emitter for agents: events go to auth in order, with retry; nothing is dropped."""

    def __init__(self, remote: RemoteAuth) -> None:
        self._remote = remote
        self._queue: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        if len(self._queue) >= MAX_QUEUED_EVENTS:
            log.error("audit queue full; auth unreachable for too long", dropped=event_type)
            return None
        self._queue.append({"type": event_type, "outcome": outcome, **fields})
        self._drained.clear()
        self._wakeup.set()
        return None

    async def run(self) -> None:
        delay = 0.5
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = [self._queue[i] for i in range(min(100, len(self._queue)))]
            try:
                await self._remote.call("POST", "/v1/events/submit", {"events": batch})
            except ConnectionProblem as exc:
                log.warning("cannot deliver audit events; retrying", error=str(exc))
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311
                delay = min(delay * 2, 30.0)
                continue
            except BastionError as exc:
                log.error("auth refused audit events", error=str(exc), events=len(batch))
            for _ in batch:
                self._queue.popleft()
            if not self._queue:
                self._drained.set()
            delay = 0.5

    async def flush(self) -> None:
        """Wait until every queued event is delivered (wrap in asyncio.timeout)."""
        await self._drained.wait()


async def watch_forever(remote: RemoteAuth, kinds: Sequence[str], cache: ResourceCache) -> None:
    """Keep ``cache`` current; never returns (cancel it)."""
    delay = 0.5
    url = f"https://{remote.server}/v1/watch"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=45, connect=10)
    while True:
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, params={"kinds": ",".join(kinds)}, ssl=remote.ssl) as resp,
            ):
                if resp.status != 200:
                    raise ConnectionProblem(f"watch refused: HTTP {resp.status}")
                cache.begin_snapshot()
                async for raw in resp.content:
                    if raw.strip():
                        cache.apply(json.loads(raw))
                        delay = 0.5
        except (aiohttp.ClientError, TimeoutError, ConnectionProblem, ValueError) as exc:
            log.warning(
                "role watch interrupted; reconnecting", error=str(exc) or type(exc).__name__
            )
        cache.reset()
        await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311
        delay = min(delay * 2, 30.0)
