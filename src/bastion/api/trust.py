"""The trusted-cluster API (:mod:`bastion.contract.trust`) over :mod:`bastion.auth.trust`.

Layer: ``api``. ``POST /v1/trust/validate`` is public (a leaf has no identity here yet) and
rate-limited like every public route; the join token is its authentication.
"""

from __future__ import annotations

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.server import AuthServer
from bastion.auth.trust import validate_leaf
from bastion.contract import trust as c

__all__ = ["add_trust_routes"]


def add_trust_routes(app: web.Application, auth: AuthServer) -> None:
    async def validate(call: Call[c.ValidateTrust]) -> c.TrustAnswer:
        return await validate_leaf(auth, call.body, call.remote)

    bind(app, c.VALIDATE_TRUST, validate)
