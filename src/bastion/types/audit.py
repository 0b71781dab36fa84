"""Audit events: one typed, structured record per security-relevant action.

The catalogue (type -> code) lives in :data:`EVENT_CODES`; docs/audit.md lists it for operators.
Codes end in ``I`` (info/success) or ``W`` (warning/failure), as Teleport's do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AGENT_EVENT_TYPES", "EVENT_CODES", "AuditEvent", "event_code"]

EVENT_CODES: dict[str, str] = {
    "user.login": "T1000",
    "user.create": "T1002",
    "user.update": "T1003",
    "user.delete": "T1004",
    "user.invite": "T1005",
    "user.password_set": "T1006",
    "user.reset": "T1007",
    "user.locked_out": "T1008",
    "user.unlocked": "T1009",
    "mfa.session": "T1050",
    "mfa.admin": "T1051",
    "mfa.add": "T1010",
    "mfa.remove": "T1011",
    "mfa.cloned": "T1012",
    "mfa.forget": "T1013",
    "role.create": "T9000",
    "role.update": "T9001",
    "role.delete": "T9002",
    "token.create": "T9010",
    "token.delete": "T9011",
    "lock.create": "T9020",
    "lock.delete": "T9021",
    "resource.create": "T9030",
    "resource.update": "T9031",
    "resource.delete": "T9032",
    "connector.create": "T9040",
    "connector.update": "T9041",
    "connector.delete": "T9042",
    "sso.login": "T1020",
    "sso.revalidate": "T1021",
    "scim.user.create": "T1030",
    "scim.user.update": "T1031",
    "scim.user.delete": "T1032",
    "scim.group.create": "T1033",
    "scim.group.update": "T1034",
    "scim.group.delete": "T1035",
    "scim.token.create": "T1036",
    "scim.request": "T1037",
    "scim.index": "T1038",
    "risk.signal": "T6000",
    "risk.step_up": "T6001",
    "join": "T2000",
    "cert.issued": "T2100",
    "cert.renewed": "T2101",
    "bot.create": "T2300",
    "bot.join": "T2301",
    "bot.renew": "T2302",
    "bot.generation_mismatch": "T2303",
    "ca.rotate": "T2200",
    "ca.create": "T2201",
    "access.denied": "T3000",
    "node.rejected": "T4000",
    "node.confirm": "T4003",
    "proxy.ssh": "T4001",
    "proxy.rejected": "T4002",
    "session.start": "T5000",
    "session.end": "T5001",
    "exec": "T5002",
    "port_forward": "T5003",
    "sftp": "T5004",
    "session.rejected": "T5005",
    "session.terminated": "T5006",
    "session.join": "T5007",
    "session.leave": "T5008",
    "recording.upload": "T5010",
    "recording.view": "T5011",
    "recording.download": "T5012",
    "recording.rejected": "T5013",
    "event.rejected": "T4010",
    "access_request.create": "T5100",
    "access_request.review": "T5101",
    "access_request.resolve": "T5102",
    "access_request.delete": "T5103",
    "access_request.assume": "T5104",
    "access_request.notify": "T5105",
}

AGENT_EVENT_TYPES = frozenset(
    {
        "session.start",
        "session.end",
        "exec",
        "port_forward",
        "sftp",
        "session.rejected",
        "session.terminated",
        "session.join",
        "session.leave",
        "proxy.ssh",
        "proxy.rejected",
        "access.denied",
        "db.user.create",
        "db.user.disable",
        # a proxy in its own process: its database route (bastion.proxy.db_route)
        "db.session.start",
        "db.session.query",
        "db.session.copy",
        "db.session.end",
        "db.session.cancel",
        # a proxy in its own process: leaf clusters' tunnels and routes to them
        # (bastion.proxy.cluster_route)
        "proxy.cluster",
        "remote_cluster.connected",
    }
)
"""Event types agents and proxies in other processes may submit through the API."""


def event_code(event_type: str, outcome: str) -> str:
    base = EVENT_CODES.get(event_type, "T0000")
    return base + ("I" if outcome == "success" else "W")


class AuditEvent(BaseModel):
    """One audit record. ``fields`` holds type-specific data (never secrets)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    code: str = ""
    time: datetime
    cluster: str = ""
    user: str = ""
    """The principal acting (or attempting to act)."""
    login: str = ""
    target: str = ""
    """What was acted on: ``role/dev``, a node, a user name."""
    remote_addr: str = ""
    session_id: str = ""
    device_id: str = ""
    outcome: Literal["success", "failure"] = "success"
    reason: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)
    id: str = ""
    """Assigned by the audit log when stored (random, unique)."""
    index: int | None = None
    """The event's position in the verifiable log (0, 1, 2, ... without gaps), assigned when
    stored; it is the Merkle tree leaf index."""
