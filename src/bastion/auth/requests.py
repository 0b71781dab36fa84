"""Access requests: create, review, resolve, list, drop, and assume (a certificate).

Layer: auth (the trusted core plus its guarded view). The decisions are the pure
:mod:`bastion.rbac.requests`; this module loads users, roles and nodes, stores requests under
``access_requests/`` and audits every change in the same transaction
(:meth:`AuthServer.audited` / :meth:`AuthServer.audited_modify`):

* ``access_request.create`` — a user asks (roles, or resources such as ``node/db7``,
  ``db/orders`` or ``app/grafana``);
* ``access_request.review`` — a peer approves or denies (refusals are audited as failures);
* ``access_request.resolve`` — an admin (rule ``access_request: update``) approves or denies
  outright, without thresholds;
* ``access_request.delete`` — the requester or an admin drops it;
* ``access_request.assume`` — the requester gets certificates for an approved request: the
  user's roles plus the granted roles, ``access_requests: [id]`` in the identity, and an expiry
  no later than the request's ``access_expires`` (nor the caller's own certificate). For a
  resource request the identity's ``allowed_resources`` limits it to exactly those resources.

An expired request (pending past ``pending_expires``, approved past ``access_expires``) is shown
as ``EXPIRED`` and grants nothing; ``bctl lock --access-request=ID`` cuts access granted by one
request at once (the lock matcher reads ``Identity.access_requests``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import structlog

from bastion.auth.guarded import GuardedAuth
from bastion.auth.issuer import UserCerts
from bastion.auth.key_proof import NO_BINDING, KeyBinding, issue_bound
from bastion.auth.notify import Notifier
from bastion.auth.server import AuthServer
from bastion.backend.base import Op
from bastion.config.notifications import OnCallRule
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.locks.matcher import identity_targets
from bastion.rbac.checker import RoleSet
from bastion.rbac.on_call import ScheduleError, parse_schedule
from bastion.rbac.requests import (
    RequestRefused,
    RequestRights,
    Reviewer,
    ReviewRefused,
    ReviewRights,
    apply_review,
    new_request_spec,
    roles_for_resources,
)
from bastion.services.store import RESOURCE_PREFIXES, ResourceStore
from bastion.types.access import Role
from bastion.types.apps import App
from bastion.types.database import Database
from bastion.types.identity import Identity
from bastion.types.inventory import Node
from bastion.types.meta import Metadata
from bastion.types.requests import AccessRequest, AccessReview, parse_resource_id

__all__ = ["RETENTION", "AccessRequestService", "GuardedRequests", "NewRequest"]

log = structlog.get_logger("bastion.requests")

RETENTION = timedelta(days=1)
"""How long a request is kept after its access expired (then the backend removes it)."""
Verdict = Literal["approve", "deny"]


@dataclass(frozen=True, slots=True)
class NewRequest:
    roles: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    reason: str = ""
    duration: timedelta | None = None


class AccessRequestService:
    """The trusted core: callers have authenticated; rights are checked by the rules here."""

    def __init__(
        self,
        auth: AuthServer,
        notifier: Notifier | None = None,
        on_call: list[OnCallRule] | None = None,
    ) -> None:
        self.auth = auth
        self.store: ResourceStore[AccessRequest] = ResourceStore(
            auth.deps.backend, AccessRequest, RESOURCE_PREFIXES["access_request"]
        )
        config = auth.deps.notifications
        if notifier is None and config is not None and config.enabled:
            notifier = Notifier(config, auth.deps.public_url, self._audit_notice)
        self.notifier = notifier
        if on_call is None:
            on_call = list(config.on_call) if config is not None else []
        self.on_call = on_call

    async def _audit_notice(self, name: str, sink: str, outcome: str, reason: str) -> None:
        await self.auth.audit.emit(
            "access_request.notify",
            outcome=outcome,
            target=f"access_request/{name}",
            sink=sink,
            reason=reason,
        )

    def _notify(self, event: str, request: AccessRequest) -> None:
        if self.notifier is not None:
            self.notifier.notify(event, request)

    async def _roles(self, names: tuple[str, ...] | list[str]) -> list[Role]:
        out = []
        for name in names:
            try:
                out.append(await self.auth.roles.get(name))
            except NotFound:
                continue  # a deleted role grants nothing
        return out

    async def _refused(self, verb: str, actor: str, target: str, reason: str) -> None:
        await self.auth.audit.emit(
            f"access_request.{verb}", outcome="failure", user=actor, target=target, reason=reason
        )

    async def create(self, user: str, new: NewRequest) -> AccessRequest:
        """Store a new pending request of ``user``.

        Raises:
            RequestRefused: a role or resource the user may not request (audited).
            BadParameter: nothing asked for, a malformed resource id, or both roles and
                resources.
        """
        record = await self.auth.users.get(user)
        rights = RequestRights.of(await self._roles(record.spec.roles))
        roles = list(new.roles)
        name = str(uuid.uuid4())
        target = f"access_request/{name}"
        try:
            if new.resources:
                if roles:
                    raise BadParameter("ask for roles or for resources, not both")
                roles = await self._search_roles(rights, record.spec.traits, new.resources)
            spec = new_request_spec(
                rights,
                user=user,
                roles=roles,
                resources=new.resources,
                reason=new.reason,
                now=self.auth.clock.now(),
                duration=new.duration,
            )
        except RequestRefused as exc:
            await self._refused("create", user, target, exc.message)
            raise
        except ValueError as exc:  # a malformed resource id
            raise BadParameter(str(exc)) from None
        request = AccessRequest(
            metadata=Metadata(name=name, expires=spec.access_expires + RETENTION), spec=spec
        )
        done = await self.auth.audited(
            "access_request.create",
            [self.store.create_op(request)],
            user,
            target,
            roles=spec.roles,
            resources=spec.resources,
            reason=spec.reason,
            access_expires=spec.access_expires.isoformat(),
        )
        stored = self.store.written(request, done.items[0])
        self._notify("created", stored)
        rules = await self._on_call_rules(user, spec.roles)
        if rules:
            return await self._auto_approve(stored, rules)
        return stored

    async def _on_call_now(self, rule: OnCallRule, user: str) -> bool:
        try:
            text = await asyncio.to_thread(_read_text, rule.schedule)
            schedule = parse_schedule(rule.schedule, text)
            return schedule.is_on_call(user, self.auth.clock.now())
        except (OSError, UnicodeDecodeError, ScheduleError) as exc:
            log.warning("on-call schedule unreadable", rule=rule.name, error=str(exc))
            return False

    async def _on_call_rules(self, user: str, roles: list[str]) -> list[OnCallRule]:
        """The rules under which ``user`` is on call now for every role in ``roles`` (empty:
        some role is not covered, and people review)."""
        if not self.on_call or not roles:
            return []
        used: list[OnCallRule] = []
        on_call: dict[str, bool] = {}
        for role in roles:
            covering = [r for r in self.on_call if "*" in r.roles or role in r.roles]
            found = None
            for rule in covering:
                if rule.name not in on_call:
                    on_call[rule.name] = await self._on_call_now(rule, user)
                if on_call[rule.name]:
                    found = rule
                    break
            if found is None:
                return []
            if found not in used:
                used.append(found)
        return used

    async def _auto_approve(self, request: AccessRequest, rules: list[OnCallRule]) -> AccessRequest:
        author = ",".join(r.name for r in rules)
        schedules = ", ".join(r.schedule for r in rules)
        reason = f"on call now per schedule {schedules}"
        review = AccessReview(
            author=author,
            verdict="approve",
            reason=reason,
            created=self.auth.clock.now(),
            automatic=True,
        )

        async def change(current: AccessRequest) -> tuple[AccessRequest, list[Op]]:
            spec = apply_review(current, review, ReviewRights.of([]), self.auth.clock.now())
            return current.model_copy(update={"spec": spec}), []

        updated, _ = await self.auth.audited_modify(
            self.store,
            request.name,
            change,
            "access_request.review",
            author,
            f"access_request/{request.name}",
            verdict="approve",
            reason=reason,
            automatic=True,
            rule=author,
            schedule=schedules,
            requester=request.spec.user,
        )
        self._notify("reviewed", updated)
        return updated

    async def _search_roles(
        self, rights: RequestRights, traits: dict[str, list[str]], resources: tuple[str, ...]
    ) -> list[str]:
        labels: dict[str, dict[str, str]] = {}
        for resource_id in resources:
            kind, name = parse_resource_id(resource_id)
            try:
                found: Node | Database | App
                if kind == "db":
                    found = await self.auth.databases.get(name)
                elif kind == "app":
                    found = await self.auth.apps.get(name)
                else:
                    found = await self.auth.nodes.get(name)
            except NotFound:
                raise RequestRefused(
                    f"{kind} {name!r} not found among the resources you may request"
                ) from None
            labels[resource_id] = found.all_labels()
        search = await self._roles(rights.search_as_roles())
        return roles_for_resources(search, traits, labels)

    async def requestable(self, user: str, resource: str) -> list[str]:
        """The ``search_as_roles`` through which ``user`` may request ``resource``.

        Raises:
            NotFound: no such resource, or none of the user's search roles reaches it.
            BadParameter: a malformed resource id.
        """
        try:
            parse_resource_id(resource)
            record = await self.auth.users.get(user)
            rights = RequestRights.of(await self._roles(record.spec.roles))
            return await self._search_roles(rights, record.spec.traits, (resource,))
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        except (RequestRefused, NotFound):
            raise NotFound(f"{resource} is not among the resources you may request") from None

    async def get(self, name: str) -> AccessRequest:
        try:
            return await self.store.get(name)
        except NotFound:
            raise NotFound(f"access request {name!r} not found") from None

    async def list(self) -> list[AccessRequest]:
        return await self.store.list()

    async def review(
        self, name: str, reviewer: Identity, verdict: Verdict, reason: str
    ) -> AccessRequest:
        """Add ``reviewer``'s review and re-tally.

        Raises:
            ReviewRefused: self-review, a second review, not pending, or no right (audited).
            NotFound: no such request.
        """
        rights = ReviewRights.of(await self._roles(reviewer.roles))
        review = AccessReview(
            author=reviewer.user,
            verdict=verdict,
            reason=reason,
            created=self.auth.clock.now(),
            author_roles=list(reviewer.roles),
        )
        traits = {k: list(v) for k, v in reviewer.traits.items()}
        target = f"access_request/{name}"

        async def change(current: AccessRequest) -> tuple[AccessRequest, list[Op]]:
            spec = apply_review(current, review, rights, self.auth.clock.now(), traits)
            return current.model_copy(update={"spec": spec}), []

        await self.get(name)
        try:
            updated, _ = await self.auth.audited_modify(
                self.store,
                name,
                change,
                "access_request.review",
                reviewer.user,
                target,
                verdict=verdict,
                reason=reason,
            )
        except ReviewRefused as exc:
            await self._refused("review", reviewer.user, target, exc.message)
            raise
        self._notify("reviewed", updated)
        return updated

    async def resolve(
        self, name: str, state: Literal["APPROVED", "DENIED"], reason: str, actor: str
    ) -> AccessRequest:
        """Approve or deny outright (an admin; thresholds do not apply).

        Raises:
            ReviewRefused: the request is no longer pending.
        """
        now = self.auth.clock.now()

        async def change(current: AccessRequest) -> tuple[AccessRequest, list[Op]]:
            current_state = current.state_at(now)
            if current_state != "PENDING":
                raise ReviewRefused(f"the request is {current_state.lower()}, not pending")
            spec = current.spec.model_copy(
                update={"state": state, "resolved": now, "resolve_reason": reason}
            )
            return current.model_copy(update={"spec": spec}), []

        await self.get(name)
        updated, _ = await self.auth.audited_modify(
            self.store,
            name,
            change,
            "access_request.resolve",
            actor,
            f"access_request/{name}",
            state=state,
            reason=reason,
        )
        self._notify("resolved", updated)
        return updated

    async def delete(self, name: str, actor: str) -> None:
        """Drop a request (certificates already issued for it live on: lock the request id
        to cut them)."""
        current = await self.get(name)
        await self.auth.audited(
            "access_request.delete",
            [self.store.delete_op(name, current.metadata.revision)],
            actor,
            f"access_request/{name}",
        )

    async def assume(
        self,
        name: str,
        caller: Identity,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        """Certificates carrying an approved request of the caller, issued through
        :func:`~bastion.auth.key_proof.issue_bound` like a login's (``binding``: the device
        ceremony and the TPM-held key's certification).

        Raises:
            AccessDenied: not the caller's request, not approved, expired, or locked.
        """
        request = await self.get(name)
        target = f"access_request/{name}"
        now = self.auth.clock.now()
        state = request.state_at(now)
        reason = ""
        if caller.kind != "user" or request.spec.user != caller.user:
            reason = f"access request {name} is not yours"
        elif state != "APPROVED":
            reason = f"access request {name} is {state.lower()}, not approved"
        if reason:
            await self._refused("assume", caller.user, target, reason)
            raise AccessDenied(reason)
        user = await self.auth.users.get(caller.user)
        role_names = list(dict.fromkeys([*user.spec.roles, *request.spec.roles]))
        roles = await self._roles(role_names)
        role_set = RoleSet.from_roles(roles, user.spec.traits, request.spec.resources)
        identity = self.auth.issuer.user_identity(
            cluster=self.auth.cluster,
            user=user.name,
            roles=[r.metadata.name for r in roles],
            traits=user.spec.traits,
            role_set=role_set,
            requested_ttl=ttl,
            pinned_ip=remote_addr,
            user_epoch=user.spec.epoch,
        )
        expires = min(identity.expires, request.spec.access_expires, caller.expires)
        identity = identity.model_copy(
            update={
                "expires": expires,
                "access_requests": (name,),
                "allowed_resources": tuple(request.spec.resources),
                "mfa_device": caller.mfa_device,
                "device_id": caller.device_id,
            }
        )
        locked = await self.auth.lock_decision(identity_targets(identity))
        if not locked.allowed:
            await self._refused("assume", caller.user, target, locked.reason)
            locked.raise_if_denied()
        certs = await issue_bound(self.auth, identity, public_key, remote_addr, binding)
        await self.auth.audit.emit(
            "access_request.assume",
            user=caller.user,
            target=target,
            remote_addr=remote_addr,
            roles=list(identity.roles),
            resources=list(identity.allowed_resources),
            expires=identity.expires.isoformat(),
        )
        return certs


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read(1 << 20)


class GuardedRequests:
    """The API's view: who may see, review, resolve and drop which request."""

    def __init__(self, guard: GuardedAuth, service: AccessRequestService) -> None:
        self.guard = guard
        self.service = service

    @property
    def _identity(self) -> Identity:
        return self.guard.ctx.identity

    def _may(self, verb: str) -> bool:
        return self.guard.ctx.role_set.check_rule("access_request", verb).allowed

    def _person(self) -> Identity:
        ident = self._identity
        if ident.kind != "user":
            raise AccessDenied(
                "access requests are made and reviewed by people (user certificates)"
            )
        return ident

    async def _reviewable(self, request: AccessRequest) -> bool:
        ident = self._identity
        if ident.kind != "user" or request.spec.user == ident.user:
            return False
        rights = ReviewRights.of(await self.service._roles(ident.roles))
        reviewer = Reviewer(ident.user, ident.roles, ident.traits)
        return rights.check(reviewer, request.spec).allowed

    async def may_review(self, request: AccessRequest) -> bool:
        """Whether the caller may review (an admin: resolve) ``request`` now (what a page
        offers; :meth:`review` checks again)."""
        ident = self._identity
        now = self.service.auth.clock.now()
        if request.spec.user == ident.user or request.state_at(now) != "PENDING":
            return False
        if ident.kind == "admin" or (ident.kind == "user" and self._may("update")):
            return True
        return await self._reviewable(request)

    async def _visible(self, request: AccessRequest) -> bool:
        return (
            request.spec.user == self._identity.user
            or self._may("read")
            or await self._reviewable(request)
        )

    def _shown(self, request: AccessRequest) -> AccessRequest:
        """The request with its state as of now (an expired one says EXPIRED)."""
        state = request.state_at(self.service.auth.clock.now())
        if state == request.spec.state:
            return request
        return request.model_copy(update={"spec": request.spec.model_copy(update={"state": state})})

    async def create(self, new: NewRequest) -> AccessRequest:
        return await self.service.create(self._person().user, new)

    async def requestable(self, resource: str) -> list[str]:
        return await self.service.requestable(self._person().user, resource)

    async def list(self, state: str = "") -> list[AccessRequest]:
        out = []
        for request in await self.service.list():
            if await self._visible(request):
                shown = self._shown(request)
                if not state or shown.spec.state == state.upper():
                    out.append(shown)
        out.sort(key=lambda r: r.spec.created)
        return out

    async def get(self, name: str) -> AccessRequest:
        request = await self.service.get(name)
        if not await self._visible(request):
            raise NotFound(f"access request {name!r} not found")
        return self._shown(request)

    async def review(self, name: str, verdict: Verdict, reason: str) -> AccessRequest:
        ident = self._identity
        if ident.kind == "admin" or (ident.kind == "user" and self._may("update")):
            request = await self.service.get(name)
            if request.spec.user != ident.user and not await self._reviewable(request):
                state: Literal["APPROVED", "DENIED"] = (
                    "APPROVED" if verdict == "approve" else "DENIED"
                )
                return self._shown(await self.service.resolve(name, state, reason, ident.user))
        return self._shown(await self.service.review(name, self._person(), verdict, reason))

    async def delete(self, name: str) -> None:
        request = await self.get(name)
        if request.spec.user != self._identity.user and not self._may("delete"):
            raise AccessDenied("access denied: only the requester or an admin drops a request")
        await self.service.delete(name, self._identity.user)

    async def assume(
        self, name: str, public_key: str, ttl: timedelta, binding: KeyBinding = NO_BINDING
    ) -> UserCerts:
        if not public_key:
            raise BadParameter("public_key is required")
        return await self.service.assume(
            name, self._person(), public_key, ttl, self.guard.ctx.remote_addr, binding
        )
