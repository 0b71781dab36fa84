"""The trusted-cluster API (:mod:`bastion.contract.trust`) over :mod:`bastion.auth.trust`.

Layer: ``api``. ``POST /v1/trust/validate`` is public (a leaf has no identity here yet) and
rate-limited like every public route; the join token is its authentication.
``POST /v1/trust/tunnel`` is how a root's proxy in its own process records a leaf tunnel it holds
(:meth:`bastion.auth.guarded.GuardedAuth.record_tunnel`: proxy host certificates only).
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

    async def record_tunnel(call: Call[c.TunnelReport]) -> c.TunnelReported:
        return c.TunnelReported(cas_changed=await call.guard.record_tunnel(call.body))

    bind(app, c.VALIDATE_TRUST, validate)
    bind(app, c.RECORD_TUNNEL, record_tunnel)
