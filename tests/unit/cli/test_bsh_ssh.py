"""Pure parts of the bsh SSH commands: config rendering, proxy targets, node filtering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bastion.cli.bsh import main
from bastion.cli.bsh_ssh import (
    filter_nodes,
    node_rows,
    parse_proxy_target,
    render_ssh_config,
    ssh_command,
)
from bastion.errors import BadParameter


def _node(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"kind": "node", "metadata": {"name": name, "labels": labels}, "spec": spec}


NODES = [
    _node("id-2", {"env": "prod"}, hostname="web2", addr="10.0.0.2:3022"),
    _node("id-1", {"env": "staging", "team": "db"}, hostname="db1", tunnel=True),
    _node("web3", {"env": "staging"}, cmd_labels={"arch": {"result": "arm64\n"}}),
]


def test_render_ssh_config() -> None:
    text = render_ssh_config("c.example", Path("/h/p dir"), "/venv/bin/bsh")
    lines = [line.strip() for line in text.splitlines()]
    assert "Host *.c.example c.example" in lines
    assert 'ProxyCommand "/venv/bin/bsh" proxy ssh --cluster=c.example %r@%h:%p' in lines
    assert 'IdentityFile "/h/p dir/key"' in lines
    assert 'CertificateFile "/h/p dir/key-cert.pub"' in lines
    assert 'UserKnownHostsFile "/h/p dir/known_hosts"' in lines
    assert {"StrictHostKeyChecking yes", "IdentitiesOnly yes", "Port 22"} <= set(lines)
    algs = next(line for line in lines if line.startswith("HostKeyAlgorithms"))
    assert "ssh-ed25519-cert-v01@openssh.com" in algs
    assert next(line for line in lines if line.startswith("Ciphers")).startswith(
        "Ciphers aes128-gcm@openssh.com,"
    )
    with_home = render_ssh_config("c", Path("/p"), "/b/bsh", home="/x/home")
    assert '"/b/bsh" --home="/x/home" proxy ssh --cluster=c %r@%h:%p' in with_home
    # a --key-store=tpm profile: no key file, bsh device agent signs
    tpm = [
        line.strip()
        for line in render_ssh_config("c", Path("/p"), "/b", agent="/p/a.sock").splitlines()
    ]
    assert "IdentityFile /p/key.pub" in tpm and "IdentityAgent /p/a.sock" in tpm


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("root@node1.c.example:22", ("root", "node1", 22)),
        ("root@node1:2222", ("root", "node1", 2222)),
        ("a@id-1", ("a", "id-1", 22)),
    ],
)
def test_parse_proxy_target(text: str, expected: tuple[str, str, int]) -> None:
    assert parse_proxy_target(text, "c.example") == expected


def test_parse_proxy_target_node_named_like_the_cluster() -> None:
    # all-in-one default: the node and the cluster are both named after the host
    assert parse_proxy_target("root@vm.vm:22", "vm") == ("root", "vm", 22)
    with pytest.raises(BadParameter):
        parse_proxy_target("root@vm:22", "vm")


@pytest.mark.parametrize("text", ["node1:22", "root@c.example:22", "root@node:x", "@n:22"])
def test_parse_proxy_target_rejects(text: str) -> None:
    with pytest.raises(BadParameter):
        parse_proxy_target(text, "c.example")


def test_filter_nodes_by_labels_and_words() -> None:
    names = [n["metadata"]["name"] for n in filter_nodes(NODES, {}, [])]
    assert names == ["id-1", "id-2", "web3"]  # sorted by node name, not OS hostname
    assert [n["metadata"]["name"] for n in filter_nodes(NODES, {"env": "staging"}, [])] == [
        "id-1",
        "web3",
    ]
    assert [n["metadata"]["name"] for n in filter_nodes(NODES, {}, ["WEB"])] == ["id-2", "web3"]
    assert [n["metadata"]["name"] for n in filter_nodes(NODES, {}, ["arm64"])] == ["web3"]
    assert filter_nodes(NODES, {"env": "staging"}, ["prod"]) == []


def test_node_rows_show_node_names_and_tunnels() -> None:
    # the name bsh ssh and ssh NODE.CLUSTER take, never the OS hostname (two nodes may share it)
    twins = [*NODES, _node("web2b", {}, hostname="web2", addr="10.0.0.3:3022")]
    verdicts = {"id-1": True, "id-2": False}  # the server's; the others: it cannot tell
    twins = [{**n, "online": verdicts.get(n["metadata"]["name"])} for n in twins]
    rows = node_rows(filter_nodes(twins, {}, []))
    assert rows[0] == ["id-1", "online", "⟵ tunnel", "env=staging,team=db"]
    assert rows[1] == ["id-2", "offline", "10.0.0.2:3022", "env=prod"]
    assert rows[2] == ["web2b", "-", "10.0.0.3:3022", ""]  # the cluster cannot tell
    assert rows[3] == ["web3", "-", "", "arch=arm64,env=staging"]
    assert [n["metadata"]["name"] for n in filter_nodes(twins, {}, ["web2"])] == ["id-2", "web2b"]


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"BSH_HOME": str(tmp_path)}
    res = runner.invoke(main, ["ssh", "-L", "nonsense", "node1"], env=env)
    assert res.exit_code == 2 and "invalid forward" in res.output
    res = runner.invoke(main, ["ssh", "node1", "true"], env=env)
    assert res.exit_code == 4 and "not logged in" in res.output
    res = runner.invoke(main, ["scp", "a", "b"], env=env)
    assert res.exit_code != 0 and "error:" in res.output
    res = runner.invoke(main, ["ls", "plainword"], env=env)
    assert res.exit_code == 2 and "key=value" in res.output


def test_ssh_passes_command_options_through() -> None:
    cmd = ssh_command
    ctx = cmd.make_context("ssh", ["-p", "2222", "root@n", "ls", "-la", "/tmp"])
    assert ctx.params["command"] == ("ls", "-la", "/tmp")
    assert ctx.params["port"] == 2222 and ctx.params["destination"] == "root@n"
