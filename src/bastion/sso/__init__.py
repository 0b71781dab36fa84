"""Single sign-on: OIDC, SAML 2.0 and GitHub-style OAuth2 connectors.

Layer: between the IdPs and the auth server. ``mapping`` (pure) turns claims into roles and
traits; ``oidc``, ``saml`` and ``github`` verify what each kind of IdP sends; ``requests`` keeps
pending logins in the backend; ``service`` runs a login from ``bsh login --auth=NAME`` to the
certificates. The browser side lives in :mod:`bastion.web`, the JSON API in
:mod:`bastion.api.sso`.
"""

__all__: list[str] = []
