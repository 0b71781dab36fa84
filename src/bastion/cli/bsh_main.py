"""Entry point of ``bsh``: the ProxyCommand path (``bsh proxy ssh``) starts without loading the
full CLI, because OpenSSH pays its start-up time on every connection; ``bsh ssh NODE`` hands the
connection to the system's OpenSSH client when it can (:mod:`bastion.cli.ssh_handoff`)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    from bastion.cli.proxy_fast import main as fast

    code = fast(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    if sys.argv[1:2] == ["ssh"]:  # the user's main command: OpenSSH carries it when present
        from bastion.cli.ssh_handoff import main as handoff

        code = handoff(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    from bastion.cli.bsh import main as full

    full()
