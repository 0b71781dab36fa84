from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.agent.db_provision import (
    MARKER,
    _ok_warnings,
    mysql_disable_sql,
    mysql_enable_sql,
    mysql_ident,
    pg_disable_sql,
    pg_enable_sql,
    pg_ident,
    sql_literal,
    x509_subject,
)
from bastion.protocols import mysql


def test_quoting() -> None:
    assert pg_ident('a"b') == '"a""b"'
    assert mysql_ident("a`b") == "`a``b`"
    assert sql_literal("o'k") == "'o''k'"
    for bad in ("a\\b", "a\x00"):
        with pytest.raises(ValueError):
            sql_literal(bad)
    with pytest.raises(ValueError):
        pg_ident("a\x00")


def test_postgres_statements() -> None:
    assert pg_enable_sql("bob", ["reader"], create=True) == (
        f"""CREATE ROLE "bob" LOGIN; COMMENT ON ROLE "bob" IS '{MARKER}'; """
        'GRANT "reader" TO "bob"'
    )
    assert pg_enable_sql("bob", [], create=False).startswith('ALTER ROLE "bob" LOGIN; DO $$')
    narrowed = pg_enable_sql("bob", ["reader"], create=False, revoke=["writer", 'x"y'])
    assert narrowed.startswith(
        'ALTER ROLE "bob" LOGIN; REVOKE "writer" FROM "bob"; REVOKE "x""y" FROM "bob"; '
        'GRANT "reader" TO "bob"; DO $$ BEGIN IF EXISTS ('
    )
    # ...and the check fails the transaction on any other membership left.
    assert "u.rolname = 'bob' AND r.rolname <> ALL (ARRAY['reader']::text[])" in narrowed
    assert narrowed.endswith("revoke it by hand'; END IF; END $$")
    assert "ARRAY[]::text[]" in pg_enable_sql("bob", [], create=False)
    assert "$" not in pg_enable_sql("o'neil", ["r"], create=True)
    with pytest.raises(ValueError):
        pg_enable_sql("a$$; DROP", [], create=False)
    assert pg_disable_sql("bob").startswith('ALTER ROLE "bob" NOLOGIN; ')
    assert "usename = 'bob'" in pg_disable_sql("bob")


def test_mysql_statements() -> None:
    sql = mysql_enable_sql("bob", "/CN=bob/O=c", ["reader", "x"])
    assert sql[0] == (
        "CREATE USER IF NOT EXISTS `bob`@'%' REQUIRE SUBJECT '/CN=bob/O=c' ACCOUNT LOCK"
    )
    assert sql[1:] == [
        "GRANT `reader` TO `bob`@'%'",
        "GRANT `x` TO `bob`@'%'",
        "SET DEFAULT ROLE `reader` FOR `bob`@'%'",
        "ALTER USER `bob`@'%' REQUIRE SUBJECT '/CN=bob/O=c' ACCOUNT UNLOCK",
    ]
    assert mysql_disable_sql("bob") == "ALTER USER `bob`@'%' ACCOUNT LOCK"
    narrowed = mysql_enable_sql("bob", "/CN=bob/O=c", ["reader"], revoke=["writer"])
    assert narrowed[1:-1] == ["REVOKE `writer` FROM `bob`@'%'", "GRANT `reader` TO `bob`@'%'",
                              "SET DEFAULT ROLE `reader` FOR `bob`@'%'"]  # fmt: skip
    assert mysql_enable_sql("bob", "/CN=bob/O=c", [], revoke=["x"])[1:-1] == [
        "REVOKE `x` FROM `bob`@'%'",
        "SET DEFAULT ROLE NONE FOR `bob`@'%'",
    ]
    assert narrowed[-1].endswith("ACCOUNT UNLOCK")  # last: a failure before leaves it locked


def test_ok_warnings() -> None:
    ok = mysql.ok_packet(1)[4:]
    assert _ok_warnings(ok) == 0
    assert _ok_warnings(ok[:-2] + b"\x01\x00") == 1
    assert _ok_warnings(b"\x00") == 0


def test_subject_in_mariadb_form() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "bob"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test.local"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    assert x509_subject(pem) == "/CN=bob/O=test.local"
