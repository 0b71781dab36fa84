"""The web UI's JSON endpoint: bound as declared (audience ``web``), and its lister filters by
the same RBAC as ``bsh ls`` and offers only the logins allowed on each node."""

from __future__ import annotations

from datetime import timedelta

from bastion.api.app import build_app
from bastion.api.binding import bound_endpoints
from bastion.contract.web import WEB_NODES, NodeQuery
from bastion.testing import make_auth
from bastion.types import load_resources
from bastion.types.identity import Identity
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata
from bastion.web.resources import NodeLister
from bastion.web.sessions import WebSession

ROLES = """
kind: role
metadata: {name: devs}
spec:
  allow:
    logins: [dev]
    node_labels: {env: [dev, prod]}
---
kind: role
metadata: {name: dev-ops}
spec:
  allow:
    logins: [ops]
    node_labels: {env: dev}
"""


async def test_the_endpoint_is_bound_for_browser_sessions() -> None:
    fx = await make_auth()
    app = build_app(fx.auth, rate=100.0, burst=100, max_body=1 << 20)
    assert bound_endpoints(app)[WEB_NODES.key] is WEB_NODES
    assert WEB_NODES.audience == "web"


async def test_nodes_follow_rbac_and_each_row_offers_its_allowed_logins() -> None:
    fx = await make_auth()
    for name, env in (("web1", "prod"), ("dev1", "dev"), ("pci1", "pci")):
        await fx.auth.nodes.create(
            Node(metadata=Metadata(name=name, labels={"env": env}), spec=NodeSpec(hostname=name))
        )
    for role in load_resources(ROLES):
        await fx.auth.create_resource(role, "admin", force=False)
    identity = Identity(
        cluster="test.local",
        user="dana",
        roles=("devs", "dev-ops"),
        logins=("dev", "ops"),
        expires=fx.clock.now() + timedelta(hours=1),
    )
    lister = NodeLister(fx.auth, fx.users)
    page = await lister.page(WebSession(identity, "password"), NodeQuery(), "10.0.0.1:5000")
    assert [(r.name, r.logins) for r in page.items] == [("dev1", ["dev", "ops"]), ("web1", ["dev"])]
    assert page.total == 2  # pci1: not reachable, so not listed
