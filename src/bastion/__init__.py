"""Bastion: a zero-trust access plane (identity-aware proxy + certificate authority).

Layers, bottom to top (a layer never imports one above it):

    errors, clock            vocabulary shared by everything
    types                    resource models (pydantic) and the identity document
    backend                  key-value store: revisions, TTL, watches (memory, sqlite, postgres)
    rbac, ca                 pure decisions: authorization and certificate contents
    services                 typed resource stores over a backend
    auth                     control plane: AuthServer (trusted) -> GuardedAuth (RBAC) -> API
    config, process, cli     the daemon, its configuration and the command-line tools
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
