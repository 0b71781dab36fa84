"""Entry point of ``bsh``: the ProxyCommand path (``bsh proxy ssh``) starts without loading the
full CLI, because OpenSSH pays its start-up time on every connection; ``bsh ssh NODE`` hands the
connection to the system's OpenSSH client when it can (:mod:`bastion.cli.ssh_handoff`).

This module imports only ``sys``: ``bsh --help`` and ``bsh status`` pay for neither the fast
path's TLS and protocol modules nor the hand-off's, which load only when ``argv`` names them.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    args = sys.argv[1:]
    if "proxy" in args[:3]:  # [--home H] proxy ssh ...: the ProxyCommand, started per connect
        if "leaf-cert" in args[:4] or any(a.startswith("--leaf") for a in args):
            from bastion.cli.leaf_proxy import main as fast  # a leaf cluster, through this one
        else:
            from bastion.cli.proxy_fast import main as fast

        code = fast(args)
        if code is not None:
            sys.exit(code)
    if args[:1] == ["ssh"]:  # the user's main command: OpenSSH carries it when present
        from bastion.cli.ssh_handoff import main as handoff

        code = handoff(args)
        if code is not None:
            sys.exit(code)
    from bastion.cli.bsh import main as full

    full()
