"""DeviceSync over a file source (memory backend, fake clock): a dry run changes nothing, a sync
adds devices (a non-compliant one with its lock), a missing device is marked, never deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.auth.device_sync import DeviceSync
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.errors import BadParameter, NotFound
from bastion.protocols.mdm import MISSING_REASON
from bastion.types.devices import DeviceSource, compliance_lock_name


async def _world(export: Path) -> tuple[AuthServer, DeviceSync]:
    clock = FakeClock()
    auth = AuthServer(
        AuthDeps(backend=MemoryBackend(clock), clock=clock, cluster="t.local", kek=b"\x01" * 32)
    )
    await auth.init()
    pref = await auth.auth_preference()
    pref.spec.device_trust.sources = [
        DeviceSource(name="mdm", url=f"file://{export}", grace_seconds=0, interval_seconds=0)
    ]
    await auth.prefs.update(pref)
    return auth, DeviceSync(auth)


async def test_dry_run_sync_and_missing(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_text("serial,os,user,compliance\nA1,linux,alice,compliant\nB2,macOS,bob,false\n")
    auth, sync = await _world(export)
    dry = await sync.sync("mdm", "admin", dry_run=True)
    assert [s.asset_tag for s in dry.added] == ["A1", "B2"]
    assert await sync.devices.list() == []
    await sync.sync("mdm", "admin")
    devices = {d.spec.asset_tag: d for d in await sync.devices.list()}
    assert devices["A1"].spec.owner == "alice" and devices["A1"].spec.source == "mdm"
    b2 = devices["B2"]
    assert (await auth.locks.get(compliance_lock_name(b2.name))).spec.target.device == b2.name

    export.write_text("serial,os,user,compliance\nB2,macOS,bob,compliant\n")
    plan = await sync.sync("mdm", "admin")
    assert [d.spec.asset_tag for d, _ in plan.missing] == ["A1"]
    assert [d.spec.asset_tag for d, _, _ in plan.updated] == ["B2"]
    a1 = await sync.devices.get("A1")
    assert a1.spec.compliance.status == "non_compliant"
    assert a1.spec.compliance.reason == MISSING_REASON
    assert compliance_lock_name(b2.name) not in {lock.name for lock in await auth.locks.list()}
    again = await sync.sync("mdm", "admin")
    assert not again.added and not again.updated and not again.missing


async def test_unknown_source_and_unreadable_export(tmp_path: Path) -> None:
    _, sync = await _world(tmp_path / "absent.csv")
    with pytest.raises(NotFound, match="no device source"):
        await sync.sync("other", "admin")
    with pytest.raises(BadParameter, match="cannot read"):
        await sync.sync("mdm", "admin")
