"""Tests for bastion.types.database: the ``db`` resource."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.types.database import Database, DatabaseSpec, DatabaseTLS
from bastion.types.meta import Metadata


def test_database_resource() -> None:
    db = Database(
        metadata=Metadata(name="orders", labels={"env": "prod"}),
        spec=DatabaseSpec(uri="db.internal:5432", host_id="h1"),
    )
    assert db.kind == "db" and db.all_labels() == {"env": "prod"}
    assert db.address() == ("db.internal", 5432)
    assert db.spec.protocol == "postgres" and db.spec.tls.mode == "verify-full"
    assert Database.model_validate(db.model_dump()) == db
    v6 = DatabaseSpec(uri="[::1]:5433", tls=DatabaseTLS(mode="verify-ca"))
    assert Database(metadata=Metadata(name="x"), spec=v6).address() == ("::1", 5433)


@pytest.mark.parametrize("uri", ["db.internal", ":5432", "db:0", "db:99999", "db:x"])
def test_bad_uri(uri: str) -> None:
    with pytest.raises(ValidationError, match="host:port"):
        DatabaseSpec(uri=uri)


def test_unknown_protocol_and_fields() -> None:
    with pytest.raises(ValidationError):
        DatabaseSpec(uri="h:1", protocol="oracle")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        DatabaseSpec.model_validate({"uri": "h:1", "password": "x"})
