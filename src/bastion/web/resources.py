"""The resources page (``GET /web/nodes``) and its JSON (``GET /web/api/nodes``).

Layer: web. The nodes are those ``bsh ls`` shows the user (``GuardedAuth.list_resources``: the
same RBAC checker), filtered by labels and free text, sorted and paged on the server
(:func:`select_nodes`, pure), so 10,000 nodes cost one page of HTML. Each row's connect action
offers the logins the user's roles allow on that node and opens the web terminal
(:mod:`bastion.web.terminal`). Server-rendered: no script on this page at all.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

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
from bastion.web.pages import Raw
from bastion.web.sessions import WebSession, current_session
from bastion.web.ui import app_page

__all__ = [
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

_LABEL = re.compile(r"^([^=\s,]{1,63})=([^\s,]{0,253})$")
_STATUS_ORDER = {True: 0, None: 1, False: 2}


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
class ListedNode:
    """A node as the page filters and sorts it: plain values (a validated :class:`NodeRow` is
    built only for the rows of the page shown; 10,000 pydantic rows per request cost more than
    the rest of the page)."""

    name: str
    addr: str
    labels: dict[str, str]
    online: bool | None


Listed = NodeRow | ListedNode


def _matches(row: Listed, labels: dict[str, str], text: str) -> bool:
    if any(row.labels.get(k) != v for k, v in labels.items()):
        return False
    if not text:
        return True
    haystack = [row.name, row.addr, *(f"{k}={v}" for k, v in row.labels.items())]
    return any(text in h.lower() for h in haystack)


def _sort_key(sort: str) -> Callable[[Listed], tuple[object, ...]]:
    column = sort.lstrip("-")
    if column == "addr":
        return lambda r: (r.addr.lower(), r.name.lower())
    if column == "status":
        return lambda r: (_STATUS_ORDER[r.online], r.name.lower())
    return lambda r: (r.name.lower(),)


def select_nodes(rows: Iterable[Listed], query: NodeQuery) -> NodePage:
    """Filter, sort and cut one page (a page past the end is the last page).

    Raises:
        BadParameter: a malformed label filter.
    """
    labels = parse_label_filter(query.label)
    text = query.q.strip().lower()
    matched = [r for r in rows if _matches(r, labels, text)]
    matched.sort(key=_sort_key(query.sort), reverse=query.sort.startswith("-"))
    total = len(matched)
    pages = max(1, math.ceil(total / query.per_page))
    number = min(query.page, pages)
    start = (number - 1) * query.per_page
    return NodePage(
        items=[_row(r) for r in matched[start : start + query.per_page]],
        total=total,
        page=number,
        per_page=query.per_page,
        pages=pages,
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


def _link(query: NodeQuery, **change: object) -> str:
    values = query.model_dump() | change
    defaults = NodeQuery().model_dump()
    params = {k: str(v) for k, v in values.items() if v != defaults[k]}
    return "/web/nodes" + ("?" + urlencode(params) if params else "")


def _sort_header(query: NodeQuery, column: str, title: str) -> str:
    current = query.sort.lstrip("-")
    descending = query.sort.startswith("-")
    target = f"-{column}" if current == column and not descending else column
    mark, aria = "", "none"
    if current == column:
        mark, aria = (" ▼", "descending") if descending else (" ▲", "ascending")
    href = _esc(_link(query, sort=target, page=1))
    return f'<th scope="col" aria-sort="{aria}"><a href="{href}">{_esc(title)}{mark}</a></th>'


def _chips(query: NodeQuery, labels: dict[str, str]) -> str:
    chips = []
    for key, value in sorted(labels.items()):
        pair = f"{key}={value}"
        label = f"{query.label} {pair}".strip() if pair not in query.label.split() else query.label
        href = _esc(_link(query, label=label, page=1))
        chips.append(
            f'<a class="chip" href="{href}" title="Filter by {_esc(pair)}">{_esc(pair)}</a>'
        )
    return "".join(chips)


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


def render_nodes(result: NodePage, query: NodeQuery, user: str, error: str = "") -> str:
    """The page's body (every user-controlled string escaped)."""
    rows = []
    for row in result.items:
        word, css = _STATUS[row.online]
        rows.append(
            f'<tr><th scope="row">{_esc(row.name)}</th><td>{_esc(row.addr) or "-"}</td>'
            f'<td class="chips">{_chips(query, row.labels)}</td>'
            f'<td class="{css}">{word}</td><td>{_connect(row)}</td></tr>'
        )
    if rows:
        table = (
            '<table class="nodes"><thead><tr>'
            + _sort_header(query, "name", "Name")
            + _sort_header(query, "addr", "Address")
            + '<th scope="col">Labels</th>'
            + _sort_header(query, "status", "Status")
            + '<th scope="col">Connect</th></tr></thead><tbody>'
            + "".join(rows)
            + "</tbody></table>"
        )
    elif query.q or query.label:
        table = (
            '<p class="empty">No node matches this filter. <a href="/web/nodes">Clear it</a>.</p>'
        )
    else:
        table = (
            '<p class="empty">You may not reach any node yet: your roles select none. Ask an '
            "admin for a role whose node_labels match a node.</p>"
        )
    first = (result.page - 1) * result.per_page + 1 if result.total else 0
    last = min(result.page * result.per_page, result.total)
    nav = [f'<span id="count">{first}–{last} of {result.total} nodes</span>']
    if result.page > 1:
        nav.append(f'<a rel="prev" href="{_esc(_link(query, page=result.page - 1))}">Previous</a>')
    nav.append(f"<span>page {result.page} of {result.pages}</span>")
    if result.page < result.pages:
        nav.append(f'<a rel="next" href="{_esc(_link(query, page=result.page + 1))}">Next</a>')
    sort_input = f'<input type="hidden" name="sort" value="{_esc(query.sort)}">'
    form = (
        '<form method="get" action="/web/nodes" class="filters" role="search">'
        '<label>Search <input type="search" name="q" id="search" '
        f'value="{_esc(query.q)}" placeholder="name, address or label"></label>'
        '<label>Labels <input type="text" name="label" id="label-filter" '
        f'value="{_esc(query.label)}" placeholder="env=prod team=web"></label>'
        f'{sort_input}<button type="submit">Filter</button></form>'
    )
    problem = f'<p class="error" role="alert">{_esc(error)}</p>' if error else ""
    return (
        f'<nav class="top"><span>Signed in as <strong>{_esc(user)}</strong></span> '
        '<a href="/web/account">Account</a></nav>'
        f"{resource_tabs('/web/nodes')}{form}{problem}{table}"
        f'<nav class="pager" aria-label="Pages">{" ".join(nav)}</nav>'
    )


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


def _label_text(labels: dict[str, str]) -> str:
    return "".join(
        f'<span class="chip">{_esc(f"{k}={v}")}</span>' for k, v in sorted(labels.items())
    )


def _resource_page(user: str, active: str, table: str) -> str:
    return (
        f'<nav class="top"><span>Signed in as <strong>{_esc(user)}</strong></span> '
        '<a href="/web/account">Account</a></nav>'
        f"{resource_tabs(active)}{table}"
    )


def render_databases(rows: Iterable[DbRow], user: str) -> str:
    """The databases page's body: connect is ``bsh db connect NAME`` (every string escaped)."""
    body = []
    for row in rows:
        word, css = _STATUS[row.online]
        command = f"bsh db connect {row.name}"
        body.append(
            f'<tr data-db="{_esc(row.name)}"><th scope="row">{_esc(row.name)}</th>'
            f"<td>{_esc(row.protocol)}</td><td class='chips'>{_label_text(row.labels)}</td>"
            f"<td>{_esc(', '.join(row.db_users) or '-')}</td>"
            f"<td>{_esc(', '.join(row.db_names) or '-')}</td>"
            f'<td class="{css}">{word}</td><td><code>{_esc(command)}</code></td></tr>'
        )
    if not body:
        table = (
            '<p class="empty">You may not reach any database: your roles select none (their '
            "db_labels). Ask an admin for a role that does.</p>"
        )
    else:
        table = (
            '<table class="nodes" id="databases"><thead><tr><th scope="col">Name</th>'
            '<th scope="col">Protocol</th><th scope="col">Labels</th>'
            '<th scope="col">Database users</th><th scope="col">Database names</th>'
            '<th scope="col">Status</th><th scope="col">Connect</th></tr></thead><tbody>'
            + "".join(body)
            + "</tbody></table>"
        )
    return _resource_page(user, "/web/databases", table)


def render_apps(rows: Iterable[AppRow], user: str) -> str:
    """The apps page's body: HTTP apps open through their launch link, TCP apps through
    ``bsh apps login NAME`` (every string escaped)."""
    body = []
    for row in rows:
        if row.protocol == "http":
            href = _esc("/web/apps/" + quote(row.name, safe="") + "/launch")
            action = (
                f'<a class="button" href="{href}" target="_blank" rel="noopener" '
                f'aria-label="Launch {_esc(row.name)}">Launch</a>'
            )
        else:
            action = f"<code>{_esc(f'bsh apps login {row.name}')}</code>"
        body.append(
            f'<tr data-app="{_esc(row.name)}"><th scope="row">{_esc(row.name)}</th>'
            f"<td>{_esc(row.addr)}</td><td>{_esc(row.protocol)}</td>"
            f'<td class="chips">{_label_text(row.labels)}</td><td>{action}</td></tr>'
        )
    if not body:
        table = (
            '<p class="empty">You may not reach any app: your roles select none (their '
            "app_labels). Ask an admin for a role that does.</p>"
        )
    else:
        table = (
            '<table class="nodes" id="apps"><thead><tr><th scope="col">Name</th>'
            '<th scope="col">Address</th><th scope="col">Protocol</th>'
            '<th scope="col">Labels</th><th scope="col">Open</th></tr></thead><tbody>'
            + "".join(body)
            + "</tbody></table>"
        )
    return _resource_page(user, "/web/apps", table)


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
        return app_page("Databases", Raw(render_databases(rows, session.user)))

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
        return app_page("Apps", Raw(render_apps(rows, session.user)))
