"""Tests for bastion.testing.mysql_rig (the rig itself runs in tests/integration/test_db_mysql.py
and bench/db.py): the accounts it creates need TLS with an exact subject and no password."""

from __future__ import annotations

from bastion.testing.mysql_rig import CLUSTER, SETUP_SQL


def test_accounts_are_certificate_only() -> None:
    sql = SETUP_SQL.format(cluster=CLUSTER)
    assert "REQUIRE SUBJECT '/CN=alice_db/O=test.local'" in sql
    assert "IDENTIFIED" not in sql.upper()
