"""Join tokens, SSO connectors and the auth preference in the browser.

Layer: web. The same operations as ``bctl tokens add|ls|rm``, ``bctl get oidc|saml|github`` and
``bctl get cap``, through :class:`~bastion.auth.guarded.GuardedAuth` (RBAC on ``token``, the
connector kinds and ``cluster_auth_preference``; changes audited by auth). Creating and removing
a token are admin changes: CSRF, then the caller's right, then admin MFA when the cluster
requires it (:meth:`Shell.change`). A new token's secret is shown once, like ``bctl tokens add``.

* ``GET /web/admin/tokens``, ``POST /web/admin/tokens`` (roles, TTL, labels),
  ``POST /web/admin/tokens/{name}/delete``.
* ``GET /web/admin/connectors``: the SSO connectors (secrets redacted by the server) and the
  cluster auth preference (read-only here; ``bctl edit cap`` changes it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import quote

from aiohttp import web

from bastion.errors import AccessDenied, BadParameter, BastionError
from bastion.types.access import AuthPreference, ProvisionToken
from bastion.types.duration import parse_duration
from bastion.types.meta import Resource
from bastion.web.admin_common import (
    ADMIN_SCRIPTS,
    PageContext,
    Shell,
    esc,
    guarded_page,
    hidden_csrf,
    notice,
)

__all__ = [
    "CONNECTOR_KINDS",
    "TOKEN_ROLES",
    "TokenPages",
    "add_token_routes",
    "parse_token_form",
    "token_rows",
]

TOKEN_ROLES = ("node", "db", "app", "proxy")
"""What a token made here may let an agent become (bots have their own command)."""
CONNECTOR_KINDS = ("oidc", "saml", "github")
MAX_TTL = timedelta(days=30)


def parse_token_form(form: dict[str, str]) -> tuple[list[str], timedelta, dict[str, str]]:
    """Roles, TTL and labels of the create form (pure).

    Raises:
        BadParameter: no or unknown roles, a bad TTL, a label that is not ``k=v``.
    """
    roles = [r.strip() for r in form.get("roles", "").split(",") if r.strip()]
    if not roles or any(r not in TOKEN_ROLES for r in roles):
        raise BadParameter(f"roles: a comma-separated list of {', '.join(TOKEN_ROLES)}")
    text = form.get("ttl", "").strip() or "30m"
    try:
        ttl = parse_duration(text)
    except ValueError:
        raise BadParameter(f"invalid TTL {text[:40]!r}: use a duration such as 30m or 2h") from None
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise BadParameter("the TTL must be positive and at most 30 days")
    labels: dict[str, str] = {}
    for item in form.get("labels", "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadParameter(f"label {item.strip()[:60]!r}: use key=value")
        labels[key.strip()] = value.strip()
    return roles, ttl, labels


def token_rows(ctx: PageContext, tokens: Sequence[ProvisionToken]) -> str:
    if not tokens:
        return '<p class="empty">No join tokens.</p>'
    may_remove = ctx.may("token", "delete")
    rows = []
    for token in sorted(tokens, key=lambda t: t.name):
        remove = ""
        if may_remove:
            remove = (
                f'<form method="post" action="/web/admin/tokens/{esc(quote(token.name, safe=""))}'
                f'/delete" data-admin-change data-confirm="Remove this token?">{hidden_csrf(ctx)}'
                f'<button type="submit" aria-label="Remove token {esc(token.name)}">Remove'
                "</button></form>"
            )
        expires = token.metadata.expires
        labels = ", ".join(f"{k}={v}" for k, v in sorted(token.spec.labels.items()))
        rows.append(
            f'<tr data-token="{esc(token.name)}"><th scope="row"><code>{esc(token.name)}</code>'
            f"</th><td>{esc(', '.join(token.spec.roles))}</td><td>{esc(labels)}</td>"
            f"<td>{esc(token.spec.join_method)}</td>"
            f"<td>{esc(f'{expires:%Y-%m-%d %H:%M:%S} UTC' if expires else 'never')}</td>"
            f"<td>{esc(token.spec.created_by)}</td><td>{remove}</td></tr>"
        )
    return (
        '<table class="nodes" id="tokens"><thead><tr><th scope="col">Name</th>'
        '<th scope="col">Roles</th><th scope="col">Labels</th><th scope="col">Method</th>'
        '<th scope="col">Expires</th><th scope="col">Created by</th>'
        '<th scope="col">Remove</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


class TokenPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def _render(
        self, ctx: PageContext, top: str = "", status: int = 200, form: dict[str, str] | None = None
    ) -> web.Response:
        tokens = [
            t for t in await ctx.guard.list_resources("token") if isinstance(t, ProvisionToken)
        ]
        values = form or {}
        create = notice("Your roles do not allow creating join tokens.")
        if ctx.may("token", "create"):
            create = (
                '<form method="post" action="/web/admin/tokens" class="card filters" '
                f'data-admin-change aria-label="Create a join token">{hidden_csrf(ctx)}'
                '<label>Roles <input name="roles" id="token-roles" required '
                f'value="{esc(values.get("roles", "node"))}" placeholder="node,db"></label>'
                '<label>TTL <input name="ttl" id="token-ttl" '
                f'value="{esc(values.get("ttl", "30m"))}"></label>'
                '<label>Labels <input name="labels" id="token-labels" placeholder="env=prod" '
                f'value="{esc(values.get("labels", ""))}"></label>'
                '<button type="submit">Create token</button></form>'
            )
        body = top + token_rows(ctx, tokens) + "<h2>New join token</h2>" + create
        return ctx.page(
            "Join tokens",
            body,
            status=status,
            scripts=ADMIN_SCRIPTS,
            meta=await self.shell.mfa_meta(ctx),
        )

    async def list(self, ctx: PageContext) -> web.StreamResponse:
        return await self._render(ctx)

    async def create(self, ctx: PageContext) -> web.StreamResponse:
        form = await self.shell.change(ctx, "token", "create")
        try:
            roles, ttl, labels = parse_token_form(form)
            new = await ctx.guard.add_token(roles, ttl, labels)
        except BadParameter as exc:
            return await self._render(ctx, notice(exc.message, error=True), 400, form)
        shown = (
            '<div class="notice ok" role="status"><p>Join token created; it is shown once:</p>'
            f'<p><code id="token-secret">{esc(new.token)}</code></p>'
            "<p>Join with <code>"
            f"bbot join --role={esc(roles[0])} --token={esc(new.token)} --auth=PROXY:3080 "
            "--ca-pin=sha256:... --name=HOST --dest=DIR"
            "</code> (the CA pin is on the cluster's start-up output).</p></div>"
        )
        return await self._render(ctx, shown, 201)

    async def remove(self, ctx: PageContext) -> web.StreamResponse:
        await self.shell.change(ctx, "token", "delete")
        name = ctx.request.match_info["name"]
        await ctx.guard.delete_resource("token", name)
        return await self._render(ctx, notice(f"Token {name} removed."))

    async def connectors(self, ctx: PageContext) -> web.StreamResponse:
        await ctx.guard.require(AuthPreference.KIND, "read")  # a 403 page (and audited) first
        sections = []
        for kind in CONNECTOR_KINDS:
            try:
                items: list[Resource] = await ctx.guard.list_resources(kind)
            except AccessDenied:
                sections.append(f"<h2>{kind.upper()}</h2>" + notice(f"You may not list {kind}."))
                continue
            sections.append(f"<h2>{kind.upper()}</h2>" + _connector_rows(kind, items))
        try:
            pref = await ctx.guard.get_resource(AuthPreference.KIND, AuthPreference.NAME)
            spec = pref.model_dump(mode="json").get("spec", {})
            rows = "".join(
                f'<tr><th scope="row">{esc(k)}</th><td><code>{esc(_value(v))}</code></td></tr>'
                for k, v in sorted(spec.items())
            )
            cap = (
                '<table class="nodes" id="auth-preference"><thead><tr><th scope="col">Setting'
                f'</th><th scope="col">Value</th></tr></thead><tbody>{rows}</tbody></table>'
                '<p class="muted">Change it with <code>'
                "bctl edit cluster_auth_preference/cluster-auth-preference"
                "</code>.</p>"
            )
        except BastionError as exc:
            cap = notice(exc.message, error=True)
        body = "".join(sections) + "<h2>Cluster auth preference</h2>" + cap
        return ctx.page("Connectors and auth preference", body)


def _value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _connector_rows(kind: str, items: Sequence[Resource]) -> str:
    if not items:
        return f'<p class="empty">No {kind} connectors.</p>'
    rows = []
    for item in sorted(items, key=lambda x: x.name):
        spec = item.model_dump(mode="json").get("spec", {})
        where = (
            spec.get("issuer_url") or spec.get("entity_descriptor_url") or spec.get("display", "")
        )
        rows.append(
            f'<tr><th scope="row">{esc(item.name)}</th><td>{esc(spec.get("display", ""))}</td>'
            f"<td>{esc(where)}</td></tr>"
        )
    return (
        f'<table class="nodes" id="{kind}-connectors"><thead><tr><th scope="col">Name</th>'
        '<th scope="col">Display</th><th scope="col">Provider</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def add_token_routes(app: web.Application, shell: Shell) -> None:
    pages = TokenPages(shell)
    r = app.router
    r.add_get("/web/admin/tokens", guarded_page(shell, pages.list))
    r.add_post("/web/admin/tokens", guarded_page(shell, pages.create))
    r.add_post("/web/admin/tokens/{name}/delete", guarded_page(shell, pages.remove))
    r.add_get("/web/admin/connectors", guarded_page(shell, pages.connectors))
