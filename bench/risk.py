"""Risk rule evaluation throughput vs the audit log's append rate (issue 20).

Run with ``python bench/risk.py`` (or ``--quick``). In one process, same run:

* **engine**: every built-in rule (:func:`bastion.auth.risk.builtin_rules`: failed logins,
  refusal bursts, new device/network, unusual hour, one certificate on two networks, admin
  action after a new source, lateral movement) over a generated ``--events`` log (default 1M):
  200 users with their own networks, devices, working hours and nodes; logins, failed logins,
  refusals, sessions with certificate serials, admin changes, and a few attacks (brute force,
  bursts of refusals, a night login from a new network, lateral movement). Events per second
  of the pure rules.
* **evaluator vs append**: ``--log-events`` of that log appended to a real audit log on the
  default SQLite backend (``emit_many`` in group-commit batches of 500: the writer's best
  case, so the comparison is strict), then the evaluator (:class:`RiskEvaluator`: read from
  its cursor, decode, rules, commit signals and cursor) over the same events. The target:
  evaluation faster than appending, so the evaluator never falls behind.

SCIM deactivation to session closed (p50/p99 over 100 users with live sessions) is measured
by ``python bench/scim.py`` (its last line).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.audit.log import AuditLog
from bastion.auth.risk import RiskEvaluator, builtin_rules
from bastion.auth.risk_rules import RiskEngine
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import SystemClock
from bastion.config.risk import RiskConfig
from bastion.logging import configure_logging
from bastion.types.audit import AuditEvent

T0 = datetime(2026, 1, 5, tzinfo=UTC)
USERS = 200


def generate(count: int, seed: int = 7) -> list[tuple[str, str, dict[str, Any]]]:
    """``(type, outcome, fields)`` in time order: a working population and a few attacks."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict[str, Any]]] = []
    step = timedelta(days=30) / count
    serial = 0
    certs: dict[str, str] = {}
    for i in range(count):
        at = T0 + step * i
        n = rng.randrange(USERS)
        user = f"user{n}"
        hour = 8 + (n % 4) + rng.random() * 3
        at = at.replace(hour=int(hour) % 24)
        ip = f"10.{n // 250}.{n % 250}.{rng.randrange(2, 250)}"
        base = {"time": at, "user": user, "remote_addr": ip}
        roll = rng.random()
        if i % 50_000 == 49_999:  # an attack now and then
            attacker = {"time": at, "remote_addr": "203.0.113.66"}
            for k in range(12):
                out.append(("user.login", "failure", {**attacker, "user": f"ghost{k}"}))
            out.append(("user.login", "success", {**base, "time": at.replace(hour=3),
                                                  "remote_addr": "198.51.100.9"}))  # fmt: skip
            for k in range(12):
                out.append(("session.start", "success", {**base, "target": f"db{k}",
                                                         "cert_serial": "x"}))  # fmt: skip
            continue
        if roll < 0.10:
            serial += 1
            certs[user] = str(serial)
            out.append(("user.login", "success", {**base, "device_id": f"laptop{n}"}))
        elif roll < 0.12:
            out.append(("user.login", "failure", base))
        elif roll < 0.14:
            out.append(("access.denied", "failure", base))
        elif roll < 0.50:
            cert = certs.get(user, f"0-{n}")
            session = {**base, "target": f"node{n % 7}", "cert_serial": cert}
            out.append(("session.start", "success", session))
        elif roll < 0.52:
            out.append(("role.update", "success", {**base, "target": "role/dev"}))
        else:
            out.append(("exec", "success", {**base, "target": f"node{n % 7}", "command": "ls"}))
    return out


def events_of(specs: list[tuple[str, str, dict[str, Any]]]) -> list[AuditEvent]:
    return [
        AuditEvent.model_construct(
            type=t,
            outcome="success" if o == "success" else "failure",
            id=f"e{i}",
            index=i,
            fields={
                k: v
                for k, v in f.items()
                if k not in ("time", "user", "remote_addr", "target", "device_id")
            },
            time=f["time"],
            user=f.get("user", ""),
            remote_addr=f.get("remote_addr", ""),
            target=f.get("target", ""),
            device_id=f.get("device_id", ""),
            code="",
            cluster="",
            login="",
            session_id="",
            reason="",
        )  # fmt: skip
        for i, (t, o, f) in enumerate(specs)
    ]


def engine_rate(events: list[AuditEvent]) -> tuple[float, int]:
    engine = RiskEngine(builtin_rules(RiskConfig()))
    start = time.perf_counter()
    fired = 0
    for event in events:
        fired += len(engine.feed(event))
    return len(events) / (time.perf_counter() - start), fired


async def evaluator_vs_append(specs: list[tuple[str, str, dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp:
        backend = await SQLiteBackend.open(str(Path(tmp) / "state.db"), SystemClock())
        try:
            auth = AuthServer(AuthDeps(backend=backend, clock=SystemClock(), cluster="bench",
                                       kek=b"\x01" * 32))  # fmt: skip
            await auth.init()
            audit: AuditLog = auth.audit
            evaluator = RiskEvaluator.for_auth(RiskConfig(), auth)
            await evaluator.step()  # cursor at the head
            batch = [(t, o, {k: v for k, v in f.items() if k != "time"}) for t, o, f in specs]
            start = time.perf_counter()
            for lo in range(0, len(batch), 500):
                await audit.emit_many(batch[lo : lo + 500])
            append_s = time.perf_counter() - start
            start = time.perf_counter()
            fired = 0
            while True:
                before = evaluator.cursor
                fired += len(await evaluator.step())
                if evaluator.cursor == before or evaluator.cursor == await audit.size():
                    break
            eval_s = time.perf_counter() - start
            append_rate, eval_rate = len(batch) / append_s, len(batch) / eval_s
            print(f"SQLite audit log, {len(batch)} events: append {append_rate:8.0f} events/s"
                  f" (emit_many, batches of 500)   evaluator {eval_rate:8.0f} events/s "
                  f"(read+decode+rules+{fired} signals committed)   evaluator/append "
                  f"{eval_rate / append_rate:.2f}x (target > 1)")  # fmt: skip
        finally:
            await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--log-events", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.events, args.log_events = 20_000, 2_000
    configure_logging("error")
    specs = generate(args.events)
    events = events_of(specs)
    rate, fired = engine_rate(events)
    print(f"rules engine, {len(events)} generated events, {len(builtin_rules(RiskConfig()))} "
          f"built-in rules: {rate:9.0f} events/s ({fired} signals)")  # fmt: skip
    asyncio.run(evaluator_vs_append(specs[: args.log_events]))
    print("SCIM deactivation -> session closed p50/p99: python bench/scim.py (last line)")


if __name__ == "__main__":
    main()
