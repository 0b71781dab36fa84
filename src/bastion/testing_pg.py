"""Deprecated shim: re-exports :mod:`bastion.testing.peers.postgres` for code not moved yet."""

from __future__ import annotations

from bastion.testing.peers.postgres import (
    PgServer,
    PostgresUnavailable,
    create_database,
    find_pg_bin,
    start_postgres,
)

__all__ = [
    "PgServer",
    "PostgresUnavailable",
    "create_database",
    "find_pg_bin",
    "start_postgres",
]
