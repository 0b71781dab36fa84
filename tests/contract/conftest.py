"""Contract-layer fixtures: a throwaway PostgreSQL server per test session (per xdist worker),
and a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bastion.testing_pg import PgServer, PostgresUnavailable, create_database, start_postgres


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    try:
        server = start_postgres(tmp_path_factory.mktemp("pg"))
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but PostgreSQL is unavailable: {exc}")
        pytest.skip(f"PostgreSQL server binaries not installed: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PgServer) -> str:
    """DSN of the session's server (``postgres`` database, superuser, trust auth)."""
    return postgres_server.dsn


@pytest.fixture
async def postgres_db_dsn(postgres_server: PgServer) -> str:
    """DSN of a database created for this test only."""
    return await create_database(postgres_server)
