"""The HTTP edge of the auth server: routes, OpenAPI, admin MFA, rate limits, TLS peer identity.

Layer: ``api`` (docs/architecture.md), above the domain (:mod:`bastion.auth`, :mod:`bastion.mfa`,
:mod:`bastion.sso`, ...) and :mod:`bastion.web` (whose pages mount here), below the processes
that serve it (:mod:`bastion.auth_service`, :mod:`bastion.proxy`). Parsing and serialising only:
every decision is the domain's, every permission check :class:`bastion.auth.guarded.GuardedAuth`'s,
and the authentication gate's decision is :mod:`bastion.auth.gate` (its HTTP middleware is
:func:`bastion.api.app.build_app`'s).

    app.py         build_app: the aiohttp application, the gate middleware, core routes
    agents.py      heartbeats, event submission, watches (agents and remote proxies)
    mfa.py         MFA device routes          session.py     per-session certificates
    recordings.py  recording upload/download  sso.py         SSO login flows
    admin_mfa.py   which changes need a fresh MFA assertion; mfa_header.py its header codec
    audiences.py   every route's audience     openapi.py     the OpenAPI document
    ratelimit.py   token buckets per peer     tls.py         server context, peer identity
"""

__all__: list[str] = []
