"""Users in the browser (``/web/admin/users``): list, create (an invite link), reset, delete.

Layer: web. The same calls as ``bctl users``: :meth:`GuardedAuth.list_resources` (``list`` on
``user``), :meth:`GuardedAuth.add_user` (``create``), :meth:`GuardedAuth.reset_user`
(``update``) and :meth:`GuardedAuth.delete_resource` (``delete``), so RBAC decides and every
change is audited by auth. Deleting asks for a confirmation first (and warns when the user is
the last holder of the ``editor`` role, as ``bctl users rm`` does). Admin MFA applies to every
change (:mod:`bastion.web.admin_webauthn`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from aiohttp import web

from bastion.auth.users import Invite
from bastion.errors import BadParameter
from bastion.types.access import User
from bastion.web.admin_common import (
    ADMIN_SCRIPTS,
    PageContext,
    Shell,
    esc,
    guarded_page,
    hidden_csrf,
    notice,
)

__all__ = ["ADMIN_ROLE", "UserPages", "add_user_routes", "last_holder", "parse_list", "user_rows"]

ADMIN_ROLE = "editor"
_LIST_ITEM = re.compile(r"^[A-Za-z0-9_.@:+-]{1,128}$")


def parse_list(text: str, what: str) -> list[str]:
    """``"a, b c"`` into ``["a", "b", "c"]`` (commas or spaces).

    Raises:
        BadParameter: an item with characters a role or login cannot have.
    """
    items = [x for x in re.split(r"[\s,]+", text.strip()) if x]
    for item in items:
        if not _LIST_ITEM.match(item):
            raise BadParameter(f"{what}: {item[:60]!r} is not a valid name")
    return items


def last_holder(users: Sequence[User], name: str, role: str = ADMIN_ROLE) -> bool:
    """Whether ``name`` is the only user holding ``role``."""
    return {u.name for u in users if role in u.spec.roles} == {name}


def _path(name: str) -> str:
    return quote(name, safe="")


def user_rows(ctx: PageContext, users: Sequence[User]) -> str:
    """The table of users with the actions the caller may take (escaped)."""
    if not users:
        return '<p class="empty">No users yet. Create the first one below.</p>'
    may_reset, may_delete = ctx.may("user", "update"), ctx.may("user", "delete")
    rows = []
    for user in sorted(users, key=lambda u: u.name):
        spec = user.spec
        state = spec.status.sign_up or ("bot" if spec.bot else "active")
        actions = []
        if may_reset and not spec.bot:
            actions.append(
                f'<form method="post" action="/web/admin/users/{esc(_path(user.name))}/reset" '
                f'data-admin-change data-confirm="Reset {esc(user.name)}? Their password and '
                'second factors are forgotten and their certificates revoked.">'
                f'{hidden_csrf(ctx)}<button type="submit" aria-label="Reset {esc(user.name)}">'
                "Reset</button></form>"
            )
        if may_delete:
            actions.append(
                f'<a class="button danger" href="/web/admin/users/{esc(_path(user.name))}/delete" '
                f'aria-label="Delete {esc(user.name)}">Delete</a>'
            )
        rows.append(
            f'<tr><th scope="row">{esc(user.name)}</th><td>{esc(", ".join(spec.roles))}</td>'
            f"<td>{esc(', '.join(spec.traits.get('logins', [])))}</td><td>{esc(state)}</td>"
            f'<td class="actions">{"".join(actions)}</td></tr>'
        )
    return (
        '<table class="nodes" id="users"><thead><tr><th scope="col">Name</th>'
        '<th scope="col">Roles</th><th scope="col">Logins</th><th scope="col">State</th>'
        '<th scope="col">Actions</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


def _invite_box(invite: Invite, verb: str) -> str:
    return (
        f'<section class="card invite" aria-label="Invite"><p class="ok" role="status">User '
        f"<strong>{esc(invite.user)}</strong> has been {verb}. Share this one-time invite link "
        f"(it expires {invite.expires:%Y-%m-%d %H:%M} UTC):</p>"
        f'<p><code id="invite-url">{esc(invite.url)}</code></p>'
        '<p class="muted">They open it, or run the command the link\'s page shows, to set their '
        "password and second factor.</p></section>"
    )


class UserPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def _render(self, ctx: PageContext, top: str = "", status: int = 200) -> web.Response:
        users = [u for u in await ctx.guard.list_resources("user") if isinstance(u, User)]
        create = ""
        if ctx.may("user", "create"):
            create = (
                '<form method="post" action="/web/admin/users" class="card filters" '
                f'data-admin-change aria-label="Create a user">{hidden_csrf(ctx)}'
                '<label>Name <input name="name" id="new-user" required maxlength="128"></label>'
                '<label>Roles <input name="roles" id="new-roles" placeholder="access, editor">'
                "</label>"
                '<label>Logins <input name="logins" id="new-logins" placeholder="ubuntu">'
                '</label><button type="submit">Create user</button></form>'
            )
        body = (
            top
            + user_rows(ctx, users)
            + "<h2>New user</h2>"
            + (create or notice("Your roles do not allow creating users."))
        )
        return ctx.page(
            "Users", body, status=status, scripts=ADMIN_SCRIPTS, meta=await self.shell.mfa_meta(ctx)
        )

    async def list(self, ctx: PageContext) -> web.StreamResponse:
        return await self._render(ctx)

    async def create(self, ctx: PageContext) -> web.StreamResponse:
        form = await self.shell.change(ctx, "user", "create")
        name = form.get("name", "").strip()
        roles = parse_list(form.get("roles", ""), "roles")
        logins = parse_list(form.get("logins", ""), "logins")
        invite = await ctx.guard.add_user(name, roles, logins, {})
        return await self._render(ctx, _invite_box(invite, "created"), status=201)

    async def reset(self, ctx: PageContext) -> web.StreamResponse:
        await self.shell.change(ctx, "user", "update")
        invite = await ctx.guard.reset_user(ctx.request.match_info["name"])
        return await self._render(ctx, _invite_box(invite, "reset"))

    async def confirm_delete(self, ctx: PageContext) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        users = [u for u in await ctx.guard.list_resources("user") if isinstance(u, User)]
        if name not in {u.name for u in users}:
            return ctx.page("Delete user", notice(f'no user "{name}"', error=True), status=404)
        warning = ""
        if last_holder(users, name):
            warning = notice(
                f'"{name}" is the last user with the {ADMIN_ROLE} role: after this, only the '
                "local admin identity on the auth host (bctl --data-dir) can administer the "
                "cluster.",
                error=True,
            )
        body = (
            f"<p>Delete the user <strong>{esc(name)}</strong> and their credentials? Their "
            "certificates and web sessions stop working at once.</p>"
            + warning
            + f'<form method="post" action="/web/admin/users/{esc(_path(name))}/delete" '
            f'data-admin-change class="card">{hidden_csrf(ctx)}'
            '<button type="submit" class="danger" id="confirm-delete">Delete</button> '
            '<a href="/web/admin/users">Cancel</a></form>'
        )
        return ctx.page(
            "Delete user", body, scripts=ADMIN_SCRIPTS, meta=await self.shell.mfa_meta(ctx)
        )

    async def delete(self, ctx: PageContext) -> web.StreamResponse:
        await self.shell.change(ctx, "user", "delete")
        name = ctx.request.match_info["name"]
        await ctx.guard.delete_resource("user", name)
        return await self._render(ctx, notice(f'User "{name}" has been deleted.'))


def add_user_routes(app: web.Application, shell: Shell) -> None:
    pages = UserPages(shell)
    r = app.router
    r.add_get("/web/admin/users", guarded_page(shell, pages.list))
    r.add_post("/web/admin/users", guarded_page(shell, pages.create))
    r.add_post("/web/admin/users/{name}/reset", guarded_page(shell, pages.reset))
    r.add_get("/web/admin/users/{name}/delete", guarded_page(shell, pages.confirm_delete))
    r.add_post("/web/admin/users/{name}/delete", guarded_page(shell, pages.delete))
