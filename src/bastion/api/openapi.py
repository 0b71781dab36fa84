"""The OpenAPI 3.1 description of the auth API, served at ``/openapi.json``.

Generated from the contract (:data:`bastion.contract.ENDPOINTS`): the same pydantic models
that validate requests and replies give the schemas, so the document cannot drift from what
the server does. ``tests/unit/api/test_openapi.py`` validates it with openapi-spec-validator.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bastion import __version__
from bastion.api.admin_mfa import is_admin_change
from bastion.api.mfa_header import ADMIN_MFA_HEADER
from bastion.contract import ENDPOINTS
from bastion.contract.base import Empty, Endpoint

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "challenge": {
                    "type": "object",
                    "description": "code mfa_required: WebAuthn request options to answer",
                },
                "scope": {"type": "string", "description": "code mfa_required: what it binds"},
            },
            "required": ["code", "message"],
        }
    },
}
_MFA_HEADER = {
    "name": ADMIN_MFA_HEADER,
    "in": "header",
    "required": False,
    "description": "MFA for admin actions: base64url of the WebAuthn assertion answering the "
    "challenge of a 401 mfa_required reply to this same request (docs/session-mfa.md)",
    "schema": {"type": "string"},
}


def _models() -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {}
    for ep in ENDPOINTS:
        for model in (ep.body, ep.response, ep.query):
            if model is not None:
                seen[model] = None
    return list(seen)


def _query_parameters(ep: Endpoint[Any, Any], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    if ep.query is None:
        return []
    schema = schemas[ep.query.__name__]
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _operation(ep: Endpoint[Any, Any], refs: dict[Any, Any], schemas: dict[str, Any]) -> Any:
    if ep.stream:
        content = {ep.stream: {"schema": {"type": "string", "format": "binary"}}}
    else:
        content = {"application/json": {"schema": refs[(ep.response, "serialization")]}}
    op: dict[str, Any] = {
        "summary": ep.summary,
        "operationId": f"{ep.method.lower()}_{ep.path.strip('/').replace('/', '_')}",
        "x-audience": ep.audience,
        "responses": {
            str(ep.status): {"description": "OK", "content": content},
            "default": {
                "description": "Error",
                "content": {"application/json": {"schema": _ERROR}},
            },
        },
    }
    if ep.audience == "public":
        op["security"] = []
    elif ep.audience == "scim":
        op["security"] = [{"scimBearer": []}]
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in ep.params
    ]
    parameters += _query_parameters(ep, schemas)
    if is_admin_change(ep.method, ep.path):
        parameters.append(_MFA_HEADER)
    if parameters:
        op["parameters"] = parameters
    if ep.raw_body:
        op["requestBody"] = {
            "content": {"application/octet-stream": {"schema": {"type": "string"}}}
        }
    elif ep.body is not Empty:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(ep.body, "validation")]}},
        }
    return op


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    modes: tuple[JsonSchemaMode, ...] = ("validation", "serialization")
    inputs = [(model, mode) for mode in modes for model in _models()]
    refs, defs = models_json_schema(inputs, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = defs.get("$defs", {})
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bastion auth API", "version": __version__},
        "components": {
            "securitySchemes": {
                "mtls": {"type": "mutualTLS"},
                "scimBearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": schemas,
        },
        "security": [{"mtls": []}],
        "paths": paths,
    }
