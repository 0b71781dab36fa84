from aiohttp import web

from bastion.api.binding import bound_endpoints
from bastion.api.trust import add_trust_routes
from bastion.contract.trust import VALIDATE_TRUST
from bastion.testing import make_auth


async def test_validate_route_is_bound() -> None:
    fx = await make_auth()
    app = web.Application()
    add_trust_routes(app, fx.auth)
    assert VALIDATE_TRUST.key in bound_endpoints(app)
