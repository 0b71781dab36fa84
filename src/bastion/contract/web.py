"""The web UI's JSON: the resources page's node list (audience ``web``: the browser session).

The browser's cookie session is the caller (the gate admits it as for every page); the list is
filtered by the same RBAC checker as ``bsh ls`` and paged on the server, so a cluster of
10,000 nodes sends one page at a time (docs/web-ui.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion.contract.base import Body, Empty, Endpoint, Reply

__all__ = ["MAX_PER_PAGE", "WEB_NODES", "NodePage", "NodeQuery", "NodeRow", "NodeSort"]

MAX_PER_PAGE = 200
NodeSort = Literal["name", "-name", "addr", "-addr", "status", "-status"]


class NodeQuery(Body):
    q: str = Field(default="", max_length=200)
    """Free text: a case-insensitive substring of the name, address or a label (key=value)."""
    label: str = Field(default="", max_length=500)
    """Label filter: ``key=value`` pairs separated by spaces or commas; all must match."""
    sort: NodeSort = "name"
    """A column, descending with a leading ``-``."""
    page: int = Field(default=1, ge=1, le=1_000_000)
    per_page: int = Field(default=50, ge=1, le=MAX_PER_PAGE)


class NodeRow(Reply):
    name: str
    addr: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    """Static and dynamic labels."""
    online: bool | None = None
    """Whether the node's agent is connected (None: agentless, unknown)."""
    logins: list[str] = Field(default_factory=list)
    """The logins the user may use on this node (the connect action's picker)."""


class NodePage(Reply):
    items: list[NodeRow]
    total: int
    """Nodes that match the filter (all pages)."""
    page: int
    per_page: int
    pages: int


WEB_NODES = Endpoint(
    "GET",
    "/web/api/nodes",
    "web",
    "The nodes the signed-in browser user may reach: filtered, sorted, one page",
    body=Empty,
    response=NodePage,
    query=NodeQuery,
)
