"""Access requests in the browser (``/web/requests``): mine, ask, review (issue 17).

Layer: web. The same rules as ``bsh request``: every action goes through
:class:`bastion.auth.requests.GuardedRequests` (who may see, review or drop which request; a
refusal is audited by the service), so the pages only decide what to show.

* ``GET /web/requests``: my requests, the pending requests I may review, and the form to ask
  (roles or one resource such as ``node/db7``, reason, duration).
* ``POST /web/requests``: create; leads to the request's page.
* ``GET /web/requests/ID``: one request with its reviews; a reviewer gets the review form
  (``?review=approve|deny`` preselects the verdict: the links of Slack and email notices point
  here, :func:`bastion.auth.notify.slack_payload`); the requester sees how to assume it.
* ``POST /web/requests/ID/review``: approve or deny with a reason. A review is not an admin
  change: no security-key ceremony (admin MFA guards administration, not peer reviews).
* ``POST /web/requests/ID/delete``: the requester (or an admin) drops it.

State changes are POST forms with the CSRF token; no inline script; every value is escaped.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from aiohttp import web

from bastion.auth.requests import AccessRequestService, GuardedRequests, NewRequest
from bastion.auth.server import AuthServer
from bastion.errors import BadParameter
from bastion.types.duration import parse_duration
from bastion.types.requests import AccessRequest
from bastion.web.admin_common import PageContext, Shell, esc, guarded_page, hidden_csrf, notice
from bastion.web.security import security_headers

__all__ = ["RequestPages", "add_request_pages", "new_request_from_form", "request_table"]

MAX_REASON = 1024


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def new_request_from_form(form: dict[str, str]) -> NewRequest:
    """The request the create form describes (pure).

    Raises:
        BadParameter: nothing asked for, both roles and a resource, a long reason or a bad
            duration.
    """
    roles = _csv(form.get("roles", ""))
    resources = _csv(form.get("resource", ""))
    if not roles and not resources:
        raise BadParameter("ask for roles (comma-separated) or one resource such as node/db7")
    if roles and resources:
        raise BadParameter("ask for roles or for a resource, not both")
    reason = form.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise BadParameter(f"the reason is at most {MAX_REASON} characters")
    duration: timedelta | None = None
    text = form.get("duration", "").strip()
    if text:
        try:
            duration = parse_duration(text)
        except ValueError:
            raise BadParameter(f"invalid duration {text[:40]!r}: use e.g. 30m, 1h, 4h") from None
        if duration <= timedelta(0):
            raise BadParameter("the duration must be positive")
    return NewRequest(roles=roles, resources=resources, reason=reason, duration=duration)


def _href(request: AccessRequest) -> str:
    return f"/web/requests/{quote(request.name, safe='')}"


def request_table(requests: list[AccessRequest], table_id: str, empty: str) -> str:
    """A table of requests, each linking to its page (every value escaped)."""
    if not requests:
        return f'<p class="empty" id="{esc(table_id)}-empty">{esc(empty)}</p>'
    rows = []
    for r in requests:
        spec = r.spec
        approvals = sum(v.verdict == "approve" for v in spec.reviews)
        rows.append(
            f'<tr data-request="{esc(r.name)}"><th scope="row"><a href="{esc(_href(r))}">'
            f"<code>{esc(r.name[:8])}</code></a></th><td>{esc(spec.user)}</td>"
            f"<td>{esc(', '.join(spec.resources or spec.roles))}</td>"
            f"<td>{esc(spec.reason or '-')}</td><td>{esc(spec.state)}</td>"
            f"<td>{approvals}</td><td>{esc(f'{spec.access_expires:%Y-%m-%d %H:%M} UTC')}</td>"
            "</tr>"
        )
    return (
        f'<table class="nodes" id="{esc(table_id)}"><thead><tr><th scope="col">Request</th>'
        '<th scope="col">User</th><th scope="col">Asked for</th><th scope="col">Reason</th>'
        '<th scope="col">State</th><th scope="col">Approvals</th>'
        '<th scope="col">Access until</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


class RequestPages:
    def __init__(self, shell: Shell, service: AccessRequestService) -> None:
        self.shell = shell
        self.service = service

    def _guarded(self, ctx: PageContext) -> GuardedRequests:
        return GuardedRequests(ctx.guard, self.service)

    async def _list(
        self, ctx: PageContext, top: str = "", status: int = 200, form: dict[str, str] | None = None
    ) -> web.Response:
        everything = await self._guarded(ctx).list()
        mine = [r for r in everything if r.spec.user == ctx.user]
        to_review = [r for r in everything if r.spec.user != ctx.user and r.spec.state == "PENDING"]
        values = form or {}
        create = (
            '<form method="post" action="/web/requests" class="card filters" '
            f'aria-label="Request access">{hidden_csrf(ctx)}'
            '<label>Roles <input name="roles" id="request-roles" placeholder="dba" '
            f'value="{esc(values.get("roles", ""))}"></label>'
            '<label>or a resource <input name="resource" id="request-resource" '
            f'placeholder="node/db7" value="{esc(values.get("resource", ""))}"></label>'
            '<label>Reason <input name="reason" id="request-reason" placeholder="INC-1234" '
            f'maxlength="{MAX_REASON}" value="{esc(values.get("reason", ""))}"></label>'
            '<label>Duration <input name="duration" id="request-duration" placeholder="1h" '
            f'value="{esc(values.get("duration", ""))}"></label>'
            '<button type="submit">Request access</button></form>'
        )
        body = (
            top
            + "<h1>Access requests</h1><h2>My requests</h2>"
            + request_table(mine, "my-requests", "You have made no requests.")
            + "<h2>Waiting for review</h2>"
            + request_table(to_review, "to-review", "Nothing is waiting for your review.")
            + "<h2>Request access</h2>"
            + create
        )
        return ctx.page("Access requests", body, status=status)

    async def list(self, ctx: PageContext) -> web.StreamResponse:
        return await self._list(ctx)

    async def create(self, ctx: PageContext) -> web.StreamResponse:
        form = await ctx.form()
        try:
            new = new_request_from_form(form)
        except BadParameter as exc:
            return await self._list(ctx, notice(exc.message, error=True), 400, form)
        created = await self._guarded(ctx).create(new)
        response = web.HTTPSeeOther(_href(created) + "?created=1")
        security_headers(response)
        raise response

    async def show(self, ctx: PageContext, top: str = "", status: int = 200) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        request = await self._guarded(ctx).get(name)
        spec = request.spec
        if not top and ctx.request.query.get("created"):
            top = notice(f"Request {name} created ({spec.state.lower()}).")
        reviews = "".join(
            f"<li><strong>{esc(v.verdict)}</strong> by {esc(v.author)}"
            f"{' (automatic)' if v.automatic else ''}: {esc(v.reason or '-')} "
            f"<small>{esc(f'{v.created:%Y-%m-%d %H:%M} UTC')}</small></li>"
            for v in spec.reviews
        )
        facts = [
            ("Request", request.name),
            ("User", spec.user),
            ("Roles", ", ".join(spec.roles) or "-"),
            ("Resources", ", ".join(spec.resources) or "-"),
            ("Reason", spec.reason or "-"),
            ("State", spec.state),
            ("Access until", f"{spec.access_expires:%Y-%m-%d %H:%M} UTC"),
            ("Suggested reviewers", ", ".join(spec.suggested_reviewers) or "-"),
        ]
        dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
        body = (
            f'{top}<h1>Access request</h1><dl class="card" id="request">{dl}</dl>'
            f'<h2>Reviews</h2><ul id="reviews">{reviews or "<li>none yet</li>"}</ul>'
        )
        if await self._guarded(ctx).may_review(request):
            chosen = ctx.request.query.get("review", "")
            radios = "".join(
                f'<label><input type="radio" name="verdict" value="{v}" id="verdict-{v}"'
                f"{' checked' if v == chosen else ''} required> {label}</label>"
                for v, label in (("approve", "Approve"), ("deny", "Deny"))
            )
            body += (
                f'<h2>Your review</h2><form method="post" action="{esc(_href(request))}/review" '
                f'class="card filters" aria-label="Review">{hidden_csrf(ctx)}'
                f"<fieldset><legend>Verdict</legend>{radios}</fieldset>"
                '<label>Reason <input name="reason" id="review-reason" '
                f'maxlength="{MAX_REASON}" placeholder="checked the ticket"></label>'
                '<button type="submit">Submit review</button></form>'
            )
        if spec.user == ctx.user:
            if spec.state == "APPROVED":
                body += (
                    '<p class="card" id="assume">Approved: assume it with '
                    f"<code>bsh login --request-id={esc(request.name)}</code></p>"
                )
            body += (
                f'<form method="post" action="{esc(_href(request))}/delete">{hidden_csrf(ctx)}'
                '<button type="submit">Drop this request</button></form>'
            )
        body += '<p><a href="/web/requests">All requests</a></p>'
        return ctx.page("Access request", body, status=status)

    async def review(self, ctx: PageContext) -> web.StreamResponse:
        form = await ctx.form()
        name = ctx.request.match_info["name"]
        verdict = form.get("verdict", "")
        if verdict not in ("approve", "deny"):
            return await self.show(ctx, notice("choose approve or deny", error=True), 400)
        reason = form.get("reason", "").strip()[:MAX_REASON]
        done = await self._guarded(ctx).review(
            name, "approve" if verdict == "approve" else "deny", reason
        )
        message = f"Your review is recorded; the request is {done.spec.state.lower()}."
        return await self.show(ctx, notice(message))

    async def drop(self, ctx: PageContext) -> web.StreamResponse:
        await ctx.form()
        name = ctx.request.match_info["name"]
        await self._guarded(ctx).delete(name)
        return await self._list(ctx, notice(f"Request {name} dropped."))


def add_request_pages(app: web.Application, auth: AuthServer, shell: Shell) -> RequestPages:
    pages = RequestPages(shell, AccessRequestService(auth))
    r = app.router
    r.add_get("/web/requests", guarded_page(shell, pages.list))
    r.add_post("/web/requests", guarded_page(shell, pages.create))
    r.add_get("/web/requests/{name}", guarded_page(shell, pages.show))
    r.add_post("/web/requests/{name}/review", guarded_page(shell, pages.review))
    r.add_post("/web/requests/{name}/delete", guarded_page(shell, pages.drop))
    return pages
