"""``bctl audit export``: run the SIEM forwarders of a config file's ``audit_export:`` section.

Layer: client edge, but local: like the daemon it opens the backend named in the config and
reads the audit log directly (no API call), so it runs on a host that can reach the backend.
``--once`` delivers what is there and exits (cron-friendly); without it, it follows the log
until Ctrl-C. Each output keeps its own cursor file and lock, so it cannot run at the same time
as the daemon's own ``audit_export`` on the same outputs. See docs/export.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from bastion.audit.log import AuditLog
from bastion.backend import open_backend
from bastion.cli.common import handle_errors
from bastion.cli.render import print_json, print_table
from bastion.clock import SystemClock
from bastion.config.export import AuditExportConfig
from bastion.config.schema import FileConfig, load_config
from bastion.errors import BadParameter
from bastion.export.build import build_forwarders, cursor_path, output_name, run_forwarders
from bastion.export.cursor import FileCursor
from bastion.logging import configure_logging

__all__ = ["check_backend", "export_once", "export_status", "register", "select_outputs"]


def select_outputs(config: AuditExportConfig, names: tuple[str, ...]) -> AuditExportConfig:
    """The section restricted to the named outputs (all when ``names`` is empty).

    Raises:
        BadParameter: a name that is not in the section.
    """
    if not names:
        return config
    known = {output_name(o): o for o in config.outputs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadParameter(
            f"no audit_export output named {', '.join(unknown)} (have: {', '.join(known)})"
        )
    return config.model_copy(update={"outputs": [known[n] for n in names]})


async def export_once(config: FileConfig, section: AuditExportConfig, retries: int) -> list[Any]:
    """Deliver everything not yet delivered to each output; returns (name, count) pairs."""
    backend = await _open(config)
    try:
        source = AuditLog(backend, SystemClock(), config.resolved_cluster_name())
        results = []
        for forwarder in build_forwarders(section, source, config.data_path()):
            count = await forwarder.run_once(max_attempts=retries)
            results.append((forwarder.output.name, count, forwarder.status.next_index))
        return results
    finally:
        await backend.close()


async def export_status(config: FileConfig, section: AuditExportConfig) -> list[dict[str, Any]]:
    """Per output: the saved cursor, the log size, the lag and whether an exporter runs now."""
    backend = await _open(config)
    try:
        size = await AuditLog(backend, SystemClock(), config.resolved_cluster_name()).size()
    finally:
        await backend.close()
    rows = []
    for entry in section.outputs:
        cursor = FileCursor(cursor_path(entry, config.data_path()))
        next_index = await cursor.peek()
        rows.append(
            {
                "output": output_name(entry),
                "type": entry.type,
                "next_index": next_index,
                "log_size": size,
                "lag": max(size - next_index, 0),
                "running": cursor.in_use(),
                "cursor_file": str(cursor.path),
            }
        )
    return rows


async def _follow(config: FileConfig, section: AuditExportConfig) -> None:
    backend = await _open(config)
    try:
        source = AuditLog(backend, SystemClock(), config.resolved_cluster_name())
        await run_forwarders(build_forwarders(section, source, config.data_path()))
    finally:
        await backend.close()


def _sqlite_path(config: FileConfig) -> str:
    return config.storage.path or str(config.data_path() / "backend.sqlite")


def check_backend(config: FileConfig) -> None:
    """Refuse a SQLite path with no database (opening it would create an empty one)."""
    path = _sqlite_path(config)
    if config.storage.type == "sqlite" and not Path(path).is_file():
        raise BadParameter(
            f"no Bastion database at {path}: point data_dir (or storage.path) at the cluster's data"
        )


async def _open(config: FileConfig) -> Any:
    return await open_backend(
        config.storage.type, path=_sqlite_path(config), dsn=config.storage.dsn
    )


def register(main: click.Group) -> None:
    """Add ``export`` to the ``audit`` group of ``bctl`` (creating the group if needed)."""
    audit = main.commands.get("audit")
    if not isinstance(audit, click.Group):

        @main.group("audit")
        def audit_group() -> None:
            """The audit log: verify, search, export."""

        audit = audit_group

    @audit.command("export")
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Bastion config with storage and audit_export (default: bctl's -c).",
    )
    @click.option("--once", is_flag=True, help="Deliver what is there now, then exit.")
    @click.option(
        "--status", is_flag=True, help="Show each output's cursor and lag; deliver nothing."
    )
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    @click.option("--output", "outputs", multiple=True, help="Only this output (repeatable).")
    @click.option(
        "--retries",
        default=8,
        show_default=True,
        help="With --once: attempts per batch before giving up (the cursor stays).",
    )
    @click.pass_context
    @handle_errors
    def export(
        ctx: click.Context,
        config_path: str | None,
        once: bool,
        status: bool,
        fmt: str,
        outputs: tuple[str, ...],
        retries: int,
    ) -> None:
        """Forward audit events to the SIEM outputs in the config's audit_export section.

        \b
        Examples:
          bctl audit export --config bastion.yaml --once
          bctl audit export --config bastion.yaml --status
        """
        path = config_path or getattr(ctx.find_root().obj, "config", None)
        if not path:
            raise BadParameter("bctl audit export needs --config FILE (with audit_export:)")
        config = load_config(path)
        if config.audit_export is None:
            raise BadParameter(f"config {path} has no audit_export: section")
        section = select_outputs(config.audit_export, outputs)
        check_backend(config)
        # the config's log settings (info by default), as the daemon: no debug lines
        configure_logging(config.log.level, config.log.format)
        if status:
            rows = asyncio.run(export_status(config, section))
            if fmt == "json":
                print_json(rows)
                return
            columns = ["output", "type", "next_index", "log_size", "lag", "running"]
            print_table(columns, [[str(r[c]) for c in columns] for r in rows])
            return
        if once:
            for name, count, next_index in asyncio.run(export_once(config, section, retries)):
                click.echo(f"{name}: delivered {count} events (next index {next_index})")
            return
        try:
            asyncio.run(_follow(config, section))
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
