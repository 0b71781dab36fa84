"""Tests for bastion.contract.db: request models."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bastion.contract.db import DbServerCertRequest, DbUserCertRequest


def test_user_cert_request() -> None:
    body = DbUserCertRequest.model_validate(
        {"db_service": "orders", "db_user": "r", "public_key": "k", "ttl": "1h"}
    )
    assert body.ttl == timedelta(hours=1) and body.db_name == ""
    with pytest.raises(ValidationError):
        DbUserCertRequest.model_validate({"db_service": "", "public_key": "k"})
    with pytest.raises(ValidationError):  # a typo is never ignored
        DbUserCertRequest.model_validate({"db_service": "o", "public_key": "k", "dbuser": "r"})


def test_server_cert_request_defaults() -> None:
    body = DbServerCertRequest.model_validate({"host": "db", "public_key": "k"})
    assert body.ttl == timedelta(days=365) and body.dns_names == []
