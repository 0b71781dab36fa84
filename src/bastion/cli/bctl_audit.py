"""``bctl audit verify | checkpoint | proof | certs``: the verifiable audit log, for operators.

Layer: client edge. ``verify`` deliberately does not ask the auth server whether the log is
intact: it opens the cluster's storage itself (on the auth host: ``bctl -c CONFIG`` or
``--data-dir DIR``), recomputes the Merkle tree over every stored event and checks it against the
signed checkpoints, the external witness copy and any checkpoint file the operator kept. The
other commands use the auth API; ``proof`` checks the returned inclusion proof locally.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bastion.audit.canonical import encode
from bastion.audit.log import AuditLog
from bastion.audit.merkle import leaf_hash, verify_inclusion
from bastion.audit.note import NoteVerifier, open_note, parse_checkpoint, parse_verifier_key
from bastion.audit.signer import load_verifier
from bastion.audit.verify import VerifyReport, verify_log
from bastion.audit.witness import open_witness
from bastion.backend import open_backend
from bastion.cli.bctl_auth import parse_time
from bastion.cli.common import fail, handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.cli.render import print_json, print_table
from bastion.clock import SystemClock
from bastion.config.schema import FileConfig, load_config
from bastion.contract.core import (
    AUDIT_CHECKPOINT,
    AUDIT_PROOF,
    SEARCH_EVENTS,
    EventQuery,
    ProofQuery,
)
from bastion.errors import BadParameter, NotFound
from bastion.types.audit import AuditEvent

__all__ = ["mfa_column", "register"]

MAX_LISTED = 50


def _config() -> FileConfig:
    params = click.get_current_context().find_root().params
    if params.get("config"):
        return load_config(params["config"])
    return FileConfig(data_dir=params.get("data_dir") or "./bastion-data")


def _read_kek(config: FileConfig) -> bytes | None:
    path = Path(config.auth_service.kek_file or config.data_path() / "keys" / "kek")
    try:
        kek = path.read_bytes()
    except OSError:
        return None
    return kek if len(kek) == 32 else None


def _read_files(files: tuple[str, ...], config: FileConfig) -> list[tuple[str, str]]:
    external: list[tuple[str, str]] = []
    for name in files:
        try:
            external.append((f"checkpoint file {name}", Path(name).read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise BadParameter(f"cannot read checkpoint file {name}: {exc}") from None
    if config.storage.type == "sqlite":
        path = Path(config.storage.path or config.data_path() / "backend.sqlite")
        if not path.exists():
            raise NotFound(f"no audit log at {path}: pass -c CONFIG or --data-dir of the cluster")
    return external


async def _verify(
    config: FileConfig, external: list[tuple[str, str]], witness_loc: str, key: str
) -> tuple[VerifyReport, str]:
    data = config.data_path()
    backend = await open_backend(
        config.storage.type,
        path=config.storage.path or str(data / "backend.sqlite"),
        dsn=config.storage.dsn,
    )
    notes: list[str] = []
    try:
        verifier = await _verifier(backend, config, key, notes)
        witness = open_witness(witness_loc)
        if witness is not None:
            note = await witness.fetch()
            if note is None:
                notes.append(f"the witness {witness.location} holds no checkpoint yet")
            else:
                external.append((f"witness {witness.location}", note))
        log = AuditLog(backend, SystemClock(), "")
        report = await verify_log(log, verifier, external)
    finally:
        await backend.close()
    report.notes[:0] = notes
    return report, verifier.name


async def _verifier(backend: Any, config: FileConfig, key: str, notes: list[str]) -> NoteVerifier:
    if key:
        pinned = parse_verifier_key(key)
        try:
            stored = await load_verifier(backend, None)
        except NotFound:
            return pinned
        if stored.key_id != pinned.key_id or stored.name != pinned.name:
            notes.append("the stored checkpoint key differs from --key: it was replaced")
        return pinned
    kek = _read_kek(config)
    try:
        verifier = await load_verifier(backend, kek)
    except NotFound:
        raise NotFound("the audit log has no checkpoint key yet: start the auth service") from None
    if kek is None:
        notes.append("the KEK is not readable here: the checkpoint key was not checked end to end")
    return verifier


def _print_report(report: VerifyReport, fmt: str) -> None:
    if fmt == "json":
        print_json(report.to_dict())
    else:
        sources = sorted({c.source.split(" audit/")[0] for c in report.checkpoints})
        click.echo(
            f"audit log: {report.events} events; {report.verified} covered by signed checkpoints "
            f"({len(report.checkpoints)} checked: {', '.join(sources) or 'none'})"
        )
        click.echo(f"stored resources: {report.resources} checked against their latest event")
        for note in report.notes:
            click.echo(f"  note: {note}")
        if report.ok:
            click.echo(
                "OK: every event matches the signed checkpoints, and every stored resource "
                "matches the event of its latest change"
            )
    if not report.ok:
        lines = [f"  - {f.message}" for f in report.findings[:MAX_LISTED]]
        if len(report.findings) > MAX_LISTED:
            lines.append(f"  ... and {len(report.findings) - MAX_LISTED} more")
        unaudited = sum(f.kind == "unaudited" for f in report.findings)
        also = (
            f" ({unaudited} stored resource(s) changed without a matching audit event)"
            if unaudited
            else ""
        )
        fail(
            f"audit log verification FAILED: {len(report.findings)} problem(s){also}\n"
            + "\n".join(lines),
            1,
        )


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    audit = main.commands["audit"]
    assert isinstance(audit, click.Group)

    @audit.command("verify")
    @click.option(
        "--checkpoint",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A checkpoint note kept earlier (repeatable); must be consistent with the log.",
    )
    @click.option("--witness", default=None, help="Witness file or URL (default: the config's).")
    @click.option("--key", default="", help="Pin the log's verifier key (bctl audit checkpoint).")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def verify(files: tuple[str, ...], witness: str | None, key: str, fmt: str) -> None:
        """Recompute the Merkle tree over every stored event and check the signed checkpoints.

        Run on the auth host with -c CONFIG (or --data-dir DIR): it reads the storage directly.
        Exits 1 and names each modified, deleted, reordered or inserted event, and each stored
        resource (user, role, token, lock, connector, CA, auth preference, admin-created node)
        whose current state has no matching event.

        \b
        Examples:
          bctl audit verify
          bctl audit verify --checkpoint checkpoint.json
        """
        config = _config()
        loc = config.auth_service.audit.witness if witness is None else witness
        external = _read_files(files, config)
        report, _ = asyncio.run(_verify(config, external, loc, key))
        _print_report(report, fmt)

    @audit.command("checkpoint")
    @click.option("--out", default=None, help="Also write the checkpoint note to this file.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def checkpoint(out: str | None, fmt: str) -> None:
        """Sign a checkpoint now; print it and the log's verifier key.

        \b
        Example:
          bctl audit checkpoint --out checkpoint.json
        """
        result = ident().send(AUDIT_CHECKPOINT).model_dump()
        if out:
            Path(out).write_text(result["checkpoint"])
        if fmt == "json":
            print_json(result)
            return
        click.echo(result["checkpoint"], nl=False)
        click.echo(f"\nverifier key: {result['verifier_key']}")

    @audit.command("proof")
    @click.argument("event_id", required=False, default="")
    @click.option("--index", type=click.IntRange(0), default=None, help="The event's index.")
    @click.option("--key", default="", help="Pin the log's verifier key.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def proof(event_id: str, index: int | None, key: str, fmt: str) -> None:
        """Prove one event (by id or --index) is in the signed log, and check the proof here.

        \b
        Example:
          bctl audit proof EVENT_ID --format json
        """
        if not event_id and index is None:
            raise BadParameter("pass an EVENT_ID or --index N")
        query = ProofQuery(id=event_id) if event_id else ProofQuery(index=index)
        result: dict[str, Any] = ident().send(AUDIT_PROOF, query=query).model_dump()
        _check_proof(result, key)
        if fmt == "json":
            print_json(result)
            return
        click.echo(
            f"event {result['index']} (id {result['id']}, type {result['type']}) is included in "
            f"the signed tree of size {result['tree_size']}: proof of {len(result['proof'])} "
            f"hashes verified against root {result['root']}"
        )

    @audit.command("certs")
    @click.option("--since", default="24h", show_default=True, help="1h, 7d (ago) or ISO 8601.")
    @click.option("--user", default="", help="Only certificates of this principal.")
    @click.option("--type", "cert_type", default="", help="user, host, bot or admin.")
    @click.option("--limit", default=10_000, show_default=True, type=click.IntRange(1, 100_000))
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @handle_errors
    def certs(since: str, user: str, cert_type: str, limit: int, fmt: str) -> None:
        """Every certificate the CAs issued (like a certificate transparency monitor).

        \b
        Examples:
          bctl audit certs --since 24h
          bctl audit certs --user alice --format json
        """
        query = EventQuery(type=["cert.issued"], since=parse_time(since), limit=limit, user=user)
        events = ident().send(SEARCH_EVENTS, query=query).events
        rows = [_cert_row(e) for e in events]
        if cert_type:
            rows = [r for r in rows if cert_type in (r["cert_type"], r["identity_kind"])]
        if fmt == "json":
            print_json(rows)
            return
        print_table(
            [
                "Issued (UTC)",
                "Type",
                "User",
                "Serial",
                "Principals",
                "Roles",
                "Valid until",
                "Device",
                "MFA",
            ],
            [
                [
                    r["time"][:19],
                    r["identity_kind"],
                    r["user"],
                    r["serial"],
                    ",".join(r["principals"]),
                    ",".join(r["roles"]),
                    r["valid_before"][:19],
                    r["device_id"] or "-",
                    mfa_column(r),
                ]
                for r in rows
            ],
            empty="no certificates issued in that period",
        )


def _cert_row(event: dict[str, Any]) -> dict[str, Any]:
    f = event.get("fields", {})
    return {
        "time": str(event.get("time", "")),
        "index": event.get("index"),
        "id": event.get("id", ""),
        "cert_type": f.get("cert_type", ""),
        "identity_kind": f.get("identity_kind", "") or f.get("cert_type", ""),
        "user": event.get("user", ""),
        "serial": str(f.get("serial", "")),
        "key_id": f.get("key_id", ""),
        "principals": list(f.get("principals") or []),
        "roles": list(f.get("roles") or []),
        "ttl_seconds": f.get("ttl_seconds"),
        "valid_before": str(f.get("expires", "")),
        "device_id": event.get("device_id", "") or f.get("device_id", ""),
        "mfa_verified": bool(f.get("mfa_verified")),
        "mfa_device": f.get("mfa_device", ""),
        "mfa_scope": f.get("mfa_scope", ""),
        "public_key_sha256": f.get("public_key_sha256", ""),
        "remote_addr": event.get("remote_addr", ""),
    }


def mfa_column(row: dict[str, Any]) -> str:
    """``session`` (a per-session MFA certificate), ``login`` (issued after a second factor:
    the login used an MFA device), or ``-`` (no second factor: hosts, bots, password-only)."""
    if row["mfa_verified"]:
        return "session"
    return "login" if row["mfa_device"] else "-"


def _check_proof(result: dict[str, Any], key: str) -> None:
    """Check the signature of the checkpoint, that the event hashes to the leaf, and the
    inclusion proof against the signed root. Raises BadParameter when anything fails."""
    verifier = parse_verifier_key(key or str(result["verifier_key"]))
    cp = parse_checkpoint(open_note(str(result["checkpoint"]), verifier))
    event = AuditEvent.model_validate(result["event"])
    leaf = leaf_hash(encode(event))
    proof = [base64.b64decode(h) for h in result["proof"]]
    if base64.b64encode(leaf).decode() != result["leaf_hash"]:
        raise BadParameter("the event does not hash to the leaf the server claims")
    if not verify_inclusion(int(result["index"]), cp.size, leaf, proof, cp.root):
        raise BadParameter("the inclusion proof does NOT verify against the signed checkpoint")
    result["verified_at"] = datetime.now(UTC).isoformat()
