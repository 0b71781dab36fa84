"""MDM inventory exports (CSV or JSON) and the inventory sync's diff.

Layer: protocols (pure: bytes and values in, values out). :func:`parse_export` reads an export
into :class:`MdmRecord` rows (columns mapped by name, docs/device-trust.md); :func:`diff_inventory`
compares them with the inventory and returns a :class:`SyncPlan`: the devices to add, the ones
to update (owner, model, OS version, compliance, as the source reports them) and the ones of
this source missing from the export for longer than the grace period, to be marked
``non_compliant`` (never deleted). :mod:`bastion.auth.device_sync` fetches and applies it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.errors import BadParameter
from bastion.types.devices import Compliance, Device, DeviceSpec, OSType

__all__ = [
    "FIELDS",
    "MISSING_REASON",
    "MdmRecord",
    "SyncPlan",
    "diff_inventory",
    "normalize_compliance",
    "normalize_os",
    "parse_export",
]

FIELDS = ("serial", "os", "os_version", "model", "user", "compliance", "last_checkin")
"""Our field names; an export's columns are mapped onto them (``DeviceSource.columns``)."""
MISSING_REASON = "missing from the inventory source"
MAX_ROWS = 100_000

_OS_WORDS: tuple[tuple[tuple[str, ...], OSType], ...] = (
    (("windows", "win10", "win11"), "windows"),
    (("macos", "mac os", "os x", "osx", "darwin", "mac"), "macos"),
    (("linux", "ubuntu", "debian", "fedora", "rhel", "red hat", "centos", "suse", "arch"), "linux"),
)
_COMPLIANT = {"compliant", "true", "yes", "1", "ok", "pass", "passed", "in grace period"}
_NON_COMPLIANT = {"noncompliant", "non_compliant", "non-compliant", "not compliant", "false"}
_NON_COMPLIANT |= {"no", "0", "fail", "failed", "error"}


@dataclass(frozen=True, slots=True)
class MdmRecord:
    """One device as the MDM reports it."""

    serial: str
    os_type: OSType
    os_version: str = ""
    model: str = ""
    user: str = ""
    compliance: str = "unknown"
    """``compliant``, ``non_compliant`` or ``unknown``."""
    last_checkin: datetime | None = None


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync changes; each entry carries the device's new spec."""

    added: list[DeviceSpec] = field(default_factory=list)
    updated: list[tuple[Device, DeviceSpec, tuple[str, ...]]] = field(default_factory=list)
    """(current device, new spec, the fields that changed)."""
    missing: list[tuple[Device, DeviceSpec]] = field(default_factory=list)
    """Missing from the export past the grace period: marked ``non_compliant``."""
    missing_in_grace: list[Device] = field(default_factory=list)
    """Missing, still within the grace period: not changed yet."""
    seen: list[tuple[Device, DeviceSpec]] = field(default_factory=list)
    """Present and unchanged: only ``source_seen`` advances."""
    errors: list[str] = field(default_factory=list)
    """Rows skipped (with why)."""


def normalize_os(text: str) -> OSType | None:
    low = text.strip().lower()
    for words, os_type in _OS_WORDS:
        if any(low.startswith(w) or f" {w}" in low for w in words):
            return os_type
    return None


def normalize_compliance(text: str) -> str:
    low = text.strip().lower()
    if low in _COMPLIANT:
        return "compliant"
    if low in _NON_COMPLIANT:
        return "non_compliant"
    return "unknown"


def _time(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _rows(data: bytes, fmt: str) -> list[Mapping[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadParameter("the export is not UTF-8") from None
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadParameter(f"the export is not JSON: {exc}") from None
    if isinstance(doc, dict):  # {"devices": [...]} or {"value": [...]} (Microsoft Graph)
        doc = next((v for v in doc.values() if isinstance(v, list)), None)
    if not isinstance(doc, list) or not all(isinstance(row, dict) for row in doc):
        raise BadParameter("a JSON export is a list of objects (or an object holding one)")
    return doc


def parse_export(
    data: bytes, fmt: str, columns: Mapping[str, str]
) -> tuple[list[MdmRecord], list[str]]:
    """Read an export: the records, and one line per skipped row.

    Raises:
        BadParameter: not UTF-8, not CSV/JSON, too many rows, or no serial column.
    """
    rows = _rows(data, fmt)
    if len(rows) > MAX_ROWS:
        raise BadParameter(f"the export has more than {MAX_ROWS} rows")
    names = {name: columns.get(name, name) for name in FIELDS}
    records: dict[str, MdmRecord] = {}
    errors: list[str] = []
    for number, row in enumerate(rows, start=1):
        folded = {str(key).strip().lower(): value for key, value in row.items()}

        def get(name: str, row: Mapping[str, Any] = row, folded: dict[str, Any] = folded) -> str:
            value = row.get(names[name], folded.get(names[name].lower()))  # any letter case
            return "" if value is None else str(value).strip()

        serial = get("serial")
        if not serial:
            errors.append(f"row {number}: no {names['serial']!r}")
            continue
        os_type = normalize_os(get("os"))
        if os_type is None:
            errors.append(f"row {number} ({serial}): unknown OS {get('os')[:40]!r}")
            continue
        if serial in records:
            errors.append(f"row {number} ({serial}): duplicate serial, first row kept")
            continue
        records[serial] = MdmRecord(
            serial=serial,
            os_type=os_type,
            os_version=get("os_version"),
            model=get("model"),
            user=get("user"),
            compliance=normalize_compliance(get("compliance")),
            last_checkin=_time(get("last_checkin")),
        )
    wanted = names["serial"].lower()
    if rows and not records and all(wanted not in map(str.lower, row) for row in rows):
        raise BadParameter(f"the export has no {names['serial']!r} column (see columns:)")
    return list(records.values()), errors


def _valid_tag(serial: str) -> bool:
    try:
        DeviceSpec(asset_tag=serial, os_type="linux")
    except ValueError:
        return False
    return True


def diff_inventory(
    devices: Sequence[Device],
    records: Sequence[MdmRecord],
    source: str,
    now: datetime,
    grace: timedelta,
) -> SyncPlan:
    """Compare the inventory with a source's export (matched by asset tag = serial).

    A device is this source's when its ``source`` is the source's name; only those are marked
    missing. The export sets a device's compliance (source: the sync's name), its owner (when it
    has none), OS type, model and (for devices that have not reported one) OS version.
    """
    plan = SyncPlan()
    by_tag = {device.spec.asset_tag: device for device in devices}
    present: set[str] = set()
    for record in records:
        present.add(record.serial)
        device = by_tag.get(record.serial)
        reason = (
            f"reported non-compliant by {source}" if record.compliance == "non_compliant" else ""
        )
        compliance = Compliance(status=record.compliance, reason=reason, source=source, updated=now)
        if device is None:
            if not _valid_tag(record.serial):
                plan.errors.append(f"{record.serial[:40]!r}: not a valid asset tag")
                continue
            spec = DeviceSpec(
                asset_tag=record.serial,
                os_type=record.os_type,
                owner=record.user,
                source=source,
                compliance=compliance,
                created_by=f"sync:{source}",
                created=now,
                source_seen=now,
                source_checkin=record.last_checkin,
            )
            spec.profile.model, spec.profile.os_version = record.model, record.os_version
            spec.profile.serial = record.serial
            plan.added.append(spec)
            continue
        spec = device.spec.model_copy(deep=True)
        changes: list[str] = []
        if spec.compliance.status != record.compliance or spec.compliance.source != source:
            spec.compliance = compliance
            changes.append("compliance")
        if not spec.owner and record.user:
            spec.owner = record.user
            changes.append("owner")
        if spec.os_type != record.os_type:
            spec.os_type = record.os_type
            changes.append("os")
        if record.model and spec.profile.model != record.model:
            spec.profile.model = record.model
            changes.append("model")
        if (
            record.os_version
            and not spec.last_seen
            and spec.profile.os_version != record.os_version
        ):
            spec.profile.os_version = record.os_version  # the device's own report wins
            changes.append("os_version")
        if spec.source != source:
            spec.source = source
            changes.append("source")
        spec.source_seen, spec.source_checkin = now, record.last_checkin
        if changes:
            plan.updated.append((device, spec, tuple(changes)))
        else:
            plan.seen.append((device, spec))
    for device in devices:
        spec = device.spec
        if spec.source != source or spec.asset_tag in present:
            continue
        if spec.compliance.status == "non_compliant" and spec.compliance.reason == MISSING_REASON:
            continue  # marked already
        seen = spec.source_seen or spec.created
        if seen is not None and now - seen < grace:
            plan.missing_in_grace.append(device)
            continue
        marked = spec.model_copy(deep=True)
        marked.compliance = Compliance(
            status="non_compliant", reason=MISSING_REASON, source=source, updated=now
        )
        plan.missing.append((device, marked))
    return plan
