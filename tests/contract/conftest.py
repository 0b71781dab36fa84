"""Contract-layer fixtures: a throwaway PostgreSQL server per test session (per xdist worker),
and a fresh database per test."""

from __future__ import annotations

import pytest

from bastion.testing.peers.postgres import PgServer, create_database


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PgServer) -> str:
    """DSN of the session's server (``postgres`` database, superuser, trust auth)."""
    return postgres_server.dsn


@pytest.fixture
async def postgres_db_dsn(postgres_server: PgServer) -> str:
    """DSN of a database created for this test only."""
    return await create_database(postgres_server)
