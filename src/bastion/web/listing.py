"""One table mechanism for every resource list of the web UI: label filter, free-text search,
sorting and server-side paging, and the HTML around them (filter form, sortable headers, label
chips that add a filter, the pager).

Layer: web (pure). The servers, databases and apps tabs (:mod:`bastion.web.resources`) and the
role access preview (:mod:`bastion.web.role_preview`) describe their rows once in a
:class:`TableSpec` (the page's path, the label and text accessors, the sort keys) and share the
rest. Filtering is one pass over plain values, so 10,000 rows cost one page of HTML. Every
user-controlled string is escaped; no inline code (the CSP forbids it).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from bastion.errors import BadParameter

__all__ = [
    "MAX_PER_PAGE",
    "ListQuery",
    "Page",
    "TableSpec",
    "chips",
    "empty_state",
    "filter_form",
    "list_query",
    "page_link",
    "pager",
    "parse_label_filter",
    "select",
    "sort_header",
]

T = TypeVar("T")
MAX_PER_PAGE = 200
_LABEL = re.compile(r"^([^=\s,]{1,63})=([^\s,]{0,253})$")


def parse_label_filter(text: str) -> dict[str, str]:
    """``"env=prod team=web"`` (spaces or commas) into ``{"env": "prod", "team": "web"}``.

    Raises:
        BadParameter: a part is not ``key=value``.
    """
    out: dict[str, str] = {}
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        match = _LABEL.match(part)
        if match is None:
            raise BadParameter(f"label filter {part[:60]!r}: expected key=value (env=prod)")
        out[match.group(1)] = match.group(2)
    return out


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What the filter form and the links ask for (the same fields as the nodes API's
    :class:`~bastion.contract.web.NodeQuery`)."""

    q: str = ""
    """Free text: a case-insensitive substring of any searchable value or a label key=value."""
    label: str = ""
    """``key=value`` pairs separated by spaces or commas; all must match."""
    sort: str = "name"
    """A column, descending with a leading ``-``."""
    page: int = 1
    per_page: int = 50


_DEFAULTS = ListQuery()
_LIMITS = {"q": 200, "label": 500}


def list_query(params: Mapping[str, str], sorts: Iterable[str]) -> ListQuery:
    """The query of a page's form and links: unknown parameters ignored, empty ones default.

    Raises:
        BadParameter: one line naming the bad parameter (too long, not a number, out of range,
            an unknown sort column).
    """
    values: dict[str, Any] = {}
    for name, limit in _LIMITS.items():
        text = params.get(name, "")
        if len(text) > limit:
            raise BadParameter(f"query: {name}: at most {limit} characters")
        values[name] = text
    sort = params.get("sort") or _DEFAULTS.sort
    if sort.lstrip("-") not in set(sorts) or sort.count("-") > 1:
        raise BadParameter(f"query: sort: one of {', '.join(sorted(sorts))} (- for descending)")
    values["sort"] = sort
    for name, top in (("page", 1_000_000), ("per_page", MAX_PER_PAGE)):
        raw = params.get(name) or str(getattr(_DEFAULTS, name))
        if not raw.isdigit() or not 1 <= int(raw) <= top:
            raise BadParameter(f"query: {name}: a whole number from 1 to {top}")
        values[name] = int(raw)
    return ListQuery(**values)


@dataclass(frozen=True, slots=True)
class TableSpec(Generic[T]):
    """How one kind of row is filtered, searched and sorted, and where its page lives."""

    path: str
    """The page's URL (links and the filter form point there)."""
    noun: str
    """Plural, for the counter (``1–50 of 10000 nodes``)."""
    labels: Callable[[T], Mapping[str, str]]
    text: Callable[[T], Iterable[str]]
    """The searchable values besides the labels (name, address, ...)."""
    sorts: Mapping[str, Callable[[T], Any]]
    """Column name to sort key; the first is the default."""
    placeholder: str = "name, address or label"
    keep: tuple[tuple[str, str], ...] = ()
    """Parameters of the page itself that every link and the filter form carry along."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of the matching rows (a page past the end is the last page)."""

    items: list[T]
    total: int
    page: int
    per_page: int
    pages: int
    query: ListQuery = field(default_factory=ListQuery)


def _matches(spec: TableSpec[T], row: T, labels: Mapping[str, str], text: str) -> bool:
    if labels:
        found = spec.labels(row)
        if any(found.get(k) != v for k, v in labels.items()):
            return False
    if not text:
        return True
    if any(text in value.lower() for value in spec.text(row)):
        return True
    return any(text in f"{k}={v}".lower() for k, v in spec.labels(row).items())


def select(rows: Iterable[T], query: ListQuery, spec: TableSpec[T]) -> Page[T]:
    """Filter, sort and cut one page.

    Raises:
        BadParameter: a malformed label filter, or a sort column the spec does not have.
    """
    labels = parse_label_filter(query.label)
    text = query.q.strip().lower()
    key = spec.sorts.get(query.sort.lstrip("-"))
    if key is None:
        raise BadParameter(f"query: sort: one of {', '.join(sorted(spec.sorts))}")
    matched = [r for r in rows if _matches(spec, r, labels, text)]
    matched.sort(key=key, reverse=query.sort.startswith("-"))
    total = len(matched)
    pages = max(1, math.ceil(total / query.per_page))
    number = min(query.page, pages)
    start = (number - 1) * query.per_page
    return Page(
        items=matched[start : start + query.per_page],
        total=total,
        page=number,
        per_page=query.per_page,
        pages=pages,
        query=query,
    )


# ---- the HTML around a table --------------------------------------------------------------------


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def page_link(
    path: str, query: ListQuery, keep: Iterable[tuple[str, str]] = (), **change: object
) -> str:
    """``path`` with ``keep`` and the query's non-default values (``change`` applied)."""
    current = {f.name: getattr(query, f.name) for f in fields(ListQuery)}
    values = current | change
    params = [(k, v) for k, v in keep if v]
    params += [(k, str(v)) for k, v in values.items() if v != getattr(_DEFAULTS, k)]
    return path + ("?" + urlencode(params) if params else "")


def _href(spec: TableSpec[Any], query: ListQuery, **change: object) -> str:
    return _esc(page_link(spec.path, query, spec.keep, **change))


def sort_header(spec: TableSpec[T], query: ListQuery, column: str, title: str) -> str:
    """A ``<th>`` whose link sorts by ``column`` (again: the other direction)."""
    current = query.sort.lstrip("-")
    descending = query.sort.startswith("-")
    target = f"-{column}" if current == column and not descending else column
    mark, aria = "", "none"
    if current == column:
        mark, aria = (" ▼", "descending") if descending else (" ▲", "ascending")
    href = _href(spec, query, sort=target, page=1)
    return f'<th scope="col" aria-sort="{aria}"><a href="{href}">{_esc(title)}{mark}</a></th>'


def chips(spec: TableSpec[T], query: ListQuery, labels: Mapping[str, str]) -> str:
    """The labels as links that add ``key=value`` to the label filter."""
    out = []
    for key, value in sorted(labels.items()):
        pair = f"{key}={value}"
        label = f"{query.label} {pair}".strip() if pair not in query.label.split() else query.label
        href = _href(spec, query, label=label, page=1)
        out.append(f'<a class="chip" href="{href}" title="Filter by {_esc(pair)}">{_esc(pair)}</a>')
    return "".join(out)


def filter_form(spec: TableSpec[T], query: ListQuery) -> str:
    """The search and label filter (a GET form to the page; the sort is kept)."""
    kept = "".join(
        f'<input type="hidden" name="{_esc(k)}" value="{_esc(v)}">' for k, v in spec.keep if v
    )
    return (
        f'<form method="get" action="{_esc(spec.path)}" class="filters" role="search">'
        '<label>Search <input type="search" name="q" id="search" '
        f'value="{_esc(query.q)}" placeholder="{_esc(spec.placeholder)}"></label>'
        '<label>Labels <input type="text" name="label" id="label-filter" '
        f'value="{_esc(query.label)}" placeholder="env=prod team=web"></label>'
        f'<input type="hidden" name="sort" value="{_esc(query.sort)}">{kept}'
        '<button type="submit">Filter</button></form>'
    )


def pager(spec: TableSpec[T], result: Page[Any]) -> str:
    """``1–50 of N nouns``, previous/next links and the page number."""
    query = result.query
    first = (result.page - 1) * result.per_page + 1 if result.total else 0
    last = min(result.page * result.per_page, result.total)
    nav = [f'<span id="count">{first}–{last} of {result.total} {_esc(spec.noun)}</span>']
    if result.page > 1:
        href = _href(spec, query, page=result.page - 1)
        nav.append(f'<a rel="prev" href="{href}">Previous</a>')
    nav.append(f"<span>page {result.page} of {result.pages}</span>")
    if result.page < result.pages:
        href = _href(spec, query, page=result.page + 1)
        nav.append(f'<a rel="next" href="{href}">Next</a>')
    return f'<nav class="pager" aria-label="Pages">{" ".join(nav)}</nav>'


def empty_state(spec: TableSpec[T], query: ListQuery, none: str) -> str:
    """No rows: "nothing matches, clear the filter" when filtered, else ``none`` (plain text)."""
    if query.q or query.label:
        noun = _esc(spec.noun.rstrip("s") if spec.noun.endswith("s") else spec.noun)
        return (
            f'<p class="empty">No {noun} matches this filter. '
            f'<a href="{_href(spec, ListQuery())}">Clear it</a>.</p>'
        )
    return f'<p class="empty">{_esc(none)}</p>'
