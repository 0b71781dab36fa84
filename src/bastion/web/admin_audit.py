"""The audit log in the browser (``/web/admin/audit``): search, paging, an event's JSON and its
inclusion proof, and the search as JSON lines.

Layer: web. The same calls as ``bctl audit search`` and ``bctl audit proof``:
:meth:`GuardedAuth.search_events` and :meth:`GuardedAuth.audit_proof` (``list`` on ``event``).
The proof (the one ``GET /v1/audit/proof`` returns) is checked here as ``bctl audit proof``
checks it: the checkpoint's signature with the cluster's verifier key, the event's leaf hash,
and the inclusion path to the signed root; the page shows "verified in the checkpoint of size
N" or the finding in red.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.audit.canonical import encode
from bastion.audit.log import AuditQuery
from bastion.audit.merkle import leaf_hash, verify_inclusion
from bastion.audit.note import open_note, parse_checkpoint, parse_verifier_key
from bastion.errors import BadParameter, BastionError
from bastion.types.audit import AuditEvent
from bastion.types.codec import validation_problems
from bastion.web.admin_common import PageContext, Shell, esc, guarded_page, notice
from bastion.web.security import security_headers

__all__ = [
    "PER_PAGE",
    "AuditPages",
    "AuditSearch",
    "add_audit_routes",
    "check_proof",
    "page_of",
    "parse_search",
    "to_query",
]

PER_PAGE = 50
MAX_SCAN = 100_000
"""The newest events a search looks at, at most (paging goes back this far)."""


class AuditSearch(BaseModel):
    """The search form (all optional)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    type: str = Field(default="", max_length=200)
    """Event types, exact or a prefix (``user.*``), separated by commas or spaces."""
    user: str = Field(default="", max_length=200)
    since: str = Field(default="", max_length=40)
    until: str = Field(default="", max_length=40)
    outcome: str = Field(default="", pattern="^(|success|failure)$")
    page: int = Field(default=1, ge=1, le=10_000)


def parse_search(params: dict[str, str]) -> AuditSearch:
    """Raises: BadParameter (one line)."""
    try:
        return AuditSearch.model_validate({k: v for k, v in params.items() if v != ""})
    except ValidationError as exc:
        raise BadParameter(f"search: {validation_problems(exc)}") from None


def _when(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadParameter(f"{name}: expected a time such as 2025-01-31T12:00 (UTC)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_query(search: AuditSearch, limit: int) -> AuditQuery:
    """Raises: BadParameter (a bad time)."""
    types = tuple(t for t in search.type.replace(",", " ").split() if t)
    return AuditQuery(
        types=types,
        user=search.user.strip(),
        since=_when("since", search.since),
        until=_when("until", search.until),
        outcome=search.outcome,
        limit=limit,
    )


def page_of(events: list[AuditEvent], page: int, per_page: int = PER_PAGE) -> list[AuditEvent]:
    """Page ``page`` (1: the newest) of ``events`` (oldest first, as the log returns them)."""
    newest = list(reversed(events))
    start = (page - 1) * per_page
    return newest[start : start + per_page]


def check_proof(proof: dict[str, Any]) -> tuple[bool, str]:
    """Check a proof as ``bctl audit proof`` does: (ok, what was verified or the finding)."""
    try:
        verifier = parse_verifier_key(str(proof["verifier_key"]))
        cp = parse_checkpoint(open_note(str(proof["checkpoint"]), verifier))
        event = AuditEvent.model_validate(proof["event"])
        leaf = leaf_hash(encode(event))
        path = [base64.b64decode(h) for h in proof["proof"]]
    except (KeyError, ValueError, TypeError, BastionError) as exc:
        message = exc.message if isinstance(exc, BastionError) else str(exc)[:200]
        return False, f"the proof could not be checked: {message}"
    if base64.b64encode(leaf).decode() != proof.get("leaf_hash"):
        return False, "the event does not hash to the leaf the server claims"
    if not verify_inclusion(int(proof["index"]), cp.size, leaf, path, cp.root):
        return False, "the inclusion proof does NOT verify against the signed checkpoint"
    return True, (
        f"verified in the signed checkpoint of size {cp.size} (event index {proof['index']}, "
        f"proof of {len(path)} hashes)"
    )


def _link(search: AuditSearch, **change: object) -> str:
    values = search.model_dump() | change
    params = {k: str(v) for k, v in values.items() if v not in ("", None) and (k, v) != ("page", 1)}
    return "/web/admin/audit" + ("?" + urlencode(params) if params else "")


def _form(search: AuditSearch) -> str:
    outcomes = "".join(
        f'<option value="{v}"{" selected" if v == search.outcome else ""}>{t}</option>'
        for v, t in (("", "any"), ("success", "success"), ("failure", "failure"))
    )
    return (
        '<form method="get" action="/web/admin/audit" class="filters" role="search">'
        f'<label>Type <input name="type" id="audit-type" value="{esc(search.type)}" '
        'placeholder="user.create, lock.*"></label>'
        f'<label>User <input name="user" id="audit-user" value="{esc(search.user)}"></label>'
        f'<label>Since <input name="since" value="{esc(search.since)}" '
        'placeholder="2025-01-31T12:00"></label>'
        f'<label>Until <input name="until" value="{esc(search.until)}"></label>'
        f'<label>Outcome <select name="outcome">{outcomes}</select></label>'
        '<button type="submit">Search</button></form>'
    )


class AuditPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def search(self, ctx: PageContext) -> web.StreamResponse:
        params = {k: v for k, v in ctx.request.query.items() if isinstance(v, str)}
        error = ""
        try:
            search = parse_search(params)
            limit = min(MAX_SCAN, search.page * PER_PAGE)
            events = await ctx.guard.search_events(to_query(search, limit + 1))
        except BadParameter as exc:
            search, events, error = AuditSearch(), [], exc.message
        more = len(events) > search.page * PER_PAGE
        shown = page_of(events, search.page)
        rows = "".join(
            f'<tr class="{esc(e.outcome)}"><td>{esc(f"{e.time:%Y-%m-%d %H:%M:%S}")}</td>'
            f"<td>{esc(e.type)}</td><td>{esc(e.user)}</td><td>{esc(e.target)}</td>"
            f"<td>{esc(e.outcome)}</td><td>{esc(e.reason)}</td>"
            f'<td><a href="/web/admin/audit/event?{esc(urlencode({"id": e.id}))}">details</a>'
            "</td></tr>"
            for e in shown
        )
        table = (
            '<table class="nodes" id="events"><thead><tr><th scope="col">Time (UTC)</th>'
            '<th scope="col">Type</th><th scope="col">User</th><th scope="col">Target</th>'
            '<th scope="col">Outcome</th><th scope="col">Reason</th><th scope="col">Event</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
            if rows
            else '<p class="empty">No event matches this search.</p>'
        )
        nav = []
        if search.page > 1:
            nav.append(f'<a rel="prev" href="{esc(_link(search, page=search.page - 1))}">Newer</a>')
        nav.append(f"<span>page {search.page}</span>")
        if more:
            nav.append(f'<a rel="next" href="{esc(_link(search, page=search.page + 1))}">Older</a>')
        export = _link(search, page=1).replace("/web/admin/audit", "/web/admin/audit/export", 1)
        nav.append(f'<a href="{esc(export)}" download>Export as JSON lines</a>')
        body = (
            _form(search)
            + (notice(error, error=True) if error else "")
            + table
            + f'<nav class="pager" aria-label="Pages">{" ".join(nav)}</nav>'
        )
        return ctx.page("Audit log", body, status=400 if error else 200)

    async def event(self, ctx: PageContext) -> web.StreamResponse:
        event_id = ctx.request.query.get("id", "")
        if not event_id or len(event_id) > 128:
            raise BadParameter("which event? (?id=EVENT_ID)")
        proof = await ctx.guard.audit_proof(None, event_id)
        ok, finding = check_proof(proof)
        event = json.dumps(proof.get("event"), indent=2, sort_keys=True)
        css = "verified ok" if ok else "finding error"
        body = (
            f'<p id="proof-result" class="{css}" role="status">'
            f"{'✔ ' if ok else '✘ '}{esc(finding)}</p>"
            f'<h2>Event</h2><pre class="json" id="event-json">{esc(event)}</pre>'
            "<h2>Inclusion proof</h2>"
            f'<pre class="json" id="proof-json">{esc(_proof_text(proof))}</pre>'
            '<p><a href="/web/admin/audit">Back to the audit log</a></p>'
        )
        return ctx.page(f"Audit event {event_id}", body)

    async def export(self, ctx: PageContext) -> web.StreamResponse:
        params = {k: v for k, v in ctx.request.query.items() if isinstance(v, str)}
        search = parse_search(params)
        events = await ctx.guard.search_events(to_query(search, MAX_SCAN))
        text = "".join(e.model_dump_json() + "\n" for e in events)
        response = web.Response(
            text=text,
            content_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
        )
        security_headers(response)
        return response


def _proof_text(proof: dict[str, Any]) -> str:
    shown = {k: v for k, v in proof.items() if k != "event"}
    return json.dumps(shown, indent=2, sort_keys=True)


def add_audit_routes(app: web.Application, shell: Shell) -> None:
    pages = AuditPages(shell)
    r = app.router
    r.add_get("/web/admin/audit", guarded_page(shell, pages.search))
    r.add_get("/web/admin/audit/event", guarded_page(shell, pages.event))
    r.add_get("/web/admin/audit/export", guarded_page(shell, pages.export))
