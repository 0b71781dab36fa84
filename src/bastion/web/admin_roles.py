"""Roles in the browser (``/web/admin/roles``): list, view as YAML, edit, create.

Layer: web. The same calls as ``bctl get/edit/create role``: :meth:`GuardedAuth.list_resources`,
:meth:`~GuardedAuth.get_resource`, :meth:`~GuardedAuth.update_resource` (conditional on the
revision the page showed: someone else's change in between is refused, never overwritten) and
:meth:`~GuardedAuth.create_resource`. An invalid edit (YAML, a field, a changed kind or name,
or the server's validation) is shown above the editor with the text kept, as ``bctl edit``
reopens the editor with the error.

The role's effective access is previewed on the node list (:mod:`bastion.web.role_preview`):
``GET /web/admin/roles/NAME/preview`` for the stored role (searched, filtered, sorted, paged
like the resources page), and the editor's **Preview access** button for the text being edited
(``POST`` with the CSRF token to the same path: validated exactly as a save, never saved; an
error is shown inline as a save's would be).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from aiohttp import web

from bastion.clock import in_zone
from bastion.errors import BadParameter, BastionError, NotFound
from bastion.types.access import Role, User
from bastion.types.apps import App
from bastion.types.codec import dump_resource, load_resources
from bastion.types.database import Database
from bastion.types.inventory import Node
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
from bastion.web.listing import ListQuery, list_query, select
from bastion.web.role_preview import (
    preview_apps,
    preview_databases,
    preview_nodes,
    preview_path,
    preview_table,
    render_preview,
)
from bastion.web.security import security_headers

__all__ = ["NEW_ROLE", "RolePages", "add_role_routes", "parse_role"]

NEW_ROLE = """kind: role
version: v1
metadata:
  name: NAME
spec:
  allow:
    logins: []
    node_labels: {}
"""


def parse_role(text: str, name: str | None) -> Resource:
    """The one role the edited text holds (``name``: it must keep this name).

    Raises:
        BadParameter: malformed YAML/JSON (with its line), an invalid role, more or fewer than
            one resource, another kind or a changed name.
    """
    resources = load_resources(text.replace("\r\n", "\n"), f"role/{name or 'new'}")
    if len(resources) != 1:
        raise BadParameter("the text must hold exactly one role")
    role = resources[0]
    if role.kind != "role":
        raise BadParameter(f"expected kind: role, got {role.kind}")
    if name is not None and role.name != name:
        raise BadParameter(
            f"the name cannot be changed by an edit (got {role.name}); create a new role instead"
        )
    return role


def _path(name: str) -> str:
    return quote(name, safe="")


class RolePages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def list(self, ctx: PageContext) -> web.StreamResponse:
        roles = [r for r in await ctx.guard.list_resources("role") if isinstance(r, Role)]
        rows = "".join(
            f'<tr><th scope="row"><a href="/web/admin/roles/{esc(_path(r.name))}">'
            f"{esc(r.name)}</a></th><td>{esc(r.metadata.description)}</td>"
            f"<td>{esc(', '.join(r.spec.allow.logins))}</td></tr>"
            for r in sorted(roles, key=lambda r: r.name)
        )
        table = (
            '<table class="nodes" id="roles"><thead><tr><th scope="col">Name</th>'
            '<th scope="col">Description</th><th scope="col">Logins</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            if rows
            else '<p class="empty">No roles.</p>'
        )
        new = (
            '<p><a class="button" href="/web/admin/roles/new">New role</a></p>'
            if ctx.may("role", "create")
            else ""
        )
        return ctx.page("Roles", table + new)

    def _editor(
        self,
        ctx: PageContext,
        action: str,
        text: str,
        revision: str,
        error: str,
        button: str,
        preview: tuple[str, str] = ("", ""),
    ) -> str:
        """The YAML editor; ``preview``: (the preview URL, the preview section of this text).
        The preview button comes first: Enter in the preview's search field previews, never
        saves; admin.js asks for no security key for it (``data-preview``)."""
        problem = f'<p class="error" role="alert" id="role-error">{esc(error)}</p>' if error else ""
        url, section = preview
        preview_button = (
            f'<button type="submit" id="role-preview" formaction="{esc(url)}" data-preview>'
            "Preview access</button> "
            if url
            else ""
        )
        return (
            f'<form method="post" action="{esc(action)}" data-admin-change class="editor">'
            f"{hidden_csrf(ctx)}"
            f'<input type="hidden" name="revision" value="{esc(revision)}">{problem}'
            '<label for="role-yaml">YAML</label>'
            f'<textarea id="role-yaml" name="yaml" rows="24" spellcheck="false" '
            f'aria-describedby="role-error">{esc(text)}</textarea>'
            f'<p>{preview_button}<button type="submit" id="role-save">{esc(button)}</button> '
            f'<a href="/web/admin/roles">Back to roles</a></p>{section}</form>'
        )

    async def _traits(self, ctx: PageContext, as_user: str) -> dict[str, Sequence[str]]:
        """The traits of user ``as_user`` (none: no user).

        Raises:
            AccessDenied: no ``read`` on ``user`` (audited).
            BadParameter: no such user.
        """
        if not as_user:
            return {}
        try:
            user = await ctx.guard.get_resource("user", as_user.strip())
        except NotFound:
            raise BadParameter(f"traits of user: no user {as_user.strip()[:100]!r}") from None
        return dict(user.spec.traits) if isinstance(user, User) else {}

    async def _preview(
        self,
        ctx: PageContext,
        role: Role,
        query: ListQuery,
        inline_action: str = "",
        as_user: str = "",
    ) -> str:
        """The preview section of ``role``: the nodes the caller may list (every node with
        ``list`` on ``node``, else those their own roles show), databases and apps when the
        caller may list them; templates expanded with the traits of user ``as_user``.

        Raises:
            BadParameter: a malformed label filter, or no user ``as_user``.
        """
        traits = await self._traits(ctx, as_user)
        auth = self.shell.auth
        if ctx.may("node", "list"):
            stored: list[Node] = await auth.nodes.list()
        else:
            stored = [n for n in await ctx.guard.list_resources("node") if isinstance(n, Node)]
        pref = await auth.auth_preference()
        nodes = preview_nodes(
            role,
            ((n.name, n.spec.addr, n.all_labels()) for n in stored),
            time=in_zone(auth.clock.now(), pref.spec.time_zone),
            cluster_requires_mfa=pref.spec.require_session_mfa,
            traits=traits,
        )
        result = select(nodes, query, preview_table(role.name))
        databases = (
            preview_databases(
                role,
                [d for d in await ctx.guard.list_resources("db") if isinstance(d, Database)],
                traits,
            )
            if ctx.may("db", "list")
            else None
        )
        apps = (
            preview_apps(
                role,
                [a for a in await ctx.guard.list_resources("app") if isinstance(a, App)],
                traits,
            )
            if ctx.may("app", "list")
            else None
        )
        return render_preview(
            role.name, result, databases, apps, inline_action=inline_action, as_user=as_user
        )

    async def preview(self, ctx: PageContext) -> web.StreamResponse:
        """``GET /web/admin/roles/NAME/preview``: the stored role's access (a bad query is one
        line above the unfiltered list)."""
        name = ctx.request.match_info["name"]
        role = await ctx.guard.get_resource("role", name)
        if not isinstance(role, Role):
            raise BadParameter(f"{name} is not a role")
        params = {k: v for k, v in ctx.request.query.items() if isinstance(v, str)}
        as_user = params.get("as_user", "")[:200]
        error, status = "", 200
        try:
            query = list_query(params, ("name", "addr"))
            section = await self._preview(ctx, role, query, as_user=as_user)
        except BadParameter as exc:
            error, status = exc.message, 400
            section = await self._preview(ctx, role, ListQuery())
        back = f'<p><a href="/web/admin/roles/{esc(_path(name))}">Back to role {esc(name)}</a></p>'
        body = back + (notice(error, error=True) if error else "") + section
        return ctx.page(f"Access of role {name}", body, status=status)

    async def preview_unsaved(self, ctx: PageContext) -> web.StreamResponse:
        """``POST /web/admin/roles/NAME/preview`` (``new``: the new-role editor): the edited
        text validated as a save would (nothing saved), the editor shown again with the text
        and either the error inline or the preview below it."""
        form = await ctx.form()  # the CSRF check first
        name = ctx.request.match_info["name"]
        new = name == "new"
        await ctx.guard.require("role", "create" if new else "update")
        text = form.get("yaml", "")
        try:
            role = parse_role(text, None if new else name)
            if not isinstance(role, Role):
                raise BadParameter("expected kind: role")
            query = list_query({k: form.get(k, "") for k in ("q", "label", "page")}, ("name",))
            as_user = form.get("as_user", "")[:200]
            section = await self._preview(ctx, role, query, preview_path(name), as_user)
        except BastionError as exc:
            if exc.http_status >= 500 or exc.http_status in (401, 403):
                raise
            if new:
                return await self.new(ctx, text, exc.message, status=exc.http_status)
            return await self.view(ctx, text, exc.message, status=exc.http_status)
        if new:
            return await self.new(ctx, text, preview=section)
        return await self.view(ctx, text, preview=section)

    async def view(
        self,
        ctx: PageContext,
        text: str | None = None,
        error: str = "",
        status: int = 200,
        preview: str = "",
    ) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        role = await ctx.guard.get_resource("role", name)
        current = dump_resource(role, "yaml")
        body = (
            f'<p><a href="{esc(preview_path(name))}" id="stored-preview">Preview the stored '
            "role's access on the node list</a></p>"
            f'<h2>Stored</h2><pre class="yaml" id="role-stored" tabindex="0" '
            f'aria-label="Stored YAML of {esc(name)}">{esc(current)}</pre>'
        )
        if ctx.may("role", "update"):
            if role.metadata.labels.get("managed-by"):
                body += notice(
                    f"This role is managed by {role.metadata.labels['managed-by']}: the next "
                    "bctl apply undoes an edit made here; change the files instead.",
                    error=True,
                )
            body += "<h2>Edit</h2>" + self._editor(
                ctx,
                f"/web/admin/roles/{_path(name)}",
                current if text is None else text,
                role.metadata.revision,
                error,
                "Save",
                (preview_path(name), preview),
            )
        return ctx.page(
            f"Role {name}",
            body,
            status=status,
            scripts=ADMIN_SCRIPTS,
            meta=await self.shell.mfa_meta(ctx),
        )

    async def update(self, ctx: PageContext) -> web.StreamResponse:
        form = await self.shell.change(ctx, "role", "update")
        name = ctx.request.match_info["name"]
        text = form.get("yaml", "")
        try:
            role = parse_role(text, name)
            if not role.metadata.revision:
                role.metadata.revision = form.get("revision", "")  # stay conditional
            await ctx.guard.update_resource(role)
        except BastionError as exc:
            if exc.http_status >= 500 or exc.http_status in (401, 403):
                raise
            return await self.view(ctx, text, exc.message, status=exc.http_status)
        response = await self.view(ctx)
        assert isinstance(response, web.Response) and isinstance(response.text, str)
        response.text = response.text.replace(
            "<h2>Stored</h2>", notice(f'Role "{name}" has been updated.') + "<h2>Stored</h2>", 1
        )
        return response

    async def new(
        self,
        ctx: PageContext,
        text: str = NEW_ROLE,
        error: str = "",
        status: int = 200,
        preview: str = "",
    ) -> web.StreamResponse:
        await ctx.guard.require("role", "create")
        body = self._editor(
            ctx,
            "/web/admin/roles/new",
            text,
            "",
            error,
            "Create",
            (preview_path("new"), preview),
        )
        return ctx.page(
            "New role",
            body,
            status=status,
            scripts=ADMIN_SCRIPTS,
            meta=await self.shell.mfa_meta(ctx),
        )

    async def create(self, ctx: PageContext) -> web.StreamResponse:
        form = await self.shell.change(ctx, "role", "create")
        text = form.get("yaml", "")
        try:
            role = parse_role(text, None)
            await ctx.guard.create_resource(role, force=False)
        except BastionError as exc:
            if exc.http_status >= 500 or exc.http_status in (401, 403):
                raise
            return await self.new(ctx, text, exc.message, status=exc.http_status)
        done = web.HTTPSeeOther(f"/web/admin/roles/{_path(role.name)}")
        security_headers(done)
        raise done


def add_role_routes(app: web.Application, shell: Shell) -> None:
    pages = RolePages(shell)
    r = app.router
    r.add_get("/web/admin/roles", guarded_page(shell, pages.list))
    r.add_get("/web/admin/roles/new", guarded_page(shell, pages.new))
    r.add_post("/web/admin/roles/new", guarded_page(shell, pages.create))
    r.add_get("/web/admin/roles/{name}", guarded_page(shell, pages.view))
    r.add_post("/web/admin/roles/{name}", guarded_page(shell, pages.update))
    r.add_get("/web/admin/roles/{name}/preview", guarded_page(shell, pages.preview))
    r.add_post("/web/admin/roles/{name}/preview", guarded_page(shell, pages.preview_unsaved))
