"""The resources page (``GET /web/nodes``) and its JSON (``GET /web/api/nodes``).

Layer: web. The nodes are those ``bsh ls`` shows the user (``GuardedAuth.list_resources``: the
same RBAC checker), filtered by labels and free text, sorted and paged on the server
(:func:`select_nodes`, pure), so 10,000 nodes cost one page of HTML. Each row's connect action
offers the logins the user's roles allow on that node and opens the web terminal
(:mod:`bastion.web.terminal`). The databases and apps tabs (``bsh db ls`` and ``bsh apps ls``'s
service calls) share the same table mechanism (:mod:`bastion.web.listing`): label chips, label
filter, search, sorting and paging. Server-rendered: no script on these pages at all.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from bastion.auth.apps import AppAccess
from bastion.auth.databases import DatabaseInventory
from bastion.auth.guarded import GuardedAuth
from bastion.auth.server import AuthServer
from bastion.auth.users import UserService
from bastion.clock import in_zone
from bastion.contract.web import NodePage, NodeQuery, NodeRow
from bastion.errors import BadParameter
from bastion.protocols.apphost import app_address
from bastion.rbac.conditions import AccessContext
from bastion.types.inventory import Node
from bastion.web.listing import (
    ListQuery,
    Page,
    TableSpec,
    chips,
    empty_state,
    filter_form,
    list_query,
    pager,
    parse_label_filter,
    select,
    sort_header,
)
from bastion.web.pages import Raw
from bastion.web.sessions import WebSession, current_session
from bastion.web.ui import app_page

__all__ = [
    "APP_TABLE",
    "DB_TABLE",
    "NODE_TABLE",
    "AppRow",
    "DbRow",
    "NodeLister",
    "OtherResources",
    "node_page",
    "node_query",
    "parse_label_filter",
    "render_apps",
    "render_databases",
    "render_nodes",
    "resource_tabs",
    "select_nodes",
]

T = TypeVar("T")
_STATUS_ORDER = {True: 0, None: 1, False: 2}


@dataclass(frozen=True, slots=True)
class ListedNode:
    """A node as the page filters and sorts it: plain values (a validated :class:`NodeRow` is
    built only for the rows of the page shown; 10,000 pydantic rows per request cost more than
    the rest of the page)."""

    name: str
    addr: str
    labels: dict[str, str]
    online: bool | None


Listed = NodeRow | ListedNode

NODE_TABLE: TableSpec[Listed] = TableSpec(
    path="/web/nodes",
    noun="nodes",
    labels=lambda r: r.labels,
    text=lambda r: (r.name, r.addr),
    sorts={
        "name": lambda r: (r.name.lower(),),
        "addr": lambda r: (r.addr.lower(), r.name.lower()),
        "status": lambda r: (_STATUS_ORDER[r.online], r.name.lower()),
    },
)
"""The servers tab's table (the same mechanism as the other tabs and the role preview)."""


def _list_query(query: NodeQuery) -> ListQuery:
    return ListQuery(
        q=query.q, label=query.label, sort=query.sort, page=query.page, per_page=query.per_page
    )


def select_nodes(rows: Iterable[Listed], query: NodeQuery) -> NodePage:
    """Filter, sort and cut one page (a page past the end is the last page).

    Raises:
        BadParameter: a malformed label filter.
    """
    result = select(rows, _list_query(query), NODE_TABLE)
    return NodePage(
        items=[_row(r) for r in result.items],
        total=result.total,
        page=result.page,
        per_page=result.per_page,
        pages=result.pages,
    )


def _row(item: Listed) -> NodeRow:
    if isinstance(item, NodeRow):
        return item
    return NodeRow(name=item.name, addr=item.addr, labels=item.labels, online=item.online)


def node_query(params: dict[str, str]) -> NodeQuery:
    """The query of the page's form and links (unknown parameters ignored; bad values are one
    line). Raises: BadParameter."""
    from pydantic import ValidationError

    from bastion.types.codec import validation_problems

    known = {k: v for k, v in params.items() if k in NodeQuery.model_fields and v != ""}
    try:
        return NodeQuery.model_validate(known)
    except ValidationError as exc:
        raise BadParameter(f"query: {validation_problems(exc)}") from None


class NodeLister:
    """Lists a browser session's nodes exactly as ``bsh ls`` does, then pages them."""

    def __init__(self, auth: AuthServer, users: UserService) -> None:
        self.auth = auth
        self.users = users

    async def page(self, session: WebSession, query: NodeQuery, remote: str) -> NodePage:
        guard = await GuardedAuth.for_identity(self.auth, self.users, session.identity, remote)
        nodes = [n for n in await guard.list_resources("node") if isinstance(n, Node)]
        rows = [
            ListedNode(
                name=n.name,
                addr=n.spec.addr,
                labels=n.all_labels(),
                online=self.auth.node_online(n),
            )
            for n in nodes
        ]
        result = select_nodes(rows, query)
        pref = await self.auth.auth_preference()
        context = AccessContext.for_identity(
            session.identity,
            source_ip=_ip(remote),
            time=in_zone(self.auth.clock.now(), pref.spec.time_zone),
        )
        role_set = guard.ctx.role_set
        items = [
            row.model_copy(
                update={
                    "logins": [
                        login
                        for login in session.identity.logins
                        if role_set.check_node_access(
                            row.name, row.labels, login, context=context
                        ).allowed
                    ]
                }
            )
            for row in result.items
        ]
        return result.model_copy(update={"items": items})

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /web/nodes`` (signed-in browsers only)."""
        session = current_session(request)
        if session is None:
            raise web.HTTPSeeOther("/web/login")
        return await node_page(self, request, session)


def _ip(remote: str) -> str:
    from bastion.rbac.conditions import source_ip_of

    return source_ip_of(remote)


# ---- the HTML page ------------------------------------------------------------------------------


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _connect(row: NodeRow) -> str:
    if not row.logins:
        return '<span class="muted">no login allowed</span>'
    options = "".join(f'<option value="{_esc(x)}">{_esc(x)}</option>' for x in row.logins)
    return (
        '<form method="get" action="/web/ssh" target="_blank" class="connect">'
        f'<input type="hidden" name="node" value="{_esc(row.name)}">'
        f'<label class="visually-hidden" for="login-{_esc(row.name)}">Login on '
        f"{_esc(row.name)}</label>"
        f'<select name="login" id="login-{_esc(row.name)}">{options}</select>'
        f'<button type="submit" aria-label="Connect to {_esc(row.name)}">Connect</button></form>'
    )


_STATUS = {True: ("online", "online"), False: ("offline", "offline"), None: ("unknown", "muted")}


def _resource_page(
    user: str, spec: TableSpec[Any], result: Page[Any], table: str, error: str
) -> str:
    """A tab of the resources page: tabs, the filter form, the error, the table, the pager."""
    problem = f'<p class="error" role="alert">{_esc(error)}</p>' if error else ""
    return (
        f'<nav class="top"><span>Signed in as <strong>{_esc(user)}</strong></span> '
        '<a href="/web/account">Account</a></nav>'
        f"{resource_tabs(spec.path)}{filter_form(spec, result.query)}{problem}{table}"
        f"{pager(spec, result)}"
    )


def _table(table_id: str, head: str, rows: list[str]) -> str:
    return (
        f'<table class="nodes"{table_id}><thead><tr>{head}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def render_nodes(result: NodePage, query: NodeQuery, user: str, error: str = "") -> str:
    """The page's body (every user-controlled string escaped)."""
    listed = _list_query(query)
    shown: Page[NodeRow] = Page(
        items=result.items,
        total=result.total,
        page=result.page,
        per_page=result.per_page,
        pages=result.pages,
        query=listed,
    )
    rows = []
    for row in result.items:
        word, css = _STATUS[row.online]
        rows.append(
            f'<tr><th scope="row">{_esc(row.name)}</th><td>{_esc(row.addr) or "-"}</td>'
            f'<td class="chips">{chips(NODE_TABLE, listed, row.labels)}</td>'
            f'<td class="{css}">{word}</td><td>{_connect(row)}</td></tr>'
        )
    if rows:
        head = (
            sort_header(NODE_TABLE, listed, "name", "Name")
            + sort_header(NODE_TABLE, listed, "addr", "Address")
            + '<th scope="col">Labels</th>'
            + sort_header(NODE_TABLE, listed, "status", "Status")
            + '<th scope="col">Connect</th>'
        )
        table = _table("", head, rows)
    else:
        table = empty_state(
            NODE_TABLE,
            listed,
            "You may not reach any node yet: your roles select none. Ask an admin for a role "
            "whose node_labels match a node.",
        )
    return _resource_page(user, NODE_TABLE, shown, table, error)


async def node_page(lister: NodeLister, request: web.Request, session: WebSession) -> web.Response:
    """``GET /web/nodes``: the page (a bad filter is shown above an empty list)."""
    params = {k: v for k, v in request.query.items() if isinstance(v, str)}
    error = ""
    try:
        query = node_query(params)
        result = await lister.page(session, query, request.remote or "")
    except BadParameter as exc:
        query, error = NodeQuery(), exc.message
        result = NodePage(items=[], total=0, page=1, per_page=query.per_page, pages=1)
    body = render_nodes(result, query, session.user, error)
    return app_page("Resources", Raw(body), status=400 if error else 200)


# ---- databases and apps -------------------------------------------------------------------------

TABS = (("Servers", "/web/nodes"), ("Databases", "/web/databases"), ("Apps", "/web/apps"))


def resource_tabs(active: str) -> str:
    """``Servers | Databases | Apps``: links between the resource pages (``active`` marked)."""
    current = ' aria-current="page"'
    links = " ".join(
        f'<a href="{href}"{current if href == active else ""}>{title}</a>' for title, href in TABS
    )
    return f'<nav class="tabs" aria-label="Resource kinds">{links}</nav>'


@dataclass(frozen=True, slots=True)
class DbRow:
    """A database as ``bsh db ls`` shows it (the users and names the roles allow)."""

    name: str
    protocol: str
    labels: dict[str, str]
    db_users: tuple[str, ...]
    db_names: tuple[str, ...]
    online: bool


@dataclass(frozen=True, slots=True)
class AppRow:
    """An app as ``bsh apps ls`` shows it (its address under this proxy)."""

    name: str
    addr: str
    labels: dict[str, str]
    protocol: str


_ONLINE_ORDER = {True: 0, False: 1}

DB_TABLE: TableSpec[DbRow] = TableSpec(
    path="/web/databases",
    noun="databases",
    labels=lambda r: r.labels,
    text=lambda r: (r.name, r.protocol, *r.db_users, *r.db_names),
    sorts={
        "name": lambda r: (r.name.lower(),),
        "protocol": lambda r: (r.protocol, r.name.lower()),
        "status": lambda r: (_ONLINE_ORDER[r.online], r.name.lower()),
    },
    placeholder="name, protocol, user or label",
)
"""The databases tab's table (the servers tab's mechanism)."""

APP_TABLE: TableSpec[AppRow] = TableSpec(
    path="/web/apps",
    noun="apps",
    labels=lambda r: r.labels,
    text=lambda r: (r.name, r.addr, r.protocol),
    sorts={
        "name": lambda r: (r.name.lower(),),
        "addr": lambda r: (r.addr.lower(), r.name.lower()),
        "protocol": lambda r: (r.protocol, r.name.lower()),
    },
)
"""The apps tab's table (the servers tab's mechanism)."""


def render_databases(result: Page[DbRow], user: str, error: str = "") -> str:
    """The databases page's body: connect is ``bsh db connect NAME`` (every string escaped)."""
    query = result.query
    body = []
    for row in result.items:
        word, css = _STATUS[row.online]
        command = f"bsh db connect {row.name}"
        body.append(
            f'<tr data-db="{_esc(row.name)}"><th scope="row">{_esc(row.name)}</th>'
            f"<td>{_esc(row.protocol)}</td>"
            f'<td class="chips">{chips(DB_TABLE, query, row.labels)}</td>'
            f"<td>{_esc(', '.join(row.db_users) or '-')}</td>"
            f"<td>{_esc(', '.join(row.db_names) or '-')}</td>"
            f'<td class="{css}">{word}</td><td><code>{_esc(command)}</code></td></tr>'
        )
    if not body:
        table = empty_state(
            DB_TABLE,
            query,
            "You may not reach any database: your roles select none (their db_labels). Ask an "
            "admin for a role that does.",
        )
    else:
        head = (
            sort_header(DB_TABLE, query, "name", "Name")
            + sort_header(DB_TABLE, query, "protocol", "Protocol")
            + '<th scope="col">Labels</th><th scope="col">Database users</th>'
            '<th scope="col">Database names</th>'
            + sort_header(DB_TABLE, query, "status", "Status")
            + '<th scope="col">Connect</th>'
        )
        table = _table(' id="databases"', head, body)
    return _resource_page(user, DB_TABLE, result, table, error)


def _app_action(row: AppRow) -> str:
    if row.protocol != "http":
        return f"<code>{_esc(f'bsh apps login {row.name}')}</code>"
    href = _esc("/web/apps/" + quote(row.name, safe="") + "/launch")
    return (
        f'<a class="button" href="{href}" target="_blank" rel="noopener" '
        f'aria-label="Launch {_esc(row.name)}">Launch</a>'
    )


def render_apps(result: Page[AppRow], user: str, error: str = "") -> str:
    """The apps page's body: HTTP apps open through their launch link (the proxy signs the
    browser in to the app's address), TCP apps through ``bsh apps login NAME`` (every string
    escaped)."""
    query = result.query
    body = [
        f'<tr data-app="{_esc(row.name)}"><th scope="row">{_esc(row.name)}</th>'
        f"<td>{_esc(row.addr)}</td><td>{_esc(row.protocol)}</td>"
        f'<td class="chips">{chips(APP_TABLE, query, row.labels)}</td>'
        f"<td>{_app_action(row)}</td></tr>"
        for row in result.items
    ]
    if not body:
        table = empty_state(
            APP_TABLE,
            query,
            "You may not reach any app: your roles select none (their app_labels). Ask an "
            "admin for a role that does.",
        )
    else:
        head = (
            sort_header(APP_TABLE, query, "name", "Name")
            + sort_header(APP_TABLE, query, "addr", "Address")
            + sort_header(APP_TABLE, query, "protocol", "Protocol")
            + '<th scope="col">Labels</th><th scope="col">Open</th>'
        )
        table = _table(' id="apps"', head, body)
    return _resource_page(user, APP_TABLE, result, table, error)


def _paged(rows: list[T], params: dict[str, str], spec: TableSpec[T]) -> tuple[Page[T], str]:
    """One page of ``rows`` for the request's query, or an empty page and the one-line error."""
    try:
        query = list_query(params, spec.sorts)
        return select(rows, query, spec), ""
    except BadParameter as exc:
        return Page(items=[], total=0, page=1, per_page=50, pages=1), exc.message


def _params(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if isinstance(v, str)}


class OtherResources:
    """The databases and apps pages: the same service calls as ``bsh db ls``
    (:meth:`DatabaseInventory.visible` over the caller's roles) and ``bsh apps ls``
    (:meth:`AppAccess.list_allowed`)."""

    def __init__(self, auth: AuthServer, users: UserService) -> None:
        self.auth = auth
        self.users = users
        self.inventory = DatabaseInventory(auth)
        self.access = AppAccess(auth)

    async def databases(self, request: web.Request) -> web.Response:
        """``GET /web/databases``."""
        session = current_session(request)
        if session is None:
            raise web.HTTPSeeOther("/web/login?then=/web/databases")
        guard = await GuardedAuth.for_identity(
            self.auth, self.users, session.identity, request.remote or ""
        )
        rows = [
            DbRow(
                name=v.database.name,
                protocol=v.database.spec.protocol,
                labels=v.database.all_labels(),
                db_users=tuple(v.db_users),
                db_names=tuple(v.db_names),
                online=bool(v.database.spec.host_id and v.database.metadata.expires),
            )
            for v in await self.inventory.visible(guard.ctx.role_set)
        ]
        result, error = _paged(rows, _params(request), DB_TABLE)
        body = render_databases(result, session.user, error)
        return app_page("Databases", Raw(body), status=400 if error else 200)

    async def apps(self, request: web.Request) -> web.Response:
        """``GET /web/apps``."""
        session = current_session(request)
        if session is None:
            raise web.HTTPSeeOther("/web/login?then=/web/apps")
        rows = [
            AppRow(
                name=a.metadata.name,
                addr=app_address(a.metadata.name, a.spec.public_addr, request.host),
                labels=a.all_labels(),
                protocol="tcp" if a.spec.uri.startswith("tcp://") else "http",
            )
            for a in await self.access.list_allowed(session.identity)
        ]
        result, error = _paged(rows, _params(request), APP_TABLE)
        body = render_apps(result, session.user, error)
        return app_page("Apps", Raw(body), status=400 if error else 200)
