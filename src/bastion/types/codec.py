"""Resources in and out of YAML and JSON, with errors that name resource, field and problem.

A validation error reads like::

    role "dev": spec.allow.node_labels.env: invalid regular expression '^(prod': missing ), ...
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import yaml
from pydantic import ValidationError

from bastion.errors import BadParameter
from bastion.types.access import AuthPreference, Lock, ProvisionToken, Role, User
from bastion.types.apps import App
from bastion.types.authority import CertAuthority
from bastion.types.connectors import CONNECTOR_KINDS
from bastion.types.database import Database
from bastion.types.duration import format_duration
from bastion.types.inventory import Node, ProxyServer
from bastion.types.meta import Resource
from bastion.types.risk import RiskRule
from bastion.types.trust import RemoteCluster, TrustedCluster

__all__ = [
    "RESOURCE_KINDS",
    "dump_resource",
    "load_resources",
    "parse_resource",
    "resource_to_dict",
    "validation_problems",
]

RESOURCE_KINDS: dict[str, type[Resource]] = {
    "user": User,
    "role": Role,
    "token": ProvisionToken,
    "cert_authority": CertAuthority,
    "node": Node,
    "proxy": ProxyServer,
    "db": Database,
    "app": App,
    "cluster_auth_preference": AuthPreference,
    "lock": Lock,
    **CONNECTOR_KINDS,
    "trusted_cluster": TrustedCluster,
    "remote_cluster": RemoteCluster,
    "risk_rule": RiskRule,
}
_ALIASES = {
    "users": "user",
    "roles": "role",
    "tokens": "token",
    "ca": "cert_authority",
    "cas": "cert_authority",
    "nodes": "node",
    "proxies": "proxy",
    "dbs": "db",
    "database": "db",
    "databases": "db",
    "apps": "app",
    "cap": "cluster_auth_preference",
    "locks": "lock",
    "trusted_clusters": "trusted_cluster",
    "remote_clusters": "remote_cluster",
    "risk_rules": "risk_rule",
    "oidc_connector": "oidc",
    "saml_connector": "saml",
    "github_connector": "github",
}


def canonical_kind(kind: str) -> str:
    """Map a kind or its alias (``roles``, ``ca``) to the canonical kind, or raise BadParameter."""
    kind = _ALIASES.get(kind, kind)
    if kind not in RESOURCE_KINDS:
        raise BadParameter(f"unknown kind {kind!r}: use one of {', '.join(sorted(RESOURCE_KINDS))}")
    return kind


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_error(err: Any) -> str:
    # pydantic's loc includes union/validator tags such as "function-before[...]"; drop them.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "]" in p))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; see docs/resources.md)"
    elif err["type"] == "missing":
        msg = "field required"
    return f"{_format_loc(loc)}: {msg}" if loc else msg


def validation_problems(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: problem; field: problem``."""
    return "; ".join(_format_error(e) for e in exc.errors())


def parse_resource(data: object) -> Resource:
    """Validate one decoded document into its typed resource.

    Raises:
        BadParameter: naming kind, name, field and problem.
    """
    if not isinstance(data, dict):
        raise BadParameter("a resource must be a mapping with kind, version, metadata and spec")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise BadParameter("resource has no 'kind' (e.g. kind: role)")
    kind = canonical_kind(kind)
    data = {**data, "kind": kind}
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label = f'{kind} "{name}"' if name else kind
    try:
        return RESOURCE_KINDS[kind].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_format_error(e) for e in exc.errors())
        raise BadParameter(f"{label}: {problems}") from None


def load_resources(text: str, source: str = "input") -> list[Resource]:
    """Parse one or more resources from YAML (``---`` separated) or JSON (object or list).

    Raises:
        BadParameter: malformed YAML/JSON (with line number) or an invalid resource.
    """
    stripped = text.lstrip()
    docs: list[object]
    if stripped.startswith(("{", "[")):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadParameter(f"{source}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        docs = decoded if isinstance(decoded, list) else [decoded]
    else:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise BadParameter(f"{source}: invalid YAML{where}: {problem}") from None
    if not docs:
        raise BadParameter(f"{source}: no resources found")
    return [parse_resource(d) for d in docs]


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def resource_to_dict(resource: Resource) -> dict[str, Any]:
    """JSON-ready dict; durations as ``12h`` text, empty defaults left out of spec."""
    raw = resource.model_dump(mode="python", exclude_none=True)
    data = _plain(raw)
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))  # datetimes -> ISO text
    return out


def dump_resource(resource: Resource, fmt: str = "yaml") -> str:
    """Render for humans and round trips: ``yaml`` or ``json``."""
    data = resource_to_dict(resource)
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False)
    return yaml.safe_dump(data, sort_keys=False)
