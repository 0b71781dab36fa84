"""``bctl policy verify --roles`` offline, through click's runner (exit codes, output)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bastion.cli.bctl import main
from bastion.cli.bctl_policy import load_roles, verify_planned

ROLES = """kind: role
metadata: {name: contractor}
spec:
  allow: {logins: [ubuntu], node_labels: {team: web}}
  deny: {node_labels: {pci: "yes"}}
"""
HOLDS = """assertions:
  - {name: pci, user: {roles: [contractor]}, resource: {labels: {pci: "yes"}}, expect: unreachable}
"""
FAILS = """assertions:
  - {name: web, user: {roles: [contractor]}, resource: {labels: {team: web}}, expect: unreachable}
"""
UNKNOWN = """assertions:
  - {name: ghost, user: {roles: [ghost]}, expect: unreachable}
"""


def _run(tmp_path: Path, assertions: str) -> tuple[int, str]:
    (tmp_path / "roles").mkdir(exist_ok=True)
    (tmp_path / "roles" / "contractor.yaml").write_text(ROLES)
    (tmp_path / "a.yaml").write_text(assertions)
    result = CliRunner().invoke(
        main,
        ["policy", "verify", "-f", str(tmp_path / "a.yaml"), "--roles", str(tmp_path / "roles")],
    )
    return result.exit_code, result.output


def test_holds_exit_0(tmp_path: Path) -> None:
    code, out = _run(tmp_path, HOLDS)
    assert code == 0 and "HOLDS   pci" in out


def test_fails_exit_1_with_counterexample(tmp_path: Path) -> None:
    code, out = _run(tmp_path, FAILS)
    assert code == 1 and "FAILS   web" in out
    assert '"team": "web"' in out and 'checker: role "contractor" allows' in out


def test_unknown_exit_3(tmp_path: Path) -> None:
    code, out = _run(tmp_path, UNKNOWN)
    assert code == 3 and "no role named ghost" in out


def test_bad_file_one_line_error(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "assertions: [{name: a, expect: never}]")
    assert code == 1 and out.count("\n") == 1 and "assertions[0].expect" in out


def test_verify_planned_refuses_breaking_change(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(ROLES)
    (tmp_path / "a.yaml").write_text(HOLDS)
    current = load_roles([str(tmp_path / "r.yaml")])
    assert verify_planned(str(tmp_path / "a.yaml"), current, [])
    loosened = current[0].model_copy(deep=True)
    loosened.spec.deny.node_labels = {}
    loosened.spec.allow.node_labels = {"*": ["*"]}
    assert not verify_planned(
        str(tmp_path / "a.yaml"), current, [("update", "contractor", loosened)]
    )
