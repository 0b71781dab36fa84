"""Benchmark of ``where`` conditions and access explained (issue 19).

Run with ``python bench/policy.py [--quick] [--json FILE]``. Uses the 20 roles x 10,000 nodes of
``bench/rbac.py`` and measures, per ``check_node_access`` call (``perf_counter_ns``):

* **plain**: the roles as they are (no conditions);
* **where, per connection**: 10 of the 20 roles gain a ``where`` (time, traits, source IP, MFA,
  and two that read ``resource.labels``), and each check gets a fresh :class:`AccessContext`,
  as each proxied connection does;
* **where, one sweep**: the same roles with one context for all nodes (what ``bctl access ls``
  and ``who`` do: resource-independent conditions are evaluated once).

Then ``who_can`` (``bctl access who``) for every one of the nodes with 50 users, and ``reachable``
(``bctl access ls``) for one user over all nodes. Target (issue 19): conditions add at most 2x to
the median decision. Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rbac as rbac_bench  # noqa: E402  (bench/rbac.py: the same roles and nodes)

from bastion.rbac import AccessContext, RoleSet  # noqa: E402
from bastion.rbac.explain import Subject, reachable, who_can  # noqa: E402
from bastion.types.access import Role  # noqa: E402

TARGET_RATIO = 2.0
WHERES = [
    "request.time.getHours() >= 6 && request.time.getHours() < 23",
    '"web" in user.traits.team',
    'request.source_ip.startsWith("10.")',
    "!request.mfa_verified || request.mfa_verified",
    'resource.labels.env != "prod" || request.mfa_verified',
    'user.name == "alice" && size(user.roles) > 0',
    'has(resource.labels.team) || resource.labels.env == "dev"',
    "request.time.getDayOfWeek() >= 0",
    'user.traits.logins.exists(l, l == "alice")',
    '!("contractor" in user.traits.team)',
]
NOW = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)


def with_conditions(roles: Sequence[Role]) -> list[Role]:
    """Every other role (allow side) gets one of :data:`WHERES`."""
    out = []
    for i, role in enumerate(roles):
        copy = role.model_copy(deep=True)
        if i % 2 == 0 and copy.spec.allow.logins:
            copy.spec.allow.where = WHERES[(i // 2) % len(WHERES)]
        out.append(copy)
    return out


def context() -> AccessContext:
    return AccessContext(
        user="alice",
        roles=("dev",),
        traits=rbac_bench.TRAITS,
        source_ip="10.1.2.3",
        time=NOW,
        mfa_verified=True,
    )


def time_each(fn: Callable[[str, dict[str, str], str], object], nodes: Sequence[Any]) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for name, labels, login in nodes:
        start = clock()
        fn(name, labels, login)
        samples.append(clock() - start)
    return samples


def stats(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered) / 1000,
        "p99_us": ordered[max(0, int(len(ordered) * 0.99) - 1)] / 1000,
    }


def run(nodes_count: int, users_count: int) -> dict[str, Any]:
    rng = random.Random(rbac_bench.SEED)
    roles = rbac_bench.build_roles(rng)
    nodes = rbac_bench.build_nodes(rng)[:nodes_count]
    conditional = with_conditions(roles)
    plain_set = RoleSet.from_roles(roles, rbac_bench.TRAITS)
    where_set = RoleSet.from_roles(conditional, rbac_bench.TRAITS)
    sweep = context()

    def plain(name: str, labels: dict[str, str], login: str) -> object:
        return plain_set.check_node_access(name, labels, login, context=None)

    def per_connection(name: str, labels: dict[str, str], login: str) -> object:
        return where_set.check_node_access(name, labels, login, context=context())

    def one_sweep(name: str, labels: dict[str, str], login: str) -> object:
        return where_set.check_node_access(name, labels, login, context=sweep)

    for fn in (plain, per_connection, one_sweep):
        time_each(fn, nodes[:300])  # warm up (compile caches, branch predictors)
    result: dict[str, Any] = {"roles": len(roles), "nodes": len(nodes), "conditions": 10}
    result["plain"] = stats(time_each(plain, nodes))
    result["where_per_connection"] = stats(time_each(per_connection, nodes))
    result["where_one_sweep"] = stats(time_each(one_sweep, nodes))
    base = result["plain"]["median_us"]
    result["ratio_per_connection"] = result["where_per_connection"]["median_us"] / base
    result["ratio_one_sweep"] = result["where_one_sweep"]["median_us"] / base

    names = [f"user{i}" for i in range(users_count)]
    subjects = [
        Subject(n, tuple(conditional[j] for j in rng.sample(range(20), 3)), rbac_bench.TRAITS)
        for n in names
    ]
    targets = [(name, labels) for name, labels, _ in nodes]
    start = time.perf_counter()
    granted = len(who_can(subjects, targets, "ubuntu", time=NOW, source_ip="10.0.0.1"))
    result["who_all_nodes_s"] = time.perf_counter() - start
    one: list[int] = []
    for name, labels in targets[:200]:  # one bctl access who: one node, every user
        t0 = time.perf_counter_ns()
        who_can(subjects, [(name, labels)], "ubuntu", time=NOW, source_ip="10.0.0.1")
        one.append(time.perf_counter_ns() - t0)
    result["who_one_node"] = stats(one)
    result["who_users"] = users_count
    result["who_grants"] = granted
    alice = Subject("alice", tuple(conditional), rbac_bench.TRAITS)
    start = time.perf_counter()
    pairs = reachable(alice, [(n, labels) for n, labels, _ in nodes], context=context())
    result["ls_s"] = time.perf_counter() - start
    result["ls_pairs"] = len(pairs)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes, 10 users")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = run(1_000 if args.quick else rbac_bench.NODES, 10 if args.quick else 50)
    print(f"{result['roles']} roles ({result['conditions']} with where), {result['nodes']:,} nodes")
    for key in ("plain", "where_per_connection", "where_one_sweep"):
        s = result[key]
        print(f"  {key:<22} median {s['median_us']:8.2f} us   p99 {s['p99_us']:8.2f} us")
    print(
        f"  ratio (median, where/plain): per connection {result['ratio_per_connection']:.2f}x, "
        f"one sweep {result['ratio_one_sweep']:.2f}x"
    )
    print(
        f"  bctl access who, {result['who_users']} users x every node (login ubuntu): "
        f"{result['who_all_nodes_s']:.2f} s ({result['who_grants']:,} grants); one node: "
        f"median {result['who_one_node']['median_us'] / 1000:.2f} ms"
    )
    print(
        f"  bctl access ls, one user over every node: {result['ls_s'] * 1000:.1f} ms "
        f"({result['ls_pairs']:,} node/login pairs)"
    )
    ok = result["ratio_per_connection"] <= TARGET_RATIO
    print(
        f"Target (issue 19): conditions add at most {TARGET_RATIO:.0f}x: "
        f"{'met' if ok else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
