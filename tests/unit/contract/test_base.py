"""The Endpoint declaration: URLs, query strings, resource documents."""

from __future__ import annotations

import pytest

from bastion.contract.base import Body, Empty, Endpoint, Reply, ResourceDoc, parse_query, query_dict
from bastion.errors import BadParameter
from bastion.types.access import Role


class Q(Body):
    kinds: list[str] = []
    force: bool = False
    limit: int = 10


EP = Endpoint("GET", "/v1/x/{kind}/{name}", "user", "x", body=Empty, response=Reply, query=Q)


def test_params_and_key() -> None:
    assert EP.params == ("kind", "name")
    assert EP.key == ("GET", "/v1/x/{kind}/{name}")
    assert repr(EP) == "Endpoint(GET /v1/x/{kind}/{name})"


def test_query_strings_join_lists_and_leave_defaults_out() -> None:
    assert query_dict(Q()) == {}
    assert query_dict(Q(kinds=["role", "lock"], force=True)) == {
        "kinds": "role,lock",
        "force": "true",
    }
    assert parse_query(Q, {"kinds": "role,lock", "force": "true", "limit": "3"}) == Q(
        kinds=["role", "lock"], force=True, limit=3
    )
    assert query_dict(None) is None


def test_unknown_query_or_body_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        parse_query(Q, {"kind": "role"})


def test_a_resource_document_is_validated_by_its_kind() -> None:
    doc = ResourceDoc.model_validate({"kind": "role", "metadata": {"name": "dev"}, "spec": {}})
    assert isinstance(doc.root, Role)
    assert doc.model_dump(mode="json")["metadata"]["name"] == "dev"
    with pytest.raises(BadParameter, match='role "dev"'):
        ResourceDoc.model_validate(
            {"kind": "role", "metadata": {"name": "dev"}, "spec": {"allow": {"bogus": 1}}}
        )
    with pytest.raises(BadParameter, match="unknown kind"):
        ResourceDoc.model_validate({"kind": "nope", "metadata": {"name": "x"}})
