"""Tests for bastion.cli.bctl_db: ``bctl auth sign --format=db`` writes cert, key and CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from bastion.cli.bctl_db import sign_db_server
from bastion.contract.db import DB_SERVER_CERT, DbCert


class FakeIdentity:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, endpoint: Any, body: Any) -> DbCert:
        self.sent.append((endpoint, body))
        return DbCert(cert="CERT", ca="CA", expires="2027-01-01T00:00:00+00:00")


def test_sign_db_server_writes_files(tmp_path: Path, capsys: Any) -> None:
    fake = FakeIdentity()
    out = tmp_path / "server"
    sign_db_server(fake, "db.internal", "db,10.0.0.5", str(out), "720h")  # type: ignore[arg-type]
    [(endpoint, body)] = fake.sent
    assert endpoint is DB_SERVER_CERT
    assert body.dns_names == ["db.internal", "db"] and body.ip_addresses == ["10.0.0.5"]
    assert "PUBLIC KEY" in body.public_key
    assert (tmp_path / "server.crt").read_text() == "CERT"
    assert (tmp_path / "server.cas").read_text() == "CA"
    key = serialization.load_pem_private_key((tmp_path / "server.key").read_bytes(), None)
    assert (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        == body.public_key
    )
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0
    assert "hostssl" in capsys.readouterr().out
