"""Tests for bastion.cli.bsh_db: the pg_service.conf entry."""

from __future__ import annotations

from pathlib import Path

from bastion.cli.bsh_db import service_entry, update_service_file


def test_service_entry() -> None:
    entry = service_entry("orders", "proxy.example", 3080, "reader", "", Path("/h/db/orders"))
    assert entry.splitlines() == [
        "[bastion-orders]",
        "host=proxy.example",
        "port=3080",
        "user=reader",
        "sslmode=verify-full",
        "sslrootcert=/h/db/orders.ca",
        "sslcert=/h/db/orders.crt",
        "sslkey=/h/db/orders.key",
    ]


def test_update_replaces_only_its_section() -> None:
    old = "[mine]\nhost=a\n[bastion-orders]\nhost=old\nport=1\n[bastion-other]\nhost=b"
    new = update_service_file(old, "orders", "[bastion-orders]\nhost=new\n")
    assert new == "[mine]\nhost=a\n[bastion-other]\nhost=b\n[bastion-orders]\nhost=new\n"
    assert update_service_file("", "x", "[bastion-x]\n") == "[bastion-x]\n"
