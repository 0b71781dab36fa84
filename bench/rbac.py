"""Benchmark of the RBAC checker: 20 roles against 10,000 nodes with random labels.

Run with ``python bench/rbac.py``. Times every ``check_node_access`` and ``check_node_visible``
call individually (``perf_counter_ns``) and prints median / p99 per check in microseconds and
throughput, next to the floor: the same loop doing one bare dict lookup per node. Target: the
median check is at most 50 us. Deterministic (seeded) and bounded well under 20 s.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bastion.rbac import RoleSet
from bastion.types.access import Role, RoleConditions, RoleSpec
from bastion.types.meta import Metadata

NODES = 10_000
SEED = 1234
TARGET_MEDIAN_US = 50.0
KEYS = {
    "env": ["prod", "staging", "dev", "qa"],
    "team": ["web", "db", "infra", "ml", "payments", "search"],
    "region": ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"],
    "os": ["ubuntu", "debian", "rhel"],
    "tier": ["frontend", "backend", "batch"],
}
LOGINS = ["alice", "ubuntu", "root", "deploy", "web-admin", "ec2-user"]
TRAITS = {
    "logins": ["alice", "ubuntu"],
    "team": ["web", "payments"],
    "email": ["alice@example.com"],
}


def _role(name: str, allow: dict[str, Any], deny: dict[str, Any] | None = None) -> Role:
    spec = RoleSpec(allow=RoleConditions(**allow), deny=RoleConditions(**(deny or {})))
    return Role(metadata=Metadata(name=name), spec=spec)


def build_roles(rng: random.Random) -> list[Role]:
    """20 roles: exact, ``*``, regex and templated selectors, three with deny sections."""
    fixed = [
        _role(
            "team-admin",
            {"logins": ["{{external.team}}-admin"], "node_labels": {"team": "{{external.team}}"}},
        ),
        _role("dev", {"logins": ["{{internal.logins}}"], "node_labels": {"env": ["dev", "qa"]}}),
        _role("eu", {"logins": ["deploy"], "node_labels": {"region": "^eu-.*$", "tier": "*"}}),
        _role(
            "email",
            {"logins": ["{{email.local(external.email)}}"], "node_labels": {"os": "ubuntu"}},
        ),
        _role("no-prod-root", {}, {"logins": ["root"]}),
        _role("no-payments-prod", {}, {"node_labels": {"team": "payments", "env": "prod"}}),
        _role("no-ap", {}, {"node_labels": {"region": "^ap-.*$"}}),
        _role("everything-ec2", {"logins": ["ec2-user"], "node_labels": {"*": "*", "os": "rhel"}}),
    ]
    random_roles = []
    for i in range(20 - len(fixed)):
        selector: dict[str, list[str]] = {}
        for key in rng.sample(sorted(KEYS), k=rng.randint(1, 3)):
            kind = rng.random()
            if kind < 0.2:
                selector[key] = ["*"]
            elif kind < 0.5:
                selector[key] = ["^(" + "|".join(rng.sample(KEYS[key], 2)) + ")$"]
            else:
                selector[key] = rng.sample(KEYS[key], rng.randint(1, 2))
        logins = rng.sample(LOGINS[:4] + ["{{internal.logins}}"], rng.randint(1, 2))
        random_roles.append(_role(f"random-{i}", {"logins": logins, "node_labels": selector}))
    return fixed + random_roles


def build_nodes(rng: random.Random) -> list[tuple[str, dict[str, str], str]]:
    nodes = []
    for i in range(NODES):
        keys = rng.sample(sorted(KEYS), k=rng.randint(2, len(KEYS)))
        labels = {key: rng.choice(KEYS[key]) for key in keys}
        nodes.append((f"node-{i}", labels, rng.choice(LOGINS)))
    return nodes


def time_each(
    fn: Callable[[str, dict[str, str], str], object],
    nodes: Sequence[tuple[str, dict[str, str], str]],
) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for name, labels, login in nodes:
        start = clock()
        fn(name, labels, login)
        samples.append(clock() - start)
    return samples


def report(label: str, samples: list[int], floor_median: float | None = None) -> float:
    ordered = sorted(samples)
    median = statistics.median(ordered) / 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] / 1000
    per_second = len(samples) / (sum(samples) / 1e9)
    ratio = f"  {median / floor_median:7.1f}x floor" if floor_median else ""
    timing = f"median {median:8.2f} us   p99 {p99:8.2f} us"
    print(f"{label:<22} {timing}   {per_second:>12,.0f} checks/s{ratio}")
    return median


def main() -> int:
    rng = random.Random(SEED)
    roles = build_roles(rng)
    nodes = build_nodes(rng)
    start = time.perf_counter()
    role_set = RoleSet.from_roles(roles, TRAITS)
    build_us = (time.perf_counter() - start) * 1e6
    print(f"{len(roles)} roles, {len(nodes):,} nodes; RoleSet.from_roles took {build_us:,.0f} us")

    def floor(name: str, labels: dict[str, str], login: str) -> object:
        return labels.get("env")

    def access(name: str, labels: dict[str, str], login: str) -> object:
        return role_set.check_node_access(name, labels, login)

    def visible(name: str, labels: dict[str, str], login: str) -> object:
        return role_set.check_node_visible(name, labels)

    time_each(access, nodes[:500])  # warm caches
    floor_median = report("floor (dict lookup)", time_each(floor, nodes))
    medians = [
        report("check_node_access", time_each(access, nodes), floor_median),
        report("check_node_visible", time_each(visible, nodes), floor_median),
    ]
    allowed = sum(role_set.check_node_access(*n).allowed for n in nodes)
    shown = sum(role_set.check_node_visible(n[0], n[1]).allowed for n in nodes)
    print(f"outcome: {allowed:,} access allowed, {shown:,} nodes visible (of {len(nodes):,})")
    ok = max(medians) <= TARGET_MEDIAN_US
    print(f"target median <= {TARGET_MEDIAN_US:.0f} us: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
