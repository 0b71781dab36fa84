"""A role's effective access, previewed on the node list (the roles admin page, issue 16).

Layer: web (pure). What a user holding only this role may reach: the nodes and logins are the
answer of :func:`bastion.rbac.explain.reachable` (the checker ``bsh ls``, ``bsh ssh`` and
``bctl access ls`` use: :class:`~bastion.rbac.checker.RoleSet`, deny rules and ``where``
conditions included), the databases that of :func:`bastion.auth.databases.visible_to` (``bsh db
ls``), the apps that of :meth:`RoleSet.check_app_access` (``bsh apps ls``). Nothing here decides
access a second time. The nodes are listed with the resources page's table mechanism
(:mod:`bastion.web.listing`): search, label filter, sorting and paging.

Template values such as ``{{internal.logins}}`` expand with the traits of a user the admin
names (``as_user``), else to nothing; conditions are evaluated for a request made now from an
unknown address.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from bastion.auth.databases import visible_to
from bastion.rbac.checker import RoleSet
from bastion.rbac.explain import Subject, reachable
from bastion.types.access import Role
from bastion.types.apps import App
from bastion.types.database import Database
from bastion.web.listing import (
    ListQuery,
    Page,
    TableSpec,
    chips,
    empty_state,
    filter_form,
    pager,
    sort_header,
)

__all__ = [
    "PREVIEW_SUBJECT",
    "PreviewApp",
    "PreviewDb",
    "PreviewNode",
    "preview_apps",
    "preview_databases",
    "preview_nodes",
    "preview_path",
    "preview_table",
    "render_preview",
]

PREVIEW_SUBJECT = "(role preview)"
"""The user name the checker sees (``{{internal.*}}`` and ``user`` conditions use it)."""
SHOWN = 50
"""Databases and apps listed in the preview (the count says how many more)."""


@dataclass(frozen=True, slots=True)
class PreviewNode:
    """A node the role reaches, with the logins it allows there."""

    name: str
    addr: str
    labels: dict[str, str]
    logins: tuple[str, ...]
    mfa: bool
    """Some login there takes per-session MFA (the role's or the cluster's rule)."""


@dataclass(frozen=True, slots=True)
class PreviewDb:
    name: str
    protocol: str
    labels: dict[str, str]
    db_users: tuple[str, ...]
    db_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PreviewApp:
    name: str
    labels: dict[str, str]
    uri: str


def preview_nodes(
    role: Role,
    nodes: Iterable[tuple[str, str, Mapping[str, str]]],
    *,
    time: datetime,
    cluster_requires_mfa: bool = False,
    traits: Mapping[str, Sequence[str]] | None = None,
) -> list[PreviewNode]:
    """The nodes (``(name, addr, labels)``) a user holding only ``role`` may log in to, each
    with the logins allowed there, in the order given."""
    subject = Subject(PREVIEW_SUBJECT, (role,), dict(traits or {}))
    listed = [(name, addr, dict(labels)) for name, addr, labels in nodes]
    grants = reachable(
        subject,
        [(name, labels) for name, _, labels in listed],
        context=subject.context(time=time),
        cluster_requires_mfa=cluster_requires_mfa,
    )
    logins: dict[str, list[str]] = {}
    mfa: dict[str, bool] = {}
    for grant in grants:
        logins.setdefault(grant.node, []).append(grant.login)
        mfa[grant.node] = mfa.get(grant.node, False) or grant.mfa_required
    return [
        PreviewNode(name, addr, labels, tuple(logins[name]), mfa[name])
        for name, addr, labels in listed
        if name in logins
    ]


def _role_set(role: Role, traits: Mapping[str, Sequence[str]] | None) -> RoleSet:
    return RoleSet.from_roles([role], dict(traits or {}))


def preview_databases(
    role: Role, databases: Iterable[Database], traits: Mapping[str, Sequence[str]] | None = None
) -> list[PreviewDb]:
    """The databases ``bsh db ls`` would show a user holding only ``role``, by name."""
    roles = _role_set(role, traits)
    out = []
    for db in databases:
        shown = visible_to(roles, db)
        if shown is not None:
            out.append(
                PreviewDb(
                    db.name,
                    db.spec.protocol,
                    db.all_labels(),
                    tuple(shown.db_users),
                    tuple(shown.db_names),
                )
            )
    return sorted(out, key=lambda d: d.name)


def preview_apps(
    role: Role, apps: Iterable[App], traits: Mapping[str, Sequence[str]] | None = None
) -> list[PreviewApp]:
    """The apps ``bsh apps ls`` would show a user holding only ``role``, by name."""
    roles = _role_set(role, traits)
    out = [
        PreviewApp(app.metadata.name, app.all_labels(), app.spec.uri)
        for app in apps
        if roles.check_app_access(app.all_labels(), app_name=app.metadata.name).allowed
    ]
    return sorted(out, key=lambda a: a.name)


# ---- the HTML ------------------------------------------------------------------------------------


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def preview_path(role: str) -> str:
    """``/web/admin/roles/NAME/preview``."""
    return f"/web/admin/roles/{quote(role, safe='')}/preview"


def preview_table(role: str, as_user: str = "") -> TableSpec[PreviewNode]:
    """The preview's node table (the resources page's mechanism, at the preview's URL; links
    keep ``as_user``)."""
    return TableSpec(
        path=preview_path(role),
        keep=(("as_user", as_user),) if as_user else (),
        noun="nodes",
        labels=lambda r: r.labels,
        text=lambda r: (r.name, r.addr, *r.logins),
        sorts={
            "name": lambda r: (r.name.lower(),),
            "addr": lambda r: (r.addr.lower(), r.name.lower()),
        },
        placeholder="name, address, login or label",
    )


def _plain_chips(labels: Mapping[str, str]) -> str:
    return "".join(
        f'<span class="chip">{_esc(f"{k}={v}")}</span>' for k, v in sorted(labels.items())
    )


def _node_rows(result: Page[PreviewNode], spec: TableSpec[PreviewNode], linked: bool) -> list[str]:
    rows = []
    for row in result.items:
        labels = chips(spec, result.query, row.labels) if linked else _plain_chips(row.labels)
        mfa = "per-session MFA" if row.mfa else "-"
        rows.append(
            f'<tr data-node="{_esc(row.name)}"><th scope="row">{_esc(row.name)}</th>'
            f'<td>{_esc(row.addr) or "-"}</td><td class="chips">{labels}</td>'
            f"<td>{_esc(', '.join(row.logins))}</td><td>{mfa}</td></tr>"
        )
    return rows


def _user_field(as_user: str) -> str:
    return (
        '<label>Traits of user <input type="text" name="as_user" id="as-user" '
        f'value="{_esc(as_user)}" placeholder="none" autocomplete="off"></label>'
    )


def _inline_filter(
    spec: TableSpec[PreviewNode], query: ListQuery, action: str, as_user: str
) -> str:
    """The filter inside the editor's form: its fields travel with the unsaved YAML."""
    return (
        '<div class="filters" role="search">'
        '<label>Search <input type="search" name="q" id="search" '
        f'value="{_esc(query.q)}" placeholder="{_esc(spec.placeholder)}"></label>'
        '<label>Labels <input type="text" name="label" id="label-filter" '
        f'value="{_esc(query.label)}" placeholder="env=prod team=web"></label>'
        f"{_user_field(as_user)}"
        f'<button type="submit" formaction="{_esc(action)}" data-preview>Filter</button></div>'
    )


def _user_form(spec: TableSpec[PreviewNode], as_user: str) -> str:
    """The stored role's preview: whose traits expand the templates (a GET form)."""
    return (
        f'<form method="get" action="{_esc(spec.path)}" class="filters" id="traits-form">'
        f'{_user_field(as_user)}<button type="submit">Use</button></form>'
    )


def _inline_pager(result: Page[PreviewNode], action: str) -> str:
    first = (result.page - 1) * result.per_page + 1 if result.total else 0
    last = min(result.page * result.per_page, result.total)
    parts = [f'<span id="count">{first}–{last} of {result.total} nodes</span>']
    for number, title in ((result.page - 1, "Previous"), (result.page + 1, "Next")):
        if 1 <= number <= result.pages:
            parts.append(
                f'<button type="submit" name="page" value="{number}" formaction="{_esc(action)}" '
                f"data-preview>{title}</button>"
            )
    parts.append(f"<span>page {result.page} of {result.pages}</span>")
    return f'<div class="pager" role="navigation" aria-label="Pages">{" ".join(parts)}</div>'


def _others(databases: Sequence[PreviewDb] | None, apps: Sequence[PreviewApp] | None) -> str:
    out = []
    if databases is None:
        out.append('<p class="muted">Databases: you may not list them (list on db).</p>')
    elif not databases:
        out.append('<p class="empty" id="preview-dbs">No database (its db_labels select none).</p>')
    else:
        rows = [
            f'<tr><th scope="row">{_esc(d.name)}</th><td>{_esc(d.protocol)}</td>'
            f'<td class="chips">{_plain_chips(d.labels)}</td>'
            f"<td>{_esc(', '.join(d.db_users) or '-')}</td>"
            f"<td>{_esc(', '.join(d.db_names) or '-')}</td></tr>"
            for d in databases[:SHOWN]
        ]
        headers = ("Name", "Protocol", "Labels", "Database users", "Database names")
        out.append(_capped_table("preview-dbs", "Databases", headers, rows, len(databases)))
    if apps is None:
        out.append('<p class="muted">Apps: you may not list them (list on app).</p>')
    elif not apps:
        out.append('<p class="empty" id="preview-apps">No app (its app_labels select none).</p>')
    else:
        rows = [
            f'<tr><th scope="row">{_esc(a.name)}</th><td>{_esc(a.uri)}</td>'
            f'<td class="chips">{_plain_chips(a.labels)}</td></tr>'
            for a in apps[:SHOWN]
        ]
        out.append(
            _capped_table("preview-apps", "Apps", ("Name", "URI", "Labels"), rows, len(apps))
        )
    return "".join(out)


def _capped_table(
    table_id: str, title: str, headers: tuple[str, ...], rows: list[str], total: int
) -> str:
    """A titled table of the first :data:`SHOWN` rows of ``total`` (the count of the rest)."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    more = f"<p>and {total - SHOWN} more</p>" if total > SHOWN else ""
    return (
        f'<h3>{title} ({total})</h3><table class="nodes" id="{table_id}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )


def render_preview(
    role: str,
    result: Page[PreviewNode],
    databases: Sequence[PreviewDb] | None,
    apps: Sequence[PreviewApp] | None,
    *,
    inline_action: str = "",
    as_user: str = "",
) -> str:
    """The preview section (every string escaped). ``inline_action``: the preview of unsaved
    YAML, rendered inside the editor's form (its filter and pager buttons post the text again
    to this URL); otherwise the stored role's preview with GET links. ``None`` for databases
    or apps: the caller may not list them. ``as_user``: whose traits expanded the templates."""
    spec = preview_table(role, as_user)
    linked = not inline_action
    rows = _node_rows(result, spec, linked)
    if rows:
        if linked:
            head = sort_header(spec, result.query, "name", "Node") + sort_header(
                spec, result.query, "addr", "Address"
            )
        else:
            head = '<th scope="col">Node</th><th scope="col">Address</th>'
        table = (
            f'<table class="nodes" id="preview-nodes"><thead><tr>{head}'
            '<th scope="col">Labels</th><th scope="col">Logins</th><th scope="col">MFA</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        table = empty_state(
            spec,
            result.query,
            "This role reaches no node: its node_labels select none, or it allows no login there.",
        )
    if linked:
        controls = _user_form(spec, as_user) + filter_form(spec, result.query)
        paging = pager(spec, result)
    else:
        controls = _inline_filter(spec, result.query, inline_action, as_user)
        paging = _inline_pager(result, inline_action)
    traits = (
        f"template values expand with the traits of user <strong>{_esc(as_user)}</strong>"
        if as_user
        else "no user's traits, so template values expand to nothing"
    )
    note = (
        '<p class="muted">What a user holding only this role may reach now, decided by the '
        "checker that lists and connects to servers from the command line (deny rules and "
        f"conditions included; {traits}; locks aside).</p>"
    )
    return (
        f'<section id="preview" aria-labelledby="preview-title">'
        f'<h2 id="preview-title">Access preview of {_esc(role)}</h2>{note}'
        f"<h3>Nodes</h3>{controls}{table}{paging}{_others(databases, apps)}</section>"
    )
