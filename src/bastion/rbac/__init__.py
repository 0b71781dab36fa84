"""RBAC: roles, templates and label selectors evaluated as pure functions.

Layer: policy. :mod:`bastion.types.templates` (trait interpolation, part of the role language, so
it lives with the resource models) and ``labels`` (selector matching) know only strings;
``checker`` turns a user's :class:`~bastion.types.access.Role` models and traits into a
:class:`RoleSet` that answers ``check_*`` questions with a :class:`Decision` (allowed + reason);
``builtin`` holds the preset roles; ``conditions`` evaluates ``where`` (CEL) conditions for one
request (:class:`AccessContext`). Nothing here does I/O or reads the clock, and nothing here
imports backend, services or auth.

``rbac`` sits above ``types`` (docs/architecture.md): it imports resource models, never the other
way round. ``parse_template`` and friends are re-exported here for callers of the policy API.
"""

from bastion.rbac.builtin import BUILTIN_ROLES, builtin_role
from bastion.rbac.checker import CompiledRole, Decision, RoleSet
from bastion.rbac.conditions import AccessContext, DeviceContext, Outcome
from bastion.rbac.labels import LabelMatch, LabelSelector, ValueMatcher, match_labels
from bastion.types.templates import Template, expand_values, parse_template

__all__ = [
    "BUILTIN_ROLES",
    "AccessContext",
    "CompiledRole",
    "Decision",
    "DeviceContext",
    "LabelMatch",
    "LabelSelector",
    "Outcome",
    "RoleSet",
    "Template",
    "ValueMatcher",
    "builtin_role",
    "expand_values",
    "match_labels",
    "parse_template",
]
