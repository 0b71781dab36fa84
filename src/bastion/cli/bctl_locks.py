"""``bctl lock`` and ``bctl locks ls``: lock out a user, role, login, node, device, ... now.

Layer: client edge. Registered onto the ``bctl`` group by :func:`register`. A lock is an ordinary
resource (``bctl get locks``, ``bctl rm lock/NAME`` work too); these commands add the common
shortcut: targets as flags, a generated name, a TTL. See docs/locks.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table
from bastion.contract.base import ResourceDoc
from bastion.contract.resources import CREATE_RESOURCE, LIST_RESOURCES
from bastion.errors import BadParameter
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.codec import resource_to_dict
from bastion.types.duration import parse_duration
from bastion.types.meta import Metadata

__all__ = ["TARGET_FLAGS", "build_lock", "lock_rows", "register"]

TARGET_FLAGS = (
    "user",
    "role",
    "login",
    "node",
    "device",
    "mfa_device",
    "access_request",
    "bot",
    "session",
)
"""LockTarget fields, each a ``--flag`` (underscores become dashes)."""


def build_lock(
    targets: dict[str, str], message: str, ttl: str | None, now: datetime, name: str = ""
) -> Lock:
    """The lock resource ``bctl lock`` sends (pure).

    Raises:
        BadParameter: no target, or a TTL that is not a positive duration.
    """
    target = {k: v.strip() for k, v in targets.items() if v and v.strip()}
    if not target:
        flags = " ".join(f"--{f.replace('_', '-')}" for f in TARGET_FLAGS)
        raise BadParameter(f"give at least one target: {flags}")
    expires = None
    if ttl:
        try:
            delta = parse_duration(ttl)
        except ValueError:
            raise BadParameter(
                f"invalid --ttl {ttl!r}: use a duration such as 30m, 8h, 2d"
            ) from None
        if delta.total_seconds() <= 0:
            raise BadParameter("--ttl must be positive")
        expires = now + delta
    return Lock(
        metadata=Metadata(name=name or str(uuid.uuid4()), expires=expires),
        spec=LockSpec(target=LockTarget(**target), message=message),
    )


def _target_text(target: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in target.items() if v)


def lock_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows (name, target, message, expires, created by) of lock resources (pure)."""
    rows = []
    for item in items:
        spec, meta = item.get("spec", {}), item.get("metadata", {})
        rows.append(
            [
                str(meta.get("name", "")),
                _target_text(spec.get("target", {})),
                str(spec.get("message", "")),
                str(meta.get("expires") or "never"),
                str(spec.get("created_by", "")),
            ]
        )
    return rows


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add ``lock`` and the ``locks`` group to ``bctl``."""

    @main.command("lock")
    @click.option("--user", default="", help="Lock this user.")
    @click.option("--role", default="", help="Lock every identity holding this role.")
    @click.option("--login", default="", help="Lock this OS login (on every node).")
    @click.option("--node", default="", help="Lock a node (name or host id): ends its sessions.")
    @click.option("--device", default="", help="Lock a trusted device id.")
    @click.option("--mfa-device", default="", help="Lock an MFA device id.")
    @click.option("--access-request", default="", help="Lock access granted by this request.")
    @click.option("--bot", default="", help="Lock a bot.")
    @click.option("--session", default="", help="Lock (end) one session id.")
    @click.option("--message", default="", help="Shown to whoever is locked out.")
    @click.option(
        "--ttl", default=None, help="Lift the lock after this long (30m, 8h); default never."
    )
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def lock(message: str, ttl: str | None, fmt: str, **targets: str) -> None:
        """Lock out a target now: new access is refused and live access ends within a second.

        Several targets narrow the lock (all must match): --user=alice --node=web1 locks alice
        on web1 only. Lift a lock early with bctl rm lock/NAME.

        \b
        Examples:
          bctl lock --user=mallory --message='investigating' --ttl=1h
          bctl lock --node=web1
        """
        resource = build_lock(targets, message, ttl, datetime.now(UTC))
        created = ident().send(CREATE_RESOURCE, ResourceDoc(resource), path={"kind": "lock"})
        if fmt == "json":
            print_json(created.model_dump(mode="json"))
            return
        click.echo(
            f'lock "{resource.name}" created: {_target_text(resource.spec.target.model_dump())}'
        )
        if resource.metadata.expires:
            click.echo(f"expires {resource.metadata.expires:%Y-%m-%d %H:%M:%S} UTC")
        click.echo(f"lift it with: bctl rm lock/{resource.name}")

    @main.group("locks")
    def locks() -> None:
        """List locks (bctl lock creates one, bctl rm lock/NAME lifts it).

        \b
        Examples:
          bctl locks ls
          bctl rm lock/NAME
        """

    @locks.command("ls")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def locks_ls(fmt: str) -> None:
        """List the locks in force.

        \b
        Examples:
          bctl locks ls
          bctl locks ls --format json
        """
        listed = ident().send(LIST_RESOURCES, path={"kind": "lock"}).items
        items = [resource_to_dict(lock) for lock in listed]
        if fmt == "json":
            print_json(items)
            return
        print_table(
            ["Name", "Target", "Message", "Expires", "Created by"],
            lock_rows(items),
            empty="no locks",
        )
