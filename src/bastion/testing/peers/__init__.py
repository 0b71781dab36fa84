"""Real peers the tests and benchmarks run against, started on loopback and thrown away.

Not used in production; nothing in ``src`` imports them. One module per peer:

* :mod:`.sshd`: a throwaway OpenSSH ``sshd`` (agentless nodes, OpenSSH baselines).
* :mod:`.postgres`: a throwaway PostgreSQL server (``initdb`` + ``pg_ctl``).
* :mod:`.saml`: a SAML 2.0 identity provider on pysaml2's own IdP.
* :mod:`.export`: audit export receivers (syslog collector, HEC/``_bulk`` receiver) and a PKI.
* :mod:`.ports`: :func:`~.ports.free_port`, the one way to pick an ephemeral loopback port.

A missing peer binary raises the module's ``*Unavailable`` error; tests turn it into
:func:`bastion.testing.missing_peer` (skip locally, fail under ``CI=true``).
"""
