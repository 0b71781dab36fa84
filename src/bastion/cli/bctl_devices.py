"""``bctl devices``: the trusted-device inventory (add, ls, show, rm, enroll, compliance).

Layer: client edge. ``bctl lock --device=ID`` (:mod:`bastion.cli.bctl_locks`) locks one.
docs/device-trust.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table
from bastion.contract import devices as d
from bastion.types.devices import OS_TYPES, Device
from bastion.types.duration import parse_duration

__all__ = ["device_rows", "register"]


def device_rows(items: list[Device]) -> list[list[str]]:
    rows = []
    for device in items:
        spec = device.spec
        credential = spec.credential
        rows.append(
            [
                device.name,
                spec.asset_tag,
                spec.os_type,
                spec.owner or "-",
                spec.enroll_status,
                credential.attestation if credential else "-",
                spec.compliance.status,
                f"{spec.last_seen:%Y-%m-%d %H:%M}" if spec.last_seen else "never",
            ]
        )
    return rows


def _dump(device: Device) -> object:
    return json.loads(device.model_dump_json())


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``devices`` group to ``bctl``."""

    @main.group("devices")
    def devices() -> None:
        """The trusted-device inventory.

        \b
        Examples:
          bctl devices add --asset-tag=C02XK1 --os=macos --owner=alice
          bctl devices enroll C02XK1
          bctl devices ls
          bctl lock --device=DEVICE_ID
        """

    @devices.command("add")
    @click.option("--asset-tag", required=True, help="Serial number or asset tag.")
    @click.option("--os", "os_type", type=click.Choice(OS_TYPES), required=True)
    @click.option("--owner", default="", help="The user who may enroll it (default: anyone).")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def add(asset_tag: str, os_type: str, owner: str, fmt: str) -> None:
        """Register a device (not enrolled yet: bctl devices enroll makes its token).

        \b
        Example:
          bctl devices add --asset-tag=C02XK1 --os=macos --owner=alice
        """
        body = d.AddDevice(asset_tag=asset_tag, os_type=os_type, owner=owner)
        device = ident().send(d.DEVICES_ADD, body).device
        if fmt == "json":
            print_json(_dump(device))
            return
        click.echo(f"device {asset_tag} added with id {device.name}")
        click.echo(f"create its enrollment token with: bctl devices enroll {device.name}")

    @devices.command("ls")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def ls(fmt: str) -> None:
        """List the inventory.

        \b
        Examples:
          bctl devices ls
          bctl devices ls --format json
        """
        items = ident().send(d.DEVICES_LS).items
        if fmt == "json":
            print_json([_dump(i) for i in items])
            return
        print_table(
            ["Id", "Asset tag", "OS", "Owner", "Status", "Attestation", "Compliance", "Last seen"],
            device_rows(items),
            empty="no devices",
        )

    @devices.command("show")
    @click.argument("ref")
    @handle_errors
    def show(ref: str) -> None:
        """Show one device (by id or asset tag), as JSON.

        \b
        Example:
          bctl devices show C02XK1
        """
        print_json(_dump(ident().send(d.DEVICES_GET, path={"ref": ref}).device))

    @devices.command("rm")
    @click.argument("ref")
    @handle_errors
    def rm(ref: str) -> None:
        """Remove a device and its TPM binding (its certificates stop passing 'required').

        \b
        Example:
          bctl devices rm C02XK1
        """
        deleted = ident().send(d.DEVICES_RM, path={"ref": ref}).deleted
        click.echo(f"device {deleted} has been removed")

    @devices.command("enroll")
    @click.argument("ref")
    @click.option("--ttl", default=None, help="Token lifetime (default 1h): 30m, 8h.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def enroll(ref: str, ttl: str | None, fmt: str) -> None:
        """Create a one-time enrollment token for a device.

        \b
        Examples:
          bctl devices enroll C02XK1
          bctl devices enroll C02XK1 --ttl=8h
        """
        lifetime: timedelta | None = parse_duration(ttl) if ttl else None
        reply = ident().send(
            d.DEVICES_ENROLL_TOKEN, d.EnrollTokenRequest(ttl=lifetime), path={"ref": ref}
        )
        if fmt == "json":
            print_json(reply.model_dump())
            return
        click.echo(f"enrollment token for device {reply.device_id} (expires {reply.expires}):")
        click.echo(f"  {reply.token}")
        click.echo(f"on the device, after bsh login: bsh device enroll --token={reply.token}")

    @devices.command("compliance")
    @click.argument("ref")
    @click.argument("status", type=click.Choice(["compliant", "non_compliant", "unknown"]))
    @click.option("--reason", default="")
    @handle_errors
    def compliance(ref: str, status: str, reason: str) -> None:
        """Mark a device compliant or not by hand (an inventory sync will do it later).

        \b
        Examples:
          bctl devices compliance C02XK1 compliant
          bctl devices compliance C02XK1 non_compliant --reason="disk not encrypted"
        """
        body = d.SetCompliance(status=status, reason=reason)
        device = ident().send(d.DEVICES_COMPLIANCE, body, path={"ref": ref}).device
        click.echo(f"device {device.spec.asset_tag} is now {device.spec.compliance.status}")

    @devices.command("sync")
    @click.option("--source", "source", required=True, help="A device_trust.sources name.")
    @click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def sync(source: str, dry_run: bool, fmt: str) -> None:
        """Import an inventory source's MDM export now (auth also does it on its schedule).

        Devices missing from the export past the grace period are marked non_compliant (not
        deleted).

        \b
        Examples:
          bctl devices sync --source=jamf --dry-run
          bctl devices sync --source=intune
        """
        body = d.SyncRequest(dry_run=dry_run)
        report = ident().send(d.DEVICE_SOURCE_SYNC, body, path={"name": source})
        if fmt == "json":
            print_json(json.loads(report.model_dump_json()))
            return
        verb = "would be" if dry_run else "were"
        sections = (
            ("added", report.added),
            ("updated", report.updated),
            ("marked missing (non_compliant)", report.missing),
            ("missing, within the grace period", report.missing_in_grace),
        )
        for title, rows in sections:
            if not rows:
                continue
            click.echo(f"{title}:")
            for row in rows:
                what = f" ({', '.join(row.changed)})" if row.changed else ""
                owner = f" owner={row.owner}" if row.owner else ""
                click.echo(f"  {row.asset_tag}{owner} {row.compliance}{what}")
        click.echo(
            f"{source}: {len(report.added)} {verb} added, {len(report.updated)} updated, "
            f"{len(report.missing)} marked missing, {report.unchanged} unchanged"
            + (" (dry run)" if dry_run else "")
        )
        for error in report.errors:
            click.echo(f"warning: {error}", err=True)
