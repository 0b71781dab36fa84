"""Locks in the browser (``/web/admin/locks``): list, create (target, message, TTL), lift.

Layer: web. A lock is a resource, as for ``bctl lock`` / ``bctl locks ls`` / ``bctl rm
lock/NAME``: :meth:`GuardedAuth.create_resource` and :meth:`~GuardedAuth.delete_resource`
(RBAC on ``lock``, audited by auth). Live access the lock covers ends within a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from aiohttp import web

from bastion.errors import BadParameter
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.duration import parse_duration
from bastion.types.meta import Metadata
from bastion.web.admin_common import (
    ADMIN_SCRIPTS,
    PageContext,
    Shell,
    esc,
    guarded_page,
    hidden_csrf,
    notice,
)

__all__ = ["TARGETS", "LockPages", "add_lock_routes", "build_lock", "lock_rows"]

TARGETS = (
    "user",
    "role",
    "login",
    "node",
    "device",
    "mfa_device",
    "access_request",
    "bot",
    "session",
)
"""What a lock made here may name (LockTarget fields; ``user_epoch`` is the server's)."""


def build_lock(form: dict[str, str], now: datetime) -> Lock:
    """The lock the create form describes (pure).

    Raises:
        BadParameter: an unknown target kind, an empty target, a bad TTL.
    """
    kind = form.get("target_kind", "")
    value = form.get("target", "").strip()
    if kind not in TARGETS:
        raise BadParameter(f"target kind must be one of {', '.join(TARGETS)}")
    if not value or len(value) > 256:
        raise BadParameter(f"give the {kind} to lock (at most 256 characters)")
    message = form.get("message", "").strip()
    if len(message) > 1000:
        raise BadParameter("the message is at most 1000 characters")
    ttl = form.get("ttl", "").strip()
    expires = None
    if ttl:
        try:
            delta = parse_duration(ttl)
        except ValueError:
            raise BadParameter(
                f"invalid TTL {ttl[:40]!r}: use a duration such as 30m, 8h, 2d"
            ) from None
        if delta.total_seconds() <= 0:
            raise BadParameter("the TTL must be positive")
        expires = now + delta
    return Lock(
        metadata=Metadata(name=str(uuid.uuid4()), expires=expires),
        spec=LockSpec(target=LockTarget(**{kind: value}), message=message),
    )


def _target_text(target: LockTarget) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.model_dump().items() if v)


def lock_rows(ctx: PageContext, locks: Sequence[Lock]) -> str:
    if not locks:
        return '<p class="empty">No locks in force.</p>'
    may_lift = ctx.may("lock", "delete")
    rows = []
    for lock in sorted(
        locks, key=lambda x: (x.spec.created.isoformat() if x.spec.created else "", x.name)
    ):
        lift = ""
        if may_lift:
            lift = (
                f'<form method="post" action="/web/admin/locks/{esc(quote(lock.name, safe=""))}'
                f'/delete" data-admin-change data-confirm="Lift this lock?">{hidden_csrf(ctx)}'
                f'<button type="submit" aria-label="Lift lock {esc(lock.name)}">Lift</button>'
                "</form>"
            )
        expires = lock.metadata.expires
        rows.append(
            f'<tr data-lock="{esc(lock.name)}"><th scope="row">'
            f"{esc(_target_text(lock.spec.target))}</th><td>{esc(lock.spec.message)}</td>"
            f"<td>{esc(f'{expires:%Y-%m-%d %H:%M:%S} UTC' if expires else 'never')}</td>"
            f"<td>{esc(lock.spec.created_by)}</td><td><code>{esc(lock.name)}</code></td>"
            f"<td>{lift}</td></tr>"
        )
    return (
        '<table class="nodes" id="locks"><thead><tr><th scope="col">Target</th>'
        '<th scope="col">Message</th><th scope="col">Expires</th><th scope="col">Created by</th>'
        '<th scope="col">Name</th><th scope="col">Lift</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


class LockPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def _render(
        self, ctx: PageContext, top: str = "", status: int = 200, form: dict[str, str] | None = None
    ) -> web.Response:
        locks = [x for x in await ctx.guard.list_resources("lock") if isinstance(x, Lock)]
        values = form or {}
        create = notice("Your roles do not allow creating locks.")
        if ctx.may("lock", "create"):
            chosen = values.get("target_kind", "user")
            options = "".join(
                f'<option value="{t}"{" selected" if t == chosen else ""}>{t}</option>'
                for t in TARGETS
            )
            create = (
                '<form method="post" action="/web/admin/locks" class="card filters" '
                f'data-admin-change aria-label="Create a lock">{hidden_csrf(ctx)}'
                f'<label>Target <select name="target_kind" id="lock-kind">{options}</select>'
                '</label><label>Name or id <input name="target" id="lock-target" required '
                f'value="{esc(values.get("target", ""))}"></label>'
                '<label>Message <input name="message" id="lock-message" '
                f'value="{esc(values.get("message", ""))}" placeholder="investigating"></label>'
                '<label>TTL <input name="ttl" id="lock-ttl" placeholder="1h (empty: never)" '
                f'value="{esc(values.get("ttl", ""))}"></label>'
                '<button type="submit">Create lock</button></form>'
            )
        body = top + lock_rows(ctx, locks) + "<h2>New lock</h2>" + create
        return ctx.page(
            "Locks", body, status=status, scripts=ADMIN_SCRIPTS, meta=await self.shell.mfa_meta(ctx)
        )

    async def list(self, ctx: PageContext) -> web.StreamResponse:
        return await self._render(ctx)

    async def create(self, ctx: PageContext) -> web.StreamResponse:
        form = await self.shell.change(ctx, "lock", "create")
        try:
            lock = build_lock(form, self.shell.auth.clock.now())
        except BadParameter as exc:
            return await self._render(ctx, notice(exc.message, error=True), 400, form)
        await ctx.guard.create_resource(lock, force=False)
        return await self._render(
            ctx, notice(f"Lock on {_target_text(lock.spec.target)} created."), 201
        )

    async def lift(self, ctx: PageContext) -> web.StreamResponse:
        await self.shell.change(ctx, "lock", "delete")
        name = ctx.request.match_info["name"]
        await ctx.guard.delete_resource("lock", name)
        return await self._render(ctx, notice(f"Lock {name} lifted."))


def add_lock_routes(app: web.Application, shell: Shell) -> None:
    pages = LockPages(shell)
    r = app.router
    r.add_get("/web/admin/locks", guarded_page(shell, pages.list))
    r.add_post("/web/admin/locks", guarded_page(shell, pages.create))
    r.add_post("/web/admin/locks/{name}/delete", guarded_page(shell, pages.lift))
