"""Policy end to end: ``where`` conditions on a live cluster, ``bctl access`` and ``bctl apply``.

The real daemon and the real bctl: apply plans, applies, re-applies as a no-op, prunes only
what it manages, refuses a whole apply for one bad file; access check/ls/who explain with time
conditions.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from harness import Env, unique

pytestmark = pytest.mark.integration

DAY = "2026-12-07T10:00:00Z"
NIGHT = "2026-12-07T22:00:00Z"


def _write(path: Path, *docs: dict[str, object]) -> None:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))


def _role(name: str, logins: list[str], where: str = "") -> dict[str, object]:
    allow: dict[str, object] = {"logins": logins, "node_labels": {"*": "*"}}
    if where:
        allow["where"] = where
    return {"kind": "role", "metadata": {"name": name}, "spec": {"allow": allow}}


def _user(name: str, roles: list[str]) -> dict[str, object]:
    return {"kind": "user", "metadata": {"name": name}, "spec": {"roles": roles}}


def test_apply_plan_noop_update_prune_and_bad_file(env: Env, tmp_path: Path) -> None:
    role, user, keep = unique("r"), unique("u"), unique("k")
    selector = f"--selector=managed-by={unique('t')}"
    policy = tmp_path / "policy"
    policy.mkdir()
    _write(policy / "roles.yaml", _role(role, ["ubuntu"]), _role(keep, ["ubuntu"]))
    _write(policy / "users.yaml", _user(user, [role]))

    diff = env.admin("diff", "-f", str(policy), selector)
    assert diff.returncode == 2, diff.stderr
    assert "plan: 3 to create" in diff.stdout and f"+ create role/{role}" in diff.stdout
    assert env.admin("get", f"role/{role}").returncode != 0  # diff changed nothing

    applied = env.admin("apply", "-f", str(policy), selector)
    assert applied.returncode == 2, applied.stderr
    assert f"created user/{user}" in applied.stdout
    got = json.loads(env.admin_ok("get", f"role/{role}", "--format", "json"))
    assert got["metadata"]["labels"]["managed-by"].startswith("t")

    again = env.admin("apply", "-f", str(policy), selector)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout

    _write(policy / "roles.yaml", _role(role, ["ubuntu", "root"]), _role(keep, ["ubuntu"]))
    updated = env.admin("apply", "-f", str(policy), selector)
    assert updated.returncode == 2 and f"~ update role/{role}" in updated.stdout
    assert "+      - root" in updated.stdout or "root" in updated.stdout

    (policy / "zz-bad.yaml").write_text(
        yaml.safe_dump(_role(unique("bad"), ["x"], where="user.nme == 'a'"))
    )
    (policy / "users.yaml").unlink()
    refused = env.admin("apply", "-f", str(policy), "--prune", selector)
    assert refused.returncode == 1 and "zz-bad.yaml" in refused.stderr
    assert "unknown field user.nme" in refused.stderr
    assert env.admin("get", f"user/{user}").returncode == 0  # nothing applied
    (policy / "zz-bad.yaml").unlink()

    hand_made = unique("h")
    env.admin_ok("create", "-f", "-", input=yaml.safe_dump(_role(hand_made, ["ubuntu"])))
    pruned = env.admin("apply", "-f", str(policy), "--prune", selector)
    assert pruned.returncode == 2 and f"deleted user/{user}" in pruned.stdout
    assert env.admin("get", f"user/{user}").returncode != 0
    assert env.admin("get", f"role/{hand_made}").returncode == 0  # not managed: kept
    assert env.admin("get", f"role/{keep}").returncode == 0


def test_access_check_ls_who_with_time_condition(env: Env, tmp_path: Path) -> None:
    node = socket.gethostname()  # the all-in-one daemon's own node
    role, user = unique("biz"), unique("u")
    hours = "request.time.getHours() >= 8 && request.time.getHours() < 18"
    policy = tmp_path / "p.yaml"
    _write(policy, _role(role, ["root"], where=hours), _user(user, [role]))
    assert (
        env.admin("apply", "-f", str(policy), f"--selector=managed-by={unique('t')}").returncode
        == 2
    )

    day = env.admin(
        "access", "check", f"--user={user}", f"--node={node}", "--login=root", f"--at={DAY}"
    )
    assert day.returncode == 0, day.stderr
    assert day.stdout.startswith("ALLOWED") and f'role "{role}"' in day.stdout
    night = env.admin_ok(
        "access", "check", f"--user={user}", f"--node={node}", "--login=root", f"--at={NIGHT}"
    )
    assert night.startswith("DENIED") and "condition not met" in night

    listed = json.loads(
        env.admin_ok("access", "ls", f"--user={user}", f"--at={DAY}", "--format", "json")
    )
    # The shared cluster holds other tests' nodes too (the role selects every node): this node
    # is reachable as root, and only as root.
    assert {g["login"] for g in listed} == {"root"}
    assert (node, "root") in {(g["node"], g["login"]) for g in listed}
    who = json.loads(
        env.admin_ok(
            "access", "who", f"--node={node}", "--login=root", f"--at={NIGHT}", "--format", "json"
        )
    )
    assert user not in {g["user"] for g in who}
    who_day = env.admin_ok("access", "who", f"--node={node}", "--login=root", f"--at={DAY}")
    assert user in who_day


def test_policy_verify_against_the_cluster_and_apply_verify(env: Env, tmp_path: Path) -> None:
    """``bctl policy verify`` reads the cluster's roles; ``apply --verify`` refuses a change
    that breaks an assertion and writes nothing."""
    label = unique("zone")
    contractor = unique("contractor")
    role = {
        "kind": "role",
        "metadata": {"name": contractor},
        "spec": {"allow": {"logins": ["ubuntu"], "node_labels": {label: ["dev"]}}},
    }
    env.admin_ok("create", "-f", "-", input=yaml.safe_dump(role))
    assertions = tmp_path / "assertions.yaml"
    assertions.write_text(
        yaml.safe_dump(
            {
                "assertions": [
                    {
                        "name": "contractor-never-prod",
                        "user": {"roles": [contractor], "other_roles": False},
                        "resource": {"labels": {label: "prod"}},
                        "expect": "unreachable",
                    }
                ]
            }
        )
    )
    held = env.admin("policy", "verify", "-f", str(assertions))
    assert held.returncode == 0, held.stdout + held.stderr
    assert "holds" in held.stdout

    widened = tmp_path / "widened"
    widened.mkdir()
    role["spec"] = {"allow": {"logins": ["ubuntu"], "node_labels": {"*": "*"}}}
    _write(widened / "role.yaml", role)
    refused = env.admin("apply", "-f", str(widened), "--verify", str(assertions))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "contractor-never-prod" in refused.stdout + refused.stderr
    got = json.loads(env.admin_ok("get", f"role/{contractor}", "--format", "json"))
    assert got["spec"]["allow"]["node_labels"] == {label: ["dev"]}  # nothing written
