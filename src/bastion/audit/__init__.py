"""Audit: the append-only event log (emit + search)."""

from bastion.audit.log import AuditLog, AuditQuery

__all__ = ["AuditLog", "AuditQuery"]
