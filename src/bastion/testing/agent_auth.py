"""Agents' view of auth, in process: a RemoteAuth stand-in in front of a real GuardedAuth (for
tests of the event spool and the emitter without sockets)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bastion.auth.guarded import GuardedAuth
from bastion.contract.agents import SUBMIT_EVENTS, EventBatch, Submitted
from bastion.contract.base import Endpoint
from bastion.errors import ConnectionProblem, LimitExceeded
from bastion.testing import make_auth, new_public_key

__all__ = ["InProcessAuth", "node_guard"]


class InProcessAuth:
    """The agent's RemoteAuth surface in front of a real GuardedAuth; ``down`` simulates an
    unreachable auth, ``lose_answers`` one whose answers get lost after storing."""

    def __init__(self, guard: GuardedAuth) -> None:
        self.guard = guard
        self.down = False
        self.lose_answers = 0
        self.refuse: Exception | None = None
        self.calls: list[int] = []

    async def send(self, endpoint: Endpoint[Any, Any], body: EventBatch) -> Submitted:
        assert endpoint is SUBMIT_EVENTS
        if self.down:
            raise ConnectionProblem("auth is down")
        if self.refuse is not None:
            raise self.refuse
        events = body.events
        self.calls.append(len(events))
        if any("huge" in e for e in events):
            raise LimitExceeded("request body too large: 2000000 bytes")
        results = await self.guard.submit_events(events)
        if self.lose_answers:
            self.lose_answers -= 1
            raise ConnectionProblem("connection reset")
        return Submitted.model_validate({"accepted": len(results), "results": results})


async def node_guard() -> tuple[Any, GuardedAuth]:
    fx = await make_auth()
    token = await fx.auth.add_token(["node"], timedelta(minutes=5), {}, "admin")
    _, pub = new_public_key()
    certs = await fx.auth.join(token.token, "web1", "node", pub, [], [], "10.0.0.9")
    return fx, await GuardedAuth.for_identity(fx.auth, fx.users, certs.identity, "10.0.0.9")
