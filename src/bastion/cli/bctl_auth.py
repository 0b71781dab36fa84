"""``bctl auth`` (export, krl, rotate, sign) and ``bctl audit search``.

Layer: client edge. Registered onto the ``bctl`` group by :func:`register`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table
from bastion.contract.core import (
    EXPORT_CA,
    KRL,
    ROTATE_CA,
    SEARCH_EVENTS,
    SIGN_HOST,
    EventQuery,
    ExportQuery,
    Rotate,
    SignHost,
)
from bastion.errors import BadParameter
from bastion.files import write_private_file
from bastion.types.codec import resource_to_dict
from bastion.types.duration import parse_duration

__all__ = ["register", "parse_time"]

CA_TYPES = click.Choice(["user", "host", "tls-user", "tls-host", "db", "jwt"])
PHASES = click.Choice(["init", "update", "standby", "rollback"])
NEXT_STEP = {
    "init": "the new key is trusted everywhere but does not sign yet; once every node and client "
    "has the new trust (bctl auth export), run --phase=update",
    "update": "the new key signs; the old one is still trusted. When every certificate has been "
    "renewed, run --phase=standby to drop the old key (or --phase=rollback)",
    "standby": "rotation complete: only the new key is trusted",
    "rollback": "rotation rolled back: the old key signs again and the new key is dropped",
}


def parse_time(value: str, now: datetime | None = None) -> str:
    """``1h``/``30m``/``2d`` (ago) or an ISO 8601 time -> ISO 8601 UTC text.

    Raises:
        BadParameter: neither form.
    """
    now = now or datetime.now(UTC)
    try:
        return (now - parse_duration(value)).isoformat()
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadParameter(
            f"invalid time {value!r}: use a duration ago (1h, 30m, 7d) or ISO 8601 "
            "(2024-05-01T12:00:00Z)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``auth`` and ``audit`` groups to ``bctl``."""

    @main.group()
    def auth() -> None:
        """Certificate authorities: export trust, rotate keys, sign host certificates.

        \b
        Examples:
          bctl auth export --type=user
          bctl auth rotate --type=host --phase=init
        """

    @auth.command("export")
    @click.option("--type", "ca_type", type=CA_TYPES, default="user", show_default=True)
    @click.option(
        "--format",
        "fmt",
        default="",
        help="openssh, authorized_keys, known_hosts, pem or jwks (default: natural).",
    )
    @handle_errors
    def export(ca_type: str, fmt: str) -> None:
        """Print trust material: sshd TrustedUserCAKeys (user), known_hosts (host), PEM (tls-*).

        \b
        Examples:
          bctl auth export --type=user > /etc/ssh/bastion_user_ca.pub
          bctl auth export --type=host
        """
        exported = ident().send(EXPORT_CA, query=ExportQuery(type=ca_type, format=fmt))
        click.echo(exported.export, nl=False)

    @auth.command("krl")
    @click.option(
        "--out",
        default=None,
        type=click.Path(dir_okay=False),
        help="Write the binary KRL here (and its SSHSIG signature to OUT.sig).",
    )
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def krl(out: str | None, fmt: str) -> None:
        """The cluster's OpenSSH KRL (locks for agentless sshd's RevokedKeys).

        \b
        Example:
          bctl auth krl --out /etc/ssh/bastion_krl
        """
        doc: dict[str, Any] = ident().send(KRL).model_dump()
        if out:
            write_private_file(Path(out), base64.b64decode(doc["krl"]))
            write_private_file(Path(f"{out}.sig"), doc["signature"])
        if fmt == "json":
            print_json(doc)
            return
        unenforced = ", ".join(doc["unenforced_locks"]) or "none"
        revoked = ", ".join(doc["key_ids"]) or "none"
        where = f"wrote {out} (+ {out}.sig)\n" if out else f"{doc['krl']}\n"
        click.echo(
            f"{where}KRL version {doc['version']}, generated {doc['generated']}; revoked key "
            f"ids: {revoked}; serials: {len(doc['serials'])}; locks a KRL cannot express: "
            f"{unenforced}"
        )

    @auth.command("rotate")
    @click.option("--type", "ca_type", type=CA_TYPES, required=True)
    @click.option("--phase", type=PHASES, required=True)
    @handle_errors
    def rotate(ca_type: str, phase: str) -> None:
        """Move a CA one step through rotation: init -> update -> standby (or rollback).

        \b
        Examples:
          bctl auth rotate --type=host --phase=init
          bctl auth rotate --type=host --phase=update
        """
        rotated = ident().send(ROTATE_CA, Rotate(type=ca_type, phase=phase))
        ca = resource_to_dict(rotated.root)
        now = ((ca.get("spec") or {}).get("rotation") or {}).get("phase", phase)
        click.echo(f"{ca_type} CA: rotation phase is now {now}: {NEXT_STEP[phase]}")

    @auth.command("sign")
    @click.option("--host", required=True, help="Host name (first principal).")
    @click.option(
        "--public-key",
        "public_key",
        default=None,
        type=click.Path(dir_okay=False, exists=True),
        help="The host's public key (openssh format; required there).",
    )
    @click.option("--out", required=True, help="Writes OUT-cert.pub and OUT.crt.")
    @click.option("--principals", default="", help="Extra principals (comma-separated).")
    @click.option("--ttl", default="720h", show_default=True)
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["openssh", "db"]),
        default="openssh",
        show_default=True,
        help="db: a database server's certificate, key and CA bundle (OUT.crt/.key/.cas).",
    )
    @handle_errors
    def sign(
        host: str, public_key: str | None, out: str, principals: str, ttl: str, fmt: str
    ) -> None:
        """Sign a host certificate for an agentless OpenSSH server (or a database server).

        \b
        Examples:
          bctl auth sign --host=web1 --public-key=/etc/ssh/ssh_host_ed25519_key.pub --out=web1
          bctl auth sign --format=db --host=db.internal --out=server
        """
        if fmt == "db":
            from bastion.cli.bctl_db import sign_db_server

            sign_db_server(ident(), host, principals, out, ttl)
            return
        if public_key is None:
            raise click.UsageError("--public-key is required (or --format=db)")
        body = {
            "host": host,
            "public_key": Path(public_key).read_text(),
            "ttl": ttl,
            "principals": [p.strip() for p in principals.split(",") if p.strip()],
        }
        certs = ident().send(SIGN_HOST, SignHost.model_validate(body)).model_dump()
        ssh_path, tls_path = Path(f"{out}-cert.pub"), Path(f"{out}.crt")
        write_private_file(ssh_path, certs["ssh_cert"] + "\n")
        write_private_file(tls_path, certs["tls_cert"])
        click.echo(
            f"wrote {ssh_path} (SSH host certificate) and {tls_path} (TLS host "
            f"certificate), valid until {certs['expires']}\nIn sshd_config:\n"
            f"  HostCertificate {ssh_path.resolve()}\n  TrustedUserCAKeys <(bctl auth export"
            " --type=user)"
        )

    @main.group()
    def audit() -> None:
        """Search the audit log.

        \b
        Examples:
          bctl audit search --since 1h
          bctl audit verify
        """

    @audit.command("search")
    @click.option("--type", "types", default="", help="Event types, e.g. user.login,role.* .")
    @click.option("--user", default="", help="Only events of this principal.")
    @click.option("--outcome", type=click.Choice(["", "success", "failure"]), default="")
    @click.option("--since", default="", help="1h, 30m, 7d (ago) or ISO 8601.")
    @click.option("--until", default="", help="1h, 30m, 7d (ago) or ISO 8601.")
    @click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000))
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def search(
        types: str, user: str, outcome: str, since: str, until: str, limit: int, fmt: str
    ) -> None:
        """Search events, oldest first.

        \b
        Examples:
          bctl audit search --since 1h
          bctl audit search --type user.login --outcome failure --format json
        """
        params = {"type": types, "user": user, "outcome": outcome, "limit": str(limit)}
        if since:
            params["since"] = parse_time(since)
        if until:
            params["until"] = parse_time(until)
        query = EventQuery.model_validate(
            {k: v.split(",") if k == "type" else v for k, v in params.items() if v}
        )
        events = ident().send(SEARCH_EVENTS, query=query).events
        if fmt == "json":
            print_json(events)
            return
        rows = [
            [
                str(e.get("time", ""))[:19],
                e["type"],
                e.get("code", ""),
                e.get("user", ""),
                e.get("outcome", ""),
                e.get("target", ""),
                e.get("remote_addr", ""),
                e.get("reason", ""),
            ]
            for e in events
        ]
        print_table(
            ["Time (UTC)", "Type", "Code", "User", "Outcome", "Target", "Remote", "Reason"],
            rows,
            empty="no matching events",
        )
