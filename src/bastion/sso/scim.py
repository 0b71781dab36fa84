"""The SCIM directory: provisioned users and groups of each SSO connector, and what their
changes do to live access.

Layer: sso (over the auth server; pure SCIM documents in :mod:`bastion.protocols.scim`).

Every change is one audited transaction (:meth:`AuthServer.audited`) holding the SCIM records
*and* the revocations it implies, so a deprovisioning is never stored without its lock:

* **deactivate** (``active: false``) or **delete**: the deprovisioning lock
  (:func:`bastion.auth.scim.deprovision_lock`) on ``connector:userName``: live sessions end
  within a second through the lock watch, and SSO logins are refused. Re-activation (or
  re-creation) deletes that lock, and only that one.
* **a group change that takes a role away** (a member removed, a group renamed or deleted):
  the user's epoch is replaced and the old one is locked for as long as certificates can live
  (the user-epoch revocation of :mod:`bastion.auth.revocation`). The user's sessions end; a new
  login gets a certificate with the remaining roles in the new epoch.

SSO logins (:class:`bastion.sso.service.SSOService`) read :meth:`ScimDirectory.login_overlay`:
a provisioned user's certificates carry its epoch, and its SCIM groups join the ``groups``
claim that ``claims_to_roles`` maps.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bastion.auth.revocation import CLOCK_SKEW, longest_certificate_ttl, new_epoch
from bastion.auth.scim import SCIM_ACTOR_PREFIX, deprovision_lock, deprovision_lock_name
from bastion.auth.server import AuthServer
from bastion.backend.base import Create, Delete, Item, Op
from bastion.errors import AlreadyExists, CompareFailed, NotFound
from bastion.protocols.scim import (
    apply_patch,
    etag,
    group_document,
    group_spec_from,
    user_document,
    user_spec_from,
)
from bastion.protocols.scim_filter import Compare, Filter, FilterError, matches, parse_filter
from bastion.services.store import RESOURCE_PREFIXES, ResourceStore
from bastion.sso import github as gh
from bastion.sso.mapping import Rule, map_roles
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.connectors import (
    CONNECTOR_KINDS,
    GithubConnector,
    OIDCConnector,
    SAMLConnector,
)
from bastion.types.meta import Metadata, Resource
from bastion.types.scim import GROUPS_CLAIM, ScimGroup, ScimProblem, ScimUser

__all__ = ["INDEX_PREFIX", "LoginOverlay", "ScimDirectory", "connector_rules", "user_name_key"]

MAX_COUNT = 1000
ATTEMPTS = 10
INDEX_PREFIX = "scim/index/user_name/"
"""``<connector>/<sha256 of the lower-cased userName>`` -> the SCIM user id. Written in the
same transaction as the user (a create of an existing name fails on this key: 409), so a
``userName eq`` lookup, a create and an SSO login read one key instead of listing the users."""
BUILT_PREFIX = "scim/index/built/"
"""``<connector>``: present once the connector's users created before the index are indexed."""


def user_name_key(connector: str, user_name: str) -> str:
    digest = hashlib.sha256(user_name.lower().encode()).hexdigest()[:40]
    return f"{INDEX_PREFIX}{connector}/{digest}"


def _user_name_eq(node: Filter) -> str | None:
    """The value of a ``userName eq "x"`` filter (None: any other filter)."""
    if isinstance(node, Compare) and node.op == "eq" and isinstance(node.value, str):
        path = node.path.lower()
        if path == "username" or path.endswith(":username"):
            return node.value
    return None


def connector_rules(connector: Resource) -> list[Rule]:
    """A connector's mapping rules (claim, value, roles)."""
    if isinstance(connector, OIDCConnector):
        return [Rule(m.claim, m.value, tuple(m.roles)) for m in connector.spec.claims_to_roles]
    if isinstance(connector, GithubConnector):
        return gh.rules(connector)
    assert isinstance(connector, SAMLConnector)
    return [Rule(m.name, m.value, tuple(m.roles)) for m in connector.spec.attributes_to_roles]


@dataclass(frozen=True, slots=True)
class LoginOverlay:
    """What SCIM adds to an SSO login of a provisioned user."""

    active: bool
    epoch: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    start: int
    resources: list[dict[str, Any]]


def _check_version(resource: Resource, if_match: str) -> None:
    if not if_match or if_match.strip() == "*":
        return
    wanted = {v.strip() for v in if_match.split(",")}
    revision = resource.metadata.revision
    if etag(revision) not in wanted and f'"{revision}"' not in wanted:
        raise ScimProblem(
            f"the resource changed (its version is {etag(revision)}); fetch it and retry",
            412,
        )


class ScimDirectory:
    def __init__(self, auth: AuthServer, base_url: str = "/scim/v2") -> None:
        self.auth = auth
        self.base_url = base_url
        backend = auth.deps.backend
        self.users: ResourceStore[ScimUser] = ResourceStore(
            backend, ScimUser, RESOURCE_PREFIXES["scim_user"]
        )
        self.groups: ResourceStore[ScimGroup] = ResourceStore(
            backend, ScimGroup, RESOURCE_PREFIXES["scim_group"]
        )
        self._indexed: set[str] = set()

    # ---- reads ---------------------------------------------------------------------------------

    async def _all_users(self, connector: str) -> list[ScimUser]:
        return [u for u in await self.users.list() if u.spec.connector == connector]

    async def _all_groups(self, connector: str) -> list[ScimGroup]:
        return [g for g in await self.groups.list() if g.spec.connector == connector]

    async def _ensure_index(self, connector: str) -> None:
        """Index the connector's users stored before the index existed (once per connector)."""
        if connector in self._indexed:
            return
        backend = self.auth.deps.backend
        try:
            await backend.get(BUILT_PREFIX + connector)
        except NotFound:
            ops: list[Op] = []
            for user in await self._all_users(connector):
                index_key = user_name_key(connector, user.spec.user_name)
                try:
                    await backend.get(index_key)
                except NotFound:
                    ops.append(Create(Item(index_key, user.name.encode())))
            ops.append(Create(Item(BUILT_PREFIX + connector, b"1")))
            try:
                await self.auth.audited(
                    "scim.index", ops, SCIM_ACTOR_PREFIX + connector, f"scim/{connector}",
                    connector=connector, indexed=len(ops) - 1,
                )  # fmt: skip
            except AlreadyExists:
                pass  # another process built it meanwhile
        self._indexed.add(connector)

    async def user_by_name(self, connector: str, user_name: str) -> ScimUser | None:
        """The connector's user with this ``userName`` (case-insensitive), by its index key."""
        await self._ensure_index(connector)
        try:
            user_id = (await self.auth.deps.backend.get(user_name_key(connector, user_name))).value
            found = await self.users.get(user_id.decode())
        except (NotFound, ValueError):
            return None
        if found.spec.connector != connector or found.spec.user_name.lower() != user_name.lower():
            return None
        return found

    async def user(self, connector: str, user_id: str) -> ScimUser:
        try:
            found = await self.users.get(user_id)
        except (NotFound, ValueError):
            found = None
        if found is None or found.spec.connector != connector:
            raise ScimProblem(f"no user {user_id!r}", 404)
        return found

    async def group(self, connector: str, group_id: str) -> ScimGroup:
        try:
            found = await self.groups.get(group_id)
        except (NotFound, ValueError):
            found = None
        if found is None or found.spec.connector != connector:
            raise ScimProblem(f"no group {group_id!r}", 404)
        return found

    async def user_doc(self, user: ScimUser) -> dict[str, Any]:
        groups = [
            g for g in await self._all_groups(user.spec.connector) if user.name in g.spec.members
        ]
        return user_document(user, groups, self.base_url)

    async def group_doc(self, group: ScimGroup) -> dict[str, Any]:
        users = {u.name: u for u in await self._all_users(group.spec.connector)}
        return group_document(group, users, self.base_url)

    async def list_users(self, connector: str, filter_: str, start: int, count: int) -> Page:
        wanted = _user_name_eq(_parse(filter_)) if filter_ else None
        if wanted is not None:  # the IdP's "does this user exist" lookup: one index read
            found = await self.user_by_name(connector, wanted)
            docs = [await self.user_doc(found)] if found is not None else []
            return _page(docs, "", start, count)
        users = sorted(
            await self._all_users(connector), key=lambda u: (u.spec.created or 0, u.name)
        )
        groups = await self._all_groups(connector)
        docs = [
            user_document(u, [g for g in groups if u.name in g.spec.members], self.base_url)
            for u in users
        ]
        return _page(docs, filter_, start, count)

    async def list_groups(self, connector: str, filter_: str, start: int, count: int) -> Page:
        groups = sorted(
            await self._all_groups(connector), key=lambda g: (g.spec.created or 0, g.name)
        )
        users = {u.name: u for u in await self._all_users(connector)}
        return _page([group_document(g, users, self.base_url) for g in groups], filter_, start,
                     count)  # fmt: skip

    async def login_overlay(self, connector: str, user_name: str) -> LoginOverlay | None:
        """The provisioned state of SSO user ``connector:user_name`` (None: not provisioned)."""
        user = await self.user_by_name(connector, user_name)
        if user is None:
            return None
        groups = [
            g.spec.display_name
            for g in await self._all_groups(connector)
            if user.name in g.spec.members
        ]
        return LoginOverlay(user.spec.active, user.spec.epoch, tuple(groups))

    # ---- users ---------------------------------------------------------------------------------

    async def create_user(self, connector: str, doc: Any) -> ScimUser:
        spec = user_spec_from(doc, connector)
        now = self.auth.clock.now()
        spec.epoch, spec.created, spec.last_modified = new_epoch(), now, now
        await self._ensure_index(connector)
        user = ScimUser(metadata=Metadata(name=uuid.uuid4().hex), spec=spec)
        index_key = user_name_key(connector, spec.user_name)
        ops: list[Op] = [self.users.create_op(user), Create(Item(index_key, user.name.encode()))]
        ops += await self._access_ops(connector, None, user, {}, {})
        try:
            done = await self._commit("scim.user.create", ops, connector, user)
        except AlreadyExists as exc:
            if exc.key != index_key:
                raise
            raise ScimProblem(f"userName {spec.user_name!r} exists", 409, "uniqueness") from None
        return self.users.written(user, done)

    async def replace_user(self, connector: str, user_id: str, doc: Any, if_match: str) -> ScimUser:
        async def change(current: ScimUser) -> ScimUser:
            spec = user_spec_from(doc, connector)
            spec.epoch, spec.created = current.spec.epoch, current.spec.created
            return current.model_copy(update={"spec": spec})

        return await self._modify_user(connector, user_id, if_match, change)

    async def patch_user(self, connector: str, user_id: str, body: Any, if_match: str) -> ScimUser:
        async def change(current: ScimUser) -> ScimUser:
            patched = apply_patch(await self.user_doc(current), body)
            spec = user_spec_from(patched, connector)
            spec.epoch, spec.created = current.spec.epoch, current.spec.created
            return current.model_copy(update={"spec": spec})

        return await self._modify_user(connector, user_id, if_match, change)

    async def _modify_user(
        self,
        connector: str,
        user_id: str,
        if_match: str,
        change: Callable[[ScimUser], Awaitable[ScimUser]],
    ) -> ScimUser:
        for _ in range(ATTEMPTS):
            current = await self.user(connector, user_id)
            _check_version(current, if_match)
            updated = await change(current)
            updated.spec.last_modified = self.auth.clock.now()
            ops: list[Op] = [self.users.update_op(updated)]
            renamed = updated.spec.user_name.lower() != current.spec.user_name.lower()
            new_key = user_name_key(connector, updated.spec.user_name)
            if renamed:
                await self._ensure_index(connector)
                ops += [
                    Delete(user_name_key(connector, current.spec.user_name)),
                    Create(Item(new_key, updated.name.encode())),
                ]
            ops += await self._access_ops(connector, current, updated, {}, {})
            try:
                done = await self._commit("scim.user.update", ops, connector, updated)
            except CompareFailed:
                continue
            except AlreadyExists as exc:
                if exc.key != new_key:
                    raise
                raise ScimProblem("userName exists", 409, "uniqueness") from None
            return self.users.written(updated, done)
        raise ScimProblem("the user is changing concurrently; retry", 409)

    async def delete_user(self, connector: str, user_id: str, if_match: str) -> None:
        for _ in range(ATTEMPTS):
            current = await self.user(connector, user_id)
            _check_version(current, if_match)
            await self._ensure_index(connector)
            ops: list[Op] = [
                self.users.delete_op(current.name, current.metadata.revision),
                Delete(user_name_key(connector, current.spec.user_name)),
            ]
            for group in await self._all_groups(connector):
                if current.name in group.spec.members:
                    kept = group.model_copy(deep=True)
                    kept.spec.members.remove(current.name)
                    ops.append(self.groups.update_op(kept))
            ops += await self._access_ops(connector, current, None, {}, {})
            try:
                await self._commit("scim.user.delete", ops, connector, current)
            except CompareFailed:
                continue
            return
        raise ScimProblem("the user is changing concurrently; retry", 409)

    # ---- groups --------------------------------------------------------------------------------

    async def create_group(self, connector: str, doc: Any) -> ScimGroup:
        for _ in range(ATTEMPTS):
            spec = group_spec_from(doc, connector)
            now = self.auth.clock.now()
            spec.created, spec.last_modified = now, now
            group = ScimGroup(metadata=Metadata(name=uuid.uuid4().hex), spec=spec)
            try:
                return await self._write_group(connector, None, group)
            except CompareFailed:
                continue
        raise ScimProblem("the directory is changing concurrently; retry", 409)

    async def replace_group(
        self, connector: str, group_id: str, doc: Any, if_match: str
    ) -> ScimGroup:
        async def change(current: ScimGroup) -> ScimGroup:
            spec = group_spec_from(doc, connector)
            spec.created = current.spec.created
            return current.model_copy(update={"spec": spec})

        return await self._modify_group(connector, group_id, if_match, change)

    async def patch_group(
        self, connector: str, group_id: str, body: Any, if_match: str
    ) -> ScimGroup:
        async def change(current: ScimGroup) -> ScimGroup:
            patched = apply_patch(await self.group_doc(current), body)
            spec = group_spec_from(patched, connector)
            spec.created = current.spec.created
            return current.model_copy(update={"spec": spec})

        return await self._modify_group(connector, group_id, if_match, change)

    async def _modify_group(
        self,
        connector: str,
        group_id: str,
        if_match: str,
        change: Callable[[ScimGroup], Awaitable[ScimGroup]],
    ) -> ScimGroup:
        for _ in range(ATTEMPTS):
            current = await self.group(connector, group_id)
            _check_version(current, if_match)
            updated = await change(current)
            updated.spec.last_modified = self.auth.clock.now()
            try:
                return await self._write_group(connector, current, updated)
            except CompareFailed:
                continue
        raise ScimProblem("the group is changing concurrently; retry", 409)

    async def delete_group(self, connector: str, group_id: str, if_match: str) -> None:
        for _ in range(ATTEMPTS):
            current = await self.group(connector, group_id)
            _check_version(current, if_match)
            try:
                await self._write_group(connector, current, None)
            except CompareFailed:
                continue
            return
        raise ScimProblem("the group is changing concurrently; retry", 409)

    async def _write_group(
        self, connector: str, old: ScimGroup | None, new: ScimGroup | None
    ) -> ScimGroup:
        groups = await self._all_groups(connector)
        if new is not None:
            for other in groups:
                same = other.spec.display_name.lower() == new.spec.display_name.lower()
                if same and other.name != new.name:
                    raise ScimProblem(f"displayName {new.spec.display_name!r} exists", 409,
                                      "uniqueness")  # fmt: skip
            users = {u.name for u in await self._all_users(connector)}
            unknown = [m for m in new.spec.members if m not in users]
            if unknown:
                raise ScimProblem(f"members: no user {unknown[0]!r}", 400, "invalidValue")
        before = _memberships(groups)
        after_groups = [g for g in groups if old is None or g.name != old.name]
        if new is not None:
            after_groups.append(new)
        after = _memberships(after_groups)
        ops: list[Op] = []
        if old is None and new is not None:
            ops.append(self.groups.create_op(new))
        elif new is not None:
            ops.append(self.groups.update_op(new))
        elif old is not None:
            ops.append(self.groups.delete_op(old.name, old.metadata.revision))
        touched = {*(old.spec.members if old else ()), *(new.spec.members if new else ())}
        for user_id in sorted(touched):
            try:
                user = await self.users.get(user_id)
            except NotFound:
                continue
            ops += await self._access_ops(connector, user, user, before, after)
        event = "scim.group." + ("create" if old is None else "delete" if new is None else "update")
        subject = new if new is not None else old
        assert subject is not None
        done = await self._commit(event, ops, connector, subject)
        return self.groups.written(new, done) if new is not None else subject

    # ---- what a change does to access ----------------------------------------------------------

    async def _access_ops(
        self,
        connector: str,
        old: ScimUser | None,
        new: ScimUser | None,
        groups_before: dict[str, list[str]],
        groups_after: dict[str, list[str]],
    ) -> list[Op]:
        """Revocations implied by a user going from ``old`` to ``new`` (None: absent) and by
        its groups going from ``groups_before`` to ``groups_after`` (user id -> group names).
        May replace ``new``'s epoch (the caller's op list then writes the new epoch: the user's
        update op is added here when the user itself is not otherwise written)."""
        was_active = old is not None and old.spec.active
        is_active = new is not None and new.spec.active
        now = self.auth.clock.now()
        ops: list[Op] = []
        if new is None and old is not None:  # deleted: the lock outlives its certificates
            ttl = await self._revocation_ttl()
            lock = deprovision_lock(connector, old.spec.user_name, "deleted", now, ttl)
            return [self.auth.locks.put_op(lock)]
        if new is not None and not is_active and (old is None or was_active):
            lock = deprovision_lock(connector, new.spec.user_name, "deactivated", now, None)
            return [self.auth.locks.put_op(lock)]
        if new is not None and is_active and not was_active:
            ops += await self._lift(connector, new.spec.user_name)
        if old is None or new is None or not is_active:
            return ops
        dropped = await self._dropped_roles(
            connector, groups_before.get(old.name, []), groups_after.get(new.name, [])
        )
        if dropped and old.spec.epoch:
            revoked = old.spec.epoch
            new.spec.epoch = new_epoch()
            if old is new:  # a group change: the user is written here
                ops.append(self.users.update_op(new))
            ops.append(self.auth.locks.put_op(await self._epoch_lock(connector, old, revoked)))
        return ops

    async def _dropped_roles(
        self, connector: str, before: Sequence[str], after: Sequence[str]
    ) -> list[str]:
        if set(before) <= set(after):
            return []
        try:
            resource = await self._connector(connector)
        except NotFound:
            return []
        rules = connector_rules(resource)
        had = map_roles(rules, {GROUPS_CLAIM: list(before)})
        has = set(map_roles(rules, {GROUPS_CLAIM: list(after)}))
        return [r for r in had if r not in has]

    async def _connector(self, name: str) -> Resource:
        for kind in CONNECTOR_KINDS:
            try:
                found: Resource = await self.auth.store(kind).get(name)
                return found
            except NotFound:
                continue
        raise NotFound(f"no connector {name!r}")

    async def _revocation_ttl(self) -> timedelta:
        return longest_certificate_ttl(await self.auth.roles.list()) + CLOCK_SKEW

    async def _epoch_lock(self, connector: str, user: ScimUser, epoch: str) -> Lock:
        now = self.auth.clock.now()
        name = f"{connector}:{user.spec.user_name}"
        return Lock(
            metadata=Metadata(
                name=f"{deprovision_lock_name(connector, user.spec.user_name)}-{epoch[:12]}",
                description=f"certificates of {name} issued before a group change (SCIM)",
                expires=now + await self._revocation_ttl(),
            ),
            spec=LockSpec(
                target=LockTarget(user=name, user_epoch=epoch),
                message="your groups changed at your identity provider; log in again",
                created_by=SCIM_ACTOR_PREFIX + connector,
                created=now,
            ),
        )

    async def _lift(self, connector: str, user_name: str) -> list[Op]:
        """Delete SCIM's own deprovisioning lock of the user (an admin's locks stay)."""
        try:
            lock = await self.auth.locks.get(deprovision_lock_name(connector, user_name))
        except NotFound:
            return []
        if lock.spec.created_by != SCIM_ACTOR_PREFIX + connector:
            return []
        return [Delete(self.auth.locks.key(lock.name), int(lock.metadata.revision))]

    async def _commit(self, event: str, ops: list[Op], connector: str, subject: Resource) -> Any:
        fields: dict[str, Any] = {"connector": connector, "scim_id": subject.name}
        if isinstance(subject, ScimUser):
            fields.update(subject=f"{connector}:{subject.spec.user_name}",
                          active=subject.spec.active)  # fmt: skip
        elif isinstance(subject, ScimGroup):
            fields.update(group=subject.spec.display_name, members=len(subject.spec.members))
        fields["locks"] = sum(1 for op in ops if self.auth.locks.owns(op.key))
        done = await self.auth.audited(
            event, ops, SCIM_ACTOR_PREFIX + connector, f"{subject.kind}/{subject.name}", **fields
        )
        return done.items[0]


def _memberships(groups: list[ScimGroup]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for group in groups:
        for member in group.spec.members:
            out.setdefault(member, []).append(group.spec.display_name)
    return out


def _parse(filter_: str) -> Filter:
    try:
        return parse_filter(filter_)
    except FilterError as exc:
        raise ScimProblem(f"filter: {exc}", 400, "invalidFilter") from None


def _page(docs: list[dict[str, Any]], filter_: str, start: int, count: int) -> Page:
    if filter_:
        node = _parse(filter_)
        docs = [d for d in docs if matches(node, d)]
    start = max(start, 1)
    count = min(max(count, 0), MAX_COUNT)
    return Page(total=len(docs), start=start, resources=docs[start - 1 : start - 1 + count])
