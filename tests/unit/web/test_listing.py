"""The web UI's one table mechanism: filter by labels and text, sort, page and the HTML around
it, for any row type (the servers, databases and apps tabs and the role preview use it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from bastion.errors import BadParameter
from bastion.web.listing import (
    ListQuery,
    TableSpec,
    chips,
    empty_state,
    filter_form,
    list_query,
    page_link,
    pager,
    select,
    sort_header,
)
from bastion.web.resources import APP_TABLE, DB_TABLE, AppRow, DbRow


@dataclass(frozen=True)
class Thing:
    name: str
    size: int
    labels: dict[str, str]


SPEC: TableSpec[Thing] = TableSpec(
    path="/web/things",
    noun="things",
    labels=lambda t: t.labels,
    text=lambda t: (t.name,),
    sorts={"name": lambda t: t.name, "size": lambda t: (t.size, t.name)},
)
THINGS = [Thing(f"t{i:03d}", i % 7, {"env": "prod" if i % 2 else "dev"}) for i in range(250)]


def test_any_row_type_is_filtered_sorted_and_paged() -> None:
    page = select(THINGS, ListQuery(label="env=prod", sort="-size", page=2, per_page=20), SPEC)
    assert (page.total, page.pages, page.page, len(page.items)) == (125, 7, 2, 20)
    assert all(t.labels["env"] == "prod" for t in page.items)
    sizes = [t.size for t in select(THINGS, ListQuery(sort="-size", per_page=200), SPEC).items]
    assert sizes == sorted(sizes, reverse=True)
    assert select(THINGS, ListQuery(q="T24"), SPEC).total == 10  # t240..t249
    assert select(THINGS, ListQuery(q="env=dev"), SPEC).total == 125  # text finds labels too
    last = select(THINGS, ListQuery(page=99, per_page=100), SPEC)
    assert (last.page, last.items[-1].name) == (3, "t249")
    with pytest.raises(BadParameter, match="sort"):
        select(THINGS, ListQuery(sort="color"), SPEC)
    with pytest.raises(BadParameter, match="key=value"):
        select(THINGS, ListQuery(label="env"), SPEC)


def test_the_query_from_a_pages_parameters_is_one_line_on_bad_input() -> None:
    assert list_query({"q": "x", "page": "", "utm": "y"}, SPEC.sorts) == ListQuery(q="x")
    assert list_query({"sort": "-size", "per_page": "10"}, SPEC.sorts).sort == "-size"
    for params, word in (
        ({"sort": "color"}, "sort"),
        ({"sort": "--size"}, "sort"),
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"per_page": "1000"}, "per_page"),
        ({"q": "x" * 201}, "q"),
    ):
        with pytest.raises(BadParameter, match=word) as info:
            list_query(params, SPEC.sorts)
        assert "\n" not in info.value.message


def test_links_headers_chips_form_and_pager_keep_the_query_and_escape() -> None:
    query = ListQuery(q="a&b", label="env=prod", sort="-size", page=3)
    assert page_link("/web/things", query, page=1) == (
        "/web/things?q=a%26b&label=env%3Dprod&sort=-size"
    )
    assert page_link("/web/things", ListQuery()) == "/web/things"
    kept = replace(SPEC, keep=(("as_user", "a b"),))
    assert 'href="/web/things?as_user=a+b&amp;page=2&amp;per_page=100"' in pager(
        kept, select(THINGS, ListQuery(per_page=100), kept)
    )
    assert '<input type="hidden" name="as_user" value="a b">' in filter_form(kept, ListQuery())
    header = sort_header(SPEC, query, "size", "Size")
    assert 'aria-sort="descending"' in header and "sort=size" in header  # again: ascending
    evil = '"><img src=x onerror=alert(1)>'
    chip = chips(SPEC, query, {"x": evil})
    assert evil not in chip and "&quot;&gt;&lt;img" in chip and "label=env%3Dprod+x%3D" in chip
    form = filter_form(SPEC, ListQuery(q=evil))
    assert evil not in form and 'action="/web/things"' in form
    result = select(THINGS, ListQuery(label="env=prod", page=3, per_page=20), SPEC)
    nav = pager(SPEC, result)
    assert "41–60 of 125 things" in nav and 'rel="prev"' in nav and 'rel="next"' in nav
    assert "page=2" in nav and "page=4" in nav
    assert "No thing matches" in empty_state(SPEC, query, "none")
    assert empty_state(SPEC, ListQuery(), "<none>") == '<p class="empty">&lt;none&gt;</p>'


def test_the_databases_and_apps_tabs_search_their_own_columns() -> None:
    dbs = [
        DbRow("pg-shop", "postgres", {"env": "prod"}, ("reader",), ("shop",), True),
        DbRow("my-crm", "mysql", {"env": "dev"}, ("admin",), (), False),
    ]
    assert [d.name for d in select(dbs, ListQuery(q="reader"), DB_TABLE).items] == ["pg-shop"]
    assert [d.name for d in select(dbs, ListQuery(q="MYSQL"), DB_TABLE).items] == ["my-crm"]
    assert [d.name for d in select(dbs, ListQuery(sort="status"), DB_TABLE).items] == [
        "pg-shop",
        "my-crm",
    ]
    apps = [
        AppRow("grafana", "grafana.proxy:3080", {"team": "web"}, "http"),
        AppRow("pg-tunnel", "pg-tunnel.proxy:3080", {"team": "db"}, "tcp"),
    ]
    assert [a.name for a in select(apps, ListQuery(label="team=db"), APP_TABLE).items] == [
        "pg-tunnel"
    ]
    assert [a.name for a in select(apps, ListQuery(q="grafana.proxy"), APP_TABLE).items] == [
        "grafana"
    ]
    assert [a.name for a in select(apps, ListQuery(sort="-protocol"), APP_TABLE).items] == [
        "pg-tunnel",
        "grafana",
    ]
