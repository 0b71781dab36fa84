"""bsh ls: the listing through the stdlib transport, filters, table and JSON (pure: the
transport is replaced by a fake that answers with typed replies)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bastion.cli import bsh_ls
from bastion.cli.bsh import main
from bastion.contract.resources import LIST_RESOURCES, ResourceList
from bastion.types.inventory import Node


def _profile(home: Path, expires: str = "2999-01-01T00:00:00+00:00") -> None:
    pdir = home / "profiles" / "c.test"
    pdir.mkdir(parents=True)
    (home / "current").write_text("c.test")
    profile = {"name": "c.test", "proxy": "127.0.0.1:1", "user": "alice", "cluster": "c.test",
               "expires": expires}  # fmt: skip
    (pdir / "profile.json").write_text(json.dumps(profile))


def _node(name: str, labels: dict[str, str], **spec: Any) -> Node:
    return Node.model_validate(
        {"kind": "node", "metadata": {"name": name, "labels": labels}, "spec": spec}
    )


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def fake_send(ctx: object, addr: str, endpoint: object, **kw: Any) -> ResourceList:
        calls.append((addr, endpoint, kw))
        nodes = [_node("web2", {"env": "prod"}, hostname="vm", addr="10.0.0.2:3022"),
                 _node("db1", {"env": "dev"}, hostname="vm", tunnel=True)]  # fmt: skip
        return ResourceList(items=nodes, online={"web2": True, "db1": False})

    monkeypatch.setattr(bsh_ls, "send_sync", fake_send)
    monkeypatch.setattr(bsh_ls, "profile_context", lambda *a: None)
    monkeypatch.setenv("BSH_HOME", str(tmp_path))
    _profile(tmp_path)
    return calls


def test_lists_names_status_and_labels_through_the_typed_contract(
    listed: list[tuple[Any, ...]],
) -> None:
    res = CliRunner().invoke(main, ["ls"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ADDRESS", "LABELS"]
    assert lines[1].split() == ["db1", "offline", "⟵", "tunnel", "env=dev"]
    assert lines[2].split() == ["web2", "online", "10.0.0.2:3022", "env=prod"]
    assert listed == [("127.0.0.1:1", LIST_RESOURCES, {"path": {"kind": "node"}})]


def test_filters_and_json(listed: list[tuple[Any, ...]]) -> None:
    res = CliRunner().invoke(main, ["ls", "env=prod", "--format", "json"])
    nodes = json.loads(res.output)
    assert [n["metadata"]["name"] for n in nodes] == ["web2"] and nodes[0]["online"] is True
    res = CliRunner().invoke(main, ["ls", "--search", "nothing-like-it"])
    assert res.exit_code == 0 and "No nodes found." in res.output


def test_an_expired_login_says_how_to_renew_before_any_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BSH_HOME", str(tmp_path))
    _profile(tmp_path, expires="2000-01-01T00:00:00+00:00")
    monkeypatch.setattr(bsh_ls, "send_sync", lambda *a, **k: pytest.fail("no request"))
    res = CliRunner().invoke(main, ["ls"])
    assert res.exit_code == 3 and "run bsh login" in res.output


def test_ls_loads_no_aiohttp_asyncssh_or_cryptography(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom bastion.cli.bsh import main\n"
        "try:\n    main(['ls'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('aiohttp', 'asyncssh', 'cryptography') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"BSH_HOME": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
