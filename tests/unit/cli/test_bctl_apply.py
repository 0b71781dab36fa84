"""Policy as code, the pure half: loading files, planning, rendering (the API half runs in
tests/integration/test_policy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.cli.bctl_apply import load_files, parse_selector, plan, render_plan
from bastion.errors import BadParameter
from bastion.types import load_resources
from bastion.types.meta import Resource

ROLE = """kind: role
metadata: {name: dev}
spec:
  allow: {logins: [alice], node_labels: {env: dev}}
"""
USER = """kind: user
metadata: {name: alice}
spec: {roles: [dev]}
"""


def _cluster(*docs: str, labels: dict[str, str] | None = None) -> dict[str, list[Resource]]:
    out: dict[str, list[Resource]] = {}
    for doc in docs:
        for res in load_resources(doc):
            res.metadata.labels.update(labels or {})
            res.metadata.revision = "7"
            out.setdefault(res.kind, []).append(res)
    return out


def test_create_then_noop_then_update() -> None:
    desired = load_resources(ROLE + "---\n" + USER)
    first = plan(desired, {})
    assert [(c.action, c.kind) for c in first.changes] == [("create", "role"), ("create", "user")]
    assert first.changes[0].resource is not None
    assert first.changes[0].resource.metadata.labels == {"managed-by": "git"}
    applied = _cluster(ROLE, USER, labels={"managed-by": "git"})
    assert plan(desired, applied).empty
    changed = load_resources(ROLE.replace("[alice]", "[alice, root]"))
    update = plan(changed, applied).changes
    assert [(c.action, c.name) for c in update] == [("update", "dev")]
    assert update[0].resource is not None and update[0].resource.metadata.revision == "7"
    assert "root" in update[0].diff


def test_server_fields_do_not_count_as_changes() -> None:
    applied = _cluster(USER, labels={"managed-by": "git"})
    applied["user"][0].spec.epoch = "e1"
    applied["user"][0].spec.created_by = "admin"
    assert plan(load_resources(USER), applied).empty


def test_prune_removes_only_managed() -> None:
    cluster = _cluster(ROLE, labels={"managed-by": "git"})
    cluster["role"] += _cluster(ROLE.replace("dev}", "ops}"))["role"]  # hand-made, unlabelled
    assert plan([], cluster).empty  # without --prune nothing is deleted
    pruned = plan([], cluster, prune=True).changes
    assert [(c.action, c.name) for c in pruned] == [("delete", "dev")]
    other = plan([], cluster, prune=True, selector=("managed-by", "terraform"))
    assert other.empty


def test_render_plan() -> None:
    assert "nothing to do" in render_plan(plan([], {}))
    text = render_plan(plan(load_resources(ROLE), {}))
    assert text.startswith("plan: 1 to create, 0 to update, 0 to delete")
    assert "+ create role/dev" in text


def test_load_files_refuses_bad_file_naming_it(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ROLE)
    (tmp_path / "b.yaml").write_text(ROLE.replace("{logins", "{where: 'user.nme == 1', logins"))
    with pytest.raises(BadParameter) as err:
        load_files([tmp_path])
    assert "b.yaml" in err.value.message and "spec.allow.where" in err.value.message


def test_load_files_refuses_duplicates_and_unmanaged_kinds(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ROLE)
    (tmp_path / "b.yml").write_text(ROLE)
    with pytest.raises(BadParameter, match="also defined in"):
        load_files([tmp_path])
    node = tmp_path / "n.json"
    node.write_text('{"kind": "node", "metadata": {"name": "n"}, "spec": {}}')
    with pytest.raises(BadParameter, match="bctl apply manages"):
        load_files([node])
    with pytest.raises(BadParameter, match="no such file"):
        load_files([tmp_path / "missing"])


def test_parse_selector() -> None:
    assert parse_selector("managed-by=git") == ("managed-by", "git")
    with pytest.raises(BadParameter):
        parse_selector("managed-by")
