"""Benchmark of ``bctl policy verify`` (issue 19): Z3 time for the issue's assertions, 50 roles.

Run with ``python bench/policy_solver.py [--rounds N]``. The 20 roles of ``bench/rbac.py`` plus
30 more (random selectors with regexes and templates; every third with a ``where`` condition
from ``bench/policy.py``; a DBA role and a contractor role), then the three assertions of the
issue (only DBAs reach env=prod as root, prod needs per-session MFA, a contractor never
reaches pci=yes) and one that fails. Each assertion is answered ``--rounds`` times from
scratch (encode + solve + replay); prints the answer and median / p99 seconds. No peer ships
a policy solver, so there is no ratio to print. Deterministic roles (seeded).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policy as policy_bench  # noqa: E402
import rbac as rbac_bench  # noqa: E402

from bastion.rbac.solver import Assertion, load_assertions, verify_one  # noqa: E402
from bastion.types.access import Role  # noqa: E402

ASSERTIONS = """
assertions:
  - name: only-dbas-reach-prod-as-root
    resource: {labels: {env: prod}}
    login: root
    expect: only
    only: {traits: {team: [dba]}}
  - name: prod-requires-session-mfa
    resource: {labels: {env: prod}}
    expect: session_mfa
  - name: contractor-never-pci
    user: {roles: [contractor], other_roles: false}
    resource: {labels: {pci: "yes"}}
    expect: unreachable
  - name: contractor-never-prod (fails)
    user: {roles: [contractor], other_roles: false}
    resource: {labels: {env: prod}}
    expect: unreachable
"""


def build_roles() -> list[Role]:
    rng = random.Random(rbac_bench.SEED)
    roles = rbac_bench.build_roles(rng)
    more = []
    for i in range(28):
        selector: dict[str, list[str]] = {}
        for key in rng.sample(sorted(rbac_bench.KEYS), k=rng.randint(1, 2)):
            pick = rng.random()
            if pick < 0.3:
                selector[key] = ["^(" + "|".join(rng.sample(rbac_bench.KEYS[key], 2)) + ")$"]
            elif pick < 0.4:
                selector[key] = ["{{external.team}}"]
            else:
                selector[key] = rng.sample(rbac_bench.KEYS[key], 1)
        selector.setdefault("env", ["dev", "staging"])  # keep prod for the dedicated roles
        allow: dict[str, object] = {
            "logins": ["deploy", "{{internal.logins}}"],
            "node_labels": selector,
        }
        if i % 3 == 0:
            allow["where"] = policy_bench.WHERES[i % len(policy_bench.WHERES)]
        more.append(rbac_bench._role(f"extra-{i}", allow))
    more.append(
        rbac_bench._role(
            "dba",
            {
                "logins": ["root"],
                "node_labels": {"env": "prod"},
                "where": '"dba" in user.traits.team',
            },
        )
    )
    more.append(
        rbac_bench._role(
            "contractor",
            {"logins": ["ubuntu"], "node_labels": {"team": "{{external.team}}"}},
            {"node_labels": {"pci": "yes"}},
        )
    )
    for role in roles + more:  # every path to prod needs MFA in this policy
        role.spec.options.require_session_mfa = True
    return roles + more


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    roles = build_roles()
    assertions: list[Assertion] = load_assertions(ASSERTIONS)
    print(f"{len(roles)} roles, {len(assertions)} assertions, {args.rounds} rounds each")
    everything: list[float] = []
    for assertion in assertions:
        samples = []
        status = ""
        for _ in range(args.rounds):
            start = time.perf_counter()
            result = verify_one(roles, assertion)
            samples.append(time.perf_counter() - start)
            status = result.status
        everything += samples
        ordered = sorted(samples)
        p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
        print(
            f"  {assertion.name:<32} {status:<7} median {statistics.median(samples) * 1000:8.1f} ms"
            f"   p99 {p99 * 1000:8.1f} ms"
        )
    ordered = sorted(everything)
    print(
        f"  all assertions: median {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
