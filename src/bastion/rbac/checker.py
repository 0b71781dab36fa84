"""The access checker: a user's roles, expanded with their traits, answering "may they?".

Layer: policy (pure). Inputs are role models, traits and resource labels; outputs are
:class:`Decision` values that carry the reason. No I/O, no clock, no backend: the caller
(``auth/authz``, the proxy routes, the guarded API) loads roles and acts on the decision.

Semantics follow Teleport:

* **Deny always wins.** A deny section whose labels match a resource denies it outright, for every
  login/user; a deny ``logins`` (``db_users``, ``db_names``) entry denies that value everywhere.
* **Allow needs one role that grants everything at once**: its labels match *and* the login (or
  database user and name) is among its values; grants are not combined across roles.
* **Options are aggregated strictly**: the most restrictive value of any role wins.
* No roles, or an empty selector, grants nothing.
* **Conditions** (``where:``, CEL, :mod:`bastion.rbac.conditions`) narrow a side: an allow side
  grants only while its condition holds, a deny side denies only while its condition holds. A
  condition that cannot be evaluated (an error, a missing trait, no request context) fails
  closed: the allow side grants nothing and the deny side denies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bastion.rbac.conditions import AccessContext, Outcome
from bastion.rbac.device_trust import strictest
from bastion.rbac.labels import WILDCARD, LabelSelector, ValueMatcher
from bastion.types.access import ADMIN_KINDS, VERBS, Role, RoleConditions, RoleOptions
from bastion.types.devices import DeviceTrustMode
from bastion.types.templates import expand_values

__all__ = ["CompiledRole", "Decision", "RoleSet"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to an access question, with why (for audit and ``--debug`` output)."""

    allowed: bool
    reason: str
    """Which role allowed, which role denied and why, or why no role allows."""
    role: str | None = None
    """The deciding role; ``None`` when no role allows (or there are no roles)."""
    mfa_required: bool = False
    """Allowed only with a per-session MFA certificate (``require_session_mfa``, see
    :meth:`RoleSet.check_node_access`); always False when not allowed."""


@dataclass(frozen=True, slots=True)
class _Rule:
    kinds: frozenset[str]
    verbs: frozenset[str]

    def matches(self, kind: str, verb: str) -> bool:
        return (WILDCARD in self.kinds or kind in self.kinds) and (
            WILDCARD in self.verbs or verb in self.verbs
        )


@dataclass(frozen=True, slots=True)
class _Side:
    """One side (allow or deny) of a role, templates expanded and selectors compiled."""

    logins: tuple[str, ...]
    login_set: frozenset[str]
    node: LabelSelector
    db: LabelSelector
    app: LabelSelector
    db_users: ValueMatcher
    db_names: ValueMatcher
    rules: tuple[_Rule, ...]
    where: str = ""
    """The side's CEL condition; empty: none."""

    @classmethod
    def build(cls, cond: RoleConditions, traits: Mapping[str, Sequence[str]]) -> _Side:
        logins = tuple(expand_values(cond.logins, traits))
        return cls(
            logins=logins,
            login_set=frozenset(logins),
            node=_selector(cond.node_labels, traits),
            db=_selector(cond.db_labels, traits),
            app=_selector(cond.app_labels, traits),
            db_users=ValueMatcher.compile(expand_values(cond.db_users, traits)),
            db_names=ValueMatcher.compile(expand_values(cond.db_names, traits)),
            rules=tuple(_Rule(frozenset(r.resources), frozenset(r.verbs)) for r in cond.rules),
            where=cond.where,
        )


def _selector(
    selector: Mapping[str, Sequence[str]], traits: Mapping[str, Sequence[str]]
) -> LabelSelector:
    # Keys are literal; a key whose values all expand to nothing is kept with no values, so it
    # matches nothing (dropping it would widen an allow).
    return LabelSelector.compile({k: expand_values(v, traits) for k, v in selector.items()})


@dataclass(frozen=True, slots=True)
class CompiledRole:
    """A role with the user's traits applied."""

    name: str
    allow: _Side
    deny: _Side
    options: RoleOptions


def _describe(selector: LabelSelector) -> str:
    parts = [f"{WILDCARD}={WILDCARD}"] if selector.match_all else []
    parts += [f"{key}=[{', '.join(m.values)}]" for key, m in selector.entries]
    return ", ".join(parts)


def _quoted(values: Iterable[str]) -> str:
    return "[" + ", ".join(values) + "]"


_UNCONDITIONAL = Outcome(True, "")


def _condition(
    where: str, context: AccessContext | None, kind: str, name: str, labels: Mapping[str, str]
) -> Outcome:
    """The outcome of a side's condition; sides without one always hold."""
    if not where:
        return _UNCONDITIONAL
    if context is None:
        return Outcome(None, "no request context to evaluate the condition")
    return context.evaluate(where, kind, name, labels)


def _deny_applies(outcome: Outcome) -> bool:
    return outcome.holds is not False  # None (could not evaluate) denies: fail closed


def _cond_note(where: str, outcome: Outcome) -> str:
    return f" (where {where!r}: {outcome.reason})" if where else ""


class RoleSet:
    """The roles of one user, ready to answer access questions; immutable.

    Build with :meth:`from_roles`. Every ``check_*`` method returns a :class:`Decision`.
    """

    __slots__ = (
        "_allow_node",
        "_allowed_resources",
        "_deny_logins",
        "_deny_logins_where",
        "_deny_node",
        "_options",
        "_roles",
    )

    def __init__(
        self, roles: Iterable[CompiledRole], allowed_resources: Iterable[str] = ()
    ) -> None:
        self._roles = tuple(roles)
        self._allowed_resources = frozenset(allowed_resources)
        deny_logins: dict[str, str] = {}
        for role in self._roles:
            if role.deny.where:
                continue  # conditional: checked per request (_deny_logins_where)
            for login in role.deny.logins:
                deny_logins.setdefault(login, role.name)
        self._deny_logins = deny_logins
        self._deny_logins_where = tuple(
            (r.name, r.deny.login_set, r.deny.where)
            for r in self._roles
            if r.deny.where and r.deny.login_set
        )
        self._deny_node = tuple(
            (r.name, r.deny.node, r.deny.where) for r in self._roles if not r.deny.node.is_empty
        )
        self._allow_node = tuple(
            (r.name, r.allow.login_set, r.allow.node, r.options.require_session_mfa, r.allow.where)
            for r in self._roles
            if r.allow.login_set and not r.allow.node.is_empty
        )
        self._options = _aggregate_options(r.options for r in self._roles)

    @classmethod
    def from_roles(
        cls,
        roles: Sequence[Role],
        traits: Mapping[str, Sequence[str]],
        allowed_resources: Sequence[str] = (),
    ) -> RoleSet:
        """Expand templates in logins, label values, db users and db names, once.

        Args:
            roles: the user's roles (validated models).
            traits: the user's traits (``User.spec.traits`` or ``Identity.traits``).
            allowed_resources: ``Identity.allowed_resources`` (a resource-based access
                request): only these ``KIND/NAME`` resources are reachable; empty: no limit.

        Returns:
            The role set.

        Raises:
            ValueError: a role holds a malformed template or regexp (only possible for models
                built without validation).
        """
        return cls(
            (
                CompiledRole(
                    name=role.metadata.name,
                    allow=_Side.build(role.spec.allow, traits),
                    deny=_Side.build(role.spec.deny, traits),
                    options=role.spec.options,
                )
                for role in roles
            ),
            allowed_resources,
        )

    @property
    def roles(self) -> tuple[CompiledRole, ...]:
        """The compiled roles, in the order given."""
        return self._roles

    @property
    def role_names(self) -> tuple[str, ...]:
        """Names of the roles, in the order given."""
        return tuple(r.name for r in self._roles)

    # -- SSH nodes -------------------------------------------------------------------------

    def check_node_access(
        self,
        node_name: str,
        node_labels: Mapping[str, str],
        login: str,
        *,
        cluster_requires_mfa: bool = False,
        context: AccessContext | None = None,
    ) -> Decision:
        """May the user log in as ``login`` on this node, and does it take per-session MFA?

        Args:
            node_name: ``resource.name`` for conditions, and the explanation.
            node_labels: the node's labels (static and dynamic).
            login: the OS login requested.
            cluster_requires_mfa: the cluster auth preference's ``require_session_mfa``.
            context: the request (user, source IP, time, MFA) for ``where`` conditions;
                ``None``: conditions fail closed (conditional allows grant nothing,
                conditional denies deny).

        Returns:
            Denied if a deny role lists the login or its node_labels match the node; allowed if
            one role's node_labels match and it allows the login; otherwise denied with, per
            role, the label or login that did not match. An allowed decision has
            ``mfa_required`` when the cluster requires per-session MFA or *every* role that
            grants this access has ``require_session_mfa`` (Teleport's per-role rule: a role
            that grants the access without MFA is enough to go without it).
        """
        outside = self._outside_request("node", node_name)
        if outside is not None:
            return outside
        denied_by = self._deny_logins.get(login)
        if denied_by is not None:
            return Decision(
                False, f'role "{denied_by}" denies login "{login}" on every node', denied_by
            )
        for name, logins, where in self._deny_logins_where:
            if login in logins:
                outcome = _condition(where, context, "node", node_name, node_labels)
                if _deny_applies(outcome):
                    why = f'role "{name}" denies login "{login}"' + _cond_note(where, outcome)
                    return Decision(False, why, name)
        denied = self._denied_by_labels(self._deny_node, "node", node_name, node_labels, context)
        if denied is not None:
            return denied
        granted_with_mfa: str | None = None
        unmet: dict[str, str] = {}
        for name, logins, selector, role_mfa, where in self._allow_node:
            if login in logins and selector.matches(node_labels):
                outcome = _condition(where, context, "node", node_name, node_labels)
                if outcome.holds is not True:
                    unmet[name] = f"condition not met{_cond_note(where, outcome)}"
                    continue
                if not (role_mfa or cluster_requires_mfa):
                    return Decision(
                        True, f'role "{name}" allows login "{login}" on node "{node_name}"', name
                    )
                if granted_with_mfa is None:
                    granted_with_mfa = name
        if granted_with_mfa is not None:
            why = "the cluster" if cluster_requires_mfa else f'role "{granted_with_mfa}"'
            return Decision(
                True,
                f'role "{granted_with_mfa}" allows login "{login}" on node "{node_name}" '
                f"with per-session MFA (required by {why})",
                granted_with_mfa,
                mfa_required=True,
            )
        return Decision(False, self._explain_node(node_name, node_labels, login, unmet))

    def check_node_visible(
        self,
        node_name: str,
        node_labels: Mapping[str, str],
        *,
        context: AccessContext | None = None,
    ) -> Decision:
        """May the user see this node (in ``ls``)? Logins are not considered.

        Args:
            node_name: for the explanation (and ``resource.name``).
            node_labels: the node's labels.
            context: the request, for ``where`` conditions. ``None`` (a listing): a conditional
                allow side shows its nodes and a conditional deny side hides none; access is
                decided, with the request, when connecting.

        Returns:
            Allowed when some role's allow node_labels match (and its condition holds) and no
            deny node_labels match (with a condition that holds). Implied by an allowed
            :meth:`check_node_access` for any login given the same context.
        """
        outside = self._outside_request("node", node_name)
        if outside is not None:
            return outside
        if context is not None:
            denied = self._denied_by_labels(
                self._deny_node, "node", node_name, node_labels, context
            )
        else:
            unconditional = tuple(d for d in self._deny_node if not d[2])
            denied = self._denied_by_labels(unconditional, "node", node_name, node_labels, None)
        if denied is not None:
            return denied
        for role in self._roles:
            if role.allow.node.matches(node_labels):
                if context is not None:
                    outcome = _condition(role.allow.where, context, "node", node_name, node_labels)
                    if outcome.holds is not True:
                        continue
                return Decision(True, f'role "{role.name}" shows node "{node_name}"', role.name)
        return Decision(False, self._explain_labels("node", node_name, node_labels, "see"))

    def allowed_logins(self) -> list[str]:
        """Logins for certificate principals: the union of allowed logins minus denied ones.

        Returns:
            The logins, deduplicated, in role order.
        """
        out: dict[str, None] = {}
        for role in self._roles:
            out.update(dict.fromkeys(role.allow.logins))
        return [login for login in out if login not in self._deny_logins]

    # -- databases and apps ------------------------------------------------------------------

    def check_db_access(
        self,
        db_labels: Mapping[str, str],
        db_user: str,
        db_name: str | None = None,
        *,
        db_service: str = "",
        context: AccessContext | None = None,
    ) -> Decision:
        """May the user connect to this database as ``db_user`` (to ``db_name``)?

        Args:
            db_labels: the database's labels.
            db_user: the database account requested.
            db_name: the database requested; ``None`` when the protocol does not select one at
                connect time (MySQL), and then db_names are not checked.
            db_service: the database's name (``resource.name``, and the explanation).
            context: the request, for ``where`` conditions (``None``: they fail closed).

        Returns:
            Deny wins (labels, db_users or db_names of a deny section); allowed when one role's
            db_labels, db_users and db_names all match.
        """
        outside = self._outside_request("db", db_service)
        if outside is not None:
            return outside
        what = f'database "{db_service}"' if db_service else "database"
        for role in self._roles:
            deny = role.deny
            hit = ""
            if deny.db_users.matches(db_user):
                hit = f'db user "{db_user}"'
            elif db_name is not None and deny.db_names.matches(db_name):
                hit = f'db name "{db_name}"'
            if hit:
                outcome = _condition(deny.where, context, "db", db_service, db_labels)
                if _deny_applies(outcome):
                    note = _cond_note(deny.where, outcome)
                    return Decision(False, f'role "{role.name}" denies {hit}{note}', role.name)
        denied = self._denied_by_labels(
            tuple((r.name, r.deny.db, r.deny.where) for r in self._roles),
            "db",
            what,
            db_labels,
            context,
        )
        if denied is not None:
            return denied
        request = f'db user "{db_user}"' + (f' db name "{db_name}"' if db_name is not None else "")
        reasons: list[str] = []
        for role in self._roles:
            allow = role.allow
            match = allow.db.match(db_labels)
            if not match.matched:
                reasons.append(f'role "{role.name}": {_label_reason(match.reason, allow.db, "db")}')
            elif not allow.db_users.matches(db_user):
                wanted = _quoted(allow.db_users.values)
                reasons.append(f'role "{role.name}": db user "{db_user}" not in {wanted}')
            elif db_name is not None and not allow.db_names.matches(db_name):
                wanted = _quoted(allow.db_names.values)
                reasons.append(f'role "{role.name}": db name "{db_name}" not in {wanted}')
            elif (
                outcome := _condition(allow.where, context, "db", db_service, db_labels)
            ).holds is not True:
                note = _cond_note(allow.where, outcome)
                reasons.append(f'role "{role.name}": condition not met{note}')
            else:
                return Decision(True, f'role "{role.name}" allows {request} on {what}', role.name)
        return Decision(False, _no_role(f"{request} on {what}", reasons))

    def check_app_access(
        self,
        app_labels: Mapping[str, str],
        *,
        app_name: str = "",
        context: AccessContext | None = None,
        cluster_requires_mfa: bool = False,
    ) -> Decision:
        """May the user reach this application, and does it take per-session MFA?

        Args:
            app_labels: the application's labels.
            app_name: ``resource.name`` and the explanation.
            context: the request, for ``where`` conditions (``None``: they fail closed).
            cluster_requires_mfa: the cluster auth preference's ``require_session_mfa``.

        Returns:
            Denied if a deny app_labels selector matches; allowed if an allow one does, with
            ``mfa_required`` when the cluster requires per-session MFA or every role that
            allows it has ``require_session_mfa`` (as for nodes).
        """
        outside = self._outside_request("app", app_name)
        if outside is not None:
            return outside
        what = f'app "{app_name}"' if app_name else "app"
        denied = self._denied_by_labels(
            tuple((r.name, r.deny.app, r.deny.where) for r in self._roles),
            "app",
            what,
            app_labels,
            context,
        )
        if denied is not None:
            return denied
        with_mfa: str | None = None
        for role in self._roles:
            if role.allow.app.matches(app_labels) and (
                _condition(role.allow.where, context, "app", app_name, app_labels).holds is True
            ):
                if not (role.options.require_session_mfa or cluster_requires_mfa):
                    return Decision(True, f'role "{role.name}" allows access to {what}', role.name)
                with_mfa = with_mfa or role.name
        if with_mfa is not None:
            why = "the cluster" if cluster_requires_mfa else f'role "{with_mfa}"'
            return Decision(
                True,
                f'role "{with_mfa}" allows access to {what} with per-session MFA '
                f"(required by {why})",
                with_mfa,
                mfa_required=True,
            )
        return Decision(False, self._explain_labels("app", what, app_labels, "access"))

    def check_resource_visible(self, kind: str, name: str, labels: Mapping[str, str]) -> Decision:
        """May the user see this node, database or app (a listing, or a resource request's
        search)? Label selectors only: logins, db users and ``where`` conditions are decided
        when connecting (a conditional allow shows, a conditional deny hides nothing).

        Args:
            kind: ``node``, ``db`` or ``app``.
            name: the resource's name.
            labels: its labels.

        Raises:
            ValueError: another kind (a caller bug).
        """
        if kind == "node":
            return self.check_node_visible(name, labels)
        if kind not in ("db", "app"):
            raise ValueError(f"unknown resource kind {kind!r}: use node, db or app")
        outside = self._outside_request(kind, name)
        if outside is not None:
            return outside
        what = f'database "{name}"' if kind == "db" else f'app "{name}"'
        for role in self._roles:
            side = role.deny
            selector = side.db if kind == "db" else side.app
            if not side.where and selector.matches(labels):
                matched = _describe(selector)
                reason = f'role "{role.name}" denies {what}: deny {kind}_labels match ({matched})'
                return Decision(False, reason, role.name)
        for role in self._roles:
            selector = role.allow.db if kind == "db" else role.allow.app
            if selector.matches(labels):
                return Decision(True, f'role "{role.name}" shows {what}', role.name)
        return Decision(False, self._explain_labels(kind, what, labels, "see"))

    def _outside_request(self, kind: str, name: str) -> Decision | None:
        """Denied when a resource-based access request limits the identity to other
        resources; None when there is no such limit or this resource is one of them."""
        if not self._allowed_resources or f"{kind}/{name}" in self._allowed_resources:
            return None
        allowed = ", ".join(sorted(self._allowed_resources))
        return Decision(False, f"the certificate's access request grants only {allowed}")

    # -- admin rules -----------------------------------------------------------------------

    def check_rule(self, kind: str, verb: str) -> Decision:
        """May the user perform ``verb`` on resources of ``kind`` (admin API)?

        Args:
            kind: one of ``ADMIN_KINDS``.
            verb: one of ``VERBS``.

        Returns:
            Denied if any deny rule matches (``*`` included); allowed if an allow rule does.

        Raises:
            ValueError: unknown kind or verb (a caller bug; ``*`` is not a valid question).
        """
        if kind not in ADMIN_KINDS:
            raise ValueError(f"unknown resource kind {kind!r}: use one of {', '.join(ADMIN_KINDS)}")
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}: use one of {', '.join(VERBS)}")
        for role in self._roles:
            if any(rule.matches(kind, verb) for rule in role.deny.rules):
                return Decision(False, f'role "{role.name}" denies {verb} on {kind}', role.name)
        for role in self._roles:
            if any(rule.matches(kind, verb) for rule in role.allow.rules):
                return Decision(True, f'role "{role.name}" allows {verb} on {kind}', role.name)
        roles = ", ".join(f'"{r.name}"' for r in self._roles) or "none"
        return Decision(False, f"no role allows {verb} on {kind} (roles: {roles})")

    # -- options -----------------------------------------------------------------------------

    def max_session_ttl(self) -> timedelta:
        """The shortest ``max_session_ttl`` of all roles; zero when there are no roles."""
        return self._options.max_session_ttl

    def options(self) -> RoleOptions:
        """Options aggregated across roles, the most restrictive value winning.

        Returns:
            A fresh :class:`RoleOptions` (callers may not mutate the role set through it).
        """
        return self._options.model_copy()

    # -- explanations ----------------------------------------------------------------------

    @staticmethod
    def _denied_by_labels(
        deny: Sequence[tuple[str, LabelSelector, str]],
        kind: str,
        what: str,
        labels: Mapping[str, str],
        context: AccessContext | None,
    ) -> Decision | None:
        for name, selector, where in deny:
            if selector.matches(labels):
                outcome = _condition(where, context, kind, what, labels)
                if not _deny_applies(outcome):
                    continue
                target = f'node "{what}"' if kind == "node" else what
                matched = _describe(selector)
                reason = f'role "{name}" denies {target}: deny {kind}_labels match ({matched})'
                return Decision(False, reason + _cond_note(where, outcome), name)
        return None

    def _explain_node(
        self, node_name: str, labels: Mapping[str, str], login: str, unmet: Mapping[str, str]
    ) -> str:
        reasons: list[str] = []
        for role in self._roles:
            allow = role.allow
            match = allow.node.match(labels)
            if role.name in unmet:
                reasons.append(f'role "{role.name}": {unmet[role.name]}')
            elif not match.matched:
                reasons.append(
                    f'role "{role.name}": {_label_reason(match.reason, allow.node, "node")}'
                )
            elif not allow.logins:
                reasons.append(f'role "{role.name}": grants no logins')
            else:
                reasons.append(
                    f'role "{role.name}": login "{login}" not in {_quoted(allow.logins)}'
                )
        return _no_role(f'login "{login}" on node "{node_name}"', reasons)

    def _explain_labels(self, kind: str, what: str, labels: Mapping[str, str], verb: str) -> str:
        reasons = []
        for role in self._roles:
            selector: LabelSelector = getattr(role.allow, kind)
            why = _label_reason(selector.match(labels).reason, selector, kind)
            reasons.append(f'role "{role.name}": {why}')
        target = f'node "{what}"' if kind == "node" else what
        return _no_role(f"to {verb} {target}", reasons)


def _label_reason(reason: str, selector: LabelSelector, kind: str) -> str:
    return f"no {kind}_labels" if selector.is_empty else reason


def _no_role(request: str, reasons: Sequence[str]) -> str:
    if not reasons:
        return f"no role allows {request}: the user has no roles"
    return f"no role allows {request}: " + "; ".join(reasons)


_STRICTEST_DEFAULTS = RoleOptions(max_session_ttl=timedelta(0))


def _aggregate_options(options: Iterable[RoleOptions]) -> RoleOptions:
    listed = list(options)
    if not listed:
        return _STRICTEST_DEFAULTS
    idle = [o.client_idle_timeout for o in listed if o.client_idle_timeout is not None]
    return RoleOptions(
        max_session_ttl=min(o.max_session_ttl for o in listed),
        require_session_mfa=any(o.require_session_mfa for o in listed),
        permit_pty=all(o.permit_pty for o in listed),
        port_forwarding=all(o.port_forwarding for o in listed),
        forward_agent=all(o.forward_agent for o in listed),
        record_session=any(o.record_session for o in listed),
        record_input=any(o.record_input for o in listed),
        lock_mode="strict" if any(o.lock_mode == "strict" for o in listed) else "best_effort",
        client_idle_timeout=min(idle) if idle else None,
        disconnect_expired_cert=any(o.disconnect_expired_cert for o in listed),
        pin_source_ip=any(o.pin_source_ip for o in listed),
        device_trust_mode=_strictest_device_mode(listed),
        require_hardware_key=any(o.require_hardware_key for o in listed),
    )


def _strictest_device_mode(listed: list[RoleOptions]) -> DeviceTrustMode | None:
    modes = [o.device_trust_mode for o in listed if o.device_trust_mode is not None]
    return strictest(modes) if modes else None
