"""Access requests on auth (issue 17): time from create to usable access, review throughput.

1. **Create to usable access**: a user creates a request for a role needing two approvals, two
   reviewers approve (done by the bench, no human in the loop), the requester assumes it (SSH +
   X.509 certificates carrying the request id). Each step is one audited transaction; p50/p99
   over ``--rounds`` requests. The peer, same run and backend: a plain certificate issuance for
   the same user (what a standing role would cost), so the ratio is the price of just-in-time.
   **With an on-call rule** (the issue's "auto-approve"): the requester is on call in a weekly
   iCalendar rotation, so create approves at once (the schedule file is read and expanded per
   request) and the requester assumes it: create -> assume, p50/p99, same peer.
2. **Review throughput**: ``--pending`` requests pending at once; reviewers approve them all
   (one review each, threshold 1) with ``--concurrency`` callers: reviews per second.

In process over the embedded SQLite backend (the default engine), Ed25519 CAs.
Run: ``python bench/access_requests.py [--quick] [--pending 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bastion.auth.requests import AccessRequestService, NewRequest
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.config.notifications import OnCallRule
from bastion.rbac.checker import RoleSet
from bastion.testing import new_public_key
from bastion.types.access import Role, User
from bastion.types.identity import Identity
from bastion.types.meta import Metadata


def _role(name: str, allow: dict[str, object]) -> Role:
    return Role.model_validate({"metadata": {"name": name}, "spec": {"allow": allow}})


async def _setup(auth: AuthServer) -> None:
    roles = [
        _role("req2", {"request": {"roles": ["dba"], "thresholds": [{"approve": 2}]}}),
        _role("req1", {"request": {"roles": ["dba"]}}),
        _role("dba", {"logins": ["postgres"], "node_labels": {"env": "prod"}}),
        _role("rev", {"review_requests": {"roles": ["dba"]}}),
    ]
    for role in roles:
        await auth.create_resource(role, "bench", force=False)
    for name, role in (("alice", "req2"), ("ann", "req1"), ("bob", "rev"), ("carol", "rev")):
        user = User(metadata=Metadata(name=name), spec={"roles": [role]})
        await auth.create_resource(user, "bench", force=False)


def _ident(auth: AuthServer, user: str, roles: tuple[str, ...]) -> Identity:
    return Identity(
        cluster=auth.cluster,
        user=user,
        roles=roles,
        expires=auth.clock.now() + timedelta(hours=12),
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def create_to_access(
    auth: AuthServer, svc: AccessRequestService, rounds: int
) -> dict[str, float]:
    _, pub = new_public_key()
    alice = _ident(auth, "alice", ("req2",))
    bob, carol = _ident(auth, "bob", ("rev",)), _ident(auth, "carol", ("rev",))
    jit, plain = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        req = await svc.create("alice", NewRequest(roles=("dba",), reason="bench"))
        await svc.review(req.name, bob, "approve", "")
        await svc.review(req.name, carol, "approve", "")
        certs = await svc.assume(req.name, alice, pub, timedelta(hours=1), "127.0.0.1")
        assert certs.identity.access_requests == (req.name,)
        jit.append(time.perf_counter() - start)
        start = time.perf_counter()
        roles = [await auth.roles.get("req2"), await auth.roles.get("dba")]
        identity = auth.issuer.user_identity(
            cluster=auth.cluster,
            user="alice",
            roles=["req2", "dba"],
            traits={},
            role_set=RoleSet.from_roles(roles, {}),
            requested_ttl=timedelta(hours=1),
        )
        await auth.issuer.issue_user(identity, pub, "127.0.0.1")
        plain.append(time.perf_counter() - start)
    return {
        "jit_p50_ms": _pct(jit, 0.5) * 1000,
        "jit_p99_ms": _pct(jit, 0.99) * 1000,
        "plain_p50_ms": _pct(plain, 0.5) * 1000,
        "plain_p99_ms": _pct(plain, 0.99) * 1000,
    }


ROTATION = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\nUID:dba\r\n"
    "DTSTAMP:20260101T000000Z\r\nDTSTART:20260105T000000Z\r\nDTEND:20260112T000000Z\r\n"
    "RRULE:FREQ=WEEKLY\r\nSUMMARY:DBA on call: alice\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


async def on_call_to_access(auth: AuthServer, tmp: Path, rounds: int) -> dict[str, float]:
    schedule = tmp / "dba.ics"
    schedule.write_text(ROTATION)
    svc = AccessRequestService(
        auth, on_call=[OnCallRule(name="dba-on-call", schedule=str(schedule), roles=["dba"])]
    )
    _, pub = new_public_key()
    alice = _ident(auth, "alice", ("req2",))
    times = []
    await svc.create("alice", NewRequest(roles=("dba",)))  # warm-up: imports the iCal parser
    for _ in range(rounds):
        start = time.perf_counter()
        req = await svc.create("alice", NewRequest(roles=("dba",), reason="bench"))
        assert req.spec.state == "APPROVED", "alice is on call every week"
        await svc.assume(req.name, alice, pub, timedelta(hours=1), "127.0.0.1")
        times.append(time.perf_counter() - start)
    return {"p50_ms": _pct(times, 0.5) * 1000, "p99_ms": _pct(times, 0.99) * 1000}


async def review_throughput(
    svc: AccessRequestService, pending: int, concurrency: int
) -> dict[str, float]:
    auth = svc.auth
    names = []
    start = time.perf_counter()
    for _ in range(pending):
        names.append((await svc.create("ann", NewRequest(roles=("dba",)))).name)
    created = pending / (time.perf_counter() - start)
    reviewers = [_ident(auth, "bob", ("rev",)), _ident(auth, "carol", ("rev",))]
    queue = list(names)

    async def worker(i: int) -> int:
        done = 0
        while queue:
            name = queue.pop()
            await svc.review(name, reviewers[i % 2], "approve", "")
            done += 1
        return done

    cpu, wall = time.process_time(), time.perf_counter()
    done = sum(await asyncio.gather(*(worker(i) for i in range(concurrency))))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "created_per_s": created,
        "reviews_per_s": done / wall,
        "cpu_ms_per_review": cpu * 1000 / done,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 rounds, 500 pending")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pending = 20, 500
    with tempfile.TemporaryDirectory() as tmp:
        backend = await SQLiteBackend.open(str(Path(tmp) / "state.db"), SystemClock())
        try:
            auth = AuthServer(
                AuthDeps(backend=backend, clock=SystemClock(), cluster="bench", kek=b"\x01" * 32)
            )
            await auth.init()
            await _setup(auth)
            svc = AccessRequestService(auth)
            latency = await create_to_access(auth, svc, args.rounds)
            print(f"create -> 2 approvals -> assume ({args.rounds} requests, SQLite):")
            print(
                f"  just-in-time  p50 {latency['jit_p50_ms']:7.1f} ms   "
                f"p99 {latency['jit_p99_ms']:7.1f} ms"
            )
            print(
                f"  plain login cert (peer) p50 {latency['plain_p50_ms']:5.1f} ms   "
                f"p99 {latency['plain_p99_ms']:5.1f} ms   "
                f"ratio p50 {latency['jit_p50_ms'] / latency['plain_p50_ms']:.1f}x"
            )
            auto = await on_call_to_access(auth, Path(tmp), args.rounds)
            print(
                f"  on-call auto-approval: create -> assume p50 {auto['p50_ms']:5.1f} ms   "
                f"p99 {auto['p99_ms']:5.1f} ms   "
                f"ratio p50 {auto['p50_ms'] / latency['plain_p50_ms']:.1f}x"
            )
            rate = await review_throughput(svc, args.pending, args.concurrency)
            print(f"reviews with {args.pending} pending ({args.concurrency} reviewers at once):")
            print(
                f"  {rate['reviews_per_s']:8.0f} reviews/s   "
                f"{rate['cpu_ms_per_review']:.2f} ms CPU/review   "
                f"(creates: {rate['created_per_s']:.0f}/s)"
            )
        finally:
            await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
