"""The MDM export parser and the inventory sync's diff (pure; Hypothesis over the diff)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.protocols.mdm import (
    MISSING_REASON,
    MdmRecord,
    diff_inventory,
    normalize_compliance,
    normalize_os,
    parse_export,
)
from bastion.types.devices import Compliance, Device, DeviceSpec
from bastion.types.meta import Metadata

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def device(tag: str, source: str = "mdm", seen: datetime | None = NOW, **spec: object) -> Device:
    return Device(
        metadata=Metadata(name=str(uuid.uuid4())),
        spec=DeviceSpec(asset_tag=tag, os_type="linux", source=source, source_seen=seen, **spec),
    )


def test_csv_with_mapped_columns_and_skipped_rows() -> None:
    data = (
        b"Serial Number,Operating System,OS Version,Model,Username,Compliance,Last Check-in\n"
        b"C02A,macOS,14.5,MacBook Pro,alice,Compliant,2026-05-30T10:00:00Z\n"
        b"C02B,Windows 11 Enterprise,10.0.22631,Latitude,bob,Noncompliant,\n"
        b",Linux,6.1,,carol,compliant,\n"
        b"C02C,PlayStation,1,,dave,compliant,\n"
        b"C02A,macOS,14.5,,alice,compliant,\n"
    )
    columns = {
        "serial": "Serial Number",
        "os": "Operating System",
        "os_version": "OS Version",
        "model": "Model",
        "user": "Username",
        "compliance": "Compliance",
        "last_checkin": "Last Check-in",
    }
    records, errors = parse_export(data, "csv", columns)
    assert [(r.serial, r.os_type, r.compliance) for r in records] == [
        ("C02A", "macos", "compliant"),
        ("C02B", "windows", "non_compliant"),
    ]
    assert records[0].last_checkin == datetime(2026, 5, 30, 10, tzinfo=UTC)
    assert len(errors) == 3 and "row 3" in errors[0] and "PlayStation" in errors[1]


def test_json_lists_and_graph_style_objects() -> None:
    rows = [{"serialNumber": "X1", "operatingSystem": "Windows", "complianceState": "compliant"}]
    cols = {"serial": "serialNumber", "os": "operatingSystem", "compliance": "complianceState"}
    for doc in (rows, {"value": rows}):
        records, errors = parse_export(json.dumps(doc).encode(), "json", cols)
        assert [r.serial for r in records] == ["X1"] and not errors
    with pytest.raises(BadParameter, match="not JSON"):
        parse_export(b"{", "json", {})
    with pytest.raises(BadParameter, match="no 'serial' column"):
        parse_export(b"sn,os\nA,linux\n", "csv", {})
    with pytest.raises(BadParameter, match="UTF-8"):
        parse_export(b"\xff\xfe", "csv", {})


def test_normalizers() -> None:
    assert normalize_os("Mac OS X") == "macos" and normalize_os("Red Hat Enterprise") == "linux"
    assert normalize_os("Windows 10 Pro") == "windows" and normalize_os("") is None
    assert normalize_compliance("In grace period") == "compliant"
    assert normalize_compliance("Not evaluated") == "unknown"
    assert normalize_compliance("FALSE") == "non_compliant"


def test_missing_devices_wait_for_the_grace_period_and_are_never_deleted() -> None:
    fresh = device("A", seen=NOW - timedelta(hours=1))
    stale = device("B", seen=NOW - 3 * DAY)
    other = device("C", source="manual", seen=None)
    marked = device(
        "D",
        seen=NOW - 9 * DAY,
        compliance=Compliance(status="non_compliant", reason=MISSING_REASON, source="mdm"),
    )
    plan = diff_inventory([fresh, stale, other, marked], [], "mdm", NOW, 2 * DAY)
    assert [d.spec.asset_tag for d in plan.missing_in_grace] == ["A"]
    assert [(d.spec.asset_tag, s.compliance.status) for d, s in plan.missing] == [
        ("B", "non_compliant")
    ]
    assert not plan.added and not plan.updated


def test_a_manual_device_found_in_the_export_joins_the_source() -> None:
    manual = device("A", source="manual", seen=None, owner="")
    record = MdmRecord(serial="A", os_type="linux", user="alice", compliance="compliant")
    plan = diff_inventory([manual], [record], "mdm", NOW, DAY)
    ((_, spec, changed),) = plan.updated
    assert spec.owner == "alice" and spec.source == "mdm"
    assert set(changed) == {"compliance", "owner", "source"}


serials = st.text(alphabet="ABCDEFGH0123", min_size=1, max_size=4)
records = st.builds(
    MdmRecord,
    serial=serials,
    os_type=st.sampled_from(["linux", "macos", "windows"]),
    os_version=st.sampled_from(["", "13.1", "6.1"]),
    model=st.sampled_from(["", "T14"]),
    user=st.sampled_from(["", "alice", "bob"]),
    compliance=st.sampled_from(["compliant", "non_compliant", "unknown"]),
)


def _apply(devices: list[Device], plan_added: list[DeviceSpec], changes: list) -> list[Device]:  # type: ignore[type-arg]
    by_name = {d.name: d for d in devices}
    for current, spec, *_ in changes:
        by_name[current.name] = current.model_copy(update={"spec": spec})
    added = [Device(metadata=Metadata(name=str(uuid.uuid4())), spec=s) for s in plan_added]
    return [*by_name.values(), *added]


@settings(max_examples=150, deadline=None)
@given(
    inventory=st.lists(st.tuples(serials, st.sampled_from(["mdm", "manual", "other"])), max_size=6),
    export=st.lists(records, max_size=6),
    grace_days=st.integers(0, 3),
    age_days=st.integers(0, 5),
)
def test_diff_properties(
    inventory: list[tuple[str, str]], export: list[MdmRecord], grace_days: int, age_days: int
) -> None:
    seen_at = NOW - timedelta(days=age_days)
    devices = list({tag: device(tag, src, seen=seen_at) for tag, src in inventory}.values())
    unique_export = list({r.serial: r for r in export}.values())
    plan = diff_inventory(devices, unique_export, "mdm", NOW, timedelta(days=grace_days))
    tags = {d.spec.asset_tag for d in devices}
    exported = {r.serial for r in unique_export}
    # Every exported serial is added (when new) or matched, exactly once.
    added = [s.asset_tag for s in plan.added]
    matched = [d.spec.asset_tag for d, *_ in [*plan.updated, *plan.seen]]
    assert sorted(added + matched) == sorted(exported)
    assert not set(added) & tags
    # Only this source's devices absent from the export go missing; none is ever removed.
    missing = {d.spec.asset_tag for d, _ in plan.missing} | {
        d.spec.asset_tag for d in plan.missing_in_grace
    }
    assert missing == {d.spec.asset_tag for d in devices if d.spec.source == "mdm"} - exported
    assert all(s.compliance.status == "non_compliant" for _, s in plan.missing)
    # Applying the plan and diffing again changes nothing more (idempotent).
    after = _apply(devices, plan.added, [*plan.updated, *plan.missing, *plan.seen])
    again = diff_inventory(after, unique_export, "mdm", NOW, timedelta(days=grace_days))
    assert not again.added and not again.updated and not again.missing
    assert len(after) == len(devices) + len(plan.added)


def test_an_invalid_serial_is_reported_not_added() -> None:
    record = MdmRecord(serial="-bad tag", os_type="linux")
    plan = diff_inventory([], [record], "mdm", NOW, DAY)
    assert not plan.added and "not a valid asset tag" in plan.errors[0]
