"""Inventory sync: import an MDM export into the device inventory, by hand or on a schedule.

Layer: auth. The sources are in the cluster's device-trust preference
(``device_trust.sources``, :class:`~bastion.types.devices.DeviceSource`). A sync downloads the
export (a file on the auth server, or HTTPS), parses it and diffs it with the inventory
(:mod:`bastion.protocols.mdm`, pure), then applies the plan as audited transactions:
``device.create`` for new devices, ``device.sync`` for each changed one (a device that becomes
non-compliant gets its compliance lock in the same transaction, so its live sessions end), and
one ``device.sync`` per batch of devices only seen again. Devices missing from the export for
longer than the grace period are marked ``non_compliant``, never deleted.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp
import structlog

from bastion.auth.devices import DeviceService, compliance_ops
from bastion.auth.server import AuthServer
from bastion.backend.base import Op
from bastion.errors import AlreadyExists, BadParameter, BastionError, CompareFailed, NotFound
from bastion.protocols.mdm import SyncPlan, diff_inventory, parse_export
from bastion.types.devices import Device, DeviceSource, DeviceSpec
from bastion.types.meta import Metadata

__all__ = ["MAX_EXPORT_BYTES", "DeviceSync"]

log = structlog.get_logger(__name__)

MAX_EXPORT_BYTES = 64 * 1024 * 1024
SEEN_BATCH = 50
SCHEDULE_TICK = 10.0


async def _download(source: DeviceSource) -> bytes:
    url = urlparse(source.url)
    if url.scheme == "file":
        path = Path(unquote(url.path))

        def read() -> bytes:
            if path.stat().st_size > MAX_EXPORT_BYTES:
                raise BadParameter(f"{path}: larger than {MAX_EXPORT_BYTES} bytes")
            return path.read_bytes()

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            raise BadParameter(f"source {source.name}: cannot read {path}: {exc}") from None
    ctx: ssl.SSLContext | bool = True
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=source.ca_file or None)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(source.url, headers=source.headers, ssl=ctx) as response,
        ):
            if response.status != 200:
                raise BadParameter(f"source {source.name}: HTTP {response.status}")
            data = await response.content.read(MAX_EXPORT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        raise BadParameter(f"source {source.name}: download failed: {exc}") from None
    if len(data) > MAX_EXPORT_BYTES:
        raise BadParameter(f"source {source.name}: export larger than {MAX_EXPORT_BYTES} bytes")
    return data


class DeviceSync:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth
        self.devices = DeviceService(auth)
        self._last: dict[str, datetime] = {}

    async def sources(self) -> list[DeviceSource]:
        return (await self.auth.auth_preference()).spec.device_trust.sources

    async def source(self, name: str) -> DeviceSource:
        for source in await self.sources():
            if source.name == name:
                return source
        raise NotFound(
            f"no device source {name!r}; add it to device_trust.sources of the cluster auth "
            "preference (bctl edit cluster_auth_preference)"
        )

    async def plan(self, source: DeviceSource) -> SyncPlan:
        data = await _download(source)
        records, errors = parse_export(data, source.format, source.columns)
        plan = diff_inventory(
            await self.devices.store.list(),
            records,
            source.name,
            self.auth.clock.now(),
            timedelta(seconds=source.grace_seconds),
        )
        plan.errors[:0] = errors
        return plan

    async def sync(self, name: str, actor: str, *, dry_run: bool = False) -> SyncPlan:
        """Plan (and unless ``dry_run``, apply) a sync of source ``name``.

        Raises:
            NotFound: no such source; BadParameter: the export cannot be read.
        """
        source = await self.source(name)
        plan = await self.plan(source)
        if not dry_run:
            await self.apply(plan, source, actor)
        return plan

    async def apply(self, plan: SyncPlan, source: DeviceSource, actor: str) -> None:
        store = self.devices.store
        target = f"device_source/{source.name}"
        for spec in plan.added:
            device = Device(metadata=Metadata(name=str(uuid.uuid4())), spec=spec)
            try:
                await self.auth.audited(
                    "device.create",
                    [store.create_op(device), *await compliance_ops(self.auth, device)],
                    actor,
                    f"device/{device.name}",
                    asset_tag=spec.asset_tag,
                    os_type=spec.os_type,
                    owner=spec.owner,
                    source=source.name,
                )
            except AlreadyExists:
                plan.errors.append(f"{spec.asset_tag}: created meanwhile; next sync updates it")
        changed = [(d, s, c) for d, s, c in plan.updated]
        changed += [(d, s, ("compliance",)) for d, s in plan.missing]
        for device, spec, fields in changed:
            updated = device.model_copy(update={"spec": spec})
            try:
                await self.auth.audited(
                    "device.sync",
                    [store.update_op(updated), *await compliance_ops(self.auth, updated)],
                    actor,
                    f"device/{device.name}",
                    source=source.name,
                    changed=",".join(fields),
                    compliance=spec.compliance.status,
                    reason=spec.compliance.reason,
                )
            except (CompareFailed, NotFound):
                plan.errors.append(f"{spec.asset_tag}: changed meanwhile; next sync retries")
        for start in range(0, len(plan.seen), SEEN_BATCH):
            batch = plan.seen[start : start + SEEN_BATCH]
            ops: list[Op] = [
                store.update_op(device.model_copy(update={"spec": spec})) for device, spec in batch
            ]
            try:
                await self.auth.audited(
                    "device.sync", ops, actor, target, source=source.name, seen=len(batch)
                )
            except (CompareFailed, NotFound):
                plan.errors.append("some devices changed meanwhile; next sync retries them")

    async def run_forever(self) -> None:
        """Sync every source whose ``interval_seconds`` has passed; never returns (cancel it)."""
        while True:
            await asyncio.sleep(SCHEDULE_TICK)
            try:
                sources = await self.sources()
            except BastionError as exc:
                log.warning("device sync: cannot read the sources", error=str(exc))
                continue
            now = self.auth.clock.now()
            for source in sources:
                if source.interval_seconds <= 0:
                    continue
                last = self._last.get(source.name)
                if last is not None and now - last < timedelta(seconds=source.interval_seconds):
                    continue
                self._last[source.name] = now
                try:
                    plan = await self.sync(source.name, "bastion")
                except Exception as exc:  # one bad source never stops the schedule (or auth)
                    log.warning("device sync failed", source=source.name, error=str(exc))
                    continue
                log.info(
                    "device sync",
                    source=source.name,
                    added=len(plan.added),
                    updated=len(plan.updated),
                    missing=len(plan.missing),
                    errors=len(plan.errors),
                )


def spec_summary(spec: DeviceSpec) -> dict[str, str]:
    """A device's synced fields, for ``bctl devices sync`` output."""
    return {
        "asset_tag": spec.asset_tag,
        "os": spec.os_type,
        "owner": spec.owner,
        "compliance": spec.compliance.status,
    }
