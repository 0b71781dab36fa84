"""Roles in the browser (``/web/admin/roles``): list, view as YAML, edit, create.

Layer: web. The same calls as ``bctl get/edit/create role``: :meth:`GuardedAuth.list_resources`,
:meth:`~GuardedAuth.get_resource`, :meth:`~GuardedAuth.update_resource` (conditional on the
revision the page showed: someone else's change in between is refused, never overwritten) and
:meth:`~GuardedAuth.create_resource`. An invalid edit (YAML, a field, a changed kind or name,
or the server's validation) is shown above the editor with the text kept, as ``bctl edit``
reopens the editor with the error.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from bastion.errors import BadParameter, BastionError
from bastion.types.access import Role
from bastion.types.codec import dump_resource, load_resources
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
        self, ctx: PageContext, action: str, text: str, revision: str, error: str, button: str
    ) -> str:
        problem = f'<p class="error" role="alert" id="role-error">{esc(error)}</p>' if error else ""
        return (
            f'<form method="post" action="{esc(action)}" data-admin-change class="editor">'
            f"{hidden_csrf(ctx)}"
            f'<input type="hidden" name="revision" value="{esc(revision)}">{problem}'
            '<label for="role-yaml">YAML</label>'
            f'<textarea id="role-yaml" name="yaml" rows="24" spellcheck="false" '
            f'aria-describedby="role-error">{esc(text)}</textarea>'
            f'<p><button type="submit">{esc(button)}</button> '
            '<a href="/web/admin/roles">Back to roles</a></p></form>'
        )

    async def view(
        self, ctx: PageContext, text: str | None = None, error: str = "", status: int = 200
    ) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        role = await ctx.guard.get_resource("role", name)
        current = dump_resource(role, "yaml")
        body = f'<h2>Stored</h2><pre class="yaml" id="role-stored">{esc(current)}</pre>'
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
        self, ctx: PageContext, text: str = NEW_ROLE, error: str = "", status: int = 200
    ) -> web.StreamResponse:
        await ctx.guard.require("role", "create")
        body = self._editor(ctx, "/web/admin/roles/new", text, "", error, "Create")
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
