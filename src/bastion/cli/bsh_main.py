"""Entry point of ``bsh``: the ProxyCommand path (``bsh proxy ssh``) starts without loading the
full CLI, because OpenSSH pays its start-up time on every connection."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    from bastion.cli.proxy_fast import main as fast

    code = fast(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from bastion.cli.bsh import main as full

    full()
