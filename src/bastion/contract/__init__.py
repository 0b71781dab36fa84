"""The auth API, declared once: every endpoint with its request and response models.

Layer: contract (pure pydantic over ``types``). Each area module declares its endpoints as
module-level :class:`Endpoint` constants; :data:`ENDPOINTS` lists them all. The server binds
them (:mod:`bastion.api.binding`), the gate reads their audiences, :mod:`bastion.api.openapi`
describes them and :class:`bastion.client.api.AuthClient` calls them, so a route, its
audience, its schema and its client call cannot drift apart. Add an area's endpoints to
``_AREAS``; ``tests/unit/api/test_contract.py`` fails on an endpoint declared but not listed
or listed but not served.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bastion.contract import (
    access,
    agents,
    apps,
    bots,
    core,
    db,
    devices,
    mfa,
    recordings,
    renew,
    requests,
    resources,
    risk,
    scim,
    sessions,
    sso,
    trust,
    web,
    web_admin,
)
from bastion.contract.base import Endpoint

__all__ = ["ENDPOINTS", "endpoints_of"]

_AREAS: tuple[ModuleType, ...] = (core, resources, mfa, sso, agents, recordings, access, db)
_AREAS += (bots, renew)
_AREAS += (devices,)
_AREAS += (requests,)
_AREAS += (scim,)
_AREAS += (risk,)
_AREAS += (web,)
_AREAS += (apps,)
_AREAS += (sessions,)
_AREAS += (web_admin,)
_AREAS += (trust,)


def endpoints_of(module: ModuleType) -> list[Endpoint[Any, Any]]:
    """The Endpoint constants a contract module declares, in declaration order."""
    return [v for v in vars(module).values() if isinstance(v, Endpoint)]


ENDPOINTS: tuple[Endpoint[Any, Any], ...] = tuple(e for m in _AREAS for e in endpoints_of(m))
