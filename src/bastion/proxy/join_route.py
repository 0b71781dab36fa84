"""Session join through the ``bastion-ssh/1`` route: which node, and what the node is told.

Layer: ``proxy`` (pure helpers of :mod:`bastion.proxy.ssh_route`). A route line with ``"join"``
(:func:`bastion.protocols.sshroute.encode_join_request`) names a live session and the node that
runs it. The proxy has already authenticated the user and passed them through the gate (user,
epoch, locks); it then opens a ``session_join`` stream to the node's reverse tunnel carrying the
verified identity. The node decides the join itself (:mod:`bastion.agent.session_join`, with
the pure :mod:`bastion.rbac.moderation`), because only it knows the live session, its owner
and its participants; a user who may not join gets the answer of a session that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.errors import NotFound
from bastion.protocols.sessionjoin import DB_SESSIONS_HOST, JOIN_STREAM
from bastion.protocols.sshroute import SSHRequest, find_node
from bastion.types.identity import Identity
from bastion.types.inventory import Node, NodeSpec
from bastion.types.meta import Metadata

__all__ = ["JOIN_STREAM", "join_header", "join_target"]


def join_target(nodes: Sequence[Node], request: SSHRequest, cluster: str) -> Node:
    """The node named by a join request.

    Raises:
        NotFound: no such node (the same answer as a session that does not exist).
    """
    if request.node == DB_SESSIONS_HOST:  # a database session: this proxy serves the join
        return Node(metadata=Metadata(name=DB_SESSIONS_HOST), spec=NodeSpec(host_id=request.node))
    node = find_node(nodes, request.node, cluster)
    if node is None:
        raise NotFound(f"session {request.join} not found")
    return node


def join_header(identity: Identity, request: SSHRequest, remote: str) -> dict[str, Any]:
    """The tunnel stream header of a join: the session, the mode and the verified identity."""
    return {
        "type": JOIN_STREAM,
        "client_addr": remote,
        "user": identity.user,
        "session_id": request.join,
        "mode": request.mode,
        "identity": identity.encode().decode(),
    }
