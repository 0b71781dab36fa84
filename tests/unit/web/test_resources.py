"""The resources page's pure parts: label filters, search, sorting and server-side paging (with
10,000 nodes), the query's one-line errors, and escaping in the rendered page."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.contract.web import NodePage, NodeQuery, NodeRow
from bastion.errors import BadParameter
from bastion.web.listing import Page
from bastion.web.resources import node_query, parse_label_filter, render_nodes, select_nodes


def _rows(n: int) -> list[NodeRow]:
    return [
        NodeRow(
            name=f"node{i:05d}",
            addr=f"10.0.{i // 256}.{i % 256}:22",
            labels={"env": "prod" if i % 10 == 0 else "dev", "team": f"t{i % 3}"},
            online=(None, True, False)[i % 3],
            logins=["root"],
        )
        for i in range(n)
    ]


def test_label_filter_takes_spaces_and_commas_and_refuses_other_shapes() -> None:
    assert parse_label_filter(" env=prod, team=web ") == {"env": "prod", "team": "web"}
    assert parse_label_filter("") == {}
    assert parse_label_filter("empty=") == {"empty": ""}
    with pytest.raises(BadParameter, match="expected key=value"):
        parse_label_filter("env")
    with pytest.raises(BadParameter, match="expected key=value"):
        parse_label_filter("=prod")


def test_ten_thousand_nodes_come_one_page_at_a_time() -> None:
    rows = _rows(10_000)
    first = select_nodes(rows, NodeQuery(per_page=50))
    assert (first.total, first.pages, first.page) == (10_000, 200, 1)
    assert [r.name for r in first.items[:2]] == ["node00000", "node00001"]
    assert len(first.items) == 50
    last = select_nodes(rows, NodeQuery(page=200, per_page=50))
    assert last.items[-1].name == "node09999"
    beyond = select_nodes(rows, NodeQuery(page=999, per_page=50))  # past the end: the last
    assert beyond.page == 200 and beyond.items == last.items


def test_labels_and_text_both_filter() -> None:
    rows = _rows(100)
    prod = select_nodes(rows, NodeQuery(label="env=prod", per_page=200))
    assert prod.total == 10 and all(r.labels["env"] == "prod" for r in prod.items)
    both = select_nodes(rows, NodeQuery(label="env=prod team=t0", per_page=200))
    assert [r.name for r in both.items] == ["node00000", "node00030", "node00060", "node00090"]
    by_name = select_nodes(rows, NodeQuery(q="NODE0004", per_page=200))
    assert [r.name for r in by_name.items] == [f"node0004{i}" for i in range(10)]
    by_addr = select_nodes(rows, NodeQuery(q="10.0.0.99:", per_page=200))
    assert [r.name for r in by_addr.items] == ["node00099"]
    by_label = select_nodes(rows, NodeQuery(q="team=t2", per_page=200))
    assert by_label.total == 33
    none = select_nodes(rows, NodeQuery(q="nothing-like-this"))
    assert (none.total, none.pages, none.page, none.items) == (0, 1, 1, [])


def test_sorting_by_column_and_direction() -> None:
    rows = _rows(9)
    down = select_nodes(rows, NodeQuery(sort="-name"))
    assert [r.name for r in down.items][:2] == ["node00008", "node00007"]
    status = select_nodes(rows, NodeQuery(sort="status"))
    assert [r.online for r in status.items] == [True] * 3 + [None] * 3 + [False] * 3
    addr = select_nodes(rows, NodeQuery(sort="-addr"))
    assert addr.items[0].addr == "10.0.0.8:22"


def test_the_query_is_one_line_on_bad_input_and_ignores_unknown_parameters() -> None:
    assert node_query({"q": "x", "page": "2", "utm": "y", "label": ""}) == NodeQuery(q="x", page=2)
    with pytest.raises(BadParameter, match="page") as info:
        node_query({"page": "zero"})
    assert "\n" not in info.value.message
    with pytest.raises(BadParameter, match="sort"):
        node_query({"sort": "color"})
    with pytest.raises(BadParameter, match="per_page"):
        node_query({"per_page": "100000"})


def test_every_user_controlled_string_is_escaped_in_the_page() -> None:
    evil = "<img src=x onerror=alert(1)>"
    row = NodeRow(name=f"n{evil}", addr=evil, labels={"k": evil}, online=True, logins=[evil])
    query = NodeQuery(q=evil, label="")
    page = NodePage(items=[row], total=1, page=1, per_page=50, pages=1)
    html = render_nodes(page, query, user=evil)
    assert evil not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html and "style=" not in html  # no inline code: the CSP forbids it


def test_empty_states_say_what_to_do() -> None:
    empty = NodePage(items=[], total=0, page=1, per_page=50, pages=1)
    assert "your roles select none" in render_nodes(empty, NodeQuery(), "u")
    assert "No node matches" in render_nodes(empty, NodeQuery(q="x"), "u")
    assert "0–0 of 0 nodes" in render_nodes(empty, NodeQuery(), "u")


# ---- databases and apps (the resources page's other tabs) ----------------------------------------


def _one(*rows: object) -> Page[Any]:
    return Page(items=list(rows), total=len(rows), page=1, per_page=50, pages=1)


def test_databases_render_escaped_with_the_connect_command() -> None:
    from bastion.web.resources import DbRow, render_databases

    evil = "<img src=x onerror=alert(1)>"
    row = DbRow("pg<1>", "postgres", {"x": evil}, ("alice", evil), ("app",), True)
    html = render_databases(_one(row), "u<b>")
    assert evil not in html and "<b>" not in html and "&lt;img src=x" in html
    assert "<code>bsh db connect pg&lt;1&gt;</code>" in html
    assert 'aria-current="page">Databases</a>' in html and 'href="/web/nodes"' in html
    assert "online" in html
    assert "may not reach any database" in render_databases(_one(), "u")


def test_apps_render_escaped_with_a_launch_link_or_the_tcp_command() -> None:
    from bastion.web.resources import AppRow, render_apps

    evil = '"><script>x()</script>'
    rows = [
        AppRow("graf ana", "graf.proxy:3080", {"team": evil}, "http"),
        AppRow("pg-tunnel", "pg.proxy:3080", {}, "tcp"),
    ]
    html = render_apps(_one(*rows), "u")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="/web/apps/graf%20ana/launch"' in html
    assert "<code>bsh apps login pg-tunnel</code>" in html
    assert 'aria-current="page">Apps</a>' in html
    assert "may not reach any app" in render_apps(_one(), "u")


def test_the_node_page_links_the_other_kinds() -> None:
    from bastion.web.resources import resource_tabs

    tabs = resource_tabs("/web/nodes")
    assert 'href="/web/nodes" aria-current="page">Servers' in tabs
    assert 'href="/web/databases">Databases' in tabs and 'href="/web/apps">Apps' in tabs
