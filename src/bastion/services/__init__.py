"""Typed resource stores over a :class:`bastion.backend.base.Backend`.

Services translate between resources and backend items; they trust their caller (no RBAC here).
"""

from bastion.services.store import ResourceStore

__all__ = ["ResourceStore"]
