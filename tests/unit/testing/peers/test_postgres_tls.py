"""Tests for bastion.testing.peers.postgres_tls (the server itself runs in the integration
test ``tests/integration/test_db_postgres.py``)."""

from __future__ import annotations

import bastion.testing.peers.postgres_tls as module


def test_exports() -> None:
    assert set(module.__all__) == {"psql_local", "start_postgres_tls"}
    assert "cert clientcert=verify-full" in (module.__doc__ or "")
