"""The auth domain: users, credentials, certificate issuance, revocation, the recordings index.

Layer: domain (docs/architecture.md). :class:`~bastion.auth.server.AuthServer` trusts its caller;
:class:`~bastion.auth.guarded.GuardedAuth` wraps it with RBAC; :mod:`bastion.auth.gate` is the
pure authentication-gate decision. The HTTP edge over it is :mod:`bastion.api`, the process that
runs it :mod:`bastion.auth_service`, and the stores it keeps under backend key prefixes are in
:mod:`bastion.services`.
"""

__all__: list[str] = []
