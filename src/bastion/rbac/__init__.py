"""RBAC: roles, templates and label selectors evaluated as pure functions.

Layer: policy. ``templates`` (trait interpolation) and ``labels`` (selector matching) know only
strings; ``checker`` turns a user's :class:`~bastion.types.access.Role` models and traits into a
:class:`RoleSet` that answers ``check_*`` questions with a :class:`Decision` (allowed + reason);
``builtin`` holds the preset roles. Nothing here does I/O or reads the clock, and nothing here
imports backend, services or auth.

Import cycle: :mod:`bastion.types` imports :mod:`bastion.rbac.templates` lazily (inside a
validator) to check role values, so ``templates`` and ``labels`` must never import
``bastion.types``; ``checker`` and ``builtin`` may (types never imports them).
"""

from bastion.rbac.builtin import BUILTIN_ROLES, builtin_role
from bastion.rbac.checker import CompiledRole, Decision, RoleSet
from bastion.rbac.labels import LabelMatch, LabelSelector, ValueMatcher, match_labels
from bastion.rbac.templates import Template, expand_values, parse_template

__all__ = [
    "BUILTIN_ROLES",
    "CompiledRole",
    "Decision",
    "LabelMatch",
    "LabelSelector",
    "RoleSet",
    "Template",
    "ValueMatcher",
    "builtin_role",
    "expand_values",
    "match_labels",
    "parse_template",
]
