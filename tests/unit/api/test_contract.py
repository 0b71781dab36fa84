"""The API is declared once (bastion.contract): served as declared, described by the OpenAPI
document, and called only through the typed client."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import ValidationError

import bastion
import bastion.contract
from bastion.api.app import build_app
from bastion.api.audiences import PAGE_AUDIENCES
from bastion.api.binding import bound_endpoints
from bastion.api.openapi import openapi_document
from bastion.contract import ENDPOINTS
from bastion.contract.base import Endpoint, parse_query, query_dict
from bastion.contract.core import EventQuery, Login
from bastion.contract.resources import GET_RESOURCE
from bastion.errors import BadParameter
from bastion.recording.store import LocalRecordingStore
from bastion.testing import make_auth

SRC = Path(bastion.__file__).parent
STRING_CALLS_ALLOWED = {
    # OpenSSH's ProxyCommand path: stdlib HTTPS only, so `ssh node` starts in tens of
    # milliseconds (docs/cli.md); it sends the one SESSION_CHALLENGE body by hand.
    "cli/ssh_handoff.py",
}


def _declared() -> list[Endpoint[Any, Any]]:
    found: list[Endpoint[Any, Any]] = []
    for info in pkgutil.iter_modules(bastion.contract.__path__, "bastion.contract."):
        module = importlib.import_module(info.name)
        found += [v for v in vars(module).values() if isinstance(v, Endpoint)]
    return found


def test_every_declared_endpoint_is_listed_once() -> None:
    declared = {id(e): e for e in _declared()}
    listed = {id(e) for e in ENDPOINTS}
    missing = [e for i, e in declared.items() if i not in listed]
    assert not missing, f"add these modules to bastion.contract._AREAS: {missing}"
    keys = [e.key for e in ENDPOINTS]
    assert len(keys) == len(set(keys)), "two endpoints share a method and path"


async def test_the_app_serves_exactly_the_contract_and_the_pages(tmp_path: Path) -> None:
    fx = await make_auth(recordings=LocalRecordingStore(tmp_path))
    app = build_app(fx.auth, rate=100.0, burst=100, max_body=1 << 20)
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    bound = bound_endpoints(app)
    assert set(bound) == {e.key for e in ENDPOINTS}, "an endpoint is declared but not served"
    unbound = routes - set(bound) - set(PAGE_AUDIENCES)
    assert not unbound, f"routes added beside the contract (declare them): {sorted(unbound)}"


def test_the_openapi_document_is_valid_and_complete() -> None:
    doc = openapi_document()
    validate(doc)
    for e in ENDPOINTS:
        op = doc["paths"][e.path][e.method.lower()]
        assert op["x-audience"] == e.audience
        assert (op.get("security") == []) == (e.audience == "public")
    login = doc["paths"]["/v1/login"]["post"]["requestBody"]["content"]["application/json"]
    ref = login["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(doc["components"]["schemas"][ref]["required"]) == {"user", "password", "public_key"}


def test_a_bad_body_is_one_line_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        Login.model_validate({"user": "alice", "password": "x", "public_key": "k", "ttl": "soon"})
    assert "ttl" in str(info.value)
    with pytest.raises(ValidationError, match="extra"):
        Login.model_validate({"user": "a", "password": "x", "public_key": "k", "pasword": "y"})


def test_urls_encode_each_parameter_as_one_segment() -> None:
    assert GET_RESOURCE.url(kind="role", name="a/b c") == "/v1/resources/role/a%2Fb%20c"
    with pytest.raises(BadParameter, match="expected path parameters"):
        GET_RESOURCE.url(kind="role")
    with pytest.raises(BadParameter, match="must not be empty"):
        GET_RESOURCE.url(kind="role", name="")


@given(
    types=st.lists(st.sampled_from(["user.login", "role.create", "lock.*"]), max_size=3),
    user=st.text(st.characters(categories=["L", "N"]), max_size=8),
    limit=st.integers(1, 100_000),
)
def test_queries_round_trip_through_the_query_string(
    types: list[str], user: str, limit: int
) -> None:
    query = EventQuery(type=types, user=user, limit=limit)
    assert parse_query(EventQuery, query_dict(query) or {}) == query


def _api_strings(path: Path) -> list[str]:
    """String literals naming an API path, outside docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and "/v1/" in node.value
    ]


def test_clients_call_declared_endpoints_not_string_paths() -> None:
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("contract/", "api/", "testing")) or rel in STRING_CALLS_ALLOWED:
            continue
        found = [s for s in _api_strings(path) if s.lstrip().startswith(("/v1/", "https://"))]
        if found:
            offenders[rel] = found
    assert not offenders, f"call these through AuthClient.send(ENDPOINT): {offenders}"
