"""Access requests as pure decisions: who may ask for what, who may review, and the tally.

Layer: policy (pure; values in, values out). :mod:`bastion.auth.requests` loads roles and
requests, calls these functions and stores what they return.

Rules (Teleport's access request semantics, docs/access-requests.md):

* **Asking.** A role may be requested when some role of the requester lists it in
  ``allow.request.roles`` (``*``: any) and none lists it in ``deny.request.roles``. A resource
  (``node/db7``, ``db/orders``, ``app/grafana``) may be requested when a role in
  ``allow.request.search_as_roles`` shows it; the request then carries those roles, and the
  certificate reaches only that resource.
* **Thresholds.** Every requester role that lets them ask for a role contributes its
  ``thresholds`` for that role (none: one approval, one denial). A role is approved when one
  of its thresholds has enough matching approvals; the request when every role is.
* **Deny wins.** As soon as any threshold has enough matching denials the request is denied,
  whatever the approvals; a resolved request takes no more reviews.
* **Reviewing.** Nobody reviews their own request, nor one request twice. A reviewer needs, for
  every requested role, a role whose ``allow.review_requests.roles`` lists it (``*``: any) with
  its ``where`` holding, and no ``deny.review_requests`` covering it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bastion.errors import AccessDenied, BadParameter
from bastion.rbac.checker import Decision, RoleSet
from bastion.types.access import Role
from bastion.types.requests import (
    DEFAULT_MAX_DURATION,
    MAX_ACCESS_DURATION,
    PENDING_TTL,
    AccessRequest,
    AccessRequestSpec,
    AccessReview,
    RequestState,
    Threshold,
    compile_request_condition,
    parse_resource_id,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "RequestRefused",
    "RequestRights",
    "ReviewRefused",
    "ReviewRights",
    "Reviewer",
    "apply_review",
    "new_request_spec",
    "roles_for_resources",
    "tally",
]

DEFAULT_THRESHOLD = Threshold(name="default", approve=1, deny=1)
"""What a request needs when no role of the requester sets thresholds."""


class RequestRefused(AccessDenied):
    """The requester may not ask for this."""


class ReviewRefused(AccessDenied):
    """This reviewer may not review this request (self-review, no rights, already resolved)."""


@dataclass(frozen=True, slots=True)
class Reviewer:
    name: str
    roles: tuple[str, ...] = ()
    traits: Mapping[str, Sequence[str]] = field(default_factory=dict)


def _covers(patterns: Iterable[str], role: str) -> bool:
    return any(p in ("*", role) for p in patterns)


def _condition_vars(reviewer: Reviewer, spec: AccessRequestSpec) -> dict[str, Any]:
    return {
        "reviewer": {
            "name": reviewer.name,
            "roles": list(reviewer.roles),
            "traits": {k: list(v) for k, v in reviewer.traits.items()},
        },
        "request": {
            "user": spec.user,
            "roles": list(spec.roles),
            "resources": list(spec.resources),
            "reason": spec.reason,
        },
    }


def _holds(text: str, variables: dict[str, Any]) -> bool:
    """Evaluate a filter/where expression; empty holds; any error fails closed."""
    if not text:
        return True
    try:
        result = compile_request_condition(text).execute(variables)
    except Exception:  # noqa: BLE001 - an invalid stored expression or a runtime error
        return False
    return result is True


# ---- asking ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestRights:
    """What a user's roles let them request (build with :meth:`of`)."""

    roles: tuple[Role, ...]

    @classmethod
    def of(cls, roles: Sequence[Role]) -> RequestRights:
        return cls(tuple(roles))

    def _allowing(self, role: str, search: bool = False) -> list[Role]:
        out = []
        for r in self.roles:
            req = r.spec.allow.request
            if req is None:
                continue
            if _covers(req.search_as_roles if search else req.roles, role):
                out.append(r)
        return out

    def _denied(self, role: str) -> str | None:
        for r in self.roles:
            req = r.spec.deny.request
            if req is not None and (_covers(req.roles, role) or _covers(req.search_as_roles, role)):
                return r.metadata.name
        return None

    def search_as_roles(self) -> list[str]:
        """Roles the user may search as (explicit names only), minus denied ones."""
        out: dict[str, None] = {}
        for r in self.roles:
            req = r.spec.allow.request
            for name in req.search_as_roles if req is not None else []:
                if name != "*" and self._denied(name) is None:
                    out[name] = None
        return list(out)

    def check_role(self, role: str, search: bool = False) -> Decision:
        denied = self._denied(role)
        if denied is not None:
            return Decision(False, f'role "{denied}" denies requesting role "{role}"', denied)
        allowing = self._allowing(role, search)
        if not allowing:
            where = "search_as_roles" if search else "request.roles"
            return Decision(False, f'no role of yours lists "{role}" in allow.{where}')
        name = allowing[0].metadata.name
        return Decision(True, f'role "{name}" allows requesting "{role}"', name)

    def thresholds_for(self, role: str, search: bool = False) -> list[Threshold]:
        out: list[Threshold] = []
        for r in self._allowing(role, search):
            req = r.spec.allow.request
            assert req is not None
            out.extend(req.thresholds)
        return out or [DEFAULT_THRESHOLD]

    def max_duration(self, roles: Iterable[str], search: bool = False) -> timedelta:
        """The shortest ``max_duration`` of the roles letting the user ask for ``roles``."""
        best = MAX_ACCESS_DURATION
        found = False
        for role in roles:
            for r in self._allowing(role, search):
                req = r.spec.allow.request
                if req is not None and req.max_duration is not None:
                    best, found = min(best, req.max_duration), True
        return best if found else DEFAULT_MAX_DURATION

    def suggested_reviewers(self) -> list[str]:
        out: dict[str, None] = {}
        for r in self.roles:
            req = r.spec.allow.request
            for name in req.suggested_reviewers if req is not None else []:
                out[name] = None
        return list(out)


def roles_for_resources(
    search_roles: Sequence[Role],
    traits: Mapping[str, Sequence[str]],
    resources: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """The search-as roles a resource request needs: for each resource, every search role
    that shows it (``node_labels``, ``db_labels`` or ``app_labels`` by kind; the roles then
    bring their logins, ``db_users``/``db_names`` to the certificate).

    Args:
        search_roles: the requester's ``search_as_roles`` (models).
        traits: the requester's traits.
        resources: ``KIND/NAME`` (node, db, app) -> the resource's labels, for each requested
            resource.

    Raises:
        RequestRefused: a resource no search role shows (named as not found: the requester
            may not learn that it exists).
    """
    chosen: dict[str, None] = {}
    for resource_id, labels in resources.items():
        kind, name = parse_resource_id(resource_id)
        showing = [
            r.metadata.name
            for r in search_roles
            if RoleSet.from_roles([r], traits).check_resource_visible(kind, name, labels).allowed
        ]
        if not showing:
            raise RequestRefused(f"{kind} {name!r} not found among the resources you may request")
        for role in showing:
            chosen[role] = None
    return list(chosen)


def new_request_spec(
    rights: RequestRights,
    *,
    user: str,
    roles: Sequence[str],
    resources: Sequence[str] = (),
    reason: str = "",
    now: datetime,
    duration: timedelta | None = None,
) -> AccessRequestSpec:
    """A new pending request, after checking the requester may ask for it.

    Args:
        rights: the requester's request rights.
        roles: the roles asked for (for a resource request: from :func:`roles_for_resources`).
        resources: ``KIND/NAME`` ids (a resource request) or empty.
        duration: the access lifetime asked for; capped by the roles' ``max_duration``.

    Raises:
        BadParameter: nothing asked for, or a bad duration.
        RequestRefused: a role the requester may not ask for.
    """
    if not roles:
        raise BadParameter("ask for at least one role (--roles) or resource (--resource)")
    search = bool(resources)
    role_thresholds: dict[str, list[int]] = {}
    thresholds: list[Threshold] = []
    for role in dict.fromkeys(roles):
        decision = rights.check_role(role, search)
        if not decision.allowed:
            raise RequestRefused(f"you may not request role {role!r}: {decision.reason}")
        indexes = []
        for threshold in rights.thresholds_for(role, search):
            if threshold not in thresholds:
                thresholds.append(threshold)
            indexes.append(thresholds.index(threshold))
        role_thresholds[role] = indexes
    cap = rights.max_duration(roles, search)
    if duration is not None and duration <= timedelta(0):
        raise BadParameter("the access duration must be positive")
    access = min(duration, cap) if duration is not None else cap
    return AccessRequestSpec(
        user=user,
        roles=list(dict.fromkeys(roles)),
        resources=list(dict.fromkeys(resources)),
        reason=reason,
        created=now,
        pending_expires=now + min(PENDING_TTL, access),
        access_expires=now + access,
        thresholds=thresholds,
        role_thresholds=role_thresholds,
        suggested_reviewers=rights.suggested_reviewers(),
    )


# ---- reviewing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewRights:
    """What a reviewer's roles let them review (build with :meth:`of`)."""

    roles: tuple[Role, ...]

    @classmethod
    def of(cls, roles: Sequence[Role]) -> ReviewRights:
        return cls(tuple(roles))

    def check(self, reviewer: Reviewer, spec: AccessRequestSpec) -> Decision:
        """May ``reviewer`` review this request (rights only; not self-review or state)?"""
        variables = _condition_vars(reviewer, spec)
        for r in self.roles:
            deny = r.spec.deny.review_requests
            if deny is None:
                continue
            hit = [role for role in spec.roles if _covers(deny.roles, role)]
            if hit and (not deny.where or _holds(deny.where, variables)):
                return Decision(
                    False, f'role "{r.metadata.name}" denies reviewing role "{hit[0]}"', r.name
                )
        for role in spec.roles:
            if not any(
                r.spec.allow.review_requests is not None
                and _covers(r.spec.allow.review_requests.roles, role)
                and _holds(r.spec.allow.review_requests.where, variables)
                for r in self.roles
            ):
                return Decision(False, f'no role of yours may review requests for role "{role}"')
        return Decision(True, "allowed to review every requested role")


def _matches(threshold: Threshold, review: AccessReview, spec: AccessRequestSpec) -> bool:
    reviewer = Reviewer(review.author, tuple(review.author_roles))
    return _holds(threshold.filter, _condition_vars(reviewer, spec))


def tally(spec: AccessRequestSpec) -> RequestState:
    """The state the reviews give: DENIED when any threshold has enough matching denials
    (deny wins), APPROVED when every role has a threshold with enough matching approvals,
    PENDING otherwise. Automatic approvals count as one approval of every threshold."""
    thresholds = spec.thresholds or [DEFAULT_THRESHOLD]
    approvals = [0] * len(thresholds)
    denials = [0] * len(thresholds)
    for review in spec.reviews:
        for i, threshold in enumerate(thresholds):
            if review.automatic or _matches(threshold, review, spec):
                if review.verdict == "approve":
                    approvals[i] += threshold.approve if review.automatic else 1
                else:
                    denials[i] += 1
    if any(d >= t.deny for d, t in zip(denials, thresholds, strict=True)):
        return "DENIED"
    per_role = spec.role_thresholds or {role: [0] for role in spec.roles}
    met = [a >= t.approve for a, t in zip(approvals, thresholds, strict=True)]
    if per_role and all(any(met[i] for i in idx if i < len(met)) for idx in per_role.values()):
        return "APPROVED"
    return "PENDING"


def apply_review(
    request: AccessRequest,
    review: AccessReview,
    rights: ReviewRights,
    now: datetime,
    reviewer_traits: Mapping[str, Sequence[str]] | None = None,
) -> AccessRequestSpec:
    """The request's spec with ``review`` added and the state re-tallied.

    Raises:
        ReviewRefused: a self-review, a second review by the same person, a request that is
            no longer pending (approved, denied or expired), or a reviewer without the right.
    """
    spec = request.spec
    if not review.automatic:
        if review.author == spec.user:
            raise ReviewRefused("you cannot review your own access request")
        if any(r.author == review.author for r in spec.reviews):
            raise ReviewRefused(f"{review.author} has already reviewed this request")
    state = request.state_at(now)
    if state != "PENDING":
        raise ReviewRefused(f"the request is {state.lower()}; only pending requests take reviews")
    if not review.automatic:
        reviewer = Reviewer(review.author, tuple(review.author_roles), reviewer_traits or {})
        decision = rights.check(reviewer, spec)
        if not decision.allowed:
            raise ReviewRefused(f"you may not review this request: {decision.reason}")
    updated = spec.model_copy(update={"reviews": [*spec.reviews, review]}, deep=True)
    new_state = tally(updated)
    changes: dict[str, Any] = {"state": new_state}
    if new_state != "PENDING":
        changes.update(resolved=now, resolve_reason=review.reason)
    return updated.model_copy(update=changes)
