"""An agent's link to auth when it runs in another process: heartbeats, events and the role
watch, all over the HTTPS API (through the proxy's port) with the host certificate.

* :class:`APIEmitter` spools events on disk (:mod:`bastion.agent.event_spool`, fsynced before
  ``emit`` returns) and delivers them in order with retry: an auth outage or a node restart
  delays events but drops none; auth dedupes resent events by their ``event_id``.
* :func:`watch_forever` keeps a :class:`ResourceCache` current from ``GET /v1/watch``,
  reconnecting with backoff; the cache is marked unsynced while the stream is down.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiohttp
import structlog
from pydantic import BaseModel

from bastion.agent.event_spool import EventSpool, SpooledEvent
from bastion.agent.join import HostIdentity
from bastion.api.recordings import META_HEADER, encode_meta_header
from bastion.client.api import AuthClient
from bastion.client.tls import verified_context
from bastion.contract.agents import (
    HEARTBEAT_NODE,
    SUBMIT_EVENTS,
    WATCH,
    EventBatch,
    EventResult,
    WatchQuery,
)
from bastion.contract.base import Body, Endpoint, ResourceDoc, query_dict
from bastion.contract.recordings import UPLOAD_RECORDING
from bastion.errors import (
    BadParameter,
    BastionError,
    ConnectionProblem,
    LimitExceeded,
    error_from_code,
)
from bastion.recording.store import RecordingMeta
from bastion.services.cache import ResourceCache
from bastion.types.audit import AuditEvent
from bastion.types.inventory import Node

__all__ = ["APIEmitter", "RemoteAuth", "watch_forever"]

log = structlog.get_logger("bastion.agent.remote")
B = TypeVar("B", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
MAX_BATCH = 100
"""Events per ``POST /v1/events/submit``."""
TOO_LARGE = "request body too large"
"""How auth's LimitExceeded for a body above ``limits.max_request_bytes`` starts."""


class RemoteAuth:
    """Calls auth with the host certificate. ``fallbacks``: more auth addresses (several auth
    servers on one backend); an unreachable one moves the next to the front."""

    def __init__(self, identity: HostIdentity, server: str, fallbacks: Sequence[str] = ()) -> None:
        self.identity = identity
        self.servers = [server, *(f for f in fallbacks if f != server)]
        self.ssl: ssl.SSLContext = verified_context(
            identity.read("ca.pem"), identity.tls_cert, identity.tls_key
        )

    @property
    def server(self) -> str:
        """The auth address in use."""
        return self.servers[0]

    def fail_over(self) -> None:
        """The current address is unreachable: try the next one from now on."""
        if len(self.servers) > 1:
            self.servers.append(self.servers.pop(0))
            log.info("auth unreachable; trying the next address", server=self.servers[0])

    async def send(
        self,
        endpoint: Endpoint[B, R],
        body: B | None = None,
        *,
        path: dict[str, str] | None = None,
        query: Body | None = None,
    ) -> R:
        """One API call (:meth:`AuthClient.send`); an unreachable auth fails over."""
        try:
            async with AuthClient(self.server, self.ssl) as client:
                return await client.send(endpoint, body, path=path, query=query)
        except ConnectionProblem:
            self.fail_over()
            raise

    async def heartbeat(self, node: Node) -> None:
        await self.send(HEARTBEAT_NODE, ResourceDoc(node))

    async def upload(self, meta: RecordingMeta, path: Path) -> None:
        """Upload a spooled recording (an :class:`~bastion.recording.uploader.UploadTarget`).

        Raises:
            ConnectionProblem: auth unreachable or unavailable (retry).
            BastionError: refused (the server's error class).
        """
        url = f"https://{self.server}{UPLOAD_RECORDING.url(session_id=meta.session_id)}"
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
    """Emitter for agents: each event is fsynced to an :class:`EventSpool` before ``emit``
    returns, then delivered to auth in order, with retry, and acknowledged (issue 7)."""

    def __init__(self, remote: RemoteAuth, spool: EventSpool) -> None:
        self._remote = remote
        self._spool = spool
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        """Set after every acknowledgement (for :meth:`flush`)."""
        self._single_until = 0
        """Send one event per request up to this spool offset (a batch auth refused whole)."""

    async def emit(
        self, event_type: str, *, outcome: str = "success", **fields: object
    ) -> AuditEvent | None:
        """Spool the event durably (raises LimitExceeded when the spool is full)."""
        await self.emit_many([(event_type, outcome, fields)])
        return None

    async def emit_many(self, specs: Sequence[tuple[str, str, Mapping[str, object]]]) -> None:
        """Spool several events ``(type, outcome, fields)`` in order with one fsync, all or
        none (:class:`~bastion.audit.emitter.SessionEvents`: a proxy's per-statement events)."""
        now = datetime.now(UTC).isoformat()
        events = [{"agent_time": now, "type": t, "outcome": o, **f} for t, o, f in specs]
        await self._spool.append_many(events)
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver spooled events (those of earlier runs first) until cancelled."""
        delay = 0.5
        while True:
            self._wakeup.clear()
            batch = await self._spool.read()
            if not batch:
                await self._wakeup.wait()  # emit sets it once its event is on disk
                continue
            if batch[0].end <= self._single_until:
                batch = batch[:1]
            try:
                await self._deliver(batch[:MAX_BATCH])
            except ConnectionProblem as exc:
                log.warning("cannot deliver audit events; retrying", error=str(exc))
            except BastionError as exc:
                log.error(
                    "auth refused the audit event batch; retrying", error=str(exc),
                    code=exc.code,
                )  # fmt: skip
            else:
                delay = 0.5
                continue
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311
            delay = min(delay * 2, 30.0)

    async def _deliver(self, batch: list[SpooledEvent]) -> None:
        """Submit ``batch``, keep what auth refused in ``rejected.jsonl``, then acknowledge.

        Raises:
            ConnectionProblem: auth unreachable (retry).
            BastionError: the whole batch refused (retry; a single event that is malformed or
                larger than auth's request limit is kept aside instead).
        """
        events = [e.event for e in batch if e.event is not None]
        results: list[EventResult] = []
        if events:
            try:
                answer = await self._remote.send(SUBMIT_EVENTS, EventBatch(events=events))
            except (BadParameter, LimitExceeded) as exc:
                if isinstance(exc, LimitExceeded) and not exc.message.startswith(TOO_LARGE):
                    raise  # rate limited: retry later
                if len(batch) > 1:  # find the bad one: resend these one at a time, at once
                    log.warning("auth refused an event batch; resending it event by event",
                                error=exc.message)  # fmt: skip
                    self._single_until = batch[-1].end
                    return
                await self._spool.reject(batch[0], exc.message)
                await self._spool.ack(batch[0].end)
                self._progress.set()
                return
            results = answer.results
        by_id = {r.event_id: r for r in results}
        for item in batch:
            if item.event is None:
                await self._spool.reject(item, "unreadable line in the spool")
                continue
            result = by_id.get(item.event["event_id"])
            if result is not None and result.status == "rejected":
                await self._spool.reject(item, result.reason or "refused by auth")
        await self._spool.ack(batch[-1].end)
        self._progress.set()

    async def flush(self) -> None:
        """Wait until every spooled event is delivered (wrap in asyncio.timeout)."""
        while not self._spool.empty:
            self._progress.clear()
            await self._progress.wait()


async def watch_forever(remote: RemoteAuth, kinds: Sequence[str], cache: ResourceCache) -> None:
    """Keep ``cache`` current; never returns (cancel it)."""
    delay = 0.5
    timeout = aiohttp.ClientTimeout(total=None, sock_read=45, connect=10)
    while True:
        url = f"https://{remote.server}{WATCH.path}"
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(
                    url, params=query_dict(WatchQuery(kinds=list(kinds))), ssl=remote.ssl
                ) as resp,
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
            remote.fail_over()
        cache.reset()
        await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311
        delay = min(delay * 2, 30.0)
