"""Output of the CLIs: resources as YAML/JSON round-trip text or as rich tables.

Layer: client edge (presentation only). Text tables are for people; ``--format json`` is the
scripting interface and is always a single parseable JSON document on stdout.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "column_widths",
    "print_json",
    "print_resources",
    "print_table",
    "resource_row",
    "short_time",
    "user_status",
]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def column_widths(
    columns: Sequence[str], rows: Sequence[Sequence[str]], available: int
) -> list[int]:
    """Column widths for ``available`` characters (pure). A column is never narrower than its
    longest word (a run without spaces), so wrapping happens between words, never inside one
    (``gi/thub``); the space left is shared in proportion to what each column would need to
    show its cells on one line. When even the longest words do not fit, the table is wider
    than ``available`` (the terminal then wraps whole lines, as with ``kubectl get``) rather
    than cut names and labels in two."""
    minimum, natural = [], []
    for index, col in enumerate(columns):
        cells = [col, *(str(row[index]) for row in rows if index < len(row))]
        minimum.append(max((len(w) for cell in cells for w in cell.split()), default=0))
        natural.append(max((len(line) for cell in cells for line in cell.splitlines()), default=0))
    room = available - 2 * max(len(columns) - 1, 0)  # two spaces between columns
    if sum(natural) <= room:
        return natural
    spare = max(room - sum(minimum), 0)
    wants = [n - m for n, m in zip(natural, minimum, strict=True)]
    total = sum(wants) or 1
    return [m + spare * w // total for m, w in zip(minimum, wants, strict=True)]


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    empty: str = "",
    width: int | None = None,
) -> None:
    """A table for people (``width``: the terminal's, 200 when not a terminal); see
    :func:`column_widths` for how cells wrap."""
    if not rows and empty:
        click.echo(empty)
        return
    if width is None:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 200
    widths = column_widths(columns, rows, width)
    table = Table(show_header=any(columns), header_style="bold", box=None, pad_edge=False)
    for col, col_width in zip(columns, widths, strict=True):
        table.add_column(col, overflow="fold", width=max(col_width, 1))
    for row in rows:
        # Text, not markup: cells hold strings others chose (user names, reasons, claims)
        table.add_row(*(Text(str(cell)) for cell in row))
    Console(width=max(width, sum(widths) + 2 * max(len(columns) - 1, 0))).print(table)


def _join(values: Any) -> str:
    if isinstance(values, dict):
        return ",".join(f"{k}={_join(v)}" for k, v in values.items())
    if isinstance(values, list | tuple):
        return ",".join(str(v) for v in values)
    return "" if values is None else str(values)


def _rules(rules: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_join(r.get('resources'))}:{_join(r.get('verbs'))}" for r in rules)


COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("Name", "Roles", "Logins", "Status"),
    "role": ("Name", "Logins", "Node labels", "Rules", "Description"),
    "token": ("Name", "Roles", "Labels", "Expires"),
    "cert_authority": ("Name", "Type", "Phase", "Active key", "Trusted keys"),
    "node": ("Name", "Hostname", "Address", "Labels"),
    "db": ("Name", "Protocol", "URI", "Labels", "Description"),
    "lock": ("Name", "Target", "Message", "Expires"),
    "remote_cluster": ("Name", "Status", "Last heartbeat"),
    "trusted_cluster": ("Name", "Enabled", "Proxy", "Established"),
}
DEFAULT_COLUMNS = ("Name", "Labels", "Description")


def user_status(status: dict[str, Any]) -> str:
    """``active``, ``invite pending (expires ...)``, ``invite expired`` or ``locked until ...``."""
    locked = status.get("locked_until")
    if locked:
        return f"locked until {short_time(locked)}"
    if status.get("sign_up") == "pending":
        expires = status.get("invite_expires")
        return f"invite pending (expires {short_time(expires)})" if expires else "invite pending"
    if status.get("sign_up") == "expired":
        return "invite expired (bctl users reset NAME)"
    return "active"


def short_time(value: Any) -> str:
    """An ISO time as ``2024-05-01 12:34:56 UTC`` (no microseconds); other text unchanged."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
        return when.strftime("%Y-%m-%d %H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _with_results(labels: Any, commands: Any) -> dict[str, str]:
    """Static labels plus the command labels' latest results, as RBAC sees them."""
    merged = {str(k): str(v) for k, v in (labels or {}).items()}
    for key, label in (commands or {}).items():
        merged[str(key)] = str((label or {}).get("result", ""))
    return merged


def resource_row(item: dict[str, Any]) -> list[str]:
    """One table row for a resource dict (as the API returns it)."""
    kind = item.get("kind", "")
    meta: dict[str, Any] = item.get("metadata") or {}
    spec: dict[str, Any] = item.get("spec") or {}
    name = str(meta.get("name", ""))
    if kind == "user":
        return [
            name,
            _join(spec.get("roles")),
            _join((spec.get("traits") or {}).get("logins")),
            user_status(spec.get("status") or {}),
        ]
    if kind == "role":
        allow = spec.get("allow") or {}
        return [
            name,
            _join(allow.get("logins")),
            _join(allow.get("node_labels")),
            _rules(allow.get("rules") or []),
            str(meta.get("description", "")),
        ]
    if kind == "token":
        return [
            name,
            _join(spec.get("roles")),
            _join(spec.get("labels")),
            str(meta.get("expires", "never")),
        ]
    if kind == "cert_authority":
        active = spec.get("active_keys") or []
        trusted = len(active) + len(spec.get("additional_trusted_keys") or [])
        return [
            name,
            str(spec.get("type", "")),
            str((spec.get("rotation") or {}).get("phase")),
            _join([k.get("id") for k in active]),
            str(trusted),
        ]
    if kind == "node":
        return [
            name,
            str(spec.get("hostname", "")),
            str(spec.get("addr", "")),
            _join(_with_results(meta.get("labels"), spec.get("cmd_labels"))),
        ]
    if kind == "db":  # docs/database-access.md
        return [
            name,
            str(spec.get("protocol", "")),
            str(spec.get("uri", "")),
            _join(_with_results(meta.get("labels"), spec.get("dynamic_labels"))),
            str(meta.get("description", "")),
        ]
    if kind == "lock":
        target = {k: v for k, v in (spec.get("target") or {}).items() if v}
        return [
            name,
            _join(target),
            str(spec.get("message", "")),
            str(meta.get("expires", "never")),
        ]
    if kind == "remote_cluster":  # docs/trusted-clusters.md
        seen = spec.get("last_heartbeat")
        return [name, str(spec.get("connection", "")), short_time(seen) if seen else "-"]
    if kind == "trusted_cluster":
        established = (spec.get("status") or {}).get("established")
        return [
            name,
            "yes" if spec.get("enabled", True) else "no (suspended)",
            str(spec.get("proxy_addr", "")),
            short_time(established) if established else "-",
        ]
    return [name, _join(meta.get("labels")), str(meta.get("description", ""))]


def print_resources(kind: str, items: list[dict[str, Any]], fmt: str, single: bool) -> None:
    """Print resources in ``text`` (table), ``yaml`` (``---`` separated) or ``json``."""
    if fmt == "json":
        print_json(items[0] if single else items)
    elif fmt == "yaml":
        click.echo("---\n".join(yaml.safe_dump(i, sort_keys=False) for i in items), nl=False)
    else:
        print_table(
            COLUMNS.get(kind, DEFAULT_COLUMNS),
            [resource_row(i) for i in items],
            empty=f"no {kind} resources",
        )
