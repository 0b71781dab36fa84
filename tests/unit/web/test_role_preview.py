"""The role access preview's pure parts: the nodes and logins, databases and apps a user holding
only the role may reach (the RBAC checker's answers: deny rules, conditions, per-session MFA),
and the preview section escaped, paged like the resources page, with the unsaved text's filter
and pager as buttons inside the editor's form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bastion.types.access import Role
from bastion.types.apps import App
from bastion.types.codec import load_resources
from bastion.types.database import Database
from bastion.web.listing import ListQuery, Page, select
from bastion.web.role_preview import (
    PreviewNode,
    preview_apps,
    preview_databases,
    preview_nodes,
    preview_path,
    preview_table,
    render_preview,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EVIL = "<img src=x onerror=alert(1)>"


def _one(text: str) -> Any:
    (resource,) = load_resources(text, "test")
    return resource


def _role(allow: str, deny: str = "{}", options: str = "{}") -> Role:
    role = _one(
        "kind: role\nversion: v1\nmetadata: {name: web-dev}\n"
        f"spec: {{allow: {allow}, deny: {deny}, options: {options}}}\n"
    )
    assert isinstance(role, Role)
    return role


NODES = [
    ("web1", "10.0.0.1:22", {"env": "prod", "team": "web"}),
    ("web2", "10.0.0.2:22", {"env": "dev", "team": "web"}),
    ("db1", "10.0.0.3:22", {"env": "prod", "team": "db"}),
    ("secret", "10.0.0.4:22", {"env": "prod", "team": "web", "hide": "yes"}),
]


def test_nodes_and_logins_are_the_checkers_answer() -> None:
    role = _role(
        "{logins: [ubuntu, root], node_labels: {team: web}}",
        deny="{logins: [root], node_labels: {hide: 'yes'}}",
    )
    got = preview_nodes(role, NODES, time=NOW)
    assert [(n.name, n.logins, n.mfa) for n in got] == [
        ("web1", ("ubuntu",), False),  # root: denied on every node
        ("web2", ("ubuntu",), False),
    ]  # db1: not selected; secret: denied by labels
    assert got[0].addr == "10.0.0.1:22" and got[0].labels["env"] == "prod"


def test_per_session_mfa_conditions_and_templates() -> None:
    mfa = _role(
        "{logins: [ubuntu], node_labels: {'*': '*'}}", options="{require_session_mfa: true}"
    )
    assert all(n.mfa for n in preview_nodes(mfa, NODES, time=NOW))
    assert not any(
        n.mfa
        for n in preview_nodes(_role("{logins: [u], node_labels: {'*': '*'}}"), NODES, time=NOW)
    ) and all(
        n.mfa
        for n in preview_nodes(
            _role("{logins: [u], node_labels: {'*': '*'}}"),
            NODES,
            time=NOW,
            cluster_requires_mfa=True,
        )
    )
    # A template login expands with the traits given, to nothing without them.
    templated = _role("{logins: ['{{internal.logins}}'], node_labels: {'*': '*'}}")
    assert preview_nodes(templated, NODES, time=NOW) == []
    traits = {"logins": ["alice"]}
    assert preview_nodes(templated, NODES[:1], time=NOW, traits=traits)[0].logins == ("alice",)


def test_databases_and_apps_as_bsh_db_ls_and_bsh_apps_ls() -> None:
    role = _role(
        "{db_labels: {env: prod}, db_users: [reader], db_names: [shop], app_labels: {team: web}}"
    )
    dbs = [
        _one(f"kind: db\nmetadata: {{name: {n}, labels: {{env: {e}}}}}\nspec: {{uri: 'h:5432'}}\n")
        for n, e in (("pg-prod", "prod"), ("pg-dev", "dev"))
    ]
    assert all(isinstance(d, Database) for d in dbs)
    shown = preview_databases(role, dbs)
    assert [(d.name, d.db_users, d.db_names) for d in shown] == [
        ("pg-prod", ("reader",), ("shop",))
    ]
    apps = [
        _one(
            f"kind: app\nmetadata: {{name: {n}, labels: {{team: {t}}}}}\nspec: {{uri: 'http://h:1'}}\n"
        )
        for n, t in (("grafana", "web"), ("vault", "sec"))
    ]
    assert all(isinstance(a, App) for a in apps)
    assert [a.name for a in preview_apps(role, apps)] == ["grafana"]
    assert preview_databases(_role("{logins: [x]}"), dbs) == []


def _page(rows: list[PreviewNode], query: ListQuery = ListQuery()) -> Page[PreviewNode]:
    return select(rows, query, preview_table("web-dev"))


def test_the_preview_is_paged_searched_and_escaped() -> None:
    role = _role("{logins: [ubuntu], node_labels: {'*': '*'}}")
    many = [(f"n{i:04d}", "", {"x": EVIL if i == 0 else "ok"}) for i in range(120)]
    rows = preview_nodes(role, many, time=NOW)
    first = _page(rows, ListQuery(per_page=50))
    assert (first.total, first.pages, len(first.items)) == (120, 3, 50)
    assert _page(rows, ListQuery(q="N011")).total == 10
    assert _page(rows, ListQuery(label="x=ok")).total == 119
    html = render_preview("web-<b>", first, [], None)
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "web-<b>" not in html and "web-&lt;b&gt;" in html
    assert "1–50 of 120 nodes" in html and 'rel="next"' in html
    assert 'href="/web/admin/roles/web-%3Cb%3E/preview?page=2"' in html
    assert "No database" in html and "may not list them (list on app)" in html
    assert "<script" not in html and "style=" not in html


def test_the_unsaved_texts_preview_posts_again_from_inside_the_editor() -> None:
    role = _role("{logins: [ubuntu], node_labels: {'*': '*'}}")
    rows = preview_nodes(role, [(f"n{i}", "", {}) for i in range(60)], time=NOW)
    action = preview_path("web dev")
    assert action == "/web/admin/roles/web%20dev/preview"
    html = render_preview("web dev", _page(rows), None, None, inline_action=action, as_user="<u>")
    assert 'name="as_user" id="as-user" value="&lt;u&gt;"' in html
    assert "traits of user <strong>&lt;u&gt;</strong>" in html
    assert "<form" not in html  # its fields travel in the editor's form
    assert f'name="page" value="2" formaction="{action}" data-preview' in html
    assert "href=" not in html.split('id="preview-nodes"')[1].split("</table>")[0]


def test_empty_previews_say_why() -> None:
    empty = _page([])
    assert "reaches no node" in render_preview("r", empty, None, None)
    filtered = _page([], ListQuery(q="zzz"))
    assert "No node matches this filter" in render_preview("r", filtered, None, None)
