"""Bastion: a zero-trust access plane (identity-aware proxy + certificate authority).

Layers, top to bottom (a layer never imports one above it; docs/architecture.md, checked by
import-linter and tests/check_cycles.py in ``make test``):

    cli, testing*            the command-line tools; test launchers
    process                  the all-in-one supervisor
    proxy, agent             processes (tunnel and auth_service beneath them)
    client                   API client, profiles, every client TLS context
    api, web                 the HTTP edge and the web pages it mounts
    sso > auth > mfa, locks, recording, export > audit, live     the domain
    services                 typed stores over a backend (every key prefix)
    config                   the configuration schema
    protocols, ca, rbac, backend    pure codecs, certificates, policy; key-value engines
    types                    resource models and the identity document
    errors, clock, files, logging, runtime, tasks    shared vocabulary
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
