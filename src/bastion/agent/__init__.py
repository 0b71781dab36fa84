"""Agents: services that sit next to resources and dial out to the proxy (reverse tunnels).

The SSH node (:mod:`.ssh_node`) accepts SSH connections from the proxy's tunnel (or directly),
authenticates user certificates from the cluster user CA, checks RBAC again against its own
labels, runs sessions as the OS login and audits them.
"""

__all__: list[str] = []
