"""Shared test configuration: hypothesis profiles (fast by default, deep with
HYPOTHESIS_PROFILE=deep), and small fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from bastion.testing import missing_peer
from bastion.testing.peers.postgres import PgServer, PostgresUnavailable, start_postgres

settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A throwaway PostgreSQL server per test session (per xdist worker)."""
    try:
        server = start_postgres(tmp_path_factory.mktemp("pg"))
    except PostgresUnavailable as exc:
        missing_peer(f"PostgreSQL server binaries not installed: {exc}")
    try:
        yield server
    finally:
        server.stop()
