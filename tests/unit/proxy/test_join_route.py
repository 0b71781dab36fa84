"""A join line names a node; the node is told the session, the mode and the identity."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.errors import NotFound
from bastion.protocols.sshroute import SSHRequest
from bastion.proxy.join_route import join_header, join_target
from bastion.types.identity import Identity
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def test_join_target_and_header() -> None:
    node = Node(metadata=Metadata(name="web1"), spec=NodeSpec(host_id="h1"))
    request = SSHRequest("h1", "", 22, "s1", "observer")
    assert join_target([node], request, "c") is node
    with pytest.raises(NotFound, match="session s1 not found"):
        join_target([], request, "c")
    who = Identity(cluster="c", user="bob", roles=("auditor",), expires=EXPIRES)
    header = join_header(who, request, "1.2.3.4:5")
    assert header["type"] == "session_join" and header["mode"] == "observer"
    assert Identity.decode(header["identity"]) == who


def test_a_join_of_a_database_session_is_served_by_the_proxy() -> None:
    from bastion.protocols.sessionjoin import DB_SESSIONS_HOST

    request = SSHRequest(DB_SESSIONS_HOST, "", 22, "s1", "moderator")
    target = join_target([], request, "c")  # no node: the proxy's own db sessions
    assert target.spec.host_id == DB_SESSIONS_HOST
