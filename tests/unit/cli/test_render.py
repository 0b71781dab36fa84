"""Table rows and output formats of the CLIs."""

from __future__ import annotations

import json

import pytest
import yaml

from bastion.cli.render import (
    COLUMNS,
    print_resources,
    print_table,
    resource_row,
    short_time,
    user_status,
)
from bastion.rbac.builtin import builtin_role
from bastion.types.codec import resource_to_dict

ROLE = resource_to_dict(builtin_role("access"))
USER = {
    "kind": "user",
    "metadata": {"name": "alice"},
    "spec": {
        "roles": ["access"],
        "traits": {"logins": ["alice", "root"]},
        "status": {"locked_until": "2030-01-01T00:00:00+00:00"},
    },
}


def test_rows_per_kind() -> None:
    assert resource_row(USER) == [
        "alice",
        "access",
        "alice,root",
        "locked until 2030-01-01 00:00:00 UTC",
    ]
    row = resource_row(ROLE)
    assert row[:4] == ["access", "{{internal.logins}}", "*=*", "node:list,read"]
    assert resource_row({"kind": "widget", "metadata": {"name": "w", "labels": {"a": "b"}}}) == [
        "w",
        "a=b",
        "",
    ]


def test_user_status_shows_pending_and_expired_invites() -> None:
    assert user_status({}) == "active"
    pending = {"sign_up": "pending", "invite_expires": "2030-01-02T03:04:05.678901+00:00"}
    assert user_status(pending) == "invite pending (expires 2030-01-02 03:04:05 UTC)"
    assert user_status({"sign_up": "expired"}) == "invite expired (bctl users reset NAME)"
    assert short_time("not a time") == "not a time"


@pytest.mark.parametrize("single", [True, False])
def test_json_and_yaml_round_trip(capsys: pytest.CaptureFixture[str], single: bool) -> None:
    items = [ROLE] if single else [ROLE, USER]
    print_resources("role", items, "json", single)
    out = json.loads(capsys.readouterr().out)
    assert out == (ROLE if single else items)
    print_resources("role", items, "yaml", single)
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == items


def test_text_table_and_empty(capsys: pytest.CaptureFixture[str]) -> None:
    print_resources("user", [USER], "text", False)
    out = capsys.readouterr().out
    assert "Name" in out and "alice,root" in out
    print_resources("user", [], "text", False)
    assert capsys.readouterr().out.strip() == "no user resources"


def test_table_cells_are_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Security review: audit rows carry attacker-chosen strings (the user name of a failed
    login, an IdP's claims). Read as rich markup, ``[/x]`` made ``bctl audit search`` crash for
    everyone and ``[conceal]`` hid a row's name on a terminal."""
    from bastion.cli.render import print_table

    print_table(["user", "reason"], [["[/x]", "unknown user"], ["[conceal]mallory[/conceal]", "y"]])
    out = capsys.readouterr().out
    assert "[/x]" in out and "[conceal]mallory[/conceal]" in out


def test_key_value_table_has_no_blank_header_line(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(["", ""], [["Cluster", "vm"], ["User", "admin"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Cluster", "vm"] and len(lines) == 2


def test_narrow_tables_wrap_between_words_never_inside_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = "connector=github-enterprise-cloud,team=platform-infrastructure"
    print_table(
        ["Name", "Labels", "Description"],
        [["github", labels, "the company single sign on for every engineer"]],
        width=40,
    )
    out = capsys.readouterr().out
    assert labels in out  # one word: kept whole even though the terminal is narrower
    assert "github" in out.split()
    words = out.split()
    for word in "the company single sign on for every engineer".split():
        assert word in words  # wrapped at spaces, each word whole


def test_column_widths_keep_words_whole() -> None:
    from bastion.cli.render import column_widths

    cols = ["Name", "Description"]
    rows = [["github", "single sign on"]]
    assert column_widths(cols, rows, 80) == [6, 14]  # fits: one line per cell
    assert column_widths(cols, rows, 12) == [6, 11]  # too narrow: the longest words


def test_trust_rows() -> None:
    remote = {
        "kind": "remote_cluster",
        "metadata": {"name": "leaf.test"},
        "spec": {"connection": "online", "last_heartbeat": "2026-01-01T00:00:00+00:00"},
    }
    assert resource_row(remote) == ["leaf.test", "online", "2026-01-01 00:00:00 UTC"]
    offline = {"kind": "remote_cluster", "metadata": {"name": "b"}, "spec": {}}
    assert resource_row(offline) == ["b", "", "-"]
    trusted = {
        "kind": "trusted_cluster",
        "metadata": {"name": "root.test"},
        "spec": {"enabled": False, "proxy_addr": "r:3080", "status": {}},
    }
    assert resource_row(trusted) == ["root.test", "no (suspended)", "r:3080", "-"]


def test_nodes_and_databases_show_their_command_labels_results() -> None:
    node = {
        "kind": "node",
        "metadata": {"name": "web1", "labels": {"env": "prod"}},
        "spec": {"hostname": "web1", "addr": "", "cmd_labels": {"kernel": {"result": "6.1"}}},
    }
    assert resource_row(node)[3] == "env=prod,kernel=6.1"
    db = {
        "kind": "db",
        "metadata": {"name": "orders", "labels": {"env": "prod"}, "description": "main"},
        "spec": {
            "protocol": "postgres",
            "uri": "db.internal:5432",
            "dynamic_labels": {"role": {"command": ["pg-role"], "result": "primary"}},
        },
    }
    row = resource_row(db)
    assert row[:3] == ["orders", "postgres", "db.internal:5432"] and row[4] == "main"
    assert row[3] == "env=prod,role=primary"
    assert len(COLUMNS["db"]) == len(row)
