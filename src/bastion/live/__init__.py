"""The registry of live connections: who is connected, with which certificate, to what.

One registry per process (proxy and agents each keep theirs). Every protocol registers each
connection it serves, with a ``terminate`` callback; locks and continuous checks find matches here
and end them, instead of each protocol keeping its own list.
"""

from bastion.live.registry import LiveConnection, LiveRegistry

__all__ = ["LiveConnection", "LiveRegistry"]
